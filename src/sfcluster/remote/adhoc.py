"""Ad-hoc commands: one argv on several nodes at once, as the SSH user (`sfcluster exec`).

Through the nodes' runners (strict host keys, every command bounded by its deadline) and
group.fan_out: each node's outcome is kept, a slow or unreachable node hides no other's. What a
node prints reaches the terminal line by line as it comes, prefixed `[party] `, with its control
characters written out (termsafe.visible): a node's output never steers the operator's terminal.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from sfcluster.errors import ConnectError, HostKeyError, SfclusterError
from sfcluster.exitcodes import Exit
from sfcluster.remote.base import Runner
from sfcluster.remote.group import fan_out
from sfcluster.termsafe import visible

DEFAULT_TIMEOUT = 600.0
LONGEST_LINE = 1 << 16  # a "line" this long without its newline is shown as it is (memory stays bounded)
# (display line, from stderr): where a prefixed line goes; called from the nodes' threads
OnLine = Callable[[str, bool], None]


def prefixed(party: str, line: bytes) -> str:
    """One line of a node's output as the terminal shows it (a CRLF line ends like an LF one)."""
    text = line.decode("utf-8", errors="backslashreplace")
    return f"[{party}] {visible(text[:-1] if text.endswith(chr(13)) else text)}"


class LineSplitter:
    """A byte stream cut into lines for `on_line` (the last one even without its newline, at
    flush), and kept whole when `keep` (for --json)."""

    def __init__(self, party: str, stderr: bool, on_line: Optional[OnLine], keep: bool) -> None:
        self.party, self.stderr, self.on_line, self.keep = party, stderr, on_line, keep
        self._pending = bytearray()
        self.kept = bytearray()

    def feed(self, data: bytes) -> None:
        if self.keep:
            self.kept.extend(data)
        if self.on_line is None:
            return
        self._pending.extend(data)
        *lines, rest = bytes(self._pending).split(b"\n")
        self._pending[:] = rest
        for line in lines:
            self.on_line(prefixed(self.party, line), self.stderr)
        if len(self._pending) > LONGEST_LINE:
            self.flush()

    def flush(self) -> None:
        if self.on_line is not None and self._pending:
            self.on_line(prefixed(self.party, bytes(self._pending)), self.stderr)
        self._pending.clear()

    @property
    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


@dataclass
class NodeOutcome:
    """What the command did on one node: its exit code, or why it has none (`unreachable`: no
    SSH connection, so it never ran)."""

    party: str
    exit_code: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    error: Optional[str] = None
    fix: Optional[str] = None
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    @property
    def summary(self) -> str:
        if self.unreachable:
            return f"{self.party}: unreachable: {self.error}"
        if self.error is not None:
            return f"{self.party}: failed: {self.error}"
        return f"{self.party}: exit {self.exit_code}"

    def to_json(self) -> Dict[str, Any]:
        if self.error is not None:
            return {"error": self.error, "fix": self.fix, "unreachable": self.unreachable}
        return {"exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr}


@dataclass
class AdhocResult:
    """Every node's outcome, in the order the parties were named."""

    nodes: Dict[str, NodeOutcome]

    @property
    def unreachable(self) -> List[str]:
        return [p for p, o in self.nodes.items() if o.unreachable]

    @property
    def failed(self) -> List[str]:
        return [p for p, o in self.nodes.items() if not o.ok and not o.unreachable]

    @property
    def exit_code(self) -> Exit:
        """69 when a node could not be reached (its command never ran), 1 when the command failed
        (or did not finish) on some node, 0 when it exited 0 everywhere."""
        if self.unreachable:
            return Exit.UNAVAILABLE
        return Exit.FAILURE if self.failed else Exit.OK

    def problems(self) -> List[Dict[str, Any]]:
        return [{"path": p, "line": None, "message": o.summary} for p, o in self.nodes.items() if not o.ok]

    def to_json(self) -> Dict[str, Any]:
        return {"nodes": {p: o.to_json() for p, o in self.nodes.items()}}


def run_adhoc(runners: Mapping[str, Runner], parties: Sequence[str], argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT,
              on_line: Optional[OnLine] = None, keep_output: bool = False) -> AdhocResult:
    """Run `argv` on every party's node (`runners`: Nodes.runners, or any transport) in parallel, each bounded by `timeout`. `on_line` gets each
    line as it arrives (None: nothing streamed); `keep_output` keeps each node's whole output."""

    def one(party: str) -> NodeOutcome:
        out = LineSplitter(party, False, on_line, keep_output)
        err = LineSplitter(party, True, on_line, keep_output)
        outcome = NodeOutcome(party)
        try:
            outcome.exit_code = runners[party].stream(list(argv), on_stdout=out.feed, on_stderr=err.feed, timeout=timeout)
        except (ConnectError, HostKeyError) as e:
            outcome.error, outcome.fix, outcome.unreachable = e.message, e.hint, True
        except SfclusterError as e:  # a timeout, a connection lost on the way: the command ran
            outcome.error, outcome.fix = e.message, e.hint
        except Exception as e:  # noqa: BLE001 - paramiko's and the socket's own: reported per node
            outcome.error = f"[{party}] {type(e).__name__}: {e}"
        finally:
            out.flush()
            err.flush()
        outcome.stdout, outcome.stderr = out.text, err.text
        return outcome

    got = fan_out(one, parties)
    result = AdhocResult({})
    for p in parties:  # `one` catches what a node can raise; anything else is reported, not lost
        e = got.errors.get(p)
        result.nodes[p] = got.results[p] if e is None else NodeOutcome(p, error=f"[{p}] {type(e).__name__}: {e}")
    return result


class LockedWriter:
    """An OnLine that writes whole lines to two streams, one line at a time from any thread."""

    def __init__(self, stdout: Any, stderr: Any) -> None:
        self.stdout, self.stderr = stdout, stderr
        self._lock = threading.Lock()

    def __call__(self, line: str, from_stderr: bool) -> None:
        stream = self.stderr if from_stderr else self.stdout
        with self._lock:
            stream.write(line + "\n")
            stream.flush()
