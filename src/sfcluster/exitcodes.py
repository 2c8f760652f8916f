"""sfcluster's exit codes: one table for every command, shown in `--help` and the README.

0 and 1 mean what they mean everywhere; 2 is click's alone (a usage error); sfcluster's own
outcomes sit in the sysexits range 64-78 (sysexits.h), so they never collide with the small codes
a training script returns: `run` passes the driver's own code through only when the driver ran to
its own end. Node scripts cannot import this module (they run on the nodes' Python with the
standard library only): the codes they return are named here and matched by value.
"""
from __future__ import annotations

from enum import IntEnum
from typing import List, Tuple


class Exit(IntEnum):
    """The codes; MEANING below says what each means (the one text `--help` and the docs show)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    PREFLIGHT = 65  # EX_DATAERR
    UNAVAILABLE = 69  # EX_UNAVAILABLE
    STARVED = 70  # EX_SOFTWARE
    DEGRADED = 71
    NODE_LOST = 74
    LOCKED = 75  # EX_TEMPFAIL
    FOREIGN_DRIVER = 76
    NO_PRIVILEGE = 77  # EX_NOPERM
    CONFIG = 78  # EX_CONFIG
    CANCELLED = 130  # 128 + SIGINT, as shells do


MEANING: List[Tuple[Exit, str]] = [
    (Exit.OK, "ok (status: healthy)"),
    (Exit.FAILURE, "general failure (a remote step failed; down left errors)"),
    (Exit.USAGE, "usage error (unknown option, missing argument): click's only"),
    (Exit.PREFLIGHT, "check / up's preflight found problems; nothing was changed"),
    (Exit.UNAVAILABLE, "a node, the cluster or Ray cannot be reached (status: down)"),
    (Exit.STARVED, "run stopped: a resource demand waited with no progress (party starved)"),
    (Exit.DEGRADED, "status: degraded (a party is not up, or a foreign driver is connected)"),
    (Exit.NODE_LOST, "run stopped: a party's node died or was cut off"),
    (Exit.LOCKED, "the cluster-wide lock is held by another operation"),
    (Exit.FOREIGN_DRIVER, "run refused or stopped: another driver, or a Ray node the inventory lacks, is connected to Ray"),
    (Exit.NO_PRIVILEGE, "needs root, and sudo asks for a password"),
    (Exit.CONFIG, "invalid inventory (each problem with its YAML path and line), or a party or data name it lacks"),
    (Exit.CANCELLED, "run stopped by Ctrl-C or `sfcluster cancel`"),
]


def help_table() -> str:
    """The table as click shows it (`\\b` keeps click from re-flowing the lines)."""
    rows = "\n".join(f"  {int(code):>3}  {text}" for code, text in MEANING)
    return ("\b\nExit codes (every command; `run` otherwise exits with the driver's own code, `ssh` with ssh's):\n" + rows)
