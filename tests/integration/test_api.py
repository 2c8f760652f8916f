"""The Python API (sfcluster.api) on the harness, in this process as a runbook would use it: load ->
check -> up -> run -> status -> runs -> fetch -> down, each result typed; and an error the API
raises carries the exit code the CLI exits with for the same outcome (the same code path)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from sfcluster import api, lifecycle
from sfcluster.doctor import Report
from sfcluster.errors import InventoryError, SfclusterError
from tests.integration.cli import ENV, SCRIPTS, SFC, STATE_DIR, sfc

PARTIES = {"alice", "bob", "carol"}


@pytest.fixture(scope="module")
def inv(harness, tmp_path_factory):
    """A harness inventory; the API in this process keeps the controller state the CLI's
    subprocesses keep (the CA, the run history), so that either can follow the other."""
    old = os.environ.get("SFCLUSTER_STATE_DIR")
    os.environ["SFCLUSTER_STATE_DIR"] = STATE_DIR
    path = harness.write_inventory(tmp_path_factory.mktemp("api") / "inv.yaml", firewall="open")
    sfc("down", "-i", str(path), "--force")  # from nothing: the first `up` below has work to do
    try:
        yield path
    finally:
        # --purge: the modules after this one (test_check) start from nodes without certificates
        sfc("down", "-i", str(path), "--force", "--purge")
        if old is None:
            os.environ.pop("SFCLUSTER_STATE_DIR", None)
        else:
            os.environ["SFCLUSTER_STATE_DIR"] = old


def test_a_runbook_through_the_api(inv, tmp_path):
    cluster = api.Cluster.load(inv)
    report = cluster.check()
    assert isinstance(report, Report) and report.ok and report.exit_code == 0, report.problems()

    seen = []
    up = cluster.up(progress=lambda node, msg: seen.append((node, msg)))
    assert isinstance(up, api.UpResult) and up.exit_code == 0 and up.mode == "simulation"
    assert up.changed and "ray head started" in up.actions["alice"], up.actions
    assert up.ray_address == "172.30.77.11:6379" and set(up.parties) == PARTIES
    assert all(s["alive"] and s["resource"] for s in up.parties.values()), up.parties
    assert [n["party"] for n in up.config["spu_cluster_def"]["nodes"]] == ["alice", "bob", "carol"]
    assert {n for n, m in seen if m == "joined"} == PARTIES, seen
    again = cluster.up()
    assert not again.changed and again.actions == {}

    out, err, notes = bytearray(), bytearray(), []
    run = cluster.run(SCRIPTS / "writes_output.py", ["api"], stdout=out.extend, stderr=err.extend, note=notes.append)
    assert isinstance(run, api.RunResult) and run.ok and not run.detached, (notes, err.decode()[-2000:])
    assert b"wrote outputs api" in out
    assert run.record is not None and run.record.run_id == run.run_id and run.record.exit_code == 0
    assert run.record.script == "writes_output.py" and run.record.args == ["api"]
    assert json.loads((run.output_dir / "metrics.json").read_text())["tag"] == "api"
    assert run.log.is_file() and any(f"outputs of run {run.run_id}" in n for n in notes), notes

    st = cluster.status()
    assert isinstance(st, api.StatusResult) and st.health is api.Health.HEALTHY and st.exit_code == 0, st.problems
    assert {r["party"] for r in st.nodes} == PARTIES and all(r["ray_alive"] for r in st.nodes)
    assert not st.lock["held"] and all(d["sanctioned"] for d in st.drivers)
    p = sfc("status", "-i", str(inv), "--json")
    assert p.returncode == st.exit_code and json.loads(p.stdout)["health"] == st.health.value

    runs = cluster.runs()
    assert runs[0].run_id == run.run_id and runs[0].exit_code == 0 and runs[0].fetched
    assert json.loads(sfc("runs", "-i", str(inv), "--json").stdout)["runs"][0]["run_id"] == run.run_id

    dest = tmp_path / "results"
    got = cluster.fetch(run.run_id, dest)  # again: harmless, the outputs fetched anew
    assert isinstance(got, api.FetchResult) and got.run_id == run.run_id and got.record.exit_code == 0
    assert got.dest == str(dest.resolve()) and json.loads((dest / "metrics.json").read_text())["tag"] == "api"
    assert (dest / "model" / "weights.bin").stat().st_size == 4096 and not (dest / "shadow").exists()
    assert isinstance(got.cleaned, dict)
    p = sfc("fetch", "-i", str(inv), run.run_id, "--json")
    assert p.returncode == 0 and list(json.loads(p.stdout))[2:] == list(got.to_json()), p.stdout

    # a second controller (another operator: the inventory and SSH access, none of this one's state,
    # no CA): what `run` needs comes from the nodes; the CA key stays where it is
    other = dict(ENV, SFCLUSTER_STATE_DIR=str(tmp_path / "other-controller"))
    p = subprocess.run([*SFC, "run", "-i", str(inv), str(SCRIPTS / "writes_output.py"), "--", "second"],
                       capture_output=True, text=True, env=other, timeout=300)
    assert p.returncode == 0 and "wrote outputs second" in p.stdout, p.stdout[-2000:] + p.stderr[-3000:]
    assert list((tmp_path / "other-controller").glob("harness/runs/*/output/metrics.json"))
    assert not (tmp_path / "other-controller" / "harness" / "ca").exists()
    p = subprocess.run([*SFC, "status", "-i", str(inv), "--json"], capture_output=True, text=True, env=other, timeout=120)
    st2 = json.loads(p.stdout)  # healthy; the certificates it cannot check without the CA are a note
    assert p.returncode == 0 and st2["health"] == "healthy" and len(st2["notes"]) == 3, p.stdout

    down = cluster.down()
    assert isinstance(down, lifecycle.DownResult) and down.exit_code == 0 and not down.errors, down.errors
    assert set(down.stopped) == PARTIES
    gone = cluster.status()
    assert gone.health is api.Health.DOWN and gone.exit_code == 69


def test_an_api_error_carries_the_exit_code_the_cli_exits_with(inv, tmp_path):
    cluster = api.Cluster.load(inv)  # down: the test above took it down (and so does `down --force`)
    cluster.down(force=True)
    with pytest.raises(SfclusterError) as ei:
        cluster.run(SCRIPTS / "writes_output.py", ["down"], stdout=lambda b: None, stderr=lambda b: None,
                    note=lambda m: None)
    p = sfc("run", "-i", str(inv), str(SCRIPTS / "writes_output.py"), "--", "down")
    assert ei.value.exit_code == p.returncode == 69, (ei.value, p.stderr[-2000:])
    assert "sfcluster up" in (ei.value.hint or ""), ei.value

    bad = tmp_path / "bad.yaml"
    bad.write_text(inv.read_text().replace("cluster: harness", "cluster: harness\nclustre: typo", 1))
    with pytest.raises(InventoryError) as ei:
        api.Cluster.load(bad)
    p = sfc("check", "-i", str(bad), "--json")
    assert ei.value.exit_code == p.returncode == 78, p.stdout
    assert [x.to_json() for x in ei.value.problems] == json.loads(p.stdout)["problems"]
