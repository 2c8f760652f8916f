"""sfcluster's Python API: the CLI's operations for runbooks and CI, with typed results.

    from sfcluster.api import Cluster          # or: from sfcluster import Cluster
    from sfcluster.errors import SfclusterError

    cluster = Cluster.load("inventory.yaml")   # InventoryError (exit_code 78) names path and line
    report = cluster.check()                   # doctor.Report: .ok, .failed, .exit_code (0, 65, 77)
    up = cluster.up()                          # UpResult: .changed, .actions, .ray_address, .config
    run = cluster.run("train_lr.py", ["--synthetic"])   # RunResult: .run_id, .exit_code, .output_dir
    cluster.down()

One code path: `sfcluster check/up/status/down/run/runs/fetch` call these methods and only
render what they return (pyinfra's api/cli split), so a runbook gets what the CLI does. Each
method opens the SSH connections it needs (connect.Nodes) and closes them before it returns.

What an operation found is returned, with the `exit_code` the CLI exits with: a preflight's
Report (check), the health (status), the nodes `down` could not tear down (DownResult.errors),
the run's exit code (the driver's own, or sfcluster's 70/74/76/130 when it stopped the run). An
operation that cannot be done raises an SfclusterError (errors.py) whose `.exit_code` is the
CLI's for it (exitcodes.py): 78 invalid inventory, 65 preflight failed (`up`), 69 a node or Ray
cannot be reached, 75 the cluster lock is held, 76 another driver is connected... Ctrl-C is
Python's own KeyboardInterrupt (the CLI's 130).
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from sfcluster import dryrun, lifecycle
from sfcluster.run import needs, notebooks
from sfcluster import provision as provisioning
from sfcluster.config import secretflow_config
from sfcluster.connect import Nodes
from sfcluster.doctor import Report, run_checks
from sfcluster.dryrun import UpDryRun
from sfcluster.errors import SfclusterError
from sfcluster.exitcodes import Exit
from sfcluster.inventory import Cluster as Inventory
from sfcluster.inventory import load_inventory
from sfcluster.inventory.load import operated_by
from sfcluster.lifecycle import DownResult
from sfcluster.nodescripts import contract as C
from sfcluster.remote.base import Runner
from sfcluster.run import driver, history
from sfcluster.run import fetch as fetching
from sfcluster.run import production as production_run
from sfcluster.run.fetch import Fetched
from sfcluster.run.history import RunRecord
from sfcluster.termsafe import SafeStream, visible
from sfcluster.tls.install import recorded_dirs

__all__ = ["Cluster", "DownResult", "FetchResult", "Fetched", "Health", "Report", "RunRecord", "RunResult",
           "StatusResult", "UpResult"]

Progress = Callable[[str, str], None]  # (node, message)
Output = Callable[[bytes], None]       # a chunk of a driver's stdout or stderr
Note = Callable[[str], None]           # one line of sfcluster's own about a run or a fetch


def _silent(*_: Any) -> None:
    pass


def _note_on_stderr(message: str) -> None:
    """A run's notes by default: `sfcluster: ...` lines on this process's stderr, as the CLI's."""
    sys.stderr.write(f"sfcluster: {visible(message)}\n")
    sys.stderr.flush()


class Health(str, Enum):
    """The cluster's health as `status` finds it; each with the CLI's exit code."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"   # a party is not up, or a driver sfcluster did not start is connected
    DOWN = "down"           # no party is up (or none answers)

    @property
    def exit_code(self) -> int:
        return int({"healthy": Exit.OK, "degraded": Exit.DEGRADED, "down": Exit.UNAVAILABLE}[self.value])


@dataclass(frozen=True)
class UpResult:
    """What `up` did (`done`: per node, empty when it was a no-op) and what a driver will get."""

    cluster: str
    mode: str                     # "simulation" or "production"
    done: lifecycle.UpResult
    ray_address: Optional[str]    # None in production mode (no shared Ray)
    config: Dict[str, Any]        # the SecretFlow config `run` hands the driver ($SFCLUSTER_CONFIG)
    exit_code: int = int(Exit.OK)

    @property
    def changed(self) -> bool:
        return self.done.changed

    @property
    def actions(self) -> Dict[str, List[str]]:
        return self.done.actions

    @property
    def parties(self) -> Dict[str, dict]:
        """Each party's state in Ray's GCS ({alive, resource, ...}); empty in production mode."""
        return self.done.parties

    def to_json(self) -> Dict[str, Any]:
        """`up --json`'s fields (after `ok` and `exit_code`)."""
        return {"cluster": self.cluster, "mode": self.mode, "changed": self.changed, "actions": self.actions,
                "parties": self.parties, "ray_address": self.ray_address, "config": self.config}


