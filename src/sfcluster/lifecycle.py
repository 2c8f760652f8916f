"""up / down / status: read facts, compare with the wanted state, then act or say it is a no-op."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from sfcluster import state
from sfcluster.connect import Nodes
from sfcluster.doctor import Report, run_checks
from sfcluster.clusterlock import cluster_lock, held_error, holder_text, lock_holder
from sfcluster.errors import CommandTimeout, ConnectError, HostKeyError, PlanError, SfclusterError, UnavailableError
from sfcluster.exitcodes import Exit
from sfcluster.facts import NodeFacts, gather_all
from sfcluster.firewall import NO_FALLBACK, apply_plan, cache_entry, cached_removal, remove_recorded
from sfcluster.inventory.model import Cluster, FirewallMode
from sfcluster.raycluster.argv import START_TIMEOUT, gcs_port_wait_argv, head_start_argv, worker_start_argv
from sfcluster.raycluster.control import gcs_query, start_quietly, stop_ray
from sfcluster.tls.install import enabled as tls_enabled, ensure_certs, inspect as inspect_tls, with_env
from sfcluster.tls.install import purge as purge_tls
from sfcluster.remote.group import fan_out
from sfcluster.run.fetch import clean_head
from sfcluster.upplan import FirewallStep, plan_up

Progress = Callable[[str, str], None]  # (node, message)
JOIN_TIMEOUT = 60
# Bounds of status's remote steps: a head that froze (power loss, a cable) ends `status` in
# STATUS_PROBE_TIMEOUT + GCS_QUERY_TIMEOUT + SSH's connect timeout, naming it.
STATUS_PROBE_TIMEOUT = 12


@dataclass
class UpResult:
    """What `up` did per node (`actions`; none: a no-op) and each party's state in Ray's GCS."""

    actions: Dict[str, List[str]] = field(default_factory=dict)
    parties: Dict[str, dict] = field(default_factory=dict)

    def did(self, node: str, what: str) -> None:
        self.actions.setdefault(node, []).append(what)

    @property
    def changed(self) -> bool:
        return any(self.actions.values())


class PreflightFailed(PlanError):
    exit_code = Exit.PREFLIGHT

    def __init__(self, report: Report) -> None:
        self.report = report
        self.exit_code = report.exit_code  # 77 when sudo asking for a password is all that failed
        super().__init__(f"preflight found {len(report.failed)} problem(s); nothing was changed",
                         "fix them (see the table), or run `sfcluster check` for details")

    def details(self) -> Dict[str, Any]:
        return self.report.to_json()


def _sudo(facts: NodeFacts) -> bool:
    return facts.sudo != "root"


def up(cluster: Cluster, nodes: Nodes, *, skip_check: bool = False, keep_on_failure: bool = False,
       progress: Progress = lambda n, m: None, join_timeout: float = JOIN_TIMEOUT, lock_wait: float = 0,
       rotate_certs: bool = False) -> UpResult:
    """Bring the cluster up under the cluster lock (one `up`, `down` or run at a time): a second
    `up` started at the same moment fails at once naming this one (75) and touches nothing.
    rotate_certs: reissue every node's certificate from the cluster's CA and restart Ray with it
    (under the lock: never while a run holds it)."""
    with cluster_lock(cluster, nodes, "up", wait=lock_wait, note=lambda m: progress(cluster.lock_party, m)):
        if rotate_certs:
            if not tls_enabled(cluster):
                raise PlanError("--rotate-certs: the inventory says tls: off", "set tls: on (the default), or drop the flag")
            _stop_everywhere(cluster, nodes, progress, "restarting Ray with the new certificates")
        bring_up = _up if cluster.mode.runs_ray else _up_production
        result = bring_up(cluster, nodes, skip_check=skip_check, keep_on_failure=keep_on_failure, progress=progress,
                     join_timeout=join_timeout, rotate_certs=rotate_certs)
    _clean_head(cluster, nodes, progress)
    return result


def _clean_head(cluster: Cluster, nodes: Nodes, progress: Progress) -> None:
    """Old run dirs and Ray's old session dirs off the head's disk (run/fetch.py), once the lock is
    free again (the cleanup takes it itself, and skips while anything else holds it)."""
    # production mode: every party keeps its runs on its own node
    for where in [cluster.head_name] if cluster.mode.runs_ray else list(cluster.operated_names):
        try:
            out = clean_head(cluster, nodes, node=where)
        except SfclusterError as e:
            progress(where, f"cleaning old run and Ray session dirs failed (harmless): {e.message}")
            continue
        if out.get("runs_removed") or out.get("sessions_removed"):
            progress(where, f"removed {len(out.get('runs_removed', []))} old run dir(s) and "
                            f"{len(out.get('sessions_removed', []))} old Ray session dir(s)")


def _stop_everywhere(cluster: Cluster, nodes: Nodes, progress: Progress, why: str) -> None:
    """This cluster's Ray stopped on every node (workers, then the head), or an error naming the nodes."""
    for stage in ([w.name for w in cluster.workers], [cluster.head_name]):
        def stop(n: str) -> None:
            out = stop_ray(cluster, nodes, n)
            progress(n, f"stopped {len(out['stopped'])} process(es): {why}")
        fan_out(stop, stage).raise_if_failed("stopping Ray")


