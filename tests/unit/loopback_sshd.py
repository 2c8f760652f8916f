"""A loopback SSH server built on paramiko's server interface, for tests of the SSH transport
that need a peer misbehaving in a precise way (never reads stdin, never answers exec, stops
reading TCP). Host-key checking stays strict: the server has its own host key, and `known_hosts`
writes the line a client must be handed to trust it. With SHELL it is a small real sshd: each
command runs under `sh -c` here (as the test's user), and `direct-tcpip` channels (ssh -W, a
tunnel) are connected to the TCP address asked for, as sshd's AllowTcpForwarding does."""
from __future__ import annotations

import select
import socket
import subprocess
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import paramiko

from sfcluster.remote.ssh import SshRunner, SshTarget

# what a command does on the server
ANSWER = "answer"  # prints "ok", exits 0 (after reading its stdin to EOF)
NO_READ = "no-read"  # accepts the exec, never reads stdin, never exits
NO_EXEC_ANSWER = "no-exec-answer"  # never answers the exec request
SHELL = "shell"  # runs the command with `sh -c` here: its stdout, stderr and exit code


class _Server(paramiko.ServerInterface):
    def __init__(self, sshd: "LoopbackSshd") -> None:
        self.sshd = sshd
        self.forwards: Dict[int, socket.socket] = {}  # channel id -> its connected TCP socket

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
        if self.sshd.behaviour == SHELL:
            threading.Thread(target=self.sshd.shell, args=(channel, command.decode()), daemon=True).start()
        return True

    def check_channel_direct_tcpip_request(self, chanid: int, origin: Tuple[str, int],
                                           destination: Tuple[str, int]) -> int:
        if not self.sshd.forwarding:
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self.sshd.forwarded.append((destination[0], int(destination[1])))
        try:
            self.forwards[chanid] = socket.create_connection(destination, timeout=3)
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        return paramiko.OPEN_SUCCEEDED


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
        self.forwarding = behaviour == SHELL
        self.forwarded: List[Tuple[str, int]] = []  # every destination a direct-tcpip channel asked for
        self.commands: List[str] = []  # SHELL: every command line run
        self._procs: List[subprocess.Popen] = []
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
            server = _Server(self)
            try:
                t.start_server(server=server)
            except (paramiko.SSHException, EOFError, OSError):
                continue
            threading.Thread(target=self._channels_of, args=(t, server), daemon=True).start()

    def _channels_of(self, t: paramiko.Transport, server: _Server) -> None:
        while t.is_active():
            chan = t.accept(0.5)
            if chan is not None:
                self.accepted.append(chan)  # held: a channel nobody holds is closed when collected
                sock = server.forwards.pop(chan.get_id(), None)
                if sock is not None:
                    threading.Thread(target=_relay, args=(chan, sock), daemon=True).start()

    def shell(self, channel: paramiko.Channel, command: str) -> None:
        """SHELL: `command` as sshd runs it (the login shell's -c), output and exit code back."""
        self.commands.append(command)
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self._procs.append(proc)
        out, err = proc.communicate()
        try:
            channel.sendall(out)
            channel.sendall_stderr(err)
            channel.send_exit_status(proc.returncode)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client went away (a timeout)
        channel.close()

    def stop(self) -> None:
        self.release.set()
        self._listener.close()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for t in self.transports:
            t.close()


def _relay(chan: paramiko.Channel, sock: socket.socket) -> None:
    """Bytes both ways between a direct-tcpip channel and its TCP connection, until both end."""
    sock.settimeout(None)
    open_ends = {"chan": True, "sock": True}
    try:
        while any(open_ends.values()):
            readers = [x for x, name in ((chan, "chan"), (sock, "sock")) if open_ends[name]]
            ready, _, _ = select.select(readers, [], [], 0.5)
            for r in ready:
                if r is chan:
                    data = chan.recv(65536)
                    if data:
                        sock.sendall(data)
                    else:
                        open_ends["chan"] = False
                        sock.shutdown(socket.SHUT_WR)
                else:
                    data = sock.recv(65536)
                    if data:
                        chan.sendall(data)
                    else:
                        open_ends["sock"] = False
                        chan.shutdown_write()
            if chan.closed:
                break
    except (OSError, ValueError, EOFError, paramiko.SSHException):  # ValueError: select on a socket closed meanwhile
        pass
    finally:
        sock.close()
        chan.close()


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
