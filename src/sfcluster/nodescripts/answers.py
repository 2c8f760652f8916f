"""The node scripts' answers, typed once and parsed in one place (`parse` of each class).

A node answers in JSON (nodescripts.call); the controller reads it through these classes only,
never by string keys scattered over its modules. Parsing trusts nothing: a key of the wrong type
is the field's default (a hostile or broken node cannot make a `verified` out of a string, nor
a pid out of a bool). `to_json` gives the shape `--json` prints, as before.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

T = TypeVar("T")


def _typed(cls: Type[T], data: Any, **fixed: Any) -> T:
    """An instance of the dataclass `cls` from the JSON object `data`: each field whose value has
    the field's type (an int is no bool, a float may be an int), else its default."""
    data = data if isinstance(data, Mapping) else {}
    kw: Dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in fixed or f.name not in data:
            continue
        v, want = data[f.name], str(f.type)
        if "bool" in want and isinstance(v, bool):
            kw[f.name] = v
        elif "int" in want and isinstance(v, int) and not isinstance(v, bool):
            kw[f.name] = v
        elif "float" in want and isinstance(v, (int, float)) and not isinstance(v, bool):
            kw[f.name] = float(v)
        elif "str" in want and isinstance(v, str):
            kw[f.name] = v
    return cls(**kw, **fixed)  # type: ignore[call-arg]


@dataclass(frozen=True)
class LockHolder:
    """Who holds the cluster lock, as the head verifies it (nodestate.describe_holder, through
    run_ctl.py, oplock.py's HELD/WAITING lines and the wrapper's LOCKED line). `verified` only when
    the pid named is ours and runs that run's wrapper (op run) or an oplock of this cluster."""

    active: bool = True               # False: nobody holds it (run_ctl.py's answer)
    op: Optional[str] = None          # run | up | down; None: starting, it has not said who it is
    verified: bool = False
    why: str = ""                     # why it is not verified
    user: str = "?"
    controller: str = "?"
    host: str = ""
    since: str = "?"
    script: str = "?"
    run_id: Optional[str] = None
    detached: bool = False
    pid: Optional[int] = None         # a verified holder's process on the head
    driver_pid: Optional[int] = None  # a verified run's driver
    log: Optional[str] = None         # a verified run's log on the head (computed there from the run id)
    cancelled: bool = False           # action "cancel": the run is gone
    killed: bool = False              # ... with SIGKILL, after SIGTERM was not enough
    removed_stale_info: bool = False  # nobody held it; a lock info left behind was removed
    error: Optional[str] = None       # the head could not be asked (status only)

    @classmethod
    def parse(cls, data: Any) -> "LockHolder":
        op = data.get("op") if isinstance(data, Mapping) else None
        return _typed(cls, data, op=op if op in ("run", "up", "down") else None)

    @property
    def run(self) -> bool:
        """A verified run holds it (the only holder `cancel`, `logs` and a driver check trust)."""
        return self.active and self.verified and self.op == "run"

    def text(self) -> str:
        """Who holds the lock, in one phrase."""
        who = f"{self.user}@{self.controller}"
        if self.op == "run":
            what = (f"run {self.run_id or '?'} ({self.script}{', detached' if self.detached else ''}) "
                    f"started {self.since} by {who}")
        elif self.op in ("up", "down"):
            what = f"`sfcluster {self.op}` from {who}, since {self.since}"
        else:
            what = "an operation that is starting (it has not written who it is yet)"
        if self.op and not self.verified:
            what += f" [unverified: {self.why or 'its process is not ours or gone'}]"
        return what

    def to_json(self) -> Dict[str, Any]:
        """The holder as `--json` shows it: what is known (no empty fields)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("active", "error") and v is not None and v not in ("", "?") and (v is not False or k == "verified")}

    def for_status(self) -> Dict[str, Any]:
        """`status`'s lock entry: held or not, who (verified or not), in words too."""
        held = self.active and self.error is None
        out = {k: v for k, v in self.to_json().items() if k not in ("removed_stale_info", "log")} if held else {}
        out["held"] = held
        if held:
            out["text"] = self.text()
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class RayStopped:
    """ray_stop.py: the processes of this cluster it stopped, and those that needed SIGKILL."""

    stopped: Tuple[int, ...] = ()
    killed: Tuple[int, ...] = ()

    @classmethod
    def parse(cls, data: Any) -> "RayStopped":
        data = data if isinstance(data, Mapping) else {}
        return cls(*(tuple(p for p in data.get(k) or () if isinstance(p, int) and not isinstance(p, bool))
                     for k in ("stopped", "killed")))


