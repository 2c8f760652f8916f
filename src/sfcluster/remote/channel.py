"""One remote command on its own SSH channel, every wait bounded.

paramiko waits without a limit in three places a stuck peer can hold for ever: the answer to the
exec request, a send while the channel window is shut (a command that never reads its stdin), and
a socket write while TCP is full (a peer that stopped reading: a stopped sshd, a stalled link).
Here stdin is fed only as far as the window is open, in short waits; and a watchdog ends whatever
overstays: at the limit it closes the channel (which wakes paramiko's waits), and if the command's
thread is still held CLOSE_GRACE s later, it closes the connection, which is wedged for every
channel by then (the runner opens a new one on next use).

The limits: the exec answer comes within the command's deadline or idle limit, or, when the
caller gives neither, within the connect timeout (the answer is the second half of opening a
session, whose first half, the channel open, has the same bound). The command then ends by its
deadline (`timeout`), or when it has been silent for `idle_timeout` (no output and no stdin taken),
or, while it has input still to take, when it has taken none and said nothing for STDIN_STALL.
"""
from __future__ import annotations

import select
import socket
import threading
import time
from typing import Callable, Optional

import paramiko

from sfcluster.errors import CommandTimeout
from sfcluster.remote.base import STREAM_CHUNK, Input, OnData
from sfcluster.sizes import human_size

CLOSE_GRACE = 2.0  # after closing the channel, how long before the connection is closed too
SEND_WAIT = 0.05  # a send waits this long at most for the window to open (then output is read)
SEND_PER_TURN = 1 << 20  # stdin sent between two reads of output
HEARTBEAT = 1.0
# a command with input still to take that has taken none and said nothing for this long is stuck,
# whatever its deadline (data push and provision give an upload an hour): the node scripts that
# take a stream read it as it comes
STDIN_STALL = 60.0
START, DEADLINE, IDLE, STALL = "start", "deadline", "idle", "stall"  # the limits a command can run out of


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - closing what is already broken: nothing to report
        pass


class Watchdog:
    """Ends a command at its limit even where paramiko blocks (see the module's docstring). The
    command's thread moves the limit with arm(), checks `fired` after every step, and stop()s it."""

    def __init__(self, transport: paramiko.Transport) -> None:
        self._transport = transport
        self._chan: Optional[paramiko.Channel] = None
        self._cv = threading.Condition()
        self._at: Optional[float] = None
        self._why = START
        self._done = False
        self.fired: Optional[str] = None  # the limit that ran out
        threading.Thread(target=self._watch, name="sfcluster-ssh-watchdog", daemon=True).start()

    def watch(self, chan: paramiko.Channel) -> None:
        self._chan = chan

    def arm(self, at: Optional[float], why: str) -> None:
        """Fire at monotonic time `at` (None: never) for limit `why`."""
        with self._cv:
            earlier = at is not None and (self._at is None or at < self._at)
            self._at, self._why = at, why
            if earlier:
                self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._done = True
            self._cv.notify()

    def _watch(self) -> None:
        with self._cv:
            while not self._done:
                now = time.monotonic()
                if self._at is not None and now >= self._at:
                    self.fired = self._why
                    break
                self._cv.wait(None if self._at is None else self._at - now)
            if self._done:
                return
        chan = self._chan
        if chan is not None:  # in its own thread: the close itself may block on a wedged socket
            threading.Thread(target=_quietly, args=(chan.close,), name="sfcluster-ssh-close", daemon=True).start()
        with self._cv:
            if self._cv.wait_for(lambda: self._done, CLOSE_GRACE):
                return
        _quietly(self._transport.close)  # wakes a socket write that TCP holds: paramiko gives it up