def _up(cluster: Cluster, nodes: Nodes, *, skip_check: bool, keep_on_failure: bool, progress: Progress,
        join_timeout: float, rotate_certs: bool = False) -> UpResult:
    result = UpResult()
    # 1. Facts and preflight. The probe always runs: privileges and foreign Ray are never skipped.
    if skip_check:
        g = gather_all(cluster, nodes.runners)
        g.raise_if_failed("gathering facts")
        facts = g.results
    else:
        report = run_checks(cluster, nodes.runners, tls_reissue=rotate_certs)
        if not report.ok:
            raise PreflightFailed(report)
        facts = report.facts
    # The plan, from the facts alone: its refusals (foreign Ray, sudo asking for a password) raise
    # here, before anything is changed anywhere.
    plan = plan_up(cluster, facts)
    cached_fw: Dict[str, Any] = state.load(cluster.name).get("firewall", {})
    # Certificates before any Ray starts: checked on every node, issued where missing (rotated
    # with --rotate-certs); their dirs go into the controller's state for `run`.
    tls_dirs = ensure_certs(cluster, nodes, rotate=rotate_certs, progress=progress) if tls_enabled(cluster) else {}

    added_fw: List[str] = []
    started: List[str] = []
    silent: set = set()  # nodes that stopped answering mid-way: their rollback would only wait
    head_done: Dict[str, Any] = {}
    head_thread: Optional[threading.Thread] = None
    stop_head = threading.Event()
    try:
        # 2. Firewall rules scoped to peers, in parallel.
        _add_firewall_rules(cluster, nodes, facts, plan.firewall, cached_fw, added_fw, result, progress)

        # 3. Head, then workers in parallel; nodes already running as this cluster are left alone.
        # The join wait starts on the head as soon as its GCS accepts connections; workers start
        # once the head's own raylet has joined (step 5), while the head's `ray start` CLI goes on
        # with its agents; its outcome is checked before we go on.
        head = cluster.head
        if plan.start_head:
            progress(head.name, "starting Ray head")
            started.append(head.name)

            def start_head() -> None:
                try:
                    e = start_quietly(cluster, nodes, head.name, with_env(head_start_argv(cluster), tls_dirs.get(head.name)),
                                      stop_head, head=True)
                except Exception as x:  # noqa: BLE001 - re-raised in the caller's thread
                    e = x
                if e is not None:
                    head_done["error"] = e
            head_thread = threading.Thread(target=start_head, name="sfcluster-head-start", daemon=True)
            head_thread.start()
            gcs_up = nodes[head.name].run(gcs_port_wait_argv(cluster), timeout=START_TIMEOUT + 10)
            if not gcs_up.ok:
                head_thread.join()
                _head_outcome(head_done)
                raise SfclusterError(f"[{head.name}] Ray's GCS never opened {cluster.ray_address}",
                                     "see the Ray log under " + cluster.temp_dir + "/session_latest/logs on the head")

        def finish_head() -> None:
            if head_thread is not None:
                head_thread.join()
                _head_outcome(head_done)
        todo = list(plan.start_workers)
        head_fresh = head_thread is not None
        if head_thread is not None:
            result.did(head.name, "ray head started")

        # 4. The wait for every party's resource starts NOW, on the head, while the workers start:
        # the waiter imports Ray (~1 s) during the workers' `ray start` instead of after it, and a
        # worker's `ray start` returns ~1 s before its raylet shows in the GCS anyway.
        joined: Dict[str, Any] = {}
        stop_wait = threading.Event()

        head_joined = threading.Event()

        def on_joined(party: str) -> None:
            progress(party, "joined")
            if party == head.name:
                head_joined.set()

        def wait_joined() -> None:
            try:
                joined.update(gcs_query(cluster, nodes, wait=join_timeout, on_line=on_joined, stop=stop_wait,
                                        tls_dir=tls_dirs.get(head.name)))
            except CommandTimeout as e:  # the head went silent: reported below, never rolled back into
                joined.update(error=e.message, timeout=True)
            except Exception as e:  # noqa: BLE001 - reported below, in the caller's thread
                joined["error"] = str(e)
        waiter = threading.Thread(target=wait_joined, name="sfcluster-wait-joined", daemon=True)
        waiter.start()

        # 5. Workers start in parallel. `up` waits for the parties to JOIN (the waiter), not for
        # each `ray start` CLI to exit: at N=8 on 2 cores the CLI goes on for 2.5-3 s after its
        # raylet registered. Its output goes to a private file on the node (start_quietly),
        # so closing the channel early costs it nothing; a failing start still ends `up` at once.
        failed: Dict[str, BaseException] = {}
        stop_starts = threading.Event()

        def start_worker(n: str) -> None:
            try:
                e = start_quietly(cluster, nodes, n, with_env(worker_start_argv(cluster, cluster.node(n)), tls_dirs.get(n)),
                                  stop_starts)
            except BaseException as x:  # noqa: BLE001 - reported in the caller's thread
                e = x
            if e is not None:
                failed[n] = e

        def join_starters() -> None:  # bounded: every start runs under `timeout`
            for t in starters:
                t.join(START_TIMEOUT + 15)
        if head_fresh:
            # Workers start once the head's raylet has joined (its resource is visible), not at
            # the GCS port: started together on 2 cores, seven worker starts pushed the head's own
            # raylet to the end and it joined last (bench N=8: ready 17.3 s against 11.8 s for
            # the bare head-then-workers; see docs/BENCHMARKS.md).
            while not head_joined.wait(0.05):
                if not waiter.is_alive() or "error" in head_done:
                    break  # the head failed or went silent: no worker is started; reported below
        starters = []
        for n in (todo if not head_fresh or head_joined.is_set() else []):
            progress(n, "starting Ray worker")
            started.append(n)  # before the start: a rollback stops a half-started worker too
            t = threading.Thread(target=start_worker, args=(n,), name=f"sfcluster-start-{n}", daemon=True)
            t.start()
            starters.append(t)
        try:
            while waiter.is_alive() and not failed and not ("error" in head_done):
                waiter.join(0.05)
                if head_thread is not None and not head_thread.is_alive():
                    finish_head()  # raises when the head's `ray start` failed
                    head_thread = None
            if head_thread is not None and ("error" in head_done or failed):
                finish_head()  # a failed head explains failed workers: its error goes first
            if failed:
                if len(failed) == 1:
                    raise next(iter(failed.values()))
                raise SfclusterError("starting Ray workers failed on %d node(s):\n%s"
                                     % (len(failed), "\n".join(f"  {k}: {e}" for k, e in failed.items())))
        except BaseException:
            stop_wait.set()
            waiter.join(10)
            join_starters()  # never roll back under a `ray start` still running
            raise
        if head_thread is not None and not head_thread.is_alive():
            finish_head()
            head_thread = None
        for n in todo:
            result.did(n, "ray worker started")
        data = joined or {"error": "the wait on the head ended without an answer"}
        if data.get("timeout"):
            # the head went silent: nothing of it (nor of the workers joining it) will end in time
            silent.add(head.name)
            stop_starts.set()
            stop_head.set()
            head_thread = None
            raise UnavailableError(f"[{head.name}] went silent during the join wait: {data['error']}",
                                   f"is {head.name} frozen or cut off? once it is back: sfcluster down, then up")
        if not head_fresh:
            # A repair (the head was already up): the GCS may still list a dead raylet of a party
            # being restarted as alive for ~15 s, so "joined" proves nothing until its `ray start`
            # is done. A head started by this `up` has a fresh GCS: no stale entries.
            join_starters()
            if failed:
                raise next(iter(failed.values()))
        if "error" not in data and all(s["alive"] and s["resource"] for s in data["parties"].values()):
            # every party joined: the `ray start` CLIs still talking are only finishing their output
            stop_starts.set()
            stop_head.set()
            head_thread = None
        else:
            join_starters()
        if "error" in data:
            raise SfclusterError(f"[{head.name}] cannot query Ray's GCS at {cluster.ray_address}: {data['error']}")
        result.parties = data["parties"]
        missing = [p for p, s in data["parties"].items() if not (s["alive"] and s["resource"])]
        if missing:
            raise SfclusterError(f"party resource not visible after {join_timeout:g} s: {', '.join(missing)}",
                                 "run `sfcluster check` and look at the Ray logs on those nodes")
    except BaseException:
        if head_thread is not None:
            head_thread.join(START_TIMEOUT + 15)  # never roll back under a `ray start` still running
        if not keep_on_failure:
            _undo(cluster, nodes, facts, [n for n in started if n not in silent],
                  [n for n in added_fw if n not in silent])
            for n in silent:
                progress(n, "not rolled back: it does not answer (run `sfcluster down` once it is back)")
        raise
    state.save(cluster.name, {"inventory": cluster.source, "tls_dirs": tls_dirs,
                              "firewall": _firewall_cache(cluster, facts, plan.firewall_backends, cached_fw)})
    return result


