"""Readiness, measured the same way for every contender: the GCS node table on the head, polled
every 0.2 s by one remote process (bench/remote/readiness.py) over ONE SSH connection that is
open, with Ray imported, before the clock starts.

Counts ready nodes for every contender alike: alive in the GCS node table and reporting their
resources (the party resource a SecretFlow task asks for), which is what `sfcluster up` waits for
before it returns. Until issue #10 it counted alive nodes only, which a raylet is ~0.5-2 s before
its first resource report under load.
"""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from bench.nodes import NODE_PYTHON, BenchNodes, SshMasters

REMOTE_PATH = "/tmp/sfbench_readiness.py"
SOURCE = Path(__file__).resolve().parent / "remote" / "readiness.py"


def install(nodes: BenchNodes) -> None:
    """Put the poller on the head (setup, outside any timing)."""
    nodes.write_file(nodes.spec.names[0], REMOTE_PATH, SOURCE.read_bytes())


@dataclass
class Event:
    local: float    # controller time.monotonic() when the line arrived
    remote: float   # head's time.monotonic() when the count was seen (same kernel clock)
    count: int


@dataclass
class ReadinessPoller:
    masters: SshMasters
    want: int
    give_up: float
    port: int = 6379
    env: Dict[str, str] = field(default_factory=dict)  # e.g. Ray's TLS environment (paths only)
    events: List[Event] = field(default_factory=list)
    ready_at: Optional[float] = None       # local time of the COUNT line that reached `want`
    ready_remote: Optional[float] = None
    remote_start: Optional[float] = None
    lines: List[str] = field(default_factory=list)
    _proc: Optional[subprocess.Popen] = None
    _started: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 30) -> None:
        spec = self.masters.spec
        remote = [NODE_PYTHON, "-u", REMOTE_PATH, spec.head_ip, str(self.port), str(self.want), str(self.give_up)]
        if self.env:
            remote = ["env", *(f"{k}={v}" for k, v in self.env.items()), *remote]
        argv = self.masters.argv(spec.head_ip, remote)
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError("readiness poller did not start: " + " | ".join(self.lines[-5:]))

    def _read(self) -> None:
        assert self._proc and self._proc.stdout
        for raw in self._proc.stdout:
            now = time.monotonic()
            line = raw.decode(errors="replace").strip()
            self.lines.append(line)
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "READY-TO-POLL":
                self.remote_start = float(parts[1])
                self._started.set()
            elif parts[0] == "COUNT":
                ev = Event(now, float(parts[1]), int(parts[2]))
                self.events.append(ev)
                if ev.count >= self.want and self.ready_at is None:
                    self.ready_at, self.ready_remote = now, ev.remote
                    self._done.set()
            elif parts[0] in ("DONE", "GAVE-UP"):
                self._done.set()
        self._done.set()

    def wait(self, timeout: float) -> Optional[float]:
        """Local time at which `want` nodes were alive, or None (gave up / poller died)."""
        self._done.wait(timeout)
        return self.ready_at

    @property
    def finished(self) -> bool:
        """The remote poller is done: N reached, gave up, or its connection ended."""
        return self._done.is_set()

    def stop(self) -> None:
        p = self._proc
        if p is None:
            return
        try:
            if p.stdin:
                p.stdin.close()  # remote side exits on EOF
            p.wait(5)
        except (subprocess.TimeoutExpired, OSError):
            p.kill()
            p.wait()

    def timeline(self, t0: float) -> List[Tuple[float, int]]:
        """(seconds since t0 on the head's clock, alive nodes) for the results file."""
        return [(round(e.remote - t0, 3), e.count) for e in self.events]
