"""The Runner protocol every transport implements, and the Result it returns."""
from __future__ import annotations

import shlex
import threading
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Protocol, Sequence, Union

from sfcluster.errors import RemoteError

# a request or a secret (str, bytes), or a binary stream sent as it is read (a GB never held in memory)
Input = Union[str, bytes, BinaryIO, None]
STREAM_CHUNK = 1 << 20
OnData = Optional[Callable[[bytes], None]]


@dataclass(frozen=True)
class Result:
    """What one remote command did."""

    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self, hint: Optional[str] = None) -> "Result":
        """Return self when the command succeeded, else raise CommandFailed naming host and command."""
        if not self.ok:
            raise CommandFailed(self, hint)
        return self


class CommandFailed(RemoteError):
    """A remote command exited non-zero (beside Result: errors.py needs nothing of remote/)."""

    def __init__(self, result: Result, hint: Optional[str] = None) -> None:
        self.result = result
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        super().__init__(result.host, result.command,
                         f"`{result.command[:200]}` exited {result.exit_code}" + (f":\n{tail}" if tail else ""), hint)


class Runner(Protocol):
    """Runs argv lists on one host. Core logic takes a Runner; tests may hand it any transport."""

    name: str
    user: str

    def run(
        self,
        argv: Sequence[str],
        *,
        sudo: bool = False,
        timeout: Optional[float] = None,
        stdin: Input = None,
    ) -> Result: ...

    def stream(
        self,
        argv: Sequence[str],
        *,
        on_stdout: OnData = None,
        on_stderr: OnData = None,
        keep_stdin_open: bool = False,
        stop: Optional["threading.Event"] = None,
        close_stdin: Optional["threading.Event"] = None,
        stdin: Input = None,
        timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
    ) -> int: ...

    def close(self) -> None: ...


def by_line(on_line: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """An on_stdout/on_stderr that hands `on_line` each whole line (without its newline)."""
    buf = bytearray()

    def on_data(data: bytes) -> None:
        buf.extend(data)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            on_line(line)
    return on_data


class AsUser:
    """A Runner that runs every command as another user of the host (`sudo -n -u USER --`): the
    user Ray runs as (inventory `ray_user`), when the SSH user is another one. Environment goes in
    argv (`env K=V ...`), since sudo resets it; stdin passes through."""

    def __init__(self, inner: Runner, user: str) -> None:
        self.inner, self.as_user = inner, user
        self.name = inner.name

    @property
    def user(self) -> str:
        return self.as_user

    def _argv(self, argv: Sequence[str]) -> list:
        return ["sudo", "-n", "-u", self.as_user, "--", *argv]

    def run(self, argv: Sequence[str], *, sudo: bool = False, timeout: Optional[float] = None,
            stdin: Input = None) -> Result:
        return self.inner.run(self._argv(argv), timeout=timeout, stdin=stdin)

    def stream(self, argv: Sequence[str], **kw: object) -> int:
        return self.inner.stream(self._argv(argv), **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        pass  # the inner runner belongs to Nodes


def command_line(argv: Sequence[str], *, sudo: bool, user: str) -> str:
    """Quote argv for a remote shell. sudo is non-interactive (-n): it fails, never prompts."""
    argv = list(argv)
    if sudo and user != "root":
        argv = ["sudo", "-n", "--", *argv]
    return shlex.join(argv)