def _up_production(cluster: Cluster, nodes: Nodes, *, skip_check: bool, keep_on_failure: bool, progress: Progress,
                   join_timeout: float, rotate_certs: bool = False) -> UpResult:
    """Production mode's `up`: no Ray anywhere. The preflight (every party's cross-silo and SPU
    ports free, versions, privileges), the certificates, and the firewall rules that let exactly
    the peers reach each party's two ports; the drivers come with `run`. A failure rolls back the
    firewall rules this `up` added."""
    result = UpResult()
    if skip_check:
        g = gather_all(cluster, nodes.runners)
        g.raise_if_failed("gathering facts")
        facts = g.results
    else:
        report = run_checks(cluster, nodes.runners, tls_reissue=rotate_certs)
        if not report.ok:
            raise PreflightFailed(report)
        facts = report.facts
    plan = plan_up(cluster, facts)
    cached_fw: Dict[str, Any] = state.load(cluster.name).get("firewall", {})
    tls_dirs = ensure_certs(cluster, nodes, rotate=rotate_certs, progress=progress) if tls_enabled(cluster) else {}
    added_fw: List[str] = []
    try:
        _add_firewall_rules(cluster, nodes, facts, plan.firewall, cached_fw, added_fw, result, progress)
    except BaseException:
        if not keep_on_failure:
            _undo(cluster, nodes, facts, [], added_fw)
        raise
    for n in (cluster.node(name) for name in cluster.operated_names):
        result.parties[n.name] = {"alive": True, "cross_silo_port": n.cross_silo_port, "spu_port": n.spu_port}
        progress(n.name, f"ready: cross-silo port {n.cross_silo_port}, SPU port {n.spu_port}")
    state.save(cluster.name, {"inventory": cluster.source, "tls_dirs": tls_dirs,
                              "firewall": _firewall_cache(cluster, facts, plan.firewall_backends, cached_fw)})
    return result


