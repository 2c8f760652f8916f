"""The control lines of a run, as the controller reads them from the wrapper's stderr.

Only the wrapper writes "SFC:<KIND> <json>" lines on that channel (it is not dumpable, so the
driver cannot open it through /proc, and a driver line that looks like control is passed on
marked "[driver] SFC:..."). As a second wall: the first line of each kind counts, EXIT is
accepted once, and nothing after EXIT is read as control (a forged EXIT or BEAT after the real
one changes nothing: the driver's exit code is the wrapper's, written before its lock is freed).
"""
from __future__ import annotations

import json
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional

from sfcluster.nodescripts import contract as C


class ControlLines:
    """Feed it every stderr line of the wrapper; `kinds` keeps the first payload of each kind."""

    def __init__(self, note: Callable[[str], None], passthrough: Callable[[bytes], None]) -> None:
        self.kinds: Dict[str, str] = {}
        self.note, self.passthrough = note, passthrough
        self.ignored = 0   # control lines after EXIT (or repeated kinds): never acted on

    @property
    def ended(self) -> bool:
        return C.EXIT in self.kinds

    def get(self, kind: str) -> Optional[str]:
        return self.kinds.get(kind)

    def __contains__(self, kind: str) -> bool:
        return kind in self.kinds

    def __getitem__(self, kind: str) -> str:
        return self.kinds[kind]

    def feed(self, line: bytes) -> None:
        if not line.startswith(C.CONTROL_PREFIX.encode()):
            self.passthrough(line + b"\n")
            return
        if self.ended:
            self.ignored += 1
            return
        kind, _, payload = line[len(C.CONTROL_PREFIX):].decode(errors="replace").partition(" ")
        if kind in self.kinds and kind != C.BEAT:
            self.ignored += 1
            return
        self.kinds[kind] = payload
        try:
            if kind == C.NODE_DOWN:
                p = json.loads(payload)
                self.note(f"node {p['party']} ({p['host']}) is down or cut off: stopping the run")
            elif kind == C.STARVED:
                self.note(json.loads(payload)["message"])
            elif kind == C.STOPPING:
                self.note(f"stopping the driver: {payload}")
        except (ValueError, KeyError, TypeError):
            self.note(f"unreadable control line from the head: {line[:200]!r}")


@contextmanager
def stop_on_signals(note: Callable[[str], None], what: str,
                    on_first: Callable[[], None] = lambda: None) -> Iterator[threading.Event]:
    """While a run streams, Ctrl-C or SIGTERM: the first sets the event it yields (the caller
    closes the wrappers' stdin with it: each wrapper stops its driver and reports how it ended)
    and says so; a second abandons (KeyboardInterrupt). The handlers are installed from the main
    thread only (the API may run a run from another one), and restored after."""
    interrupted = threading.Event()

    def on_signal(signum, frame):  # noqa: ANN001
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        on_first()
        note(f"interrupted: stopping {what} (again to abandon)")
    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
    try:
        yield interrupted
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
