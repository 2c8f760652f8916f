"""SSH transport on Fabric/Paramiko.

Honours ~/.ssh/config (or a given file), the SSH agent, ProxyJump and known_hosts (its @revoked
lines too; see known_hosts.py). Host keys are always checked: an unknown, changed or revoked key is
an error (paramiko RejectPolicy), never a prompt and never auto-added. Every command is bounded
(channel.py): a stuck peer ends it by its deadline. Fabric's own gateway handling would auto-add jump hosts' keys, so ProxyJump is
resolved here and each hop gets the same policy.
"""
from __future__ import annotations

import logging
import os
import threading
import shlex
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import paramiko
from fabric import Config, Connection

from sfcluster.errors import ConnectError, HostKeyError
from sfcluster.remote import known_hosts
from sfcluster.remote.base import Input, OnData, Result, command_line
from sfcluster.remote.channel import ChannelCommand

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"

# paramiko logs every failed handshake with a traceback; our errors say it better.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)
LOG = logging.getLogger("sfcluster.ssh")   # --debug: each connection and command (cli/common.debug_option)


@dataclass(frozen=True)
class SshTarget:
    """How to reach one host. Unset fields defer to ssh_config, then to OpenSSH's defaults."""

    host: str
    name: str = ""
    user: Optional[str] = None
    port: Optional[int] = None
    identity_file: Optional[str] = None
    proxy_jump: Optional[str] = None
    known_hosts: Optional[str] = None
    config_file: Optional[str] = None
    connect_timeout: float = 8.0

    @property
    def label(self) -> str:
        return self.name or self.host


def _ssh_config(path: Optional[str]) -> Config:
    if path:
        return Config(runtime_ssh_path=os.path.expanduser(path))
    return Config()


def configured_jump(target: SshTarget, probe: Optional[Connection] = None) -> Optional[str]:
    """The jump host a connection to `target` goes through (`[user@]host[:port]`, or several, comma
    separated): the inventory's proxy_jump, else ssh_config's ProxyJump for that host; None for
    none. One answer for both ways to a node: this transport, and `sfcluster ssh` (ssh_argv.py)."""
    if probe is None:
        probe = Connection(target.host, config=_ssh_config(target.config_file), gateway=False)
    jump = target.proxy_jump or probe.ssh_config.get("proxyjump")
    return jump if jump and jump.lower() != "none" else None


def _open_connection(target: SshTarget, jump: Optional[str] = None) -> Connection:
    """A Fabric Connection with strict host-key checking on EVERY hop. Fabric, left to itself,
    builds the gateway of a ssh_config ProxyJump with its own client (AutoAddPolicy: an unknown
    jump host accepted silently) and recurses for `Host *` + ProxyJump: so the gateway is always
    ours (gateway=False when there is none) and a jump host is never itself jumped through."""
    host = jump or target.host
    config = _ssh_config(target.config_file)
    connect_kwargs: dict = {
        "banner_timeout": target.connect_timeout,
        "auth_timeout": target.connect_timeout,
    }
    if target.identity_file:
        connect_kwargs["key_filename"] = [os.path.expanduser(target.identity_file)]
    probe = Connection(host, config=config, gateway=False)  # only to read this host's ssh_config section
    gateway: object = False
    if jump is None:
        proxy_jump = configured_jump(target, probe)
        if proxy_jump:
            # "a,b" means through a then b: one hop is what we support
            hops = [h.strip() for h in proxy_jump.split(",") if h.strip()]
            if len(hops) != 1:
                raise ConnectError(target.label, "", f"ProxyJump with several hops ({proxy_jump}) is not supported",
                                   "use one jump host, or chain them in ~/.ssh/config")
            gateway = _open_connection(target, jump=hops[0])
        else:
            proxy_command = probe.ssh_config.get("proxycommand")
            if proxy_command and proxy_command.lower() != "none":
                gateway = proxy_command  # a socket only: the host key is still checked on this hop
    user = None
    port = None
    if jump is None:
        user, port = target.user, target.port
    else:
        # "user@host:port" form of a jump spec
        spec = jump
        if "@" in spec:
            user, spec = spec.split("@", 1)
        if ":" in spec:
            spec, p = spec.rsplit(":", 1)
            port = int(p)
        host = spec
    conn = Connection(host, user=user, port=port, config=config, gateway=gateway,
                      connect_timeout=target.connect_timeout, connect_kwargs=connect_kwargs)
    # known_hosts: the inventory's, else ssh_config's UserKnownHostsFile, else OpenSSH's defaults;
    # then the global file. Markers (@revoked, @cert-authority) are read as known_hosts.py says.
    known = target.known_hosts or conn.ssh_config.get("userknownhostsfile") or DEFAULT_KNOWN_HOSTS
    paths = [os.path.expanduser(p) for p in (shlex.split(known) if " " in known else [known])]
    trusted = known_hosts.load((p for p in [*paths, GLOBAL_KNOWN_HOSTS] if os.path.exists(p)),
                               conn.client.get_host_keys())
    conn.client.set_missing_host_key_policy(known_hosts.StrictPolicy(trusted, paths))
    return conn


def _trust_of(conn: Connection) -> known_hosts.StrictPolicy:
    """The policy _open_connection gave this connection (paramiko has no getter for it)."""
    policy = conn.client._policy
    assert isinstance(policy, known_hosts.StrictPolicy)
    return policy


