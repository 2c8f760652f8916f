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
    assert _policy(conn) is paramiko.RejectPolicy and _policy(gw) is paramiko.RejectPolicy
    assert conn.client.get_host_keys().lookup("10.0.0.5") is not None
    assert gw.client.get_host_keys().lookup("10.0.0.5") is not None  # the same known_hosts on every hop


def test_no_gateway_means_none_at_all(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("# nothing\n")
    conn = _open_connection(SshTarget(host="10.0.0.5", config_file=str(cfg)))
    assert conn.gateway is False and _policy(conn) is paramiko.RejectPolicy


def test_proxycommand_is_a_socket_only_and_keys_are_still_checked(tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host 10.0.0.5\n  ProxyCommand nc -q0 %h %p\n")
    conn = _open_connection(SshTarget(host="10.0.0.5", config_file=str(cfg)))
    assert isinstance(conn.gateway, str) and conn.gateway.startswith("nc ")
    assert _policy(conn) is paramiko.RejectPolicy


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