def _add_firewall_rules(cluster: Cluster, nodes: Nodes, facts: Dict[str, NodeFacts], steps: Tuple[FirewallStep, ...],
                        cached_fw: Dict[str, Any], added_fw: List[str], result: UpResult, progress: Progress) -> None:
    """Firewall rules scoped to peers, in parallel. The node removes what its record says `up`
    added there before (without a record: the rules of ours found there, e.g. what is left after
    the INPUT jump to our iptables chain was lost), records the new plan, adds it."""
    todo = {s.node: s for s in steps}

    def add_rules(n: str) -> None:
        fw, step = facts[n].firewall, todo[n]
        if step.action == "replace":  # the node's record names another plan
            progress(n, "firewall: rules of an older plan (an address or the backend changed): replacing them")
        elif step.action == "repair":
            progress(n, f"firewall: incomplete ({fw.missing or 'some rules missing'}): repairing")
        fallback = (cached_removal(cluster, n, cached_fw.get(n), fw.backend) if fw.rules_present or n in cached_fw
                    else NO_FALLBACK)
        added_fw.append(n)  # before the node records the plan: a rollback removes a partly added plan too
        apply_plan(nodes[n], cluster, cluster.node(n), step.backend, fallback, sudo=_sudo(facts[n]))
        result.did(n, f"firewall rules added ({step.backend})")
        progress(n, f"firewall: rules added ({step.backend})")
    fan_out(add_rules, todo).raise_if_failed("adding firewall rules")


