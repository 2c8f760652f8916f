"""A local port forward over an SSH connection we already trust (`sfcluster dashboard`).

127.0.0.1:LOCAL on this machine, and nothing else: the far end (the head's Ray dashboard) has no
login of its own, so anyone who can reach the local port can drive Ray; loopback keeps it to this
machine's own users, as Ray's loopback bind keeps it to the head's. Each accepted connection gets
its own `direct-tcpip` channel on the transport of the node's SshRunner (the same host-key checks
as every command), and two threads copy bytes each way until either side ends.
"""
from __future__ import annotations

import errno
import socket
import threading
from typing import Callable, List, Optional, Tuple

import paramiko

from sfcluster.errors import SfclusterError, UnavailableError

LOOPBACK = "127.0.0.1"
ACCEPT_WAIT = 0.5   # the accept loop looks at `stop` and the SSH connection this often
CHUNK = 65536
# paramiko's ChannelException codes (RFC 4254 section 5.1), as an operator reads them
OPEN_REFUSED = {
    1: "refused by the node's sshd (AllowTcpForwarding no, or PermitOpen excludes it)",
    2: "nothing answers there (is it running?)",
}


class TunnelError(SfclusterError):
    """The local end of the tunnel cannot be opened (the port is taken)."""


class Link:
    """One accepted connection and its channel; closed as a pair when either side ends."""

    def __init__(self, sock: socket.socket, chan: paramiko.Channel) -> None:
        self.sock, self.chan = sock, chan
        self._lock = threading.Lock()
        self._open_halves = 2

    def start(self) -> None:
        threading.Thread(target=self._local_to_remote, daemon=True).start()
        threading.Thread(target=self._remote_to_local, daemon=True).start()

    def _local_to_remote(self) -> None:
        try:
            while True:
                data = self.sock.recv(CHUNK)
                if not data:
                    self.chan.shutdown_write()  # the far end sees EOF, and may still answer
                    break
                self.chan.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            self.close()
        self._half_done()

    def _remote_to_local(self) -> None:
        try:
            while True:
                data = self.chan.recv(CHUNK)
                if not data:
                    self.sock.shutdown(socket.SHUT_WR)
                    break
                self.sock.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            self.close()
        self._half_done()

    def _half_done(self) -> None:
        with self._lock:
            self._open_halves -= 1
            last = self._open_halves == 0
        if last:
            self.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in the other thread
        except OSError:
            pass
        self.sock.close()
        self.chan.close()


class LocalTunnel:
    """Forwards 127.0.0.1:`local_port` to `destination` as the SSH server (node `name`) sees it.
    Steps: `probe` (the far end answers), `listen` (the local port), `serve` (until `stop`, Ctrl-C
    or the SSH connection's end), `close` (every connection and the listener)."""

    def __init__(self, transport: paramiko.Transport, name: str, destination: Tuple[str, int], local_port: int,
                 *, open_timeout: float = 8.0, on_problem: Optional[Callable[[str], None]] = None) -> None:
        self.transport, self.name, self.destination = transport, name, destination
        self.local_port, self.open_timeout = local_port, open_timeout
        self.on_problem = on_problem or (lambda msg: None)
        self._listener: Optional[socket.socket] = None
        self._links: List[Link] = []
        self._lock = threading.Lock()
        transport.set_keepalive(5)  # a head that vanishes is noticed, and serve() ends saying so

    @property
    def where(self) -> str:
        return f"{self.destination[0]}:{self.destination[1]} on {self.name}"

    def _open_channel(self, origin: Tuple[str, int]) -> paramiko.Channel:
        try:
            return self.transport.open_channel("direct-tcpip", dest_addr=self.destination, src_addr=origin,
                                               timeout=self.open_timeout)
        except paramiko.ChannelException as e:  # the node's sshd answered: the far end is not to be had
            why = OPEN_REFUSED.get(e.code, e.text)
            raise UnavailableError(f"[{self.name}] cannot open a tunnel to {self.where}: {why}",
                              "check that it runs there (`sfcluster status`), and that the node's sshd allows "
                              "TCP forwarding (AllowTcpForwarding yes, the default)") from e
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise UnavailableError(f"[{self.name}] the SSH connection broke while opening a tunnel to {self.where}: {e}",
                                   "check the node, then try again") from e

    def probe(self) -> None:
        """Open one channel and close it: the far end answers, or the error says why not."""
        self._open_channel((LOOPBACK, 0)).close()

    def listen(self) -> int:
        """Bind 127.0.0.1:local_port (0: any free one); the bound port."""
        try:
            self._listener = socket.create_server((LOOPBACK, self.local_port))
        except OSError as e:
            taken = e.errno == errno.EADDRINUSE
            raise TunnelError(f"cannot listen on {LOOPBACK}:{self.local_port}: "
                              + ("the port is taken by another program" if taken else str(e)),
                              "pick another local port: --port N (or --port 0 for any free one)") from e
        self._listener.settimeout(ACCEPT_WAIT)
        return int(self._listener.getsockname()[1])

    def serve(self, stop: Optional[threading.Event] = None) -> None:
        """Accept and forward until `stop` is set; raises when the SSH connection ends under us."""
        assert self._listener is not None, "listen() first"
        while stop is None or not stop.is_set():
            if not self.transport.is_active():
                raise UnavailableError(f"[{self.name}] the SSH connection ended: the tunnel to {self.where} is closed",
                                       "check the node, then open the tunnel again")
            try:
                sock, origin = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if stop is not None and stop.is_set():
                    return
                raise
            self._forward(sock, origin)

    def _forward(self, sock: socket.socket, origin: Tuple[str, int]) -> None:
        sock.settimeout(None)
        try:
            chan = self._open_channel(origin)
        except SfclusterError as e:  # this connection only: the next one may get through
            sock.close()
            self.on_problem(e.message)
            return
        link = Link(sock, chan)
        with self._lock:
            self._links = [lk for lk in self._links if not lk.chan.closed]
            self._links.append(link)
        link.start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()
