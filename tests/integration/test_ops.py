"""`sfcluster exec` and `sfcluster ssh` on the harness: plain SSH to each party's node, no `up`
needed. The real OpenSSH client checks each host key against the harness known_hosts only."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.cli import ENV, SFC, sfc

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client on the controller")


@pytest.fixture(scope="module")
def inv(harness, tmp_path_factory) -> Path:
    return harness.write_inventory(tmp_path_factory.mktemp("ops") / "inventory.yaml", firewall="check")


@pytest.fixture(scope="module")
def untrusting_inv(harness, inv, tmp_path_factory) -> Path:
    """The same inventory, its known_hosts an empty file: no host key is trusted."""
    d = tmp_path_factory.mktemp("ops-untrusting")
    (d / "known_hosts").write_text("")
    text = inv.read_text()
    line = f"known_hosts: {harness.BUILD / 'known_hosts'}"
    assert line in text
    (d / "inventory.yaml").write_text(text.replace(line, f"known_hosts: {d / 'known_hosts'}"))
    return d / "inventory.yaml"


def ssh(*args: str) -> subprocess.CompletedProcess:
    """`sfcluster ssh`, non-interactive: stdin /dev/null, as a script would run it."""
    return subprocess.run([*SFC, "ssh", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, env=ENV)


def test_exec_all_prints_each_partys_ssh_user(harness, inv):
    p = sfc("exec", "-i", str(inv), "--all", "--", "id", "-un", timeout=120)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == sorted(f"[{n.name}] {n.user}" for n in harness.PARTIES)
    assert all(f"{n.name}: exit 0" in p.stderr for n in harness.PARTIES), p.stderr


def test_exec_reports_the_one_node_whose_command_failed(harness, inv):
    p = sfc("exec", "-i", str(inv), "--json", "--all", "--", "sh", "-c", '[ "$(hostname)" != bob ] || exit 3',
            timeout=120)
    got = json.loads(p.stdout)
    assert p.returncode == 1 and got["exit_code"] == 1, p.stdout + p.stderr
    assert {n: o["exit_code"] for n, o in got["nodes"].items()} == {"alice": 0, "bob": 3, "carol": 0}
    p = sfc("exec", "-i", str(inv), "bob", "--", "sh", "-c", "exit 3", timeout=120)
    assert p.returncode == 1 and "bob: exit 3" in p.stderr, p.stderr


@needs_ssh
def test_ssh_runs_one_command_on_that_partys_node(harness, inv):
    p = ssh("-i", str(inv), "alice", "--", "hostname")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == harness.docker_exec("alice", "hostname").stdout.strip()
    p = ssh("-i", str(inv), "carol", "--", "sh", "-c", "echo $SSH_CONNECTION")  # carol's sshd is on port 2222
    assert p.returncode == 0 and p.stdout.split()[-1] == "2222", p.stdout + p.stderr


@needs_ssh
def test_ssh_as_ray_is_the_ray_user(harness, inv):
    p = ssh("-i", str(inv), "--as-ray", "bob", "--", "id", "-un")  # bob's SSH user, sfops, has passwordless sudo
    assert p.returncode == 0 and p.stdout.strip() == harness.RAY_USER, p.stdout + p.stderr


@needs_ssh
def test_ssh_refuses_a_host_whose_key_is_not_in_the_inventorys_known_hosts(harness, untrusting_inv):
    marker = "/tmp/sfcluster-ops-hostkey-marker"
    harness.docker_exec("alice", f"rm -f {marker}")
    p = ssh("-i", str(untrusting_inv), "alice", "--", "touch", marker)
    assert p.returncode == 255 and "Host key verification failed" in p.stderr, p.stdout + p.stderr
    assert harness.docker_exec("alice", f"test -e {marker}", check=False).returncode != 0


def test_exec_names_the_nodes_it_could_not_trust(harness, untrusting_inv):
    p = sfc("exec", "-i", str(untrusting_inv), "--all", "--", "true", timeout=120)
    assert p.returncode == 69, p.stderr
    assert "not reached: alice, bob, carol" in p.stderr and "not in known_hosts" in p.stderr, p.stderr