def _firewall_cache(cluster: Cluster, facts: Dict[str, NodeFacts], applied: Dict[str, str],
                    cached: Dict[str, Any]) -> Dict[str, Any]:
    """The controller's copy of each node's firewall record (the fallback of a node that has
    none): what this `up` applied; else the copy kept before; else the removal planned from the
    inventory for the rules (or the record) found there."""
    out: Dict[str, Any] = {}
    for n, f in facts.items():
        fw = f.firewall
        if n in applied:
            out[n] = cache_entry(cluster, n, applied[n])
        elif isinstance(cached.get(n), dict):
            out[n] = cached[n]
        elif fw.rules_present or fw.record is not None:
            out[n] = cache_entry(cluster, n, fw.record.backend if fw.record is not None else fw.backend)
    return out


def _head_outcome(done: Dict[str, Any]) -> None:
    if "error" in done:
        raise done["error"]


def _undo(cluster: Cluster, nodes: Nodes, facts: Dict[str, NodeFacts], started: List[str], added_fw: List[str]) -> None:
    """Roll back what this `up` did (and only that: the firewall rules its node records name), the
    nodes in parallel: a frozen node costs its own timeouts, not everyone's."""
    def undo(n: str) -> None:
        if n in started:
            try:
                stop_ray(cluster, nodes, n)
            except Exception:  # noqa: BLE001 - best effort; the error that got us here is what matters
                pass
        if n in added_fw:
            try:
                remove_recorded(nodes[n], cluster, cluster.node(n), NO_FALLBACK, sudo=_sudo(facts[n]))
            except Exception:  # noqa: BLE001
                pass
    fan_out(undo, list(dict.fromkeys(started + added_fw)))


@dataclass
class DownResult:
    """What `down` did per node; `errors`: the nodes it could not tear down, and why."""

    stopped: Dict[str, List[int]] = field(default_factory=dict)
    killed: Dict[str, List[int]] = field(default_factory=dict)   # did not exit on SIGTERM within the grace
    seconds: Dict[str, float] = field(default_factory=dict)
    firewall_removed: List[str] = field(default_factory=list)
    errors: Dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """1 when some node could not be torn down (`errors` names them), else 0."""
        return int(Exit.FAILURE if self.errors else Exit.OK)


