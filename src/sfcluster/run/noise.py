"""What `sfcluster run` keeps off the terminal: the INFO logging of SecretFlow, RayFed, SPU, brpc
and Ray (hundreds of lines a run: `[bucket_psi.cc:382] Begin post filtering`, jax backend probes,
brpc's socket checks), never the driver's own output, warnings or errors. Everything stays in the
run's log (driver.log, and per party in production mode); `run -v` shows it all.

A line is noise when, after an optional `[party] ` prefix (production mode) and an optional Ray
worker prefix `(name pid=N, ip=A) `, it starts like one of these loggers' INFO or DEBUG lines, or is one of a few warnings and errors known
to mean nothing (_CHATTER, each with why)."""
from __future__ import annotations

import re
from typing import Callable

# Ray's worker prefix is coloured whatever the output is (ray/_private/worker.py print_worker_logs
# wraps it in colorama's CYAN ... RESET_ALL; stripped only where something called colorama.init()),
# and an actor's name carries its own arguments: `(SPURuntime(device_id=None, party=bob) pid=1086,
# ip=172.30.77.12)`.
_SGR = rb"(?:\x1b\[[0-9;]*m)*"
_PREFIX = (rb"(?:\[[a-z][a-z0-9_]{0,30}\] )?(?:" + _SGR + rb"\((?:[^()\s]|\([^()]*\))*\s?pid=\d+(?:, ip=[0-9.]+)?\)"
           + _SGR + rb" )?")
_LOGGERS = [
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d+[ \t]+(?:INFO|DEBUG) ",         # SecretFlow / RayFed, Ray (tab)
    rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d+\] \[(?:info|debug|trace)\] ",  # SPU / yacl (spdlog)
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d+ \[(?:info|debug|trace)\] ",      # yacl's brpc bridge
    rb"I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ",                                       # brpc (glog)
    rb"(?:INFO|DEBUG):[\w.]+:",                                                  # Python's default format
]
# Warnings and errors that are known to mean nothing, by their exact source line and text (any
# other warning or error is shown):
_CHATTER = [
    # production mode, tls on: both of a party's links (cross-silo and SPU) listen on unix sockets
    # behind the gate, and brpc names a server's metrics after its port, which a unix socket has not:
    # the second link's metric names clash with the first's (metrics only; nothing else is shared)
    rb"\[error\] \[variable\.cpp:BRPC:\d+\] Already exposed `rpc_server_",
    rb"E\d{4} [\d:.]+ +\d+ \S*variable\.cpp:\d+\] Already exposed `rpc_server_",
    # SPU at the end of every production run: its link is torn down after the last message went
    rb"\[warning\] \[channel\.h:~Channel:\d+\] Channel destructor is called before WaitLinkTaskFinish",
]
_STAMP = rb"(?:\[?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d+\]? )?"
NOISE = re.compile(_PREFIX + rb"(?:" + rb"|".join(_LOGGERS) + rb"|" + _STAMP + rb"(?:" + rb"|".join(_CHATTER) + rb"))")


def is_noise(line: bytes) -> bool:
    return NOISE.match(line) is not None


class QuietLines:
    """A terminal writer that drops noise lines (counted) and passes everything else on whole."""

    def __init__(self, inner: Callable[[bytes], None]) -> None:
        self.inner, self.buf, self.dropped = inner, bytearray(), 0

    def __call__(self, data: bytes) -> None:
        self.buf.extend(data)
        while b"\n" in self.buf:
            line, _, rest = bytes(self.buf).partition(b"\n")
            self.buf[:] = rest
            if is_noise(line):
                self.dropped += 1
            else:
                self.inner(line + b"\n")

    def flush(self) -> None:
        if self.buf:
            if is_noise(bytes(self.buf)):
                self.dropped += 1
            else:
                self.inner(bytes(self.buf))
            self.buf.clear()
