"""The controller side of a production-mode run: one driver of the same script per party, each on
its own party's node, started together and stopped together.

Each party gets what its own driver needs and nothing of the others' (its config names only its
own certificate files), in a fresh private run dir on its node; one wrapper per party
(nodescripts/driver_wrapper.py, the one of simulation mode) takes that party's lock on its own node,
starts the driver and reports on its stderr. The controller reads every party's control lines and:
- refuses the run when any party's lock is held (naming the party and the holder), stopping the
  parties that had started;
- ends the run when one party's driver fails, goes silent or never starts: the others are stopped
  (their wrappers see the controller's channel close) instead of waiting out SecretFlow's own
  receive timeouts;
- brings every party's outputs home into output/<party>/ (unless that party's `keep_outputs`), each
  party's whole log into logs/<party>.log, and records each party's exit code in run.json.
There is no Ray to ask about foreign drivers: what guarantees one driver per party is the lock on
each party's node, which only `sfcluster run` takes.
"""
from __future__ import annotations

import collections
import getpass
import json
import os
import queue
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional

from sfcluster.nodescripts.answers import LockHolder
from sfcluster.config import production_config
from sfcluster.connect import Nodes
from sfcluster.errors import LockHeld, SfclusterError
from sfcluster.exitcodes import Exit
from sfcluster.inventory.model import Cluster
from sfcluster.nodescripts import contract as C
from sfcluster.nodescripts import GATE_FILE, wrapper
from sfcluster.remote.base import by_line
from sfcluster.remote.group import fan_out
from sfcluster.remote.transfer import bundle, push, unsafe_state
from sfcluster.run import fetch as fetching
from sfcluster.run import history
from sfcluster.run.control import ControlLines, stop_on_signals
from sfcluster.run.history import new_run_id
from sfcluster.run.driver import RUNTIME_FILE, RunOptions, check_inputs, exit_code_of, new_record
from sfcluster.tls.install import dirs_for_run, enabled as tls_enabled

LAUNCH_FILE = RUNTIME_FILE.parent / "launch.py"
# A party whose channel says nothing (output or the wrapper's 5 s beat) this long is lost (a node
# that froze, lost power or was cut off sends nothing, not even an EOF): the run stops everywhere.
PARTY_SILENCE = 15


def _ship(cluster: Cluster, nodes: Nodes, opts: RunOptions, run_id: str,
          tls_dirs: Dict[str, str]) -> Dict[str, str]:
    """Each party's bundle (script, ITS config, runtime helper, wrapper, --files) to its node, in
    parallel; returns each party's run dir."""
    files = [(f"files/{os.path.basename(f)}", Path(f).read_bytes(), 0o600) for f in opts.files]
    common = files + [
        ("sfcluster/__init__.py", b'"""sfcluster runtime helper, shipped with the script."""\n', 0o644),
        ("sfcluster/runtime.py", RUNTIME_FILE.read_bytes(), 0o644),
        ("sfcluster/gate.py", GATE_FILE.read_bytes(), 0o644),
        ("sfcluster/launch.py", LAUNCH_FILE.read_bytes(), 0o644),
        (C.WRAPPER_NAME, wrapper().encode(), 0o600),
        (os.path.basename(opts.script), Path(opts.script).read_bytes(), 0o600),
    ]
    payload = {n.name: bundle(common + [("sfcluster.json", json.dumps(
        production_config(cluster, n.name, run_id, tls_dirs, opts.start_timeout), indent=2).encode(), 0o600)], dirs=("files",))
        for n in (cluster.node(name) for name in cluster.operated_names)}
    dirs: Dict[str, str] = {}

    def ship(n: str) -> None:
        dirs[n] = push(nodes.ray(n), cluster.name, f"runs/{run_id}", payload[n], mode="fresh")
    shipped = fan_out(ship, payload)
    if len(shipped.errors) == 1:
        raise next(iter(shipped.errors.values()))
    shipped.raise_if_failed("shipping the run's files")
    return dirs