@dataclass(frozen=True)
class PartyInGcs:
    """A party as the head's GCS sees it: its node's address, alive, its party resource."""

    ip: str = ""
    alive: bool = False
    resource: Optional[float] = None

    @property
    def joined(self) -> bool:
        return self.alive and bool(self.resource)


@dataclass(frozen=True)
class Job:
    """A driver in Ray's job table."""

    job_id: str = ""
    driver_ip: str = ""
    driver_pid: int = 0
    is_dead: bool = True
    entrypoint: str = ""


@dataclass(frozen=True)
class GcsAnswer:
    """gcs.py: every party's state in the GCS, and (jobs=True) the job table; or why the head
    could not say (`error`; `timeout`: the head went silent)."""

    parties: Dict[str, PartyInGcs] = field(default_factory=dict)
    jobs: List[Job] = field(default_factory=list)
    error: Optional[str] = None
    timeout: bool = False

    @classmethod
    def parse(cls, data: Any) -> "GcsAnswer":
        data = data if isinstance(data, Mapping) else {}
        parties = data.get("parties") if isinstance(data.get("parties"), Mapping) else {}
        jobs = data.get("jobs") if isinstance(data.get("jobs"), list) else []
        error = data.get("error")
        return cls({str(p): _typed(PartyInGcs, s) for p, s in parties.items()}, [_typed(Job, j) for j in jobs],
                   str(error) if error is not None else None, data.get("timeout") is True)

    @property
    def missing(self) -> List[str]:
        """The parties that have not joined (not alive, or without their resource)."""
        return [p for p, s in self.parties.items() if not s.joined]

    def live_jobs(self) -> List[Job]:
        return [j for j in self.jobs if not j.is_dead]

    def parties_json(self) -> Dict[str, Dict[str, Any]]:
        return {p: asdict(s) for p, s in self.parties.items()}


# -- provision.py (node side: nodescripts/provision.py; its header documents each action) ---------
def _str_map(v: Any) -> Dict[str, str]:
    return {str(k): str(x) for k, x in v.items() if isinstance(x, str)} if isinstance(v, Mapping) else {}


@dataclass(frozen=True)
class VenvBusy:
    """A process that runs from the venv: it cannot be replaced under it."""

    pid: int = 0
    cmd: str = ""


@dataclass(frozen=True)
class VenvFound:
    """action inspect: the node's base Python and what is at the venv's path now."""

    base: str = ""
    base_version: str = ""
    venv_module: str = ""       # why the base Python cannot make venvs ("" when it can)
    user: str = ""
    exists: bool = False
    is_venv: bool = False
    empty: bool = False
    owner: str = ""
    python_ok: bool = False
    self_swap: bool = False     # the Ray user can make the venv's directory itself (else root does)
    marker_digest: str = ""     # the digest of the pins the venv there was built from
    versions: Dict[str, str] = field(default_factory=dict)
    busy: List[VenvBusy] = field(default_factory=list)

    @classmethod
    def parse(cls, data: Any) -> "VenvFound":
        data = data if isinstance(data, Mapping) else {}
        marker = data.get("marker") if isinstance(data.get("marker"), Mapping) else {}
        digest = marker.get("digest") if isinstance(marker.get("digest"), str) else ""
        busy = [_typed(VenvBusy, b) for b in data.get("busy") or [] if isinstance(b, Mapping)]
        return _typed(cls, data, marker_digest=digest, versions=_str_map(marker.get("versions")), busy=busy)


@dataclass(frozen=True)
class NodeStep:
    """actions swap_in, wheels_put, finish: done, or refused (why; needs_root: only root could)."""

    refused: Optional[str] = None
    needs_root: bool = False
    moved_aside: bool = False
    restored: bool = False      # finish: the previous venv is back in place
    count: int = 0              # wheels_put: wheels received

    @classmethod
    def parse(cls, data: Any) -> "NodeStep":
        return _typed(cls, data)


@dataclass(frozen=True)
class WheelsThere:
    """action wheels: the node's wheelhouse dir, and the wheels it lacks."""

    dir: str = ""
    missing: List[str] = field(default_factory=list)

    @classmethod
    def parse(cls, data: Any) -> "WheelsThere":
        missing = data.get("missing") if isinstance(data, Mapping) and isinstance(data.get("missing"), list) else []
        return _typed(cls, data, missing=[m for m in missing if isinstance(m, str)])


@dataclass(frozen=True)
class VenvBuilt:
    """action build: the versions the new venv imports, or what failed (at which stage, for which package)."""

    failed: Optional[str] = None
    package: Optional[str] = None
    stage: str = ""
    seconds: float = 0.0
    versions: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> "VenvBuilt":
        return _typed(cls, data, versions=_str_map(data.get("versions") if isinstance(data, Mapping) else None))
