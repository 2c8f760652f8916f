"""Run history on the controller: ONE home per run, `<state dir>/<cluster>/runs/<run id>/`, with
the run's log (driver.log), its record (run.json) and its fetched outputs (output/). `run` writes
it, `fetch` completes it (a detached run), `runs` lists it, `logs RUN_ID` reads it. Each
controller keeps its own (its state dir); each cluster its own directory in it."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import secrets
import tarfile
import time
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


def new_run_id() -> str:
    """A fresh run id: the time (so that ids sort as runs started) and 24 random bits."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


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
    mode: str = "simulation"
    # production mode: per party {started, driver_exit, stopped_by, wrapper_exit}
    parties: Dict[str, Any] = field(default_factory=dict)

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


# What the controller unpacks from the head, at most; an archive beyond either is refused whole,
# before anything of it is written. The head sends regular files only (run_files.py: the outputs,
# at most MAX_ENTRIES - 2 of them, the log and result.json), at most 34 path components deep
# (output/, 32 directories, the file).
MAX_ENTRIES = 10_000
MAX_DEPTH = 40  # path components; far below what would exhaust a path's length or a recursion


def extract(tar_path: Path, dest: Path, max_bytes: int, run_id: str = "?") -> None:
    """Unpack what the head sent for run_id into the fresh directory `dest`: regular files and
    directories only, every name relative and inside dest, each named once, at most MAX_ENTRIES
    entries, MAX_DEPTH path components and max_bytes in all (the head already holds to this: here
    it is not trusted to). Every header is checked before anything is written; whatever goes wrong
    after, dest is left empty."""
    with tarfile.open(tar_path, mode="r:") as tar:
        members = _checked_members(tar, max_bytes, f"run {run_id}: the head sent")
        try:
            _write_members(tar, members, dest)
        except BaseException:
            _empty(dest)
            raise


def _checked_members(tar: tarfile.TarFile, max_bytes: int, what: str) -> List[tarfile.TarInfo]:
    """The archive's members (headers only, no data read), each checked; an UnsafeArchive for the
    first that is not allowed. The fix names what the user can change."""
    kept = "refused whole, nothing of it was kept"
    fewer = "the outputs stay on the head: write fewer files into $SFCLUSTER_OUTPUT (e.g. one tar of them)"
    members: List[tarfile.TarInfo] = []
    files, dirs, total = set(), set(), 0
    for m in tar:
        if len(members) >= MAX_ENTRIES:
            raise UnsafeArchive(f"{what} an archive of more than {MAX_ENTRIES} entries; {kept}", fewer)
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or not p.parts or "\0" in m.name:
            raise UnsafeArchive(f"{what} an unsafe path {m.name[:200]!r}; {kept}")
        if len(p.parts) > MAX_DEPTH:
            raise UnsafeArchive(f"{what} a path deeper than {MAX_DEPTH} components ({len(p.parts)}: "
                                f"{m.name[:80]!r}...); {kept}", "the outputs stay on the head: nest them less deeply")
        if not (m.isdir() or m.isreg()):
            raise UnsafeArchive(f"{what} {m.name[:200]!r}, not a regular file; {kept}")
        name = "/".join(p.parts)
        parents = ["/".join(p.parts[:i]) for i in range(1, len(p.parts))]
        if name in files or (name in dirs and not m.isdir()) or any(a in files for a in parents):
            raise UnsafeArchive(f"{what} {m.name[:200]!r} twice (or inside a file); {kept}")
        if m.isdir():
            dirs.add(name)
        else:
            total += m.size
            if total > max_bytes:
                raise UnsafeArchive(f"{what} more than {max_bytes} bytes; {kept}")
            files.add(name)
        dirs.update(parents)
        members.append(m)
    return members


def _write_members(tar: tarfile.TarFile, members: List[tarfile.TarInfo], dest: Path) -> None:
    """Checked members into dest: directories 0700 made one level at a time (no recursion), files
    0600 created fresh (O_EXCL, never through a link)."""
    made = set()
    for m in members:
        parts = PurePosixPath(m.name).parts
        for i in range(1, len(parts) + (1 if m.isdir() else 0)):
            if parts[:i] not in made:
                try:
                    os.mkdir(dest.joinpath(*parts[:i]), 0o700)
                except FileExistsError:
                    pass  # a directory made for an earlier entry's path (dest is fresh: nothing else is there)
                made.add(parts[:i])
        if m.isdir():
            continue
        src = tar.extractfile(m)
        fd = os.open(dest.joinpath(*parts), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            while True:
                chunk = src.read(1 << 20) if src else b""
                if not chunk:
                    break
                f.write(chunk)


def _empty(dest: Path) -> None:
    """Remove what was unpacked into dest (no deeper than MAX_DEPTH: checked before it was made)."""
    for child in list(dest.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
