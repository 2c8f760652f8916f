"""The port plan: every (node, port, purpose, who must reach it) of a cluster.

Single source for `check` (free ports, reachability), the firewall rules, the Ray start flags and
the SPU cluster_def. Pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Tuple

from sfcluster.inventory.model import Cluster

# Ray's own defaults that a plan must keep SPU ports away from, pinned or not.
RAY_DEFAULT_RANGES: Tuple[Tuple[int, int, str], ...] = (
    (6379, 6379, "Ray GCS default"),
    (8265, 8265, "Ray dashboard default"),
    (10001, 10001, "Ray client server default"),
    (10002, 19999, "Ray default worker ports"),
    (52365, 52365, "Ray dashboard agent default"),
)


@dataclass(frozen=True)
class PortEntry:
    node: str                  # party whose host binds the port
    port: int
    purpose: str               # gcs, node_manager, worker_ports, spu, ...
    reachers: Tuple[str, ...]  # parties that must be able to connect; () = local only
    port_end: int = 0          # last port of a range (== port for a single port)
    binds_here: bool = True

    def __post_init__(self) -> None:
        if not self.port_end:
            object.__setattr__(self, "port_end", self.port)

    @property
    def is_range(self) -> bool:
        return self.port_end != self.port

    @property
    def label(self) -> str:
        return f"{self.port}-{self.port_end}" if self.is_range else str(self.port)

    def probe_ports(self) -> Tuple[int, ...]:
        """Ports a reachability test tries: the port, or the first and last of a range."""
        return (self.port, self.port_end) if self.is_range else (self.port,)


@dataclass(frozen=True)
class PortPlan:
    entries: Tuple[PortEntry, ...]

    def for_node(self, node: str) -> List[PortEntry]:
        return [e for e in self.entries if e.node == node]

    def reachable(self) -> Iterator[PortEntry]:
        return (e for e in self.entries if e.reachers)

    def find(self, node: str, purpose: str) -> PortEntry:
        for e in self.entries:
            if e.node == node and e.purpose == purpose:
                return e
        raise KeyError((node, purpose))

    def to_json(self) -> list:
        return [{"node": e.node, "port": e.port, "port_end": e.port_end, "purpose": e.purpose,
                 "reachers": list(e.reachers)} for e in self.entries]


def plan_ports(cluster: Cluster) -> PortPlan:
    if not cluster.mode.runs_ray:
        return _production_ports(cluster)
    r = cluster.ray
    entries: List[PortEntry] = []
    names = cluster.party_names
    for node in cluster.nodes:
        peers = tuple(n for n in names if n != node.name)
        if node.name == cluster.head_name:
            entries.append(PortEntry(node.name, r.gcs, "ray_gcs", peers))
            entries.append(PortEntry(node.name, r.client_server, "ray_client_server", ()))
            if r.dashboard:
                entries.append(PortEntry(node.name, r.dashboard, "dashboard", ()))
        entries += [
            PortEntry(node.name, r.node_manager, "node_manager", peers),
            PortEntry(node.name, r.object_manager, "object_manager", peers),
            PortEntry(node.name, r.worker_min, "worker_ports", peers, port_end=r.worker_max),
            PortEntry(node.name, r.metrics_export, "metrics_export", ()),
            PortEntry(node.name, r.dashboard_agent_grpc, "dashboard_agent_grpc", ()),
            PortEntry(node.name, r.dashboard_agent_http, "dashboard_agent_http", ()),
            PortEntry(node.name, r.runtime_env_agent, "runtime_env_agent", ()),
            PortEntry(node.name, node.spu_port, "spu", peers),
        ]
    return PortPlan(tuple(entries))


def _production_ports(cluster: Cluster) -> PortPlan:
    """Production mode: no Ray anywhere; per party its cross-silo port and its SPU port, each
    reached by every other party and by nobody else."""
    names = cluster.party_names
    entries: List[PortEntry] = []
    for node in cluster.nodes:
        peers = tuple(n for n in names if n != node.name)
        entries += [PortEntry(node.name, node.cross_silo_port, "cross_silo", peers),
                    PortEntry(node.name, node.spu_port, "spu", peers)]
    return PortPlan(tuple(entries))


def spu_clashes_with_ray_defaults(cluster: Cluster) -> List[str]:
    """SPU ports that fall inside a Ray default range (pinned Ray ports move, defaults do not)."""
    out: List[str] = []
    if not cluster.mode.runs_ray:
        return out  # no Ray on the nodes: its defaults are nobody's
    for node in cluster.nodes:
        for lo, hi, what in RAY_DEFAULT_RANGES:
            if lo <= node.spu_port <= hi:
                out.append(f"{node.name}: SPU port {node.spu_port} is inside {what} ({lo}-{hi})")
    return out
