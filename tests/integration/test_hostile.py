"""A hostile driver against the run's guarantees, on the harness (issue 17, items 2 and 6): it
cannot speak for the wrapper, and nothing it starts outlives the run or keeps the lock."""
from __future__ import annotations

import json

import pytest

from tests.integration.cli import SCRIPTS, sfc

# bob heads this cluster: Ray and the driver run as sfops there, not root (root may open any
# process's descriptors, dumpable or not: a driver running as root owns the node anyway)
HEAD = "bob"
STATE = "/home/sfops/.sfcluster/harness"


@pytest.fixture(scope="module")
def cluster(harness, tmp_path_factory):
    inv = harness.write_inventory(tmp_path_factory.mktemp("hostile") / "inv.yaml", firewall="check",
                                  nodes=["bob", "alice", "carol"])
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    yield inv
    sfc("down", "-i", str(inv), "--force")


def hostile_left(h):
    return h.docker_exec(HEAD, "ps -eo pid,args | grep '[h]ostile_driver' || true").stdout.strip()


def test_a_driver_cannot_forge_the_wrapper_s_exit(harness, cluster):
    p = sfc("run", "-i", str(cluster), str(SCRIPTS / "hostile_driver.py"), "exit", timeout=180)
    out = p.stdout + p.stderr
    assert "hostile: REFUSED errno 13" in out, out[-3000:]  # /proc/<wrapper>/fd is root's: not dumpable
    assert p.returncode == 1, out[-3000:]                   # the driver's real code, not the forged 0
    assert hostile_left(harness) == ""                      # its detached grandchild was killed
    runs = json.loads(sfc("runs", "-i", str(cluster), "--json").stdout)
    assert runs["runs"][0]["exit_code"] == 1


def test_nothing_a_driver_detaches_keeps_the_lock(harness, cluster):
    p = sfc("run", "-i", str(cluster), str(SCRIPTS / "hostile_driver.py"), "lock", timeout=180)
    assert p.returncode == 1, (p.stdout + p.stderr)[-3000:]
    assert hostile_left(harness) == ""
    assert harness.docker_exec(HEAD, f"flock -n {STATE} true", check=False).returncode == 0
    st = json.loads(sfc("status", "-i", str(cluster), "--json").stdout)
    assert not (st.get("lock") or {}).get("active"), st.get("lock")
    up = sfc("up", "-i", str(cluster))  # nothing blocks the next operation
    assert up.returncode == 0, up.stdout + up.stderr
