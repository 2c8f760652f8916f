"""`status`, per mode: each node's state as its probe and (simulation mode) the head's GCS see it,
who holds the cluster lock (verified on the head), the drivers connected, and the problems that
make the cluster degraded. Every remote step is bounded: a frozen head ends `status` naming it."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

from sfcluster.clusterlock import lock_holder
from sfcluster.connect import Nodes
from sfcluster.errors import SfclusterError
from sfcluster.facts import NodeFacts, gather_all
from sfcluster.inventory.model import Cluster, FirewallMode
from sfcluster.nodescripts.answers import GcsAnswer, LockHolder, PartyInGcs
from sfcluster.raycluster.control import gcs_query
from sfcluster.remote.group import GroupResult
from sfcluster.tls.install import enabled as tls_enabled, inspect as inspect_tls

# Bounds of status's remote steps: a head that froze (power loss, a cable) ends `status` in
# STATUS_PROBE_TIMEOUT + GCS_QUERY_TIMEOUT + SSH's connect timeout, naming it.
STATUS_PROBE_TIMEOUT = 12
Problems = List[Dict[str, Any]]


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


def _problem(path: str, message: str) -> Dict[str, Any]:
    return {"path": path, "line": None, "message": message}


def _cert_problems(certs: Dict[str, Any], problems: Problems) -> List[str]:
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
            problems.append(_problem(n, f"{n}: certificate: {why}"))
    return notes


def _probe(cluster: Cluster, nodes: Nodes) -> Tuple[GroupResult[NodeFacts], Dict[str, Any]]:
    g = gather_all(cluster, nodes.runners, timeout=STATUS_PROBE_TIMEOUT)
    certs = inspect_tls(cluster, nodes, names=list(g.results), timeout=STATUS_PROBE_TIMEOUT) \
        if tls_enabled(cluster) else {}
    return g, certs


def status(cluster: Cluster, nodes: Nodes) -> dict:
    if not cluster.mode.runs_ray:
        return status_production(cluster, nodes)
    g, certs = _probe(cluster, nodes)
    gcs = GcsAnswer()
    if cluster.head_name in g.results and g.results[cluster.head_name].our_raylet_pids:
        head_tls = certs.get(cluster.head_name)
        try:
            gcs = gcs_query(cluster, nodes, jobs=True, tls_dir=head_tls.dir if head_tls else None)
        except SfclusterError as e:
            gcs = GcsAnswer(error=str(e))
    rows = _rows(cluster, g, gcs, certs)
    lock, drivers = _lock_and_drivers(cluster, nodes, g, gcs)
    problems = [_problem(r.party, f"{r.party} ({r.host}): " + (f"unreachable: {r.error}" if not r.reachable
                                                               else "Ray is not up"))
                for r in rows if not r.ray_alive]
    notes = _simulation_problems(cluster, g, certs, drivers, problems)
    health = "down" if not any(r.ray_alive for r in rows) else ("healthy" if not problems else "degraded")
    return {"cluster": cluster.name, "health": health, "ray_address": cluster.ray_address, "tls": cluster.tls.value,
            "nodes": [r.__dict__ for r in rows], "drivers": drivers, "lock": lock, "gcs_error": gcs.error,
            "problems": problems, "notes": notes}


def _rows(cluster: Cluster, g: GroupResult[NodeFacts], gcs: GcsAnswer, certs: Dict[str, Any]) -> List[NodeStatus]:
    rows = []
    for n in cluster.nodes:
        f = g.results.get(n.name)
        p = gcs.parties.get(n.name) or PartyInGcs()
        role = "head" if n.name == cluster.head_name else "worker"
        if f is None:
            rows.append(NodeStatus(n.name, n.host, role, False, None, [], False, "?", reachable=False,
                                   error=str(g.errors.get(n.name))))
            continue
        spu = [b for b in f.busy("spu") if b.ours]
        rows.append(NodeStatus(n.name, n.host, role, p.alive and bool(f.our_raylet_pids), p.resource,
                               f.our_raylet_pids, bool(spu), f.firewall.summary(), tls=f.ray_tls,
                               cert_days_left=certs[n.name].days_left if n.name in certs else None))
    return rows


def _lock_and_drivers(cluster: Cluster, nodes: Nodes, g: GroupResult[NodeFacts],
                      gcs: GcsAnswer) -> Tuple[dict, List[dict]]:
    """Who holds the cluster lock (a run, an `up`, a `down`), verified on the head, and the live
    drivers; sanctioned = exactly the active run's own driver (pid and node, as its verified
    wrapper recorded it), never a command line that merely looks like ours."""
    holder = _holder(cluster, nodes, g)
    drivers = []
    for j in gcs.live_jobs():
        sanctioned = holder.run and j.driver_ip == cluster.head.host and j.driver_pid == holder.driver_pid
        drivers.append(dict(asdict(j), sanctioned=sanctioned))
    return holder.for_status(), drivers


def _holder(cluster: Cluster, nodes: Nodes, g: GroupResult[NodeFacts]) -> LockHolder:
    """The lock's holder, when the lock's node answered its probe (else: not asked)."""
    if cluster.lock_party not in g.results:
        return LockHolder(active=False)
    try:
        return lock_holder(cluster, nodes)
    except SfclusterError as e:
        return LockHolder(active=False, error=str(e))


def _simulation_problems(cluster: Cluster, g: GroupResult[NodeFacts], certs: Dict[str, Any], drivers: List[dict],
                         problems: Problems) -> List[str]:
    """The firewall, certificate, TLS and driver problems into `problems`; returns the notes."""
    for n, f in g.results.items():
        fw = f.firewall
        if cluster.firewall is FirewallMode.OPEN and fw.rules_present and not fw.rules_complete:
            problems.append(_problem(n, f"{n}: firewall rules incomplete ({fw.missing or 'some of ours missing'}); "
                                        "`sfcluster up` repairs them"))
    notes = _cert_problems(certs, problems)
    for n in certs:
        f = g.results.get(n)
        if f is not None and f.our_raylet_pids and f.ray_tls is False:
            problems.append(_problem(n, f"{n}: Ray runs WITHOUT TLS although the inventory says tls: on; "
                                        "`sfcluster up --rotate-certs` restarts it with TLS"))
    # A driver that `sfcluster run` did not start makes the cluster unfit for a run (a second set
    # of SPU runtimes is the failure this tool exists to prevent): degraded, naming it.
    for d in drivers:
        if not d["sanctioned"]:
            problems.append(_problem(cluster.head_name, f"a driver sfcluster did not start is connected: {d['driver_ip']} "
                                                        f"pid {d['driver_pid']} ({d.get('entrypoint') or '?'}); stop it "
                                                        "on that host"))
    return notes


def status_production(cluster: Cluster, nodes: Nodes) -> dict:
    """Production mode's status: no Ray to ask. Per party: reachable, its cross-silo and SPU port
    (listening while a run's driver holds them), the firewall rules `up` added, its certificate.
    Healthy when every party is reachable with its rules and certificate in place; down when no
    party is ready (nothing was brought up, or nothing answers)."""
    g, certs = _probe(cluster, nodes)
    rows, problems = [], []
    for n in (cluster.node(name) for name in cluster.operated_names):
        rows.append(_party_row(cluster, n, g, certs, problems))
    notes = _cert_problems(certs, problems)
    lock = _holder(cluster, nodes, g).for_status()
    health = "down" if not any(r["ready"] for r in rows) else ("healthy" if not problems else "degraded")
    return {"cluster": cluster.name, "mode": "production", "health": health, "tls": cluster.tls.value,
            "parties": list(cluster.operated_names), "nodes": rows, "drivers": [], "lock": lock, "problems": problems,
            "notes": notes}


def _party_row(cluster: Cluster, n: Any, g: GroupResult[NodeFacts], certs: Dict[str, Any], problems: Problems) -> dict:
    f = g.results.get(n.name)
    row = {"party": n.name, "host": n.host, "role": "party", "reachable": f is not None,
           "cross_silo_port": n.cross_silo_port, "spu_port": n.spu_port, "error": "",
           "cross_silo_listening": False, "spu_listening": False, "firewall": "?", "ready": False,
           "cert_days_left": certs[n.name].days_left if n.name in certs else None}
    if f is None:
        row["error"] = str(g.errors.get(n.name))
        problems.append(_problem(n.name, f"{n.name} ({n.host}): unreachable: {row['error']}"))
        return row
    row["cross_silo_listening"] = any(b.ours for b in f.busy("cross_silo"))
    row["spu_listening"] = any(b.ours for b in f.busy("spu"))
    fw = f.firewall
    row["firewall"] = fw.summary()
    fw_ok = cluster.firewall is not FirewallMode.OPEN or n.firewall_backend == "none" or fw.rules_complete
    cert_ok = n.name not in certs or certs[n.name].ok
    row["ready"] = fw_ok and cert_ok
    if cluster.firewall is FirewallMode.OPEN and not fw_ok:
        problems.append(_problem(n.name, f"{n.name}: firewall rules "
                                 + ("incomplete (" + (fw.missing or "some of ours missing") + ")" if fw.rules_present
                                    else "not in place") + "; `sfcluster up` adds them"))
    return row