class StdinFeed:
    """A command's stdin still to send (a request, a secret, a stream read as it goes), sent only as
    far as the channel window lets it, so a command that never reads it can never hold us."""

    def __init__(self, data: Input) -> None:
        if isinstance(data, str):
            data = data.encode()
        self._stream = None if data is None or isinstance(data, bytes) else data
        self._buf = data if isinstance(data, bytes) else b""
        self._off = 0
        self.total: Optional[int] = len(data) if isinstance(data, bytes) else None
        self.sent = 0
        self.done = data is None or data == b""  # all of it sent
        self.dropped = False  # the channel stopped taking it before the end

    @property
    def pending(self) -> bool:
        return not self.done and not self.dropped

    def feed(self, chan: paramiko.Channel) -> int:
        """Send what the window takes (waiting SEND_WAIT at most for it to open); the bytes sent.
        Raises OSError once the command has closed its end."""
        sent = 0
        while not self.done and sent < SEND_PER_TURN:
            if self._off >= len(self._buf):
                block = self._stream.read(STREAM_CHUNK) if self._stream is not None else b""  # type: ignore[attr-defined]
                if not block:
                    self.done = True
                    break
                self._buf, self._off = block, 0
            try:
                n = chan.send(self._buf[self._off:self._off + 65536])
            except socket.timeout:  # the window stayed shut: the command is not reading now
                break
            if n <= 0:
                raise OSError("the channel no longer takes input")
            self._off += n
            self.sent += n
            sent += n
        return sent

    def progress(self) -> str:
        if self.done:
            return ""
        of = f"of its {human_size(self.total)} input" if self.total is not None else "of its input"
        return f" (sent {human_size(self.sent)} {of})"