def down(cluster: Cluster, nodes: Nodes, *, force: bool = False, cancel_run: bool = False, lock_wait: float = 0,
         purge: bool = False, progress: Progress = lambda n, m: None) -> DownResult:
    """Tear down under the cluster lock. A run holding it is never torn away: `down` refuses
    naming it (75), or with cancel_run stops it first (verified, as `cancel` does). With force
    and a head that cannot be reached, it goes on without the lock and says so. The certificates
    stay (a later `up` reuses them) unless purge: then they go from the nodes, and the CA from
    this controller once every node's went."""
    head = cluster.lock_party
    note = lambda m: progress(head, m)  # noqa: E731
    locked = False
    try:
        if cancel_run and _cancel_active_run(cluster, nodes, note):
            lock_wait = max(lock_wait, 15)  # the wrapper lets go of the lock as it exits
        with cluster_lock(cluster, nodes, "down", wait=lock_wait, note=note):
            locked = True
            return _down(cluster, nodes, force=force, purge=purge, progress=progress)
    except (ConnectError, HostKeyError, CommandTimeout, UnavailableError) as e:
        if locked:
            raise
        if not force:
            raise UnavailableError(f"cannot take the cluster lock: {e.message}; nothing was stopped anywhere",
                                   f"fix SSH to {head}, or `sfcluster down --force` to tear down the other nodes "
                                   "without the lock") from e
        note(f"unreachable: going on WITHOUT the cluster lock (--force): {e.message}")
        return _down(cluster, nodes, force=force, purge=purge, progress=progress)


def _cancel_active_run(cluster: Cluster, nodes: Nodes, note: Callable[[str], None]) -> bool:
    """`down --cancel-run`: stop the run holding the lock (verified, as `cancel` does); True when
    there was one."""
    h = lock_holder(cluster, nodes)
    if not (h.get("active") and h.get("op") == "run"):
        return False
    if not h.get("verified"):
        raise held_error(cluster, h, "down")
    h = lock_holder(cluster, nodes, "cancel")
    if not h.get("cancelled"):
        raise SfclusterError(f"run {h.get('run_id')} did not stop within 20 s; nothing was torn down")
    note(f"cancelled run {h.get('run_id')} ({h.get('script')}, started {h.get('since')} by "
         f"{h.get('user')}@{h.get('controller')})")
    return True


def _down(cluster: Cluster, nodes: Nodes, *, force: bool, progress: Progress, purge: bool = False) -> DownResult:
    result = DownResult()
    g = gather_all(cluster, nodes.runners)
    for n, e in g.errors.items():
        result.errors[n] = str(e)
    if g.errors and not force:
        raise UnavailableError("cannot reach " + ", ".join(g.errors) + "; nothing was stopped anywhere",
                             "fix SSH to those nodes, or `sfcluster down --force` to tear down the rest")
    facts = g.results
    cached_fw = state.load(cluster.name).get("firewall", {})

    def teardown(n: str) -> None:
        t0 = time.monotonic()
        out = stop_ray(cluster, nodes, n)
        result.stopped[n], result.killed[n] = out["stopped"], out["killed"]
        progress(n, f"stopped {len(out['stopped'])} process(es)" if out["stopped"] else "nothing running")
        f = facts[n]
        fw = f.firewall
        if fw.rules_present or fw.record is not None or fw.record_error or n in cached_fw:
            # the node's record names what to remove; the controller's copy (else the inventory's
            # plan) only where the node has none
            fallback = cached_removal(cluster, n, cached_fw.get(n), fw.backend)
            out = remove_recorded(nodes[n], cluster, cluster.node(n), fallback, sudo=_sudo(f))
            if out.source != "nothing":
                result.firewall_removed.append(n)
                progress(n, "firewall rules removed" + (" (no record on the node: as the controller planned them)"
                                                        if out.source == "fallback" else ""))
        result.seconds[n] = round(time.monotonic() - t0, 2)
    workers = [w.name for w in cluster.workers if w.name in facts]
    for stage in (workers, [cluster.head_name] if cluster.head_name in facts else []):
        g2 = fan_out(teardown, stage)
        for n, e in g2.errors.items():
            result.errors[n] = str(e)
    if purge:
        result.errors.update(purge_tls(cluster, nodes, [n for n in cluster.party_names if n in facts
                                                         and n not in result.errors], progress))
    if not result.errors:
        state.clear(cluster.name)
    return result


@dataclass
class NodeStatus:
    party: str
    host: str
    role: str
    ray_alive: bool
    resource: Optional[float]
    raylet_pids: List[int]
    spu_listening: bool
    firewall: str
    reachable: bool = True
    error: str = ""
    tls: Optional[bool] = None                # Ray here runs with TLS (from its raylet's environment)
    cert_days_left: Optional[float] = None    # the node's certificate (tls: on)


