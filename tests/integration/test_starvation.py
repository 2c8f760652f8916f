"""A party whose CPUs are all taken: `check` refuses it, and a run on such a cluster (brought up
past the check) ends on its own, naming the party, the resource and the fix, instead of hanging
forever with Ray's autoscaler warning every 35 s."""
from __future__ import annotations

import json
import time

from tests.integration.cli import ROOT, sfc


def test_cpus_below_the_minimum_fail_check_and_a_starved_run_ends_naming_the_party(harness, tmp_path):
    inv = harness.write_inventory(tmp_path / "inv.yaml", cluster="starve", firewall="check",
                                  extra_node={"bob": {"cpus": 1}})
    p = sfc("check", "-i", str(inv), "--json", "--no-reach")
    report = json.loads(p.stdout)
    assert p.returncode == 65 and report["ok"] is False, p.stdout
    assert [x["path"] for x in report["problems"]] == ["bob"], report["problems"]
    assert "cpus: 1" in report["problems"][0]["message"] and "cpus: 2" in report["problems"][0]["fix"]
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 65 and "cpus" in p.stdout, p.stdout + p.stderr  # nothing changed

    p = sfc("up", "-i", str(inv), "--skip-check")  # a cluster built to starve
    assert p.returncode == 0, p.stdout + p.stderr
    try:
        # the template states its needs (SFCLUSTER_NEEDS): `run` refuses it before shipping anything
        p = sfc("run", "-i", str(inv), "train_lr", "--", "--synthetic")
        assert p.returncode == 78 and "needs cpus: 2 at every party; bob has 1" in p.stderr, p.stderr[-2000:]
        # a script that states nothing the controller can read (the same training, its needs no
        # literal: `dict({...})`) starts, and the watcher ends it once it starves
        script = tmp_path / "train_lr.py"
        script.write_text("".join(f"SFCLUSTER_NEEDS = dict({line.split('=', 1)[1].strip()})\n"
                                  if line.startswith("SFCLUSTER_NEEDS = ") else line
                                  for line in (ROOT / "templates" / "train_lr.py").read_text().splitlines(True)))
        t0 = time.monotonic()
        p = sfc("run", "-i", str(inv), "--starve-timeout", "20", str(script), "--", "--synthetic")
        took = time.monotonic() - t0
        assert p.returncode == 70, p.stdout[-2000:] + p.stderr[-3000:]
        last = p.stderr.strip().splitlines()[-1]
        assert "run stopped by sfcluster" in last and "party bob" in last and "CPU" in last, p.stderr[-3000:]
        assert "raise `cpus` for bob" in last and "RESULT" not in p.stdout
        assert took < 150, f"the starved run took {took:.0f} s to end"
        deadline = time.monotonic() + 30
        left = {}
        while time.monotonic() < deadline:
            left = {n: harness.docker_exec(n, "ps -eo pid,args | grep -E '[r]ay::SPURuntime|[r]ay::PYU|[.]sfcluster/starve/runs/' "
                                              "|| true").stdout.strip() for n in ("alice", "bob", "carol")}
            if not any(left.values()):
                break
            time.sleep(0.5)
        assert not any(left.values()), f"left after the starved run: {left}"
        assert harness.docker_exec("alice", f"flock -n {harness.state_dir('starve')} true", check=False).returncode == 0
    finally:
        assert sfc("down", "-i", str(inv), "--force").returncode == 0
