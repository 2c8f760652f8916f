"""Run history on the controller: ONE home per run, `<state dir>/<cluster>/runs/<run id>/`, with
the run's log (driver.log), its record (run.json) and its fetched outputs (output/). `run` writes
it, `fetch` completes it (a detached run), `runs` lists it, `logs RUN_ID` reads it. Each
controller keeps its own (its state dir); each cluster its own directory in it."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, List, Optional

from sfcluster import state
from sfcluster.errors import SfclusterError
from sfcluster.nodescripts import contract as C

RUN_ID = re.compile(C.RUN_ID_PATTERN)
RECORD = "run.json"
SAFE_CLUSTER = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def check_run_id(run_id: str) -> str:
    """`run_id` when it is one (20261201-061500-a1b2c3, as `runs` lists them); an error otherwise:
    it becomes part of a path here and on the head, so nothing else is let through."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise SfclusterError(f"{run_id!r} is not a run id (YYYYMMDD-HHMMSS-xxxxxx)",
                             "`sfcluster runs` lists the run ids of this controller")
    return run_id


def runs_dir(cluster: str) -> Path:
    if not SAFE_CLUSTER.match(cluster):
        raise SfclusterError(f"bad cluster name {cluster!r}: no run history for it")
    return state.state_dir() / cluster / "runs"


def run_home(cluster: str, run_id: str) -> Path:
    return runs_dir(cluster) / check_run_id(run_id)


def make_home(cluster: str, run_id: str) -> Path:
    """The run's history dir, made private (0700) with its parents when missing."""
    d = run_home(cluster, run_id)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def inventory_digest(source: str) -> Optional[str]:
    """sha256 of the inventory file the run used (which cluster definition it ran on)."""
    try:
        return "sha256:" + hashlib.sha256(Path(source).read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass
class RunRecord:
    """run.json: what a run was and how it ended. exit_code is None while unknown (a detached run
    not fetched yet); outputs is what the last fetch brought ({files, bytes, skipped, refused})."""

    run_id: str
    cluster: str
    script: str
    args: List[str] = field(default_factory=list)
    user: str = ""
    controller: str = ""
    started: Optional[float] = None
    ended: Optional[float] = None
    duration: Optional[float] = None
    exit_code: Optional[int] = None
    driver_exit: Optional[int] = None
    stopped_by: str = ""
    detached: bool = False
    inventory: str = ""
    inventory_digest: Optional[str] = None
    outputs: Dict[str, Any] = field(default_factory=dict)
    fetched: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "RunRecord":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def save(rec: RunRecord) -> Path:
    p = make_home(rec.cluster, rec.run_id) / RECORD
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec.to_json(), indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(p)
    return p


def load(cluster: str, run_id: str) -> Optional[RunRecord]:
    try:
        return RunRecord.from_json(json.loads((run_home(cluster, run_id) / RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def list_runs(cluster: str) -> List[RunRecord]:
    """Every run of this controller on `cluster`, newest first (run ids start with the time)."""
    d = runs_dir(cluster)
    out = []
    for name in sorted(os.listdir(d), reverse=True) if d.is_dir() else []:
        if RUN_ID.fullmatch(name):
            out.append(load(cluster, name) or RunRecord(run_id=name, cluster=cluster, script="?"))
    return out


def merge_result(rec: RunRecord, result: Dict[str, Any], exit_code_of: Callable[[int, str], int]) -> None:
    """Fill what a record lacks from the head's result.json (written by the wrapper when the driver
    ended; in reach of the driver, so only well-typed values are taken). exit_code_of(driver's
    code, stop kind): the exit code `run` would have returned."""
    def num(v: Any) -> Optional[float]:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    code = result.get("code")
    kind = result.get("kind") if isinstance(result.get("kind"), str) else ""
    if isinstance(code, int) and not isinstance(code, bool) and rec.driver_exit is None:
        rec.driver_exit = code
        rec.stopped_by = rec.stopped_by or kind
    if rec.exit_code is None and rec.driver_exit is not None:
        rec.exit_code = exit_code_of(rec.driver_exit, rec.stopped_by)
    started, ended = num(result.get("started")), num(result.get("ended"))
    if rec.started is None and started is not None:
        rec.started = started
    if rec.ended is None and ended is not None:
        rec.ended = ended
    if rec.duration is None and rec.started is not None and rec.ended is not None:
        rec.duration = round(rec.ended - rec.started, 3)


class UnsafeArchive(SfclusterError):
    pass


def extract(tar_path: Path, dest: Path, max_bytes: int) -> None:
    """Unpack what the head sent into the fresh directory `dest`: regular files and directories
    only, every name relative and inside dest, no more than max_bytes in all (the head already
    holds to this: here it is not trusted to)."""
    total = 0
    with tarfile.open(tar_path, mode="r|") as tar:
        for m in tar:
            p = PurePosixPath(m.name)
            if p.is_absolute() or ".." in p.parts or not p.parts or "\0" in m.name:
                raise UnsafeArchive(f"the head sent an unsafe path {m.name!r}; nothing of it was kept")
            target = dest.joinpath(*p.parts)
            if m.isdir():
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
                continue
            if not m.isreg():
                raise UnsafeArchive(f"the head sent {m.name!r}, not a regular file; nothing of it was kept")
            total += m.size
            if total > max_bytes:
                raise UnsafeArchive(f"the head sent more than {max_bytes} bytes; nothing of it was kept")
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            src = tar.extractfile(m)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as f:
                while True:
                    chunk = src.read(1 << 20) if src else b""
                    if not chunk:
                        break
                    f.write(chunk)