def _cert_problems(certs: Dict[str, Any], problems: List[Dict[str, Any]]) -> List[str]:
    """Each node's certificate problems into `problems` (expiry warnings show as days left). On a
    controller without the cluster's CA (a second one: the CA stays where `up` made it) the
    certificates cannot be checked here: a note, not a degraded cluster. Returns the notes."""
    notes: List[str] = []
    for n, t in certs.items():
        if t.no_ca and not t.error:
            notes.append(f"{n}: certificate not checked: this controller has no CA of the cluster (the one that ran "
                         "`up` has it)")
            continue
        for why in ([t.error] if t.error else []) + t.problems:
            problems.append({"path": n, "line": None, "message": f"{n}: certificate: {why}"})
    return notes


def status(cluster: Cluster, nodes: Nodes) -> dict:
    if not cluster.mode.runs_ray:
        return status_production(cluster, nodes)
    g = gather_all(cluster, nodes.runners, timeout=STATUS_PROBE_TIMEOUT)
    certs = inspect_tls(cluster, nodes, names=list(g.results), timeout=STATUS_PROBE_TIMEOUT) \
        if tls_enabled(cluster) else {}
    gcs: dict = {}
    if cluster.head_name in g.results and g.results[cluster.head_name].our_raylet_pids:
        head_tls = certs.get(cluster.head_name)
        try:
            gcs = gcs_query(cluster, nodes, jobs=True, tls_dir=head_tls.dir if head_tls else None)
        except SfclusterError as e:
            gcs = {"error": str(e)}
    rows = []
    for n in cluster.nodes:
        f = g.results.get(n.name)
        p = (gcs.get("parties") or {}).get(n.name, {})
        if f is None:
            rows.append(NodeStatus(n.name, n.host, "head" if n.name == cluster.head_name else "worker", False, None, [],
                                   False, "?", reachable=False, error=str(g.errors.get(n.name))))
            continue
        spu = [b for b in f.busy("spu") if b.ours]
        rows.append(NodeStatus(n.name, n.host, "head" if n.name == cluster.head_name else "worker",
                               bool(p.get("alive")) and bool(f.our_raylet_pids), p.get("resource"), f.our_raylet_pids,
                               bool(spu), f.firewall.summary(), tls=f.ray_tls,
                               cert_days_left=certs[n.name].days_left if n.name in certs else None))
    drivers = []
    live = [j for j in gcs.get("jobs", []) or [] if not j["is_dead"]]
    run: dict = {}
    if cluster.head_name in g.results:
        # who holds the cluster lock (a run, an `up`, a `down`), verified on the head; sanctioned
        # = exactly the active run's own driver (pid and node, as its verified wrapper recorded
        # it), never a command line that merely looks like ours
        try:
            run = lock_holder(cluster, nodes)
        except SfclusterError as e:
            run = {"error": str(e)}
    lock = {k: v for k, v in run.items() if k not in ("removed_stale_info", "log")}
    lock["held"] = bool(lock.pop("active", False))
    if lock["held"]:
        lock["text"] = holder_text(run)
    if run.get("op") != "run":
        run = {}
    for j in live:
        sanctioned = bool(run.get("verified")) and j["driver_ip"] == cluster.head.host \
            and j["driver_pid"] == run.get("driver_pid")
        drivers.append(dict(j, sanctioned=sanctioned))
    alive = [r for r in rows if r.ray_alive]
    problems = [{"path": r.party, "line": None,
                 "message": f"{r.party} ({r.host}): " + (f"unreachable: {r.error}" if not r.reachable else "Ray is not up")}
                for r in rows if not r.ray_alive]
    for n, f in g.results.items():
        fw = f.firewall
        if cluster.firewall is FirewallMode.OPEN and fw.rules_present and not fw.rules_complete:
            problems.append({"path": n, "line": None,
                             "message": f"{n}: firewall rules incomplete ({fw.missing or 'some of ours missing'}); "
                                        "`sfcluster up` repairs them"})
    notes = _cert_problems(certs, problems)
    for n in certs:
        f = g.results.get(n)
        if f is not None and f.our_raylet_pids and f.ray_tls is False:
            problems.append({"path": n, "line": None, "message": f"{n}: Ray runs WITHOUT TLS although the inventory "
                                                                 "says tls: on; `sfcluster up --rotate-certs` restarts it with TLS"})
    # A driver that `sfcluster run` did not start makes the cluster unfit for a run (a second set
    # of SPU runtimes is the failure this tool exists to prevent): degraded, naming it.
    for d in drivers:
        if not d["sanctioned"]:
            problems.append({"path": cluster.head_name, "line": None,
                             "message": f"a driver sfcluster did not start is connected: {d['driver_ip']} pid "
                                        f"{d['driver_pid']} ({d.get('entrypoint') or '?'}); stop it on that host"})
    health = "down" if not alive else ("healthy" if not problems else "degraded")
    return {"cluster": cluster.name, "health": health, "ray_address": cluster.ray_address, "tls": cluster.tls.value,
            "nodes": [r.__dict__ for r in rows], "drivers": drivers, "lock": lock, "gcs_error": gcs.get("error"),
            "problems": problems, "notes": notes}


