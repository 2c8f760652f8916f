"""Ray as a non-root service user (inventory `ray_user`): Ray, the lock, the run's wrapper, the
driver and the node's private state and certificates belong to that user on every node, reached
from the SSH user with `sudo -n -u`; `check` fails, and `up` refuses, when Ray would run as a user
that is root or becomes root without a password."""
from __future__ import annotations

import json

import pytest

from tests.integration.cli import SCRIPTS, sfc

PARTIES = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def service_user(harness):
    """A user `sfray` on every party's node (a site creates it; sfcluster never does)."""
    for n in PARTIES:
        harness.docker_exec(n, "id sfray >/dev/null 2>&1 || useradd -m -s /bin/bash sfray")
    yield "sfray"


def test_ray_the_driver_and_the_state_run_as_the_service_user(harness, service_user, tmp_path):
    inv = harness.write_inventory(tmp_path / "inv.yaml", cluster="svc", firewall="open", extra_top="tls: on",
                                  ray_user=service_user)
    checks = json.loads(sfc("check", "-i", str(inv), "--json").stdout)["checks"]
    rows = {c["node"]: c for c in checks if c["name"] == "ray_user"}
    assert all(rows[n]["status"] == "OK" and "sfray" in rows[n]["detail"] for n in PARTIES), rows
    try:
        p = sfc("up", "-i", str(inv))
        assert p.returncode == 0, p.stdout + p.stderr
        for n in PARTIES:
            owners = harness.docker_exec(n, "ps -o user= -C raylet,gcs_server | sort -u").stdout.split()
            assert owners == ["sfray"], (n, owners)
            st = harness.docker_exec(n, "stat -c '%U %a' /home/sfray/.sfcluster/svc /home/sfray/.sfcluster/svc/tls/node.key")
            assert st.stdout.split() == ["sfray", "700", "sfray", "600"], (n, st.stdout)
        p = sfc("run", "-i", str(inv), str(SCRIPTS / "whoami_driver.py"))
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        assert "DRIVER_USER sfray" in p.stdout, p.stdout
        tasks = [l.split() for l in p.stdout.splitlines() if l.startswith("TASK_USER")]
        assert sorted(t[1] for t in tasks) == sorted(PARTIES) and {t[2] for t in tasks} == {"sfray"}, p.stdout
        assert json.loads(sfc("status", "-i", str(inv), "--json").stdout)["health"] == "healthy"
    finally:
        p = sfc("down", "-i", str(inv), "--purge", "--force")
    assert p.returncode == 0, p.stdout + p.stderr
    for n in PARTIES:
        assert harness.docker_exec(n, "pgrep -u sfray -x 'raylet|gcs_server' || true").stdout.strip() == ""
        assert harness.docker_exec(n, "test -e /home/sfray/.sfcluster/svc/tls && echo left || true").stdout.strip() == ""


def test_check_fails_and_up_refuses_when_ray_would_run_as_a_user_that_can_become_root(harness, tmp_path):
    # no ray_user: Ray would run as the SSH users, root on alice and sfops (passwordless sudo) on bob, carol
    inv = harness.write_inventory(tmp_path / "inv.yaml", cluster="svcroot", firewall="check", ray_user=None)
    p = sfc("check", "-i", str(inv), "--json")
    assert p.returncode == 65, p.stdout[-2000:]
    rows = {c["node"]: c for c in json.loads(p.stdout)["checks"] if c["name"] == "ray_user"}
    assert {n: r["status"] for n, r in rows.items()} == {n: "FAIL" for n in PARTIES}, rows
    assert "as root here" in rows["alice"]["detail"], rows["alice"]
    assert "sfops, who becomes root without a password" in rows["bob"]["detail"], rows["bob"]
    assert all("set ray_user: <a user without sudo rights>" in r["fix"] for r in rows.values()), rows
    # a ray_user that itself has passwordless sudo is no better
    inv2 = harness.write_inventory(tmp_path / "inv2.yaml", cluster="svcroot", firewall="check", ray_user="sfops",
                                   nodes=["alice", "bob"])
    p = sfc("check", "-i", str(inv2), "--json")
    rows = {c["node"]: c for c in json.loads(p.stdout)["checks"] if c["name"] == "ray_user"}
    assert p.returncode == 65 and rows["alice"]["status"] == "FAIL", rows
    assert "ray_user sfops becomes root without a password" in rows["alice"]["detail"], rows["alice"]
    # up refuses before anything starts
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 65 and "ray_user" in p.stdout + p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    for n in PARTIES:
        assert harness.docker_exec(n, "pgrep -f '[r]aylet.*sfc-svcroot' || true").stdout.strip() == "", n
