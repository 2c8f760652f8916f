"""The SSH layer against real sshd: parallel fan-out, strict host keys, ProxyJump."""
from __future__ import annotations

import pytest

from sfcluster.errors import HostKeyError
from sfcluster.remote import SshRunner, SshTarget, fan_out


def target(h, name, **kw) -> SshTarget:
    n = h.NODES[name]
    base = dict(name=name, user=n.user, port=n.port, identity_file=str(h.BUILD / "id_ed25519"),
                known_hosts=str(h.BUILD / "known_hosts"), config_file=str(h.BUILD / "ssh_config"))
    base.update(kw)
    return SshTarget(n.ip, **base)


def test_parallel_hostname_on_every_node(harness):
    runners = {n.name: SshRunner(target(harness, n.name)) for n in harness.PARTIES}
    out = fan_out(lambda k: runners[k].run(["hostname"]).check().stdout.strip(), runners)
    assert out.ok, out.errors
    assert out.results == {"alice": "alice", "bob": "bob", "carol": "carol"}
    # non-root user on bob and carol, root on alice: as the harness promises
    assert runners["bob"].user == "sfops" and runners["alice"].user == "root"
    assert runners["carol"].run(["sudo", "-n", "id", "-u"]).stdout.strip() == "0"


def test_changed_host_key_is_refused_and_nothing_runs(harness, tmp_path):
    bad = tmp_path / "known_hosts"
    lines = (harness.BUILD / "known_hosts").read_text().splitlines()
    alice_key = next(l for l in lines if l.startswith("172.30.77.11 ")).split(" ", 1)[1]
    # bob's entry carries alice's key: exactly what a MITM or a reinstalled host looks like
    bad.write_text("\n".join(l if not l.startswith("172.30.77.12 ") else f"172.30.77.12 {alice_key}" for l in lines) + "\n")
    marker = "/tmp/sfcluster-hostkey-test-marker"
    harness.docker_exec("bob", f"rm -f {marker}")
    r = SshRunner(target(harness, "bob", known_hosts=str(bad)))
    with pytest.raises(HostKeyError) as e:
        r.run(["touch", marker])
    assert "does NOT match known_hosts" in str(e.value) and "bob" in str(e.value)
    assert harness.docker_exec("bob", f"test -e {marker}", check=False).returncode != 0


def test_unknown_host_key_is_refused(harness, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    r = SshRunner(target(harness, "carol", known_hosts=str(empty)))
    with pytest.raises(HostKeyError) as e:
        r.run(["true"])
    assert "not in known_hosts" in str(e.value) and "ssh-keyscan" in str(e.value)


def test_proxy_jump_through_alice(harness, tmp_path):
    # carol is reached through alice: prove it by what carol's sshd sees as the client address
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host carol-via-alice\n  HostName 172.30.77.13\n  Port 2222\n  User sfops\n"
                   "  ProxyJump root@172.30.77.11:22\n")
    r = SshRunner(SshTarget("carol-via-alice", name="carol", identity_file=str(harness.BUILD / "id_ed25519"),
                            known_hosts=str(harness.BUILD / "known_hosts"), config_file=str(cfg)))
    out = r.run(["sh", "-c", "hostname; echo $SSH_CLIENT"]).check().stdout.split()
    assert out[0] == "carol"
    assert out[1] == "172.30.77.11", f"carol saw the client as {out[1]}, not alice"
