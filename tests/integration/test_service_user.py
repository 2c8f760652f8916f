"""Ray as a non-root service user (inventory `ray_user`): Ray, the lock, the run's wrapper, the
driver and the node's private state and certificates belong to that user on every node, reached
from the SSH user with `sudo -n -u`; `check` warns when Ray would run as root."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
SFC = [sys.executable, "-m", "sfcluster.cli.main"]
ENV = dict(os.environ, SFCLUSTER_STATE_DIR="/tmp/sfc-test-state")
PARTIES = ("alice", "bob", "carol")


def sfc(*args, timeout=300):
    return subprocess.run([*SFC, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def service_user(harness):
    """A user `sfray` on every party's node (a site creates it; sfcluster never does)."""
    for n in PARTIES:
        harness.docker_exec(n, "id sfray >/dev/null 2>&1 || useradd -m -s /bin/bash sfray")
    yield "sfray"


def test_ray_the_driver_and_the_state_run_as_the_service_user(harness, service_user, tmp_path):
    inv = harness.write_inventory(tmp_path / "inv.yaml", cluster="svc", firewall="open",
                                  extra_top=f"tls: on\nray_user: {service_user}")
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


def test_check_warns_when_ray_would_run_as_root(harness, tmp_path):
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check")
    checks = json.loads(sfc("check", "-i", str(inv), "--json").stdout)["checks"]
    warn = [c for c in checks if c["name"] == "ray_user" and c["status"] == "WARN"]
    assert [c["node"] for c in warn] == ["alice"] and "root" in warn[0]["detail"], warn  # alice logs in as root