def _request(cluster: Cluster, opts: RunOptions, run_id: str, party: str, run_dir: str, token: str) -> dict:
    node = cluster.node(party)
    return {
        "mode": "production", "cluster": cluster.name, "run_id": run_id,
        "script_name": os.path.basename(opts.script), "args": opts.args, "files_dirs": [f"{run_dir}/files"],
        "python": node.python, "ray_address": "", "wait_seconds": opts.wait_seconds if opts.wait else 0,
        "detach": False, "token": token, "user": getpass.getuser(), "controller": socket.gethostname(),
        "watch": {}, "head_host": node.host, "parties": {party: {"cpus": node.cpus}}, "min_cpus": 0,
        "starve_seconds": 0,
        # tls on: the wrapper holds both public ports behind TLS-only gates (driver_wrapper.Gate)
        "gate": {"cross_silo": [node.link_bind, node.cross_silo_port],
                 "spu": [node.link_bind, node.spu_port]} if tls_enabled(cluster) else {},
        # a federation: the peers' cross-silo addresses, which the wrapper watches (watch_peers)
        # because no controller here sees their drivers end
        "peers": {n.name: [n.spu_advertise, n.cross_silo_port] for n in cluster.nodes
                  if n.name not in cluster.operated_names} if cluster.federated else {},
    }