@dataclass(frozen=True)
class StatusResult:
    """`status`: the health and what was found. `data` is `status --json`'s object as it is (its
    rows differ by mode: simulation mode's are lifecycle.NodeStatus's fields)."""

    health: Health
    data: Dict[str, Any]

    @property
    def exit_code(self) -> int:
        return self.health.exit_code

    @property
    def production(self) -> bool:
        return self.data.get("mode") == "production"

    @property
    def nodes(self) -> List[Dict[str, Any]]:
        return self.data["nodes"]

    @property
    def drivers(self) -> List[Dict[str, Any]]:
        """The drivers connected to Ray, each `sanctioned` or not (none in production mode)."""
        return self.data["drivers"]

    @property
    def lock(self) -> Dict[str, Any]:
        """Who holds the cluster lock: {held, text, op, run_id, ...}."""
        return self.data["lock"]

    @property
    def problems(self) -> List[Dict[str, Any]]:
        return self.data["problems"]

    def to_json(self) -> Dict[str, Any]:
        return self.data


@dataclass(frozen=True)
class RunResult:
    """A run that was started (refusals raise: lock held, another driver, no Ray). exit_code is
    the driver's own when it ran to its end, sfcluster's when sfcluster stopped it (record.stopped_by
    says why); 0 for a detached run that went on (`fetch` it once it has ended)."""

    run_id: str
    exit_code: int
    detached: bool
    home: Path                    # <state dir>/<cluster>/runs/<run id>/ on this controller
    record: Optional[RunRecord]   # run.json; None when the driver never started (the run left no history)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output_dir(self) -> Path:
        """What the script wrote into $SFCLUSTER_OUTPUT (production mode: one dir per party)."""
        return self.home / C.OUTPUT_DIR

    @property
    def log(self) -> Path:
        return self.home / C.LOG_NAME


@dataclass(frozen=True)
class FetchResult:
    """A run's outputs and log brought home (`fetched`), copied into `dest` when one was given."""

    fetched: Fetched
    dest: Optional[str]                  # where the outputs were copied (resolved), None: not copied
    cleaned: Optional[Dict[str, Any]]    # the head's cleanup (simulation mode); None in production mode
    exit_code: int = int(Exit.OK)

    @property
    def run_id(self) -> str:
        return self.fetched.record.run_id

    @property
    def record(self) -> RunRecord:
        return self.fetched.record

    @property
    def home(self) -> Path:
        return self.fetched.home

    @property
    def output_dir(self) -> Path:
        return self.fetched.output_dir

    @property
    def log(self) -> Path:
        return self.fetched.home / C.LOG_NAME

    def to_json(self) -> Dict[str, Any]:
        """`fetch --json`'s fields (after `ok` and `exit_code`)."""
        out = {"run_id": self.run_id, "home": str(self.home), "output_dir": str(self.output_dir), "dest": self.dest,
               "log": str(self.log), "outputs": self.record.outputs, "run": self.record.to_json()}
        if self.cleaned is not None:
            out["cleaned"] = self.cleaned
        return out


