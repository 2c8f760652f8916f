"""`down`: under the cluster lock (a run holding it is never torn away), this cluster's Ray
stopped on every node, workers first, and the firewall rules each node's record names removed;
with --purge the certificates too. `down` removes exactly what `up` added."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

from sfcluster import state
from sfcluster.clusterlock import cluster_lock, held_error, lock_holder
from sfcluster.connect import Nodes
from sfcluster.errors import CommandTimeout, ConnectError, HostKeyError, SfclusterError, UnavailableError
from sfcluster.exitcodes import Exit
from sfcluster.facts import gather_all
from sfcluster.firewall.steps import remove_at_down
from sfcluster.inventory.model import Cluster
from sfcluster.lifecycle.preflight import needs_sudo
from sfcluster.raycluster.control import stop_ray
from sfcluster.remote.group import fan_out
from sfcluster.tls.install import purge as purge_tls

Progress = Callable[[str, str], None]  # (node, message)


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
    if not (h.active and h.op == "run"):
        return False
    if not h.verified:
        raise held_error(cluster, h, "down")
    h = lock_holder(cluster, nodes, "cancel")
    if not h.cancelled:
        raise SfclusterError(f"run {h.run_id} did not stop within 20 s; nothing was torn down")
    note(f"cancelled run {h.run_id} ({h.script}, started {h.since} by {h.user}@{h.controller})")
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
    cached_fw = state.load(cluster.name).firewall

    def teardown(n: str) -> None:
        t0 = time.monotonic()
        out = stop_ray(cluster, nodes, n)
        result.stopped[n], result.killed[n] = list(out.stopped), list(out.killed)
        progress(n, f"stopped {len(out.stopped)} process(es)" if out.stopped else "nothing running")
        removed = remove_at_down(nodes[n], cluster, n, facts[n].firewall, cached_fw, needs_sudo(facts[n]))
        if removed is not None and removed.source != "nothing":
            result.firewall_removed.append(n)
            progress(n, "firewall rules removed" + (" (no record on the node: as the controller planned them)"
                                                    if removed.source == "fallback" else ""))
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
