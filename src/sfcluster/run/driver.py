"""The controller side of a run. The remote side (nodescripts/driver_wrapper.py) takes the
cluster-wide lock, checks Ray's job table and starts the driver, all in one remote process."""
from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional

from sfcluster.config import secretflow_config
from sfcluster.connect import Nodes
from sfcluster.clusterlock import WAIT_TIMEOUT, held_error, lock_holder
from sfcluster.nodescripts.answers import LockHolder
from sfcluster.remote.base import by_line
from sfcluster.remote.transfer import bundle, push, unsafe_state
from sfcluster.tls.install import dirs_for_run, with_env
from sfcluster.errors import ForeignDriver, SfclusterError, UnavailableError
from sfcluster.exitcodes import Exit
from sfcluster.inventory.model import Cluster
from sfcluster.nodescripts import contract as C
from sfcluster.nodescripts import GATE_FILE, wrapper
from sfcluster.inventory.model import MIN_CPUS
from sfcluster.remote.group import fan_out
from sfcluster.run import fetch as fetching
from sfcluster.run.control import ControlLines, stop_on_signals
from sfcluster.run import history

RUNTIME_FILE = Path(__file__).resolve().parents[1] / "runtime.py"
STARVE_SECONDS = 60
HEAD_SILENCE = 30  # seconds without a word (output or the wrapper's 5 s beat) from the head
# Why sfcluster ended a run (the wrapper's EXIT `kind`) -> the exit code `run` returns instead of
# the driver's own (which is then only the driver reacting to being stopped).
STOPPED_EXIT = {"node_lost": Exit.NODE_LOST, "foreign_driver": Exit.FOREIGN_DRIVER, "foreign_node": Exit.FOREIGN_DRIVER,
                "starved": Exit.STARVED,
                "cancelled": Exit.CANCELLED, "interrupted": Exit.CANCELLED, "controller_gone": Exit.CANCELLED}
assert set(STOPPED_EXIT) == set(C.STOP_KINDS), "every way the wrapper stops a run has its exit code"


@dataclass
class RunOptions:
    script: str
    args: List[str] = field(default_factory=list)
    files: List[str] = field(default_factory=list)
    wait: bool = False
    wait_seconds: float = WAIT_TIMEOUT
    detach: bool = False
    starve_seconds: float = STARVE_SECONDS   # 0: no starvation watch
    max_output_mb: float = fetching.MAX_OUTPUT_MB
    start_timeout: float = 120  # production mode: every party's driver started within this (run/production.py)
    # production mode: the id every party's operator starts with (--run-id); None: a new one. The
    # API (api.Cluster.run) names every run beforehand, to return its id.
    run_id: Optional[str] = None
    # a notebook (run/notebooks.py): `script` is sfcluster/notebook.py, shipped as NOTEBOOK_SCRIPT
    # with the notebook beside it; the run's history names the notebook
    notebook: Optional[str] = None


NOTEBOOK_SCRIPT = "sfcluster_notebook.py"


def shipped_name(opts: RunOptions) -> str:
    return NOTEBOOK_SCRIPT if opts.notebook else os.path.basename(opts.script)


