"""What `sfcluster run` keeps off the terminal: the INFO logging of SecretFlow, RayFed, SPU, brpc
and Ray (hundreds of lines a run: `[bucket_psi.cc:382] Begin post filtering`, jax backend probes,
brpc's socket checks), never the driver's own output, warnings or errors. Everything stays in the
run's log (driver.log, and per party in production mode); `run -v` shows it all.

A line is noise when, after an optional `[party] ` prefix (production mode) and an optional Ray
worker prefix `(name pid=N, ip=A) `, it starts like one of these loggers' INFO or DEBUG lines."""
from __future__ import annotations

import re
from typing import Callable

_PREFIX = rb"(?:\[[a-z][a-z0-9_]{0,30}\] )?(?:\([^()\s]*\s?pid=\d+(?:, ip=[0-9.]+)?\) )?"
_LOGGERS = [
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d+[ \t]+(?:INFO|DEBUG) ",         # SecretFlow / RayFed, Ray (tab)
    rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d+\] \[(?:info|debug|trace)\] ",  # SPU / yacl (spdlog)
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,]\d+ \[(?:info|debug|trace)\] ",      # yacl's brpc bridge
    rb"I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ",                                       # brpc (glog)
    rb"(?:INFO|DEBUG):[\w.]+:",                                                  # Python's default format
]
NOISE = re.compile(_PREFIX + rb"(?:" + rb"|".join(_LOGGERS) + rb")")


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
