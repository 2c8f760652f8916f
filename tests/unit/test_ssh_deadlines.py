"""Every SSH operation ends by the command's deadline, whatever the peer does: a command that never
reads its stdin, an sshd that never answers the exec request, a peer that stops reading TCP (as a
stopped sshd does). Against a loopback SSH server (tests/unit/loopback_sshd.py), host keys checked."""
from __future__ import annotations

import time

import pytest

from sfcluster.errors import CommandTimeout
from sfcluster.exitcodes import Exit
from tests.unit.loopback_sshd import ANSWER, NO_EXEC_ANSWER, NO_READ, FreezingProxy, LoopbackSshd

BIG = 16 << 20  # 16 MiB: far more than a channel window (2 MiB) or a socket buffer
LIMIT = 5.0
BOUND = 10.0  # generous: the command's own limit plus the time to close


class Zeros:
    """A binary stream of `size` zero bytes, read like a file (never held whole in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


@pytest.fixture
def sshd(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys or config of whoever runs the tests
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    servers = []

    def start(behaviour: str, **kw) -> LoopbackSshd:
        s = LoopbackSshd(tmp_path, behaviour, **kw)
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.stop()


def _known_hosts(tmp_path, *lines: str):
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(line + "\n" for line in lines))
    return kh


def _recording(runner):
    """The channels the runner opens, to check none is left open."""
    opened = []
    transport = runner.transport
    real = transport.open_session

    def open_session(*a, **kw):
        chan = real(*a, **kw)
        opened.append(chan)
        return chan
    transport.open_session = open_session
    return opened


def _timed(fn):
    start = time.monotonic()
    with pytest.raises(CommandTimeout) as e:
        fn()
    return time.monotonic() - start, e.value


def test_a_command_that_works_still_works(sshd, tmp_path):
    s = sshd(ANSWER)
    r = s.runner(_known_hosts(tmp_path, s.known_hosts_line()))
    res = r.run(["cat"], stdin=b"x" * BIG, timeout=LIMIT)  # the window is refilled as it reads
    assert (res.exit_code, res.stdout) == (0, "ok\n")
    assert r.run(["true"], timeout=LIMIT).ok  # the connection is reused
    r.close()


def test_a_command_that_never_reads_stdin_ends_by_its_deadline(sshd, tmp_path):
    s = sshd(NO_READ)
    r = s.runner(_known_hosts(tmp_path, s.known_hosts_line()))
    opened = _recording(r)
    took, err = _timed(lambda: r.run(["cat"], stdin=b"x" * BIG, timeout=LIMIT))
    assert LIMIT - 0.5 < took < BOUND
    text = str(err)
    assert text.startswith("[bob] ") and "did not finish within 5 s" in text
    assert "of its 16.0 MiB input" in text  # says how far its input got
    assert err.exit_code == Exit.UNAVAILABLE
    assert opened and all(c.closed for c in opened)
    deadline = time.monotonic() + 3
    while not all(c.closed for c in s.channels) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.channels and all(c.closed for c in s.channels)  # the server saw it closed too
    r.close()


def test_a_streamed_input_that_is_never_read_ends_by_the_deadline(sshd, tmp_path):
    s = sshd(NO_READ)
    r = s.runner(_known_hosts(tmp_path, s.known_hosts_line()))
    took, err = _timed(lambda: r.run(["cat"], stdin=Zeros(BIG), timeout=LIMIT))
    assert took < BOUND and "did not finish within 5 s" in str(err)
    r.close()


def test_an_exec_request_never_answered_ends_by_the_deadline(sshd, tmp_path):
    s = sshd(NO_EXEC_ANSWER)
    r = s.runner(_known_hosts(tmp_path, s.known_hosts_line()))
    opened = _recording(r)
    took, err = _timed(lambda: r.run(["true"], timeout=LIMIT))
    assert LIMIT - 0.5 < took < BOUND
    assert str(err).startswith("[bob] ") and "did not start `true` within 5 s" in str(err)
    assert err.exit_code == Exit.UNAVAILABLE
    assert opened and all(c.closed for c in opened)
    r.close()


def test_an_exec_request_never_answered_is_bounded_without_a_timeout(sshd, tmp_path):
    s = sshd(NO_EXEC_ANSWER)
    r = s.runner(_known_hosts(tmp_path, s.known_hosts_line()))
    r.target = type(r.target)(**{**r.target.__dict__, "connect_timeout": 2.0})
    took, err = _timed(lambda: r.stream(["true"]))  # no timeout, no idle limit: still bounded
    assert took < BOUND and "did not start" in str(err)
    r.close()


def test_stream_with_an_idle_limit_and_unread_stdin_ends(sshd, tmp_path):
    s = sshd(NO_READ)
    r = s.runner(_known_hosts(tmp_path, s.known_hosts_line()))
    took, err = _timed(lambda: r.stream(["cat"], stdin=b"x" * BIG, idle_timeout=LIMIT, keep_stdin_open=True))
    assert LIMIT - 0.5 < took < BOUND
    assert "went silent for 5 s" in str(err)
    r.close()


def test_stream_with_an_idle_limit_and_no_exec_answer_ends(sshd, tmp_path):
    s = sshd(NO_EXEC_ANSWER)
    r = s.runner(_known_hosts(tmp_path, s.known_hosts_line()))
    took, err = _timed(lambda: r.stream(["true"], idle_timeout=LIMIT))
    assert took < BOUND and "did not start" in str(err)
    r.close()


def test_a_peer_that_stops_reading_tcp_ends_by_the_deadline(sshd, tmp_path):
    # the server offers a window far larger than the input, so only TCP can hold the client back:
    # its socket write blocks inside paramiko, where no channel timeout reaches
    s = sshd(NO_READ, window=1 << 30)
    proxy = FreezingProxy(s.port)
    s.freeze_on_exec = proxy.freeze
    try:
        r = s.runner(_known_hosts(tmp_path, s.known_hosts_line(port=proxy.port)), port=proxy.port)
        took, err = _timed(lambda: r.run(["cat"], stdin=Zeros(256 << 20), timeout=LIMIT))
        assert took < BOUND and "did not finish within 5 s" in str(err)
        r.close()
    finally:
        proxy.stop()


def test_an_input_the_node_stops_taking_ends_long_before_a_long_deadline(sshd, tmp_path, monkeypatch):
    # data push and provision give their uploads an hour: a node that takes none of the input
    # (and says nothing) for STDIN_STALL ends them well before that
    from sfcluster.remote import channel
    monkeypatch.setattr(channel, "STDIN_STALL", 3.0)
    s = sshd(NO_READ)
    r = s.runner(_known_hosts(tmp_path, s.known_hosts_line()))
    took, err = _timed(lambda: r.run(["cat"], stdin=Zeros(BIG), timeout=3600))
    assert 2.5 < took < BOUND
    assert "took none of its input for 3 s" in str(err) and "of its input" in str(err)
    r.close()
