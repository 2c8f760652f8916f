"""`up`: under the cluster lock, from the facts and the plan (upplan.py) alone: the certificates,
the firewall rules scoped to peers (firewall/steps.py), Ray on every node (raycluster/start.py;
simulation mode only), and on any failure the rollback of exactly what this `up` did."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

from sfcluster import state
from sfcluster.clusterlock import cluster_lock
from sfcluster.connect import Nodes
from sfcluster.errors import PlanError, SfclusterError
from sfcluster.firewall.detect import FirewallFacts
from sfcluster.firewall.steps import add_rules, controller_copy, roll_back
from sfcluster.inventory.model import Cluster
from sfcluster.lifecycle.preflight import facts_for_up, needs_sudo
from sfcluster.raycluster.control import stop_ray
from sfcluster.raycluster.start import RayStart
from sfcluster.remote.group import fan_out
from sfcluster.run.fetch import clean_head
from sfcluster.tls.install import enabled as tls_enabled, ensure_certs
from sfcluster.upplan import UpPlan, plan_up

Progress = Callable[[str, str], None]  # (node, message)
JOIN_TIMEOUT = 60


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
        result = _up(cluster, nodes, skip_check=skip_check, keep_on_failure=keep_on_failure, progress=progress,
                     join_timeout=join_timeout, rotate_certs=rotate_certs)
    _clean_head(cluster, nodes, progress)
    return result


class _Prepared:
    """What every `up` knows before it changes anything: the facts, the plan (its refusals,
    foreign Ray or sudo asking for a password, raise before anything is changed anywhere), the
    controller's cached firewall records, and the certificates (checked on every node, issued
    where missing, rotated with --rotate-certs; their dirs go into the controller's state)."""

    def __init__(self, cluster: Cluster, nodes: Nodes, *, skip_check: bool, rotate_certs: bool, progress: Progress):
        facts = facts_for_up(cluster, nodes, skip_check=skip_check, rotate_certs=rotate_certs)
        self.plan: UpPlan = plan_up(cluster, facts)
        self.fw: Dict[str, FirewallFacts] = {n: f.firewall for n, f in facts.items()}
        self.sudo: Dict[str, bool] = {n: needs_sudo(f) for n, f in facts.items()}
        self.cached_fw: Dict[str, Any] = state.load(cluster.name).firewall
        self.tls_dirs: Dict[str, str] = (ensure_certs(cluster, nodes, rotate=rotate_certs, progress=progress)
                                         if tls_enabled(cluster) else {})
        self.added_fw: List[str] = []

    def add_firewall_rules(self, cluster: Cluster, nodes: Nodes, result: UpResult, progress: Progress) -> None:
        done = add_rules(cluster, nodes.runners, self.fw, self.sudo, self.plan.firewall, self.cached_fw, self.added_fw,
                         progress)
        for n, backend in done.items():
            result.did(n, f"firewall rules added ({backend})")

    def save(self, cluster: Cluster) -> None:
        state.save(cluster.name, state.ControllerState(
            cluster.source, dict(self.tls_dirs), controller_copy(cluster, self.fw, self.plan.firewall_backends,
                                                                 self.cached_fw)))


def _up(cluster: Cluster, nodes: Nodes, *, skip_check: bool, keep_on_failure: bool, progress: Progress,
        join_timeout: float, rotate_certs: bool = False) -> UpResult:
    """`up` without the lock: simulation mode brings Ray up; production mode has no Ray anywhere
    (its drivers come with `run`): the preflight, the certificates, and the firewall rules that
    let exactly the peers reach each party's cross-silo and SPU ports."""
    result = UpResult()
    prep = _Prepared(cluster, nodes, skip_check=skip_check, rotate_certs=rotate_certs, progress=progress)
    ray = RayStart(cluster, nodes, start_head=prep.plan.start_head, workers=prep.plan.start_workers,
                   tls_dirs=prep.tls_dirs, progress=progress, join_timeout=join_timeout)
    try:
        prep.add_firewall_rules(cluster, nodes, result, progress)
        joined = ray.start() if cluster.mode.runs_ray else None
    except BaseException:
        ray.abort()  # never roll back under a `ray start` still running
        if not keep_on_failure:
            _undo(cluster, nodes, prep.sudo, [n for n in ray.started if n not in ray.silent],
                  [n for n in prep.added_fw if n not in ray.silent])
            for n in ray.silent:
                progress(n, "not rolled back: it does not answer (run `sfcluster down` once it is back)")
        raise
    if joined is not None:
        if joined.head_started:
            result.did(cluster.head_name, "ray head started")
        for n in joined.workers_started:
            result.did(n, "ray worker started")
        result.parties = joined.parties
    else:
        for n in (cluster.node(name) for name in cluster.operated_names):
            result.parties[n.name] = {"alive": True, "cross_silo_port": n.cross_silo_port, "spu_port": n.spu_port}
            progress(n.name, f"ready: cross-silo port {n.cross_silo_port}, SPU port {n.spu_port}")
    prep.save(cluster)
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
            progress(n, f"stopped {len(out.stopped)} process(es): {why}")
        fan_out(stop, stage).raise_if_failed("stopping Ray")


def _undo(cluster: Cluster, nodes: Nodes, sudo: Dict[str, bool], started: List[str], added_fw: List[str]) -> None:
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
                roll_back(nodes[n], cluster, n, sudo[n])
            except Exception:  # noqa: BLE001
                pass
    fan_out(undo, list(dict.fromkeys(started + added_fw)))
