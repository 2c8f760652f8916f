"""gate.py: the TLS-only door of a link port, against real sockets on loopback (no SecretFlow)."""
from __future__ import annotations

import os
import socket
import threading

import pytest

from sfcluster import gate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _echo_server(path: str) -> socket.socket:
    """A unix-socket link stand-in that answers every byte it gets with "got:" + the bytes."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                data = c.recv(4096)
                c.sendall(b"got:" + data)
    threading.Thread(target=serve, daemon=True).start()
    return srv


@pytest.fixture
def private_root(tmp_path):
    root = tmp_path / "sfc-x"
    root.mkdir(mode=0o700)
    root.chmod(0o700)
    return root


def test_clear_text_is_closed_unanswered_and_a_tls_hello_reaches_the_link(private_root):
    inner = gate.private_socket_path(str(private_root), "spu.sock")
    srv = _echo_server(inner)
    port = _free_port()
    g = gate.Gate("spu", "127.0.0.1", port, inner)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"POST /org.interconnection.link.ReceiverService/Push HTTP/1.1\r\nHost: x\r\n\r\n{}")
            try:  # closed unanswered: an EOF, or a reset (the gate closed with the request unread)
                answer = c.recv(100)
            except ConnectionResetError:
                answer = b""
            assert answer == b""
        assert g.refused == 1
        hello = b"\x16\x03\x01\x00\x05hello"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(hello)
            assert c.recv(100) == b"got:" + hello  # byte for byte to the link, and back
    finally:
        g.close()
        srv.close()


def test_the_gate_holds_the_public_port():
    port = _free_port()
    g = gate.Gate("spu", "127.0.0.1", port, "/nonexistent/spu.sock")
    try:
        with pytest.raises(OSError):
            gate.Gate("spu", "127.0.0.1", port, "/nonexistent/other.sock")
    finally:
        g.close()


def test_the_socket_goes_only_into_a_directory_of_this_user_alone(tmp_path, private_root):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    with pytest.raises(OSError, match="0700"):
        gate.private_socket_path(str(open_dir), "spu.sock")
    link = tmp_path / "link"
    link.symlink_to(private_root)
    with pytest.raises(OSError, match="alone"):
        gate.private_socket_path(str(link), "spu.sock")
    with pytest.raises(OSError, match="too long"):
        gate.private_socket_path(str(private_root), "s" * 120)


def test_a_stale_socket_of_an_earlier_run_is_removed_and_a_regular_file_is_not(private_root):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(private_root / "spu.sock"))
    stale.close()
    assert gate.private_socket_path(str(private_root), "spu.sock") == str(private_root / "spu.sock")
    assert not (private_root / "spu.sock").exists()
    (private_root / "spu.sock").write_text("not a socket")
    gate.private_socket_path(str(private_root), "spu.sock")
    assert (private_root / "spu.sock").read_text() == "not a socket"


def test_the_door_answers_where_it_listens(private_root):
    port = _free_port()
    d = gate.SpuDoor("bob", "127.0.0.1", port, str(private_root), "spu.sock")
    try:
        assert d.where() == {"party": "bob", "host": socket.gethostname(), "inner": str(private_root / "spu.sock")}
        assert d.refused() == 0
    finally:
        d.gate.close()
    assert os.stat(private_root).st_mode & 0o777 == 0o700
