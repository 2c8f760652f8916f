"""The control lines of a run, as the controller reads them from the wrapper's stderr.

Only the wrapper writes "SFC:<KIND> <json>" lines on that channel (it is not dumpable, so the
driver cannot open it through /proc, and a driver line that looks like control is passed on
marked "[driver] SFC:..."). As a second wall: the first line of each kind counts, EXIT is
accepted once, and nothing after EXIT is read as control (a forged EXIT or BEAT after the real
one changes nothing: the driver's exit code is the wrapper's, written before its lock is freed).
"""
from __future__ import annotations

import json
from typing import Callable, Dict, Optional

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