class SshRunner:
    """Runner over one persistent SSH connection (opened on first use, reused after)."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self.name = target.label
        self._conn: Optional[Connection] = None
        self.user = target.user or ""

    # -- connection -------------------------------------------------------------------------
    def connect(self) -> None:
        if self._conn is not None and self._conn.is_connected:
            return
        conn = _open_connection(self.target)
        where = f"{conn.user}@{conn.host}:{conn.port}"
        policy = _trust_of(conn)
        trusted = policy.known
        started = time.monotonic()
        LOG.debug("[%s] ssh %s%s; host keys from %s", self.name, where,
                  f" via {self.target.proxy_jump}" if self.target.proxy_jump else "", ", ".join(policy.files))
        try:
            conn.open()
            LOG.debug("[%s] connected in %.2f s, host key verified", self.name, time.monotonic() - started)
        except known_hosts.RevokedHostKey as e:
            raise self._revoked(where, e.key, e.where) from e
        except paramiko.BadHostKeyException as e:
            revoked_at = trusted.revoked_at(e.key)
            if revoked_at:  # the host has another key of that type listed: still, this one is revoked
                raise self._revoked(where, e.key, revoked_at) from e
            raise HostKeyError(
                self.name, "", f"host key of {where} does NOT match known_hosts ({e.key.get_name()})",
                f"if the host was really reinstalled, remove its old key: ssh-keygen -R '[{conn.host}]:{conn.port}'"
                " and add the new one after checking its fingerprint out of band") from e
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                files = ", ".join(policy.files)
                ca = (f"; the @cert-authority line(s) at {', '.join(trusted.cert_authorities[:3])} were skipped: "
                      "sfcluster does not check host certificates, only hosts' own keys"
                      if trusted.cert_authorities else "")
                raise HostKeyError(
                    self.name, "", f"host key of {where} is not in known_hosts ({files}){ca}",
                    f"verify the fingerprint out of band, then add it: ssh-keyscan -p {conn.port} {conn.host} >> ~/.ssh/known_hosts") from e
            if "banner" in str(e):  # TCP connected, but no "SSH-2.0-..." line came back
                raise ConnectError(self.name, "", f"{where} accepted the connection but no SSH server answered ({e})",
                                   f"check that sshd listens on port {conn.port} there; a proxy or NAT on the way "
                                   "can accept connections for hosts that are not up") from e
            raise ConnectError(self.name, "", f"SSH to {where} failed: {e}",
                               "check user, key (ssh-agent or identity_file) and that sshd runs") from e
        except (OSError, EOFError) as e:
            raise ConnectError(self.name, "", f"cannot reach {where}: {e}",
                               "check the address, the sshd port and any firewall between") from e
        self._conn = conn
        self.user = conn.user

    def _revoked(self, where: str, key: paramiko.PKey, listed_at: str) -> HostKeyError:
        return HostKeyError(
            self.name, "", f"host key of {where} is REVOKED: its {key.get_name()} key is listed @revoked at {listed_at}",
            "refused: a revoked key may be in an attacker's hands. Give the host a new key, check its "
            "fingerprint out of band and add it to known_hosts")

    @property
    def transport(self) -> paramiko.Transport:
        self.connect()
        assert self._conn is not None and self._conn.transport is not None
        return self._conn.transport

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- commands -----------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: Optional[float] = None,
            stdin: Input = None) -> Result:
        if sudo and not self.user:
            self.connect()  # whether sudo is needed depends on who we log in as
        command = command_line(argv, sudo=sudo, user=self.user)
        out, err = bytearray(), bytearray()
        start = time.monotonic()
        code = self._exec(command, stdin=stdin, timeout=timeout, on_stdout=out.extend, on_stderr=err.extend,
                          keep_stdin_open=False)
        return Result(self.name, command, code, out.decode(errors="replace"), err.decode(errors="replace"),
                      time.monotonic() - start)

    def stream(self, argv: Sequence[str], *, on_stdout: OnData = None, on_stderr: OnData = None,
               keep_stdin_open: bool = False, stop: Optional[threading.Event] = None,
               close_stdin: Optional[threading.Event] = None, stdin: Input = None,
               timeout: Optional[float] = None, idle_timeout: Optional[float] = None) -> int:
        """Run and hand output over as it arrives. `stdin` is sent first (a request, a secret).
        With keep_stdin_open the remote stdin stays open for the life of the connection: the
        remote side sees EOF when we go away (even SIGKILL). `timeout` bounds the whole command,
        `idle_timeout` the silence between two pieces of output (for commands that beat)."""
        return self._exec(command_line(argv, sudo=False, user=self.user), stdin=stdin, timeout=timeout,
                          on_stdout=on_stdout, on_stderr=on_stderr, keep_stdin_open=keep_stdin_open, stop=stop,
                          close_stdin=close_stdin, idle_timeout=idle_timeout)

    def _exec(self, command: str, *, stdin: Input, timeout: Optional[float], on_stdout: OnData,
              on_stderr: OnData, keep_stdin_open: bool, stop: Optional[threading.Event] = None,
              close_stdin: Optional[threading.Event] = None, idle_timeout: Optional[float] = None) -> int:
        transport = self.transport
        # the transport sends keepalives so a silent peer is noticed by TCP too
        transport.set_keepalive(5)
        started = time.monotonic()
        shown = command if len(command) <= 300 else command[:300] + f"... ({len(command)} chars)"
        try:
            code = ChannelCommand(transport, self.name, command, connect_timeout=self.target.connect_timeout,
                                  stdin=stdin, timeout=timeout, idle_timeout=idle_timeout, on_stdout=on_stdout,
                                  on_stderr=on_stderr, keep_stdin_open=keep_stdin_open, stop=stop,
                                  close_stdin=close_stdin).run()
        except BaseException as e:
            LOG.debug("[%s] %s after %.2f s: %s", self.name, type(e).__name__, time.monotonic() - started, shown)
            raise
        LOG.debug("[%s] exit %s in %.2f s: %s", self.name, code, time.monotonic() - started, shown)
        return code