class ChannelCommand:
    """Runs `command` on a new channel of `transport`: start, feed stdin, pump output, exit status."""

    def __init__(self, transport: paramiko.Transport, host: str, command: str, *, connect_timeout: float,
                 stdin: Input, timeout: Optional[float], idle_timeout: Optional[float], on_stdout: OnData,
                 on_stderr: OnData, keep_stdin_open: bool, stop: Optional[threading.Event],
                 close_stdin: Optional[threading.Event]) -> None:
        self.transport, self.host, self.command = transport, host, command
        self.connect_timeout, self.timeout, self.idle_timeout = connect_timeout, timeout, idle_timeout
        self.stdin = StdinFeed(stdin)
        self.on_stdout, self.on_stderr = on_stdout, on_stderr
        self.keep_stdin_open, self.stop, self.close_stdin = keep_stdin_open, stop, close_stdin
        self.start_limit = 0.0
        self.deadline: Optional[float] = None

    def run(self) -> int:
        now = time.monotonic()
        self.deadline = now + self.timeout if self.timeout else None
        limits = [x for x in (self.timeout, self.idle_timeout) if x]
        self.start_limit = min(limits) if limits else self.connect_timeout
        watchdog = Watchdog(self.transport)
        chan: Optional[paramiko.Channel] = None
        try:
            watchdog.arm(now + self.start_limit, START)
            try:
                chan = self.transport.open_session(timeout=self.connect_timeout)
                watchdog.watch(chan)
                chan.exec_command(self.command)
            except (paramiko.SSHException, EOFError, OSError) as e:
                if watchdog.fired:
                    raise self._timed_out(watchdog.fired) from e
                raise
            chan.settimeout(SEND_WAIT)  # a send waits this long for the window; we recv only what is ready
            try:
                return self._pump(chan, watchdog)
            except (paramiko.SSHException, EOFError, OSError) as e:
                if watchdog.fired:
                    raise self._timed_out(watchdog.fired) from e
                raise
        finally:
            if chan is not None:
                if not watchdog.fired:
                    watchdog.arm(time.monotonic() + CLOSE_GRACE, DEADLINE)  # the close, too, has an end
                _quietly(chan.close)
            watchdog.stop()

    def _pump(self, chan: paramiko.Channel, watchdog: Watchdog) -> int:
        keep_open = self.keep_stdin_open
        if self.stdin.done and not keep_open:
            chan.shutdown_write()
        last_activity, beat = time.monotonic(), 0.0
        while True:
            if watchdog.fired:
                raise self._timed_out(watchdog.fired)
            waited = False
            if self.stdin.pending:
                try:
                    if self.stdin.feed(chan):
                        last_activity = time.monotonic()
                    else:
                        waited = True  # feed() waited for the window: no need to sleep below
                    if self.stdin.done and not keep_open:
                        chan.shutdown_write()
                except OSError:  # the command ended before reading it all: its exit and stderr say why
                    self.stdin.dropped, keep_open = True, False
            elif keep_open and time.monotonic() - beat > HEARTBEAT:
                # heartbeat: the remote side also stops when these stop coming (sshd does not
                # always close a command's stdin promptly when the client vanishes)
                beat = time.monotonic()
                try:
                    if chan.send_ready():
                        chan.send(b"\n")
                except OSError:  # the remote side is done and closed its end: collect its exit
                    keep_open = False
            got = self._drain(chan)
            if got:
                last_activity = time.monotonic()
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                if chan.closed or chan.eof_received:
                    if watchdog.fired:  # its close looks like an exit (status -1): it is not one
                        raise self._timed_out(watchdog.fired)
                    return chan.recv_exit_status()
            if self.close_stdin is not None and self.close_stdin.is_set() and keep_open and not self.stdin.pending:
                _quietly(chan.shutdown_write)  # the remote side sees EOF on stdin and winds down
                keep_open = False
            if self.stop is not None and self.stop.is_set():
                return -1  # closing the channel closes the remote stdin: the remote side ends
            self._arm(watchdog, last_activity)
            if not got and not waited:
                select.select([chan], [], [], 0.05)

    def _drain(self, chan: paramiko.Channel) -> bool:
        got = False
        while chan.recv_ready():
            data = chan.recv(65536)
            got = got or bool(data)
            if self.on_stdout:
                self.on_stdout(data)
        while chan.recv_stderr_ready():
            data = chan.recv_stderr(65536)
            got = got or bool(data)
            if self.on_stderr:
                self.on_stderr(data)
        return got

    def _arm(self, watchdog: Watchdog, last_activity: float) -> None:
        """The watchdog fires at the first limit to run out."""
        limits = [(self.deadline, DEADLINE)]
        if self.idle_timeout:
            limits.append((last_activity + self.idle_timeout, IDLE))
        if self.stdin.pending:
            limits.append((last_activity + STDIN_STALL, STALL))
        at, why = min(((t, w) for t, w in limits if t is not None), default=(None, DEADLINE))
        watchdog.arm(at, why)

    def _timed_out(self, limit: str) -> CommandTimeout:
        name, cmd = self.host, self.command[:200]
        if limit == START:
            return CommandTimeout(name, self.command,
                                  f"sshd did not start `{cmd}` within {self.start_limit:.0f} s "
                                  "(no answer to the exec request); stopped waiting",
                                  f"is {name} overloaded, or its sshd stuck? `sfcluster status` names what answers")
        if limit == IDLE:
            return CommandTimeout(name, self.command,
                                  f"{name} went silent for {self.idle_timeout:.0f} s (no output, no heartbeat)"
                                  f"{self.stdin.progress()}",
                                  f"is {name} frozen, powered off or cut off? check it, then `sfcluster status`")
        if limit == STALL:
            return CommandTimeout(name, self.command,
                                  f"`{cmd}` took none of its input for {STDIN_STALL:.0f} s and said nothing"
                                  f"{self.stdin.progress()}; stopped it",
                                  f"is {name} frozen, its disk stuck, or the link cut? check it, then `sfcluster status`")
        return CommandTimeout(name, self.command,
                              f"`{cmd}` did not finish within {self.timeout:.0f} s{self.stdin.progress()}; stopped it",
                              f"is {name} frozen or cut off? `sfcluster status` names what answers")