def _ship(cluster: Cluster, nodes: Nodes, opts: RunOptions, run_id: str, tls_dirs: Dict[str, str]) -> Dict[str, str]:
    """The script, its config, the runtime helper and the wrapper to the head; --files to every
    node. One SSH exec per node, the nodes in parallel. Returns each node's run dir."""
    head = cluster.head
    files = [(f"files/{os.path.basename(f)}", Path(f).read_bytes(), 0o600) for f in opts.files]
    head_members = files + [
        ("sfcluster/__init__.py", b'"""sfcluster runtime helper, shipped with the script."""\n', 0o644),
        ("sfcluster/runtime.py", RUNTIME_FILE.read_bytes(), 0o644),
        ("sfcluster/gate.py", GATE_FILE.read_bytes(), 0o644),
        ("sfcluster.json", json.dumps(secretflow_config(cluster, tls_dirs), indent=2).encode(), 0o600),
        (C.WRAPPER_NAME, wrapper().encode(), 0o600),
        (shipped_name(opts), Path(opts.script).read_bytes(), 0o600),
    ] + ([(os.path.basename(opts.notebook), Path(opts.notebook).read_bytes(), 0o600)] if opts.notebook else [])
    payload = {head.name: bundle(head_members, dirs=("files",))}
    if opts.files:
        payload.update({w.name: bundle(files, dirs=("files",)) for w in cluster.workers})
    dirs: Dict[str, str] = {}

    def ship(n: str) -> None:  # a fresh private run dir (never reused), the files from a tar on stdin
        dirs[n] = push(nodes.ray(n), cluster.name, f"runs/{run_id}", payload[n], mode="fresh")
    shipped = fan_out(ship, payload)
    if len(shipped.errors) == 1:
        raise next(iter(shipped.errors.values()))  # as it is, with its node and hint
    shipped.raise_if_failed("shipping the run's files")
    return dirs


def _request(cluster: Cluster, opts: RunOptions, run_id: str, dirs: Dict[str, str]) -> dict:
    head = cluster.head
    return {
        "cluster": cluster.name, "run_id": run_id, "script_name": shipped_name(opts), "args": opts.args,
        "files_dirs": sorted({f"{d}/files" for d in dirs.values()}),
        "python": head.python, "ray_address": cluster.ray_address,
        "wait_seconds": opts.wait_seconds if opts.wait else 0, "detach": opts.detach,
        "token": secrets.token_hex(16), "user": getpass.getuser(), "controller": socket.gethostname(),
        "watch": {w.name: [w.host, cluster.ray.node_manager] for w in cluster.workers},
        "head_host": head.host, "parties": {n.name: {"cpus": n.cpus, "host": n.host} for n in cluster.nodes},
        "min_cpus": MIN_CPUS, "starve_seconds": opts.starve_seconds,
    }


def check_inputs(opts: RunOptions) -> None:
    """The script and every --files are files here, before anything is shipped."""
    if not Path(opts.script).is_file():
        raise SfclusterError(f"script {opts.script} not found")
    for f in opts.files:
        if not Path(f).is_file():
            raise SfclusterError(f"--files {f}: not a file")


def new_record(cluster: Cluster, opts: RunOptions, run_id: str, **kw: object) -> history.RunRecord:
    """The run's history record as it starts (this controller, this user, the inventory's digest)."""
    return history.RunRecord(run_id=run_id, cluster=cluster.name, script=os.path.basename(opts.notebook or opts.script),
                             args=list(opts.args), user=getpass.getuser(), controller=socket.gethostname(),
                             started=time.time(), inventory=os.path.abspath(cluster.source),
                             inventory_digest=history.inventory_digest(cluster.source), **kw)  # type: ignore[arg-type]