class Cluster:
    """One cluster of an inventory, and what the CLI does to it. `inventory` is the validated
    model (sfcluster.inventory.Cluster); `runners` (tests, other transports) replaces SSH."""

    def __init__(self, inventory: Inventory, runners: Optional[Mapping[str, Runner]] = None) -> None:
        self.inventory = inventory
        self._runners = runners

    @classmethod
    def load(cls, path: Union[str, Path], parties: Sequence[str] = (),
             runners: Optional[Mapping[str, Runner]] = None) -> "Cluster":
        """The inventory at `path`, validated (InventoryError, exit 78: every problem with its YAML
        path and line). parties (production mode, a federation): touch only their nodes."""
        inventory = load_inventory(str(path))
        return cls(operated_by(inventory, parties) if parties else inventory, runners)

    @property
    def name(self) -> str:
        return self.inventory.name

    @property
    def history_dir(self) -> Path:
        """This controller's run history of the cluster: <state dir>/<cluster>/runs/."""
        return history.runs_dir(self.name)

    def _nodes(self, names: Optional[Sequence[str]] = None) -> Nodes:
        return Nodes(self.inventory, names, runners=self._runners)

    def check(self, *, reach: bool = True, script: Optional[str] = None, script_args: Sequence[str] = ()) -> Report:
        """The preflight (`sfcluster check`): Report.exit_code is 0, 65, or 77 (only sudo failed).
        reach=False skips the reachability matrix. script: also what it says it needs of every
        party (run/needs.py), with its arguments."""
        with self._nodes() as nodes:
            report = run_checks(self.inventory, nodes.runners, reach=reach)
        if script is not None:
            needs.check_row(report, self.inventory, script, script_args)
        return report

    def up(self, *, skip_check: bool = False, keep_on_failure: bool = False,
           join_timeout: float = lifecycle.JOIN_TIMEOUT, lock_wait: float = 0, rotate_certs: bool = False,
           provision: bool = False, progress: Optional[Progress] = None) -> UpResult:
        """`sfcluster up`: idempotent (a no-op says so: `changed` is False). A failed preflight raises
        lifecycle.PreflightFailed (65, or 77; `.report`). lock_wait: seconds to wait for the lock (0:
        fail at once, 75). provision: first each node's venv (`up --provision`)."""
        inv = self.inventory
        say = progress or _silent
        with self._nodes() as nodes:
            if provision:
                provisioning.provision(inv, nodes, progress=say)
            done = lifecycle.up(inv, nodes, skip_check=skip_check, keep_on_failure=keep_on_failure, progress=say,
                                join_timeout=join_timeout, lock_wait=lock_wait, rotate_certs=rotate_certs)
        return UpResult(cluster=inv.name, mode=inv.mode.value, done=done,
                        ray_address=inv.ray_address if inv.mode.runs_ray else None,
                        config=secretflow_config(inv, recorded_dirs(inv)))

    def plan_up(self, *, skip_check: bool = False) -> UpDryRun:
        """`sfcluster up --dry-run`: what `up` would do now (dryrun.py), nothing changed; raises what
        `up` raises before it acts (a failed preflight: lifecycle.PreflightFailed, 65)."""
        with self._nodes() as nodes:
            return dryrun.plan(self.inventory, nodes, skip_check=skip_check)

    def status(self) -> StatusResult:
        """`sfcluster status`: degraded and down are outcomes (exit_code 71, 69), not errors."""
        with self._nodes() as nodes:
            found = lifecycle.status(self.inventory, nodes)
        return StatusResult(Health(found["health"]), found)

    def down(self, *, force: bool = False, cancel_run: bool = False, purge: bool = False, lock_wait: float = 0,
             progress: Optional[Progress] = None) -> DownResult:
        """`sfcluster down`. A node it could not tear down is in `errors` (exit_code 1); a node that
        cannot be reached raises (69, nothing stopped) unless force; a run holding the lock: 75,
        unless cancel_run."""
        with self._nodes() as nodes:
            return lifecycle.down(self.inventory, nodes, force=force, cancel_run=cancel_run, lock_wait=lock_wait,
                                  purge=purge, progress=progress or _silent)

    def run(self, script: Union[str, Path], args: Sequence[str] = (), *, files: Sequence[str] = (),
            detach: bool = False, lock_wait: float = 0, starve_seconds: float = driver.STARVE_SECONDS,
            max_output_mb: float = fetching.MAX_OUTPUT_MB, start_timeout: float = 120,
            run_id: Optional[str] = None, stdout: Optional[Output] = None, stderr: Optional[Output] = None,
            note: Optional[Note] = None, cell_timeout: float = notebooks.CELL_TIMEOUT,
            party_map: Optional[Mapping[str, str]] = None) -> RunResult:
        """`sfcluster run SCRIPT ARGS`: the cluster's one driver (production mode: one per party). A
        SCRIPT ending in .ipynb is a notebook (run/notebooks.py): its cells run in order in the driver,
        each for at most cell_timeout seconds; party_map renames the notebook's parties. The
        driver's output goes to stdout/stderr (default: this process's, through termsafe's filter);
        sfcluster's own lines to note (default: `sfcluster: ...` on stderr). Ctrl-C stops the driver
        (again: KeyboardInterrupt). run_id: production mode only (the id every party's operator
        gives); otherwise the run is named here."""
        inv = self.inventory
        production = not inv.mode.runs_ray
        if run_id and not production:
            raise SfclusterError("--run-id is for production mode (the id every party's driver shares)",
                                 "drop it: in simulation mode `run` names the run itself")
        # named here, to be returned; a federation's operators must agree on theirs (production.run says so)
        run_id = run_id or (None if inv.federated else history.new_run_id())
        opts = driver.RunOptions(script=str(script), args=list(args), files=list(files), wait=lock_wait > 0,
                                 wait_seconds=lock_wait, detach=detach, starve_seconds=starve_seconds,
                                 max_output_mb=max_output_mb, start_timeout=start_timeout, run_id=run_id)
        if notebooks.is_notebook(str(script)):
            if args:
                raise SfclusterError(f"{script}: a notebook takes no arguments (got {' '.join(args)})",
                                     "set what it needs in a cell, or run a script")
            nb = notebooks.read(str(script))
            notebooks.check(inv, nb, party_map or {})
            opts.script, opts.notebook = str(notebooks.RUNNER_FILE), nb.path
            opts.args = notebooks.runner_args(nb, cell_timeout, party_map or {})
        elif party_map:
            raise SfclusterError("--party-map is for notebooks (.ipynb)", "drop it, or run a notebook")
        else:
            short = needs.refusal(inv, opts.script, opts.args)  # before anything is shipped or locked
            if short is not None:
                raise short
        names = list(inv.operated_names) if files or production else [inv.head_name]
        start = production_run.run if production else driver.run
        own: List[SafeStream] = []  # the defaults, this process's streams: closed at the end
        if stdout is None:
            stdout = SafeStream(sys.stdout)
            own.append(stdout)
        if stderr is None:
            stderr = SafeStream(sys.stderr)
            own.append(stderr)
        try:
            with self._nodes(names) as nodes:
                code = start(inv, nodes, opts, out=stdout, err=stderr, note=note or _note_on_stderr)
        finally:
            for stream in own:
                stream.close()
        assert opts.run_id is not None  # production.run refuses a federation's run without one
        return RunResult(run_id=opts.run_id, exit_code=code, detached=detach,
                         home=history.run_home(inv.name, opts.run_id), record=history.load(inv.name, opts.run_id))

    def runs(self, last: Optional[int] = None) -> List[RunRecord]:
        """Past runs of this cluster from this controller's history, newest first (no connection)."""
        return history.list_runs(self.name)[:last]

    def fetch(self, run_id: str, dest: Union[str, Path, None] = None, *,
              max_output_mb: float = fetching.MAX_OUTPUT_MB, note: Optional[Note] = None) -> FetchResult:
        """`sfcluster fetch RUN_ID [DEST]`: a run's outputs and log into its history dir (a detached
        run, once it has ended), then copied into dest (made when missing; same names replaced)."""
        history.check_run_id(run_id)
        say = note or _silent
        past = history.load(self.name, run_id)
        if past is not None and past.mode == "production":
            got, cleaned = self._fetch_production(run_id, max_output_mb, say), None
        else:
            got, cleaned = self._fetch_head(run_id, max_output_mb, say)
        copied = None
        if dest is not None and got.output_dir.is_dir():
            copied = str(Path(dest).resolve())
            shutil.copytree(got.output_dir, dest, symlinks=True, dirs_exist_ok=True)
        return FetchResult(got, copied, cleaned)

    def _fetch_production(self, run_id: str, max_output_mb: float, note: Note) -> Fetched:
        """Every party's outputs and log again (a federation: the operated parties')."""
        with self._nodes() as nodes:
            rec = production_run.fetch_again(self.inventory, nodes, run_id, max_output_mb, note)
        return Fetched(rec, history.run_home(self.name, run_id), rec.outputs)

    def _fetch_head(self, run_id: str, max_output_mb: float, note: Note) -> Tuple[Fetched, Dict[str, Any]]:
        """Simulation mode: from the head, which then cleans its old run dirs (a failure is said)."""
        inv = self.inventory
        cleaned: Dict[str, Any] = {}
        with self._nodes([inv.head_name]) as nodes:
            got = fetching.fetch(inv, nodes, run_id, max_output_mb, exit_code_of=driver.exit_code_of, note=note)
            try:
                cleaned = fetching.clean_head(inv, nodes, fetched=run_id)
            except SfclusterError as e:
                note(f"cleaning old run dirs on the head failed (harmless, retried next time): {e.message}")
        return got, cleaned
