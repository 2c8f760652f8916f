"""Host keys are verified on every hop, however the hops are configured (no network needed:
these look at the connections sfcluster builds, before any is opened)."""
from __future__ import annotations

import paramiko
import pytest

from sfcluster.remote.ssh import SshTarget, _open_connection

KEY = ("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C7okWi0dh2l9GKJl")


def _policy(conn) -> type:
    return type(conn.client._policy)


def test_proxyjump_from_ssh_config_gets_our_gateway_with_strict_keys(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host *\n  ProxyJump ops@bastion.example:2200\n")  # Host * matches the bastion too
    kh = tmp_path / "known_hosts"
    kh.write_text(f"10.0.0.5 ssh-ed25519 {KEY}\n")
    conn = _open_connection(SshTarget(host="10.0.0.5", config_file=str(cfg), known_hosts=str(kh)))  # no RecursionError
    gw = conn.gateway
    assert (gw.host, gw.user, gw.port) == ("bastion.example", "ops", 2200)
    assert gw.gateway is False  # the jump host is reached directly, never through Fabric's own gateway
    assert issubclass(_policy(conn), paramiko.RejectPolicy) and issubclass(_policy(gw), paramiko.RejectPolicy)
    assert conn.client.get_host_keys().lookup("10.0.0.5") is not None
    assert gw.client.get_host_keys().lookup("10.0.0.5") is not None  # the same known_hosts on every hop


def test_no_gateway_means_none_at_all(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("# nothing\n")
    conn = _open_connection(SshTarget(host="10.0.0.5", config_file=str(cfg)))
    assert conn.gateway is False and issubclass(_policy(conn), paramiko.RejectPolicy)


def test_proxycommand_is_a_socket_only_and_keys_are_still_checked(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host 10.0.0.5\n  ProxyCommand nc -q0 %h %p\n")
    conn = _open_connection(SshTarget(host="10.0.0.5", config_file=str(cfg)))
    assert isinstance(conn.gateway, str) and conn.gateway.startswith("nc ")
    assert issubclass(_policy(conn), paramiko.RejectPolicy)


def test_several_hops_are_refused_naming_them(tmp_path):
    from sfcluster.errors import ConnectError
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host *\n  ProxyJump a.example,b.example\n")
    with pytest.raises(ConnectError, match="several hops"):
        _open_connection(SshTarget(host="10.0.0.5", config_file=str(cfg)))


def test_known_hosts_defaults_to_the_users_own(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(f"10.0.0.5 ssh-ed25519 {KEY}\n")
    monkeypatch.setenv("HOME", str(home))
    cfg = tmp_path / "ssh_config"
    cfg.write_text("# no UserKnownHostsFile\n")
    conn = _open_connection(SshTarget(host="10.0.0.5", config_file=str(cfg)))
    assert conn.client.get_host_keys().lookup("10.0.0.5") is not None


# -- known_hosts markers, against a loopback SSH server -------------------------------------------

@pytest.fixture
def sshd(tmp_path, monkeypatch):
    from tests.unit.loopback_sshd import LoopbackSshd
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys or config of whoever runs the tests
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    s = LoopbackSshd(tmp_path)
    yield s
    s.stop()


def _kh(tmp_path, *lines: str):
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(line + "\n" for line in lines))
    return kh


def _b64(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def test_the_right_key_alone_connects(sshd, tmp_path):
    r = sshd.runner(_kh(tmp_path, sshd.known_hosts_line()))
    assert r.run(["true"], timeout=10).stdout == "ok\n"
    r.close()


def test_a_key_listed_revoked_is_refused_naming_host_and_file(sshd, tmp_path):
    from sfcluster.errors import HostKeyError
    from sfcluster.exitcodes import Exit
    # the old plain line is still there: revocation wins over it
    kh = _kh(tmp_path, sshd.known_hosts_line(), f"@revoked * {_b64(sshd.host_key)}")
    r = sshd.runner(kh)
    with pytest.raises(HostKeyError) as e:
        r.run(["true"], timeout=10)
    text = str(e.value)
    assert text.startswith("[bob] ") and f"127.0.0.1:{sshd.port}" in text
    assert "REVOKED" in text and f"{kh}:2" in text
    assert e.value.exit_code == Exit.UNAVAILABLE


def test_a_revoked_key_is_refused_also_where_another_key_is_listed(sshd, tmp_path):
    from sfcluster.errors import HostKeyError
    other = paramiko.ECDSAKey.generate()
    kh = _kh(tmp_path, f"@revoked [127.0.0.1]:{sshd.port} {_b64(sshd.host_key)}",
             sshd.known_hosts_line(key=other))
    with pytest.raises(HostKeyError, match=r"REVOKED.*known_hosts:1"):
        sshd.runner(kh).run(["true"], timeout=10)


def test_a_cert_authority_line_is_skipped_and_plain_keys_still_work(sshd, tmp_path):
    ca = paramiko.ECDSAKey.generate()
    kh = _kh(tmp_path, f"@cert-authority *.example.org {_b64(ca)}", sshd.known_hosts_line())
    r = sshd.runner(kh)
    assert r.run(["true"], timeout=10).ok
    r.close()


def test_a_host_trusted_only_through_a_cert_authority_is_refused_saying_why(sshd, tmp_path):
    from sfcluster.errors import HostKeyError
    ca = paramiko.ECDSAKey.generate()
    kh = _kh(tmp_path, f"@cert-authority * {_b64(ca)}")
    with pytest.raises(HostKeyError) as e:
        sshd.runner(kh).run(["true"], timeout=10)
    text = str(e.value)
    assert "not in known_hosts" in text and f"{kh}:1" in text and "does not check host certificates" in text