def tee(log: BinaryIO, to: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        log.write(data)
        to(data)
    return write


def run(cluster: Cluster, nodes: Nodes, opts: RunOptions, out: Callable[[bytes], None],
        err: Callable[[bytes], None], note: Callable[[str], None]) -> int:
    """Run the driver; return its exit code. Ctrl-C/SIGTERM stop it remotely and wait for that."""
    check_inputs(opts)
    run_id = opts.run_id or history.new_run_id()  # the API names it beforehand (api.Cluster.run)
    tls_dirs = dirs_for_run(cluster, nodes)  # tls: on: where each node keeps its certificates
    dirs = _ship(cluster, nodes, opts, run_id, tls_dirs)
    req = _request(cluster, opts, run_id, dirs)
    rec = new_record(cluster, opts, run_id, detached=opts.detach)
    log_path = history.make_home(cluster.name, run_id) / C.LOG_NAME  # the fetch replaces it by the head's whole log
    log = open(log_path, "ab")
    control = ControlLines(note, tee(log, err))
    try:
        with stop_on_signals(note, "the driver on the head") as interrupted:
            # the wrapper is a file of the run dir; the request (token included) goes on stdin,
            # never on a command line. With tls: on, the wrapper (its GCS client) and the driver
            # get Ray's TLS environment: without it they could not even connect.
            code = nodes.ray(cluster.head_name).stream(
                with_env([cluster.head.python, f"{dirs[cluster.head_name]}/{C.WRAPPER_NAME}"],
                         tls_dirs.get(cluster.head_name)),
                stdin=json.dumps(req) + "\n", on_stdout=tee(log, out), on_stderr=by_line(control.feed),
                keep_stdin_open=not opts.detach, close_stdin=interrupted,
                # the wrapper beats every 5 s while it waits for the lock and while the driver
                # runs: a head that goes silent (frozen, powered off, cut off) ends the run
                idle_timeout=HEAD_SILENCE)
    finally:
        log.close()
        if C.STARTED in control:
            history.save(rec)  # a run, whatever happens next (`fetch` completes it)
        else:  # refused (lock held, another driver, no Ray) or never heard of: no run to remember
            shutil.rmtree(log_path.parent, ignore_errors=True)
    _raise_refusal(cluster, code, control)
    if opts.detach and C.STARTED in control:
        note(f"detached: run {run_id} goes on; follow it with `sfcluster logs -f`, stop it with `sfcluster cancel`, "
             f"fetch its outputs once it has ended with `sfcluster fetch {run_id}`")
        return 0
    said: List[str] = []   # why it ended stays the LAST line the user sees, below where the outputs went
    final = outcome(control.kinds, code, interrupted.is_set(), said.append)
    _record_end(rec, control.kinds, final)
    if C.EXIT in control:
        bring_home(cluster, nodes, run_id, opts.max_output_mb, note)
    for line in said:
        note(line)
    return final


def _raise_refusal(cluster: Cluster, code: int, control: ControlLines) -> None:
    """The wrapper refused to start the driver: the error that says why."""
    if code == C.HELD_EXIT and C.LOCKED in control:
        raise held_error(cluster, LockHolder.parse(json.loads(control[C.LOCKED])), "run")
    if C.STARTED in control:
        return
    if code == C.FOREIGN_EXIT and C.FOREIGN in control:
        raise ForeignDriver(f"another driver is connected to the cluster: {_drivers(control[C.FOREIGN])}",
                            FOREIGN_FIX)
    if C.UNSAFE in control:
        raise unsafe_state(cluster.head_name, control[C.UNSAFE])
    if code == C.NORAY_EXIT:
        raise UnavailableError(f"Ray is not reachable at {cluster.ray_address}: {control.get(C.NORAY) or ''}",
                               "bring the cluster up first: sfcluster up")


def _record_end(rec: history.RunRecord, control: dict, final: int) -> None:
    rec.ended = time.time()
    rec.duration = round(rec.ended - (rec.started or rec.ended), 3)
    rec.exit_code = final
    try:
        ex = json.loads(control[C.EXIT])
        rec.driver_exit, rec.stopped_by = int(ex["code"]), ex.get("kind") or ""
    except (KeyError, ValueError, TypeError):
        pass
    history.save(rec)


def bring_home(cluster: Cluster, nodes: Nodes, run_id: str, max_output_mb: float,
               note: Callable[[str], None]) -> "fetching.Fetched | None":
    """After the driver ended: its outputs and log into the run's history dir, then the head
    cleaned. A failure here is said, never turned into the run's exit code (the run is done)."""
    try:
        got = fetching.fetch(cluster, nodes, run_id, max_output_mb, exit_code_of=exit_code_of, note=note)
    except SfclusterError as e:
        note(f"the run ended, but its outputs were not fetched: {e.message} (fix: {e.hint or 'retry'}; "
             f"sfcluster fetch {run_id})")
        return None
    note(fetching.describe(got))
    try:
        fetching.clean_head(cluster, nodes, fetched=run_id)
    except SfclusterError as e:
        note(f"cleaning old run dirs on the head failed (harmless, retried after the next run): {e.message}")
    return got


FOREIGN_FIX = ("stop it on that host (kill <pid>), then retry; only `sfcluster run` starts drivers "
               "(runbook: 'another driver is connected')")


def _drivers(payload: str) -> str:
    return "; ".join(f"{d['ip']} pid {d['pid']} ({(d.get('entrypoint') or '?')[:120]})"
                     f"{' (already gone)' if d.get('dead') else ''}" for d in json.loads(payload))


def outcome(control: dict, code: int, interrupted: bool, note: Callable[[str], None]) -> int:
    """The exit code of a run whose driver started, and its last line: the driver's own code when
    it ended by itself; sfcluster's code (and why, as the last line the user sees, below the
    driver's traceback) when sfcluster stopped it."""
    if C.EXIT not in control:
        note(f"run ended without a word from the head (wrapper exit {code}): the connection was lost")
        return int(Exit.UNAVAILABLE)
    ex = json.loads(control[C.EXIT])
    kind = ex.get("kind") or ("interrupted" if interrupted else "")
    if kind in STOPPED_EXIT:
        why = ex.get("why") or kind
        if kind == "foreign_driver" and C.FOREIGN in control:
            why = f"another driver connected to the cluster mid-run: {_drivers(control[C.FOREIGN])}; fix: {FOREIGN_FIX}"
        note(f"run stopped by sfcluster: {why} (driver exit {ex['code']}; sfcluster exits {int(STOPPED_EXIT[kind])})")
        return int(STOPPED_EXIT[kind])
    return exit_code_of(int(ex["code"]), "")


def exit_code_of(code: int, kind: str) -> int:
    """The exit code `run` returns for a driver that exited with `code`, stopped (kind) or not."""
    if kind in STOPPED_EXIT:
        return int(STOPPED_EXIT[kind])
    return code if 0 <= code < 256 else 128 - code if code < 0 else 1


def _active(cluster: Cluster, nodes: Nodes, action: str = "info") -> LockHolder:
    info = lock_holder(cluster, nodes, action)
    if not info.active or info.op not in ("run", None):
        raise SfclusterError(f"no run is active on cluster '{cluster.name}'"
                             + (f" (the cluster lock is held by {info.text()})" if info.active else ""))
    if not info.verified:
        raise SfclusterError(f"cluster '{cluster.name}': the lock is held, but not by a run sfcluster can verify "
                             f"({info.why}); nothing was signalled",
                             "retry in a few seconds (a run may be starting); `sfcluster status` shows the drivers")
    return info


def active_run_id(cluster: Cluster, nodes: Nodes) -> "str | None":
    """The run id of the verified active run, if any."""
    info = lock_holder(cluster, nodes)
    return info.run_id if info.run else None


def follow_logs(cluster: Cluster, nodes: Nodes, follow: bool, out: Callable[[bytes], None]) -> int:
    info = _active(cluster, nodes)
    if not info.log or info.pid is None:
        raise SfclusterError(f"the head named no log of run {info.run_id}")
    argv = ["tail", "-n", "+1", info.log]  # the path is the head's own: <state>/runs/<id>/driver.log
    if follow:
        argv = ["tail", f"--pid={info.pid}", "-n", "+1", "-f", info.log]
    return nodes.ray(cluster.head_name).stream(argv, on_stdout=out)


def cancel(cluster: Cluster, nodes: Nodes) -> LockHolder:
    info = _active(cluster, nodes, "cancel")
    if not info.cancelled:
        raise SfclusterError(f"run {info.run_id} did not stop within 20 s (wrapper pid {info.pid})")
    return info
