"""A hostile driver against the run's guarantees, on the harness (issue 17, items 2 and 6): it
cannot speak for the wrapper, and nothing it starts outlives the run or keeps the lock."""
from __future__ import annotations

import json

import pytest

from tests.harness.harness import RAY_USER, state_dir
from tests.integration.cli import SCRIPTS, sfc

# Ray and the driver run as the harness's ray_user (sfray: no sudo), never root (root may open any
# process's descriptors, dumpable or not: a driver running as root owns the node anyway; `check`
# fails there). bob heads this cluster.
HEAD = "bob"
STATE = state_dir("harness")


def as_nobody(h, node, cmd, check=True):
    return h.docker_exec(node, f"su -s /bin/sh nobody -c '{cmd}'", check=check)


def raylets(h, node):
    return h.docker_exec(node, "ps -eo args | grep -c '[r]aylet' || true").stdout.strip()


def test_up_refuses_a_temp_dir_another_user_planted_and_leaves_nothing(harness, tmp_path):
    """Another local user got Ray's sockets by planting /tmp/sfc-<cluster> before `up` (item 3):
    a link to its own dir on carol, a dir of its own on alice. `up` refuses both, naming them."""
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check", nodes=["bob", "alice", "carol"])
    for n in ("alice", "carol"):  # an earlier module's cluster of this name keeps its Ray logs there after `down`
        harness.docker_exec(n, "rm -rf /tmp/sfc-harness")
    as_nobody(harness, "carol", "mkdir -p /tmp/nobody-ray && ln -s /tmp/nobody-ray /tmp/sfc-harness")
    as_nobody(harness, "alice", "mkdir -m 777 /tmp/sfc-harness")
    try:
        p = sfc("up", "-i", str(inv))
        out = p.stdout + p.stderr
        assert p.returncode != 0, out
        assert "/tmp/sfc-harness" in out and ("link" in out or "belongs to nobody" in out), out[-3000:]
        for n in ("alice", "bob", "carol"):
            assert raylets(harness, n) == "0", n  # rolled back everywhere
        assert harness.docker_exec("carol", "ls -A /tmp/nobody-ray").stdout.strip() == ""  # Ray wrote nothing there
    finally:
        for n in ("alice", "carol"):
            harness.docker_exec(n, "rm -rf /tmp/sfc-harness /tmp/nobody-ray")


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


def test_ray_s_temp_dir_is_closed_to_other_local_users(harness, cluster):
    """Ray makes its temp dir and sockets 0777 without the sticky bit: they sit inside a 0700
    directory of the user Ray runs as, so no other local user reaches them (item 3)."""
    for n, user in {n: RAY_USER for n in ("bob", "alice", "carol")}.items():
        st = harness.docker_exec(n, "stat -c '%U %a %F' /tmp/sfc-harness").stdout.strip()
        assert st == f"{user} 700 directory", (n, st)
    assert harness.docker_exec("bob", "test -S /tmp/sfc-harness/r/session_latest/sockets/raylet", check=False).returncode == 0
    p = as_nobody(harness, "bob", "ls /tmp/sfc-harness/r/session_latest/sockets", check=False)
    assert p.returncode != 0 and "Permission denied" in p.stdout + p.stderr
    p = as_nobody(harness, "bob", "ln -sfn /tmp /tmp/sfc-harness/r/session_latest", check=False)
    assert p.returncode != 0


def test_privileged_node_scripts_never_run_the_ray_user_s_venv(harness, tmp_path):
    """Item 1: the Ray user planted a .pth in its venv and sfcluster's probe, run as root, ran it.
    Privileged node scripts run with the root-owned root_python in isolated mode: the .pth never
    runs, and an interpreter someone else could change is refused by name."""
    pth = "/opt/sf/lib/python3.10/site-packages/zz_planted.pth"
    harness.docker_exec("bob", "rm -f /tmp/pth-ran-*; echo \"import os; open('/tmp/pth-ran-%d' % os.getuid(), 'w')\" > " + pth)
    try:
        inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check")
        p = sfc("check", "-i", str(inv), "--json")
        assert '"versions"' in p.stdout or p.stdout, p.stderr
        ran = harness.docker_exec("bob", "ls /tmp/pth-ran-* 2>/dev/null || true").stdout.strip()
        assert "/tmp/pth-ran-0" not in ran, ran  # never as root (the probe runs through sudo on bob)
        data = json.loads(p.stdout)
        assert data["exit_code"] in (0, 65), p.stdout[-2000:]
        assert "1.10.0b1" in p.stdout  # versions still read from the venv's metadata
    finally:
        harness.docker_exec("bob", f"rm -f {pth} /tmp/pth-ran-*")
    harness.docker_exec("bob", "install -d -o sfops /tmp/sfops-py && cp /usr/bin/python3.11 /tmp/sfops-py/python3 && "
                               "chown sfops /tmp/sfops-py/python3")
    try:
        inv = harness.write_inventory(tmp_path / "inv2.yaml", firewall="check",
                                      extra_node={"bob": {"root_python": "/tmp/sfops-py/python3"}})
        p = sfc("check", "-i", str(inv))
        out = p.stdout + p.stderr
        assert p.returncode != 0 and "/tmp/sfops-py" in out and "not owned by root" in out, out[-3000:]
    finally:
        harness.docker_exec("bob", "rm -rf /tmp/sfops-py")
