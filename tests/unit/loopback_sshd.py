"""A loopback SSH server built on paramiko's server interface, for tests of the SSH transport
that need a peer misbehaving in a precise way (never reads stdin, never answers exec, stops
reading TCP). Host-key checking stays strict: the server has its own host key, and `known_hosts`
writes the line a client must be handed to trust it."""
from __future__ import annotations

import select
import socket
import threading
from pathlib import Path
from typing import List, Optional

import paramiko

from sfcluster.remote.ssh import SshRunner, SshTarget

# what a command does on the server
ANSWER = "answer"  # prints "ok", exits 0 (after reading its stdin to EOF)
NO_READ = "no-read"  # accepts the exec, never reads stdin, never exits
NO_EXEC_ANSWER = "no-exec-answer"  # never answers the exec request


class _Server(paramiko.ServerInterface):
    def __init__(self, sshd: "LoopbackSshd") -> None:
        self.sshd = sshd

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = key.asbytes() == self.sshd.client_key.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.sshd.channels.append(channel)
        if self.sshd.behaviour == NO_EXEC_ANSWER:
            # this runs in the server transport's thread: nothing at all is answered until released
            self.sshd.release.wait(60)
            return False
        if self.sshd.freeze_on_exec is not None:
            self.sshd.freeze_on_exec.set()  # the proxy stops reading what the client sends
        if self.sshd.behaviour == ANSWER:
            threading.Thread(target=_answer, args=(channel,), daemon=True).start()
        return True


def _answer(channel: paramiko.Channel) -> None:
    while channel.recv(65536):
        pass
    channel.sendall(b"ok\n")
    channel.send_exit_status(0)
    channel.close()


class LoopbackSshd:
    """Serves on 127.0.0.1 until stop(). `window` is the channel window it offers the client."""

    def __init__(self, tmp: Path, behaviour: str = ANSWER, window: Optional[int] = None) -> None:
        self.behaviour = behaviour
        self.host_key = paramiko.ECDSAKey.generate()
        self.client_key = paramiko.ECDSAKey.generate()
        self.identity = tmp / "id_ecdsa"
        self.client_key.write_private_key_file(str(self.identity))
        self.ssh_config = tmp / "ssh_config"
        self.ssh_config.write_text("# empty: nothing from ~/.ssh/config\n")
        self.window = window
        self.channels: List[paramiko.Channel] = []
        self.transports: List[paramiko.Transport] = []
        self.accepted: List[paramiko.Channel] = []
        self.release = threading.Event()
        self.freeze_on_exec: Optional[threading.Event] = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def known_hosts_line(self, port: Optional[int] = None, key: Optional[paramiko.PKey] = None) -> str:
        key = key or self.host_key
        return f"[127.0.0.1]:{port or self.port} {key.get_name()} {key.get_base64()}"

    def runner(self, known_hosts: Path, port: Optional[int] = None) -> SshRunner:
        return SshRunner(SshTarget(host="127.0.0.1", name="bob", user="tester", port=port or self.port,
                                   identity_file=str(self.identity), known_hosts=str(known_hosts),
                                   config_file=str(self.ssh_config), connect_timeout=3.0))

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            kw = {"default_window_size": self.window} if self.window else {}
            t = paramiko.Transport(sock, **kw)
            t.add_server_key(self.host_key)
            self.transports.append(t)
            try:
                t.start_server(server=_Server(self))
            except (paramiko.SSHException, EOFError, OSError):
                continue
            threading.Thread(target=self._channels_of, args=(t,), daemon=True).start()

    def _channels_of(self, t: paramiko.Transport) -> None:
        while t.is_active():
            chan = t.accept(0.5)
            if chan is not None:
                self.accepted.append(chan)  # held: a channel nobody holds is closed when collected

    def stop(self) -> None:
        self.release.set()
        self._listener.close()
        for t in self.transports:
            t.close()


class FreezingProxy:
    """A TCP relay to `port` that, once `freeze` is set, stops reading what the client sends (as a
    stopped sshd or a stalled link does): the client's socket writes then block for good."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.freeze = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._socks: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            server = socket.create_connection(("127.0.0.1", self.target))
            self._socks += [client, server]
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                readers = [server] if self.freeze.is_set() else [client, server]
                ready, _, _ = select.select(readers, [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (server if s is client else client).sendall(data)
        except OSError:
            return

    def stop(self) -> None:
        self._listener.close()
        for s in self._socks:
            s.close()
