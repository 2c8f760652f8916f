"""One exception tree. Every error carries what a user needs to act on it: `message`, `hint` (the
fix) and `exit_code`, the code the CLI exits with for it (exitcodes.py), so that a runbook using
the Python API (sfcluster.api) sees the same outcome as the CLI's caller:

    SfclusterError     1   the base (a step failed), as are LockError and UnsafeArchive
    RemoteError        1   a remote step failed, naming the host: remote.base.CommandFailed, ProvisionError
    NotInInventory    78   a party or data name the inventory lacks (data.py)
    InventoryError    78   invalid inventory; `problems`, each with its YAML path and line
    PlanError          1   cannot be brought up as planned; PreflightFailed (lifecycle/preflight.py): 65, or
                           77 when sudo asking for a password is all that failed; `.report`
    UnavailableError  69   a node, the cluster or its Ray cannot be reached
    ConnectError, HostKeyError, CommandTimeout   69 (RemoteError's: they name the host)
    PrivilegeError    77   needs root, and sudo asks for a password
    LockHeld          75   the cluster lock is held; `holder`
    ForeignDriver     76   a driver sfcluster did not start is connected to Ray

The code is a class attribute (an instance may refine it, as PreflightFailed does); every class
of the tree has one of the table's (tests/unit/test_api.py checks it).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from sfcluster.exitcodes import Exit


class SfclusterError(Exception):
    """Base of every error sfcluster raises on purpose. `hint` says what to do next; `exit_code`
    is the CLI's exit code for it."""

    exit_code: int = Exit.FAILURE

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  fix: {self.hint}"

    def details(self) -> Dict[str, Any]:
        """Extra fields for `--json` (e.g. a failed preflight's report)."""
        return {}


class Problem(str):
    """One problem of an inventory: reads as `path (line N): message` (what users see), and keeps
    its parts for `--json` (`problems: [{"path", "line", "message"}]`)."""

    path: str
    line: Optional[int]
    message: str

    def __new__(cls, path: str, line: Optional[int], message: str) -> "Problem":
        where = f"{path} (line {line})" if path and line else (f"(line {line})" if line else path)
        self = super().__new__(cls, f"{where}: {message}" if where else message)
        self.path, self.line, self.message = path, line, message
        return self

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path or None, "line": self.line, "message": self.message}


class InventoryError(SfclusterError):
    """The inventory file is invalid. Carries every problem found, each with its YAML path."""

    exit_code = Exit.CONFIG

    def __init__(self, source: str, problems: List[Problem]) -> None:
        self.source = source
        self.problems = [p if isinstance(p, Problem) else Problem("", None, str(p)) for p in problems]
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: invalid inventory ({len(problems)} problem(s)):\n{lines}")


class RemoteError(SfclusterError):
    """A remote step failed: names the host, the command, the exit code and stderr's tail."""

    def __init__(self, host: str, command: str, message: str, hint: Optional[str] = None) -> None:
        self.host = host
        self.command = command
        super().__init__(f"[{host}] {message}", hint)


class HostKeyError(RemoteError):
    """The host key is unknown or changed: never accepted silently."""

    exit_code = Exit.UNAVAILABLE


class ConnectError(RemoteError):
    """The SSH connection could not be made (network, auth)."""

    exit_code = Exit.UNAVAILABLE


class CommandTimeout(RemoteError):
    """A remote command did not finish within its timeout (and was stopped)."""

    exit_code = Exit.UNAVAILABLE


class NotInInventory(SfclusterError):
    """A party or data name the command line gives that the inventory lacks: 78, as `--party` of
    an unknown party is (the inventory and the command disagree; nothing is contacted)."""

    exit_code = Exit.CONFIG


class NotConfigured(SfclusterError):
    """The inventory lacks a setting the command needs (the dashboard's port): 78, with the key
    to set."""

    exit_code = Exit.CONFIG


class UnavailableError(SfclusterError):
    """A node, the cluster or its Ray cannot be reached."""

    exit_code = Exit.UNAVAILABLE


class PrivilegeError(SfclusterError):
    """A step needs root and sudo would ask for a password."""

    exit_code = Exit.NO_PRIVILEGE


class LockHeld(SfclusterError):
    """Another operation (a run, an `up`, a `down`) holds the cluster lock."""

    exit_code = Exit.LOCKED

    def __init__(self, message: str, hint: Optional[str] = None, holder: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message, hint)
        self.holder = holder or {}

    def details(self) -> Dict[str, Any]:
        return {"holder": self.holder} if self.holder else {}


class ForeignDriver(SfclusterError):
    """A driver that sfcluster did not start is connected to the cluster's Ray."""

    exit_code = Exit.FOREIGN_DRIVER


class PlanError(SfclusterError):
    """The cluster cannot be brought up as planned (preflight failed, a node is foreign...)."""