def status_production(cluster: Cluster, nodes: Nodes) -> dict:
    """Production mode's status: no Ray to ask. Per party: reachable, its cross-silo and SPU port
    (listening while a run's driver holds them), the firewall rules `up` added, its certificate.
    Healthy when every party is reachable with its rules and certificate in place; down when no
    party is ready (nothing was brought up, or nothing answers)."""
    g = gather_all(cluster, nodes.runners, timeout=STATUS_PROBE_TIMEOUT)
    certs = inspect_tls(cluster, nodes, names=list(g.results), timeout=STATUS_PROBE_TIMEOUT) \
        if tls_enabled(cluster) else {}
    rows, problems = [], []
    for n in (cluster.node(name) for name in cluster.operated_names):
        f = g.results.get(n.name)
        row = {"party": n.name, "host": n.host, "role": "party", "reachable": f is not None,
               "cross_silo_port": n.cross_silo_port, "spu_port": n.spu_port, "error": "",
               "cross_silo_listening": False, "spu_listening": False, "firewall": "?", "ready": False,
               "cert_days_left": certs[n.name].days_left if n.name in certs else None}
        if f is None:
            row["error"] = str(g.errors.get(n.name))
            problems.append({"path": n.name, "line": None, "message": f"{n.name} ({n.host}): unreachable: {row['error']}"})
            rows.append(row)
            continue
        row["cross_silo_listening"] = any(b.ours for b in f.busy("cross_silo"))
        row["spu_listening"] = any(b.ours for b in f.busy("spu"))
        fw = f.firewall
        row["firewall"] = fw.summary()
        fw_ok = cluster.firewall is not FirewallMode.OPEN or n.firewall_backend == "none" or fw.rules_complete
        cert_ok = n.name not in certs or certs[n.name].ok
        row["ready"] = fw_ok and cert_ok
        if cluster.firewall is FirewallMode.OPEN and not fw_ok:
            problems.append({"path": n.name, "line": None, "message": f"{n.name}: firewall rules "
                             + ("incomplete (" + (fw.missing or "some of ours missing") + ")" if fw.rules_present
                                else "not in place") + "; `sfcluster up` adds them"})
        rows.append(row)
    notes = _cert_problems(certs, problems)
    lock: dict = {"held": False}
    try:
        h = lock_holder(cluster, nodes) if cluster.lock_party in g.results else {}
    except SfclusterError as e:
        h = {"error": str(e)}
    if h.get("active"):
        lock = {k: v for k, v in h.items() if k not in ("removed_stale_info", "log", "active")}
        lock.update(held=True, text=holder_text(h))
    health = "down" if not any(r["ready"] for r in rows) else ("healthy" if not problems else "degraded")
    return {"cluster": cluster.name, "mode": "production", "health": health, "tls": cluster.tls.value,
            "parties": list(cluster.operated_names), "nodes": rows, "drivers": [], "lock": lock, "problems": problems,
            "notes": notes}