class _Party:
    """One party's stream: its control lines, its outcome."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.code: Optional[int] = None
        self.error: Optional[BaseException] = None
        self.control: Optional[ControlLines] = None
        self.tail: "collections.deque[str]" = collections.deque(maxlen=4)  # its last lines, for the cause

    @property
    def started(self) -> bool:
        return self.control is not None and C.STARTED in self.control

    @property
    def linking(self) -> bool:
        """Its driver is at sf.init, or past it (runtime.init)."""
        return self.control is not None and (C.LINKING in self.control or C.READY in self.control)

    @property
    def ready(self) -> bool:
        """Its driver reached every peer (runtime.init's barrier)."""
        return self.control is not None and C.READY in self.control

    def exit(self) -> Optional[dict]:
        if self.control is None or C.EXIT not in self.control:
            return None
        try:
            return json.loads(self.control[C.EXIT])
        except ValueError:
            return None


def run(cluster: Cluster, nodes: Nodes, opts: RunOptions, out: Callable[[bytes], None],
        err: Callable[[bytes], None], note: Callable[[str], None]) -> int:
    """Run one driver per party; return the run's exit code (0 only when every party's driver
    exited 0). Ctrl-C/SIGTERM stop every party's driver and wait for that."""
    run_id = _run_id(cluster, opts)
    tls_dirs = dirs_for_run(cluster, nodes)
    dirs = _ship(cluster, nodes, opts, run_id, tls_dirs)
    rec = new_record(cluster, opts, run_id, mode="production")
    home = history.make_home(cluster.name, run_id)
    drivers = _Drivers(cluster, nodes, opts, run_id, dirs, note)
    with open(home / C.LOG_NAME, "ab") as log, \
            stop_on_signals(note, "the driver of every party", on_first=drivers.stop_all.set) as interrupted:
        drivers.stream(log, out, err)
    parties, cause = drivers.parties, drivers.cause
    if not any(p.started for p in parties.values()):
        shutil.rmtree(home, ignore_errors=True)  # refused everywhere: no run to remember
    _raise_refusal(cluster, nodes, rec, parties, opts, note, cause)
    final = _final_code(parties, cause, interrupted.is_set())
    _finish(cluster, nodes, rec, parties, final, opts, note, cause)
    return final


def _run_id(cluster: Cluster, opts: RunOptions) -> str:
    """The run's id, after the checks that need no node: a federated party must be given the id
    every operator starts with, and an id is used once."""
    if opts.detach:
        raise SfclusterError("--detach is not supported in production mode yet",
                             "run it in the foreground (e.g. under nohup or tmux on the controller)")
    check_inputs(opts)
    run_id = opts.run_id or new_run_id()
    if cluster.federated and not opts.run_id:
        raise SfclusterError(
            f"this controller starts only {', '.join(cluster.operated_names)}'s driver (--party): the other parties' "
            "operators start theirs, and every driver of one run must have the same run id",
            f"agree on one with the other operators and give it to every `run`: --run-id {run_id}")
    if history.run_home(cluster.name, run_id).exists():
        raise SfclusterError(f"run {run_id} is already in this controller's history: a run id is used once",
                             f"agree on a new one with the other operators (e.g. --run-id {new_run_id()})")
    return run_id


class _Drivers:
    """Every party's wrapper streamed at once (a thread each) and watched: the first party whose
    driver fails, goes silent or is lost ends the run for all (stop_all closes every channel, and
    each wrapper stops its driver); so do drivers that do not all reach every peer in time.
    `cause`: the party whose end ended the run, why, and (when sfcluster's) the exit code."""

    def __init__(self, cluster: Cluster, nodes: Nodes, opts: RunOptions, run_id: str, dirs: Dict[str, str],
                 note: Callable[[str], None]) -> None:
        self.cluster, self.nodes, self.opts, self.run_id, self.dirs, self.note = cluster, nodes, opts, run_id, dirs, note
        self.parties = {n: _Party(n) for n in cluster.operated_names}
        self.stop_all = threading.Event()
        self.cause: Dict[str, Any] = {}
        self._ended: "queue.Queue[str]" = queue.Queue()
        self._token = secrets.token_hex(16)
        self._log_lock = threading.Lock()

    def stream(self, log: BinaryIO, out: Callable[[bytes], None], err: Callable[[bytes], None]) -> None:
        threads = [threading.Thread(target=self._party, args=(p, log, out, err), name=f"sfcluster-run-{p.name}",
                                    daemon=True) for p in self.parties.values()]
        for t in threads:
            t.start()
        self._watch()
        for t in threads:
            t.join(5)

    def _party(self, p: _Party, log: BinaryIO, out: Callable[[bytes], None], err: Callable[[bytes], None]) -> None:
        tag = f"[{p.name}] ".encode()

        def write(data: bytes, to: Callable[[bytes], None]) -> None:
            p.tail.append(data[len(tag):].decode(errors="replace").rstrip()[:300])
            with self._log_lock:
                log.write(data)
                to(data)
        p.control = ControlLines(lambda m: self.note(f"[{p.name}] {m}"), lambda line: write(tag + line, err))
        req = _request(self.cluster, self.opts, self.run_id, p.name, self.dirs[p.name], self._token)
        try:
            p.code = self.nodes.ray(p.name).stream(
                [self.cluster.node(p.name).python, f"{self.dirs[p.name]}/{C.WRAPPER_NAME}"],
                stdin=json.dumps(req) + "\n",
                on_stdout=by_line(lambda line: write(tag + line + b"\n", out)), on_stderr=by_line(p.control.feed),
                keep_stdin_open=True, close_stdin=self.stop_all, idle_timeout=PARTY_SILENCE)
        except BaseException as e:  # noqa: BLE001 - reported in the caller's thread
            p.error = e
        finally:
            self._ended.put(p.name)

    def _watch(self) -> None:
        deadline = time.monotonic() + self.opts.start_timeout
        left = set(self.parties)
        while left:
            try:
                name = self._ended.get(timeout=0.2)
            except queue.Empty:
                if not self.stop_all.is_set() and time.monotonic() > deadline \
                        and not all(p.ready for p in self.parties.values()):
                    self._stop(self._not_linked(), "every party")
                continue
            left.discard(name)
            p = self.parties[name]
            ex = p.exit()
            if (p.error is not None or ex is None or int(ex.get("code", 1)) != 0) and not self.stop_all.is_set():
                self.cause.setdefault("party", name)
                if p.error is not None or ex is None:  # silent, cut off, its SSH gone: the party is lost
                    self.cause.setdefault("code", int(Exit.NODE_LOST))
                self._stop(_why(p), f"the other parties ({', '.join(sorted(left))})" if left else "")

    def _not_linked(self) -> str:
        """Why the run stops when its drivers did not all reach every peer within start_timeout."""
        t = self.opts.start_timeout
        absent = sorted(n for n, p in self.parties.items() if not p.linking)
        missing = absent or sorted(n for n, p in self.parties.items() if not p.ready)
        self.cause.setdefault("party", missing[0])
        self.cause.setdefault("code", int(Exit.UNAVAILABLE))
        if absent:
            return f"the driver of {', '.join(absent)} did not come to sf.init within {t:g} s"
        return (f"the drivers of {', '.join(missing)} did not reach every peer within {t:g} s (each party must reach "
                "the others' cross-silo ports: sfcluster check"
                + (f"; the other parties' operators must start theirs with --run-id {self.run_id}"
                   if self.cluster.federated else "") + ")")

    def _stop(self, why: str, whom: str) -> None:
        self.cause.setdefault("why", why)
        if whom:
            self.note(f"{self.cause['why']}: stopping {whom}")
        self.stop_all.set()


def _raise_refusal(cluster: Cluster, nodes: Nodes, rec: history.RunRecord, parties: Dict[str, "_Party"],
                   opts: RunOptions, note: Callable[[str], None], cause: Dict[str, Any]) -> None:
    """A party's wrapper refused to start its driver: the error that says why (a lock held on a
    party ends the run of the parties that did start, recorded as such)."""
    held = [p for p in parties.values() if p.code == C.HELD_EXIT and p.control is not None
            and C.LOCKED in p.control and not p.started]
    if held:
        p = held[0]
        h = LockHolder.parse(json.loads(p.control[C.LOCKED]))  # type: ignore[index]
        if any(q.started for q in parties.values()):
            _finish(cluster, nodes, rec, parties, int(Exit.LOCKED), opts, note, cause)
        raise LockHeld(f"cluster '{cluster.name}': party {p.name}'s lock is held by {h.text()} (on "
                       f"{cluster.node(p.name).host}); no driver of this run went on",
                       "wait for it (`sfcluster run --wait`) or stop it (on that party's node)", h.to_json())
    for p in parties.values():
        if p.control is not None and C.UNSAFE in p.control and not p.started:
            raise unsafe_state(p.name, p.control[C.UNSAFE])
        if p.control is not None and C.NOGATE in p.control and not p.started:
            raise SfclusterError(f"[{p.name}] cannot hold its public port for the run: {json.loads(p.control[C.NOGATE])}",
                                 "`sfcluster check` shows who holds it")
    errors = [p for p in parties.values() if p.error is not None and not p.started]
    if errors and not any(p.started for p in parties.values()):
        raise errors[0].error  # type: ignore[misc]


def _why(p: _Party) -> str:
    ex = p.exit()
    if p.error is not None:
        return f"party {p.name}: {getattr(p.error, 'message', p.error)}"
    if ex is None:
        return f"party {p.name}'s node went silent or its connection was lost (wrapper exit {p.code})"
    if ex.get("kind"):
        return f"party {p.name}'s driver was stopped: {ex.get('why') or ex['kind']}"
    last = "".join(f"\n    {line}" for line in p.tail if line)
    return f"party {p.name}'s driver exited {ex.get('code')}" + (f"; its last lines:{last}" if last else "")


def _final_code(parties: Dict[str, _Party], cause: Dict[str, Any], interrupted: bool) -> int:
    """0 when every party's driver exited 0 by itself; Ctrl-C: 130; else the code of the party
    whose end ended the run (its driver's own code, or sfcluster's when sfcluster stopped it)."""
    if interrupted:
        return int(Exit.CANCELLED)
    if "code" in cause:
        return int(cause["code"])
    exits = {n: p.exit() for n, p in parties.items()}
    if all(ex is not None and not ex.get("kind") and int(ex["code"]) == 0 for ex in exits.values()):
        return 0
    first = parties.get(cause.get("party", ""))
    if first is None:  # every party ended by itself, one of them non-zero
        first = next(p for n, p in parties.items() if not (exits[n] and int(exits[n]["code"]) == 0))
    ex = first.exit()
    if ex is None:
        return int(Exit.UNAVAILABLE) if first.started else int(Exit.NODE_LOST)
    kind = ex.get("kind") or ""
    if kind == "controller_gone" and not first.started:
        return int(Exit.NODE_LOST)
    return exit_code_of(int(ex["code"]), kind)


def _finish(cluster: Cluster, nodes: Nodes, rec: history.RunRecord, parties: Dict[str, _Party], final: int,
            opts: RunOptions, note: Callable[[str], None], cause: Dict[str, Any]) -> None:
    rec.ended = time.time()
    rec.duration = round(rec.ended - (rec.started or rec.ended), 3)
    rec.exit_code = final
    rec.parties = {}
    for n, p in parties.items():
        ex = p.exit() or {}
        rec.parties[n] = {"started": p.started, "driver_exit": ex.get("code"), "stopped_by": ex.get("kind") or "",
                          "wrapper_exit": p.code}
    rec.stopped_by = cause.get("why", "").splitlines()[0][:160] if cause.get("why") else ""
    history.save(rec)
    said = []
    if final not in (0,) and cause.get("why"):
        said.append(f"run ended: {cause['why']} (sfcluster exits {final})")
    elif final == int(Exit.CANCELLED):
        said.append(f"run interrupted: every party's driver was stopped (sfcluster exits {final})")
    bring_home(cluster, nodes, rec, [n for n, p in parties.items() if p.started], opts.max_output_mb, note)
    for line in said:
        note(line)


def bring_home(cluster: Cluster, nodes: Nodes, rec: history.RunRecord, names: List[str], max_output_mb: float,
               note: Callable[[str], None]) -> None:
    """Every party's outputs (unless it keeps them: `keep_outputs`) into output/<party>/ and its
    whole log into logs/<party>.log, the parties in parallel; then each party's old run dirs go.
    A failure is said, never turned into the run's exit code."""
    home = history.run_home(cluster.name, rec.run_id)
    max_bytes = int(max_output_mb * (1 << 20))
    got: Dict[str, dict] = {}

    def one(n: str) -> None:
        got[n] = fetching.fetch_party(cluster, nodes, rec.run_id, n, home, max_bytes,
                                      outputs=not cluster.node(n).keep_outputs)
        try:
            fetching.clean_head(cluster, nodes, fetched=rec.run_id, node=n)
        except SfclusterError:
            pass  # harmless; retried after the next run
    res = fan_out(one, names)
    for n, e in res.errors.items():
        note(f"[{n}] the run ended, but its outputs were not fetched: {getattr(e, 'message', e)}")
    rec.outputs = {"dir": str(home / C.OUTPUT_DIR), "parties": got,
                   "files": sum(g.get("files", 0) or 0 for g in got.values()),
                   "bytes": sum(g.get("bytes", 0) or 0 for g in got.values())}
    rec.fetched = time.time()
    history.save(rec)
    kept = [n for n in names if cluster.node(n).keep_outputs]
    note(f"outputs of run {rec.run_id}: {home / C.OUTPUT_DIR}/<party> ({rec.outputs['files']} file(s) from "
         f"{len(got)} part{'y' if len(got) == 1 else 'ies'}); logs: {home / 'logs'}"
         + (f"; kept on their own nodes (keep_outputs): {', '.join(kept)}" if kept else ""))


def fetch_again(cluster: Cluster, nodes: Nodes, run_id: str, max_output_mb: float,
                note: Callable[[str], None]) -> history.RunRecord:
    """`sfcluster fetch RUN_ID` of a production run: every party's outputs and log again (a party
    whose run dir is cleaned up keeps what came before)."""
    rec = history.load(cluster.name, run_id)
    if rec is None:
        raise SfclusterError(f"run {run_id} is not in this controller's history",
                             "`sfcluster runs` lists this controller's runs")
    names = [n for n, v in (rec.parties or {}).items() if v.get("started") and n in cluster.operated_names] \
        or list(cluster.operated_names)
    bring_home(cluster, nodes, rec, names, max_output_mb, note)
    return rec
