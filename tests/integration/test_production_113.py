"""secretflow-lite 1.13.0b0 (no Ray at all: the only mode it has is production) through
`provision` on the harness, then the same train_lr template as in simulation mode, with TLS; and
a simulation cluster on it refused by `check`, naming node, version and the fix."""
from __future__ import annotations

import json

import pytest

from tests.harness.harness import RAY_HOME
from tests.integration.cli import ROOT, sfc

PARTIES = ("alice", "bob", "carol")
HOME = {n: RAY_HOME for n in ("alice", "bob", "carol")}  # the Ray user's, on every node
VERSION = "1.13.0b0"


@pytest.fixture(scope="module")
def lite113(harness, tmp_path_factory):
    wheelhouse = harness.ensure_wheelhouse(f"secretflow-lite=={VERSION}")
    base = harness.base_python("alice")
    pins = (f"mode: production\ntls: on\nprovision:\n  package: secretflow-lite\n  version: {VERSION}\n"
            f"  base_python: {base}\n  wheelhouse: {wheelhouse}\n")
    venvs = {n: {"python": f"{HOME[n]}/sf113/bin/python"} for n in PARTIES}
    d = tmp_path_factory.mktemp("lite113")
    inv = harness.write_inventory(d / "inv.yaml", cluster="p113", firewall="open", data=True, extra_top=pins,
                                  extra_node=venvs)
    sim = harness.write_inventory(d / "sim.yaml", cluster="s113", firewall="check", extra_node=venvs)
    yield {"inv": inv, "sim": sim}
    sfc("down", "-i", str(inv), "--force", "--purge")
    for n in PARTIES:
        harness.docker_exec(n, f"rm -rf {HOME[n]}/sf113 {HOME[n]}/sf113.sfc-old", check=False)


def test_provision_secretflow_lite_113_without_ray_then_train_in_production_mode(harness, lite113):
    p = sfc("provision", "-i", str(lite113["inv"]), "--json", timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    got = json.loads(p.stdout)["nodes"]
    for n in PARTIES:
        assert got[n]["versions"] == {"secretflow-lite": VERSION}, got[n]
        assert harness.docker_exec(n, f"test -e {HOME[n]}/sf113/lib/python3.10/site-packages/ray && echo RAY || true"
                                   ).stdout.strip() == "", n
    harness.push_data(lite113["inv"])
    p = sfc("up", "-i", str(lite113["inv"]), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    p = sfc("run", "-i", str(lite113["inv"]), str(ROOT / "templates" / "train_lr.py"), timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    results = [line for line in p.stdout.splitlines() if "RESULT auc=" in line]
    assert len(results) == 3 and all(float(r.split("auc=")[1].split()[0]) > 0.9 for r in results), results


def test_a_simulation_cluster_on_113_is_refused_by_check(harness, lite113):
    p = sfc("check", "-i", str(lite113["sim"]), "--json", "--no-reach")
    assert p.returncode == 65, p.stdout[-3000:]
    rows = [c for c in json.loads(p.stdout)["checks"] if c["name"] == "mode"]
    assert {r["node"] for r in rows} == set(PARTIES), rows
    assert all(VERSION in r["detail"] and "mode: production" in r["fix"] for r in rows), rows
