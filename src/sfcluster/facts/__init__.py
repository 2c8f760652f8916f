"""Facts about nodes, gathered by one remote process per node (nodescripts/probe.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from sfcluster.errors import RemoteError
from sfcluster.firewall.detect import FirewallFacts, probe_fields, read_firewall
from sfcluster.inventory.model import Cluster, Node
from sfcluster import nodescripts
from sfcluster.inventory.ports import plan_ports
from sfcluster.remote.base import Runner
from sfcluster.remote.group import GroupResult, fan_out

@dataclass
class BusyPort:
    port: int
    holder: Optional[Dict[str, Any]]
    ours: bool

    def describe(self) -> str:
        h = self.holder or {}
        if not h or h.get("pid") is None:
            return f"port {self.port} is in use ({(h or {}).get('name', 'unknown holder')})"
        return f"port {self.port} is held by pid {h['pid']} ({h['name']}, user {h['user']}): {h['cmdline'][:120]}"


@dataclass
class NodeFacts:
    node: str
    hostname: str
    user: str
    python: str
    ray: Optional[str]
    secretflow: Optional[str]
    spu: Optional[str]
    addresses: List[str]
    ports: Dict[str, Dict[str, Any]]
    ray_processes: List[Dict[str, Any]]
    sudo: str
    firewall: FirewallFacts
    mem_available: Optional[int]
    shm_free: Optional[int]
    tmp_free: Optional[int]
    raw: Dict[str, Any] = field(default_factory=dict)

    def busy(self, purpose: Optional[str] = None) -> List[BusyPort]:
        out = []
        for info in self.ports.values():
            if purpose is None or info["purpose"] == purpose:
                out += [BusyPort(b["port"], b["holder"], b["ours"]) for b in info["busy"]]
        return out

    @property
    def raylets(self) -> List[Dict[str, Any]]:
        return [p for p in self.ray_processes if p["kind"] == "raylet"]

    @property
    def our_raylet_pids(self) -> List[int]:
        return sorted(p["pid"] for p in self.raylets if p["ours"])

    @property
    def ray_tls(self) -> Optional[bool]:
        """Whether this cluster's raylet here runs with Ray's TLS on (None: no raylet, or unreadable)."""
        flags = {p.get("tls") for p in self.raylets if p["ours"]}
        return flags.pop() if len(flags) == 1 else None

    @property
    def foreign_ray(self) -> List[Dict[str, Any]]:
        """Ray processes that are neither this cluster's nor another sfcluster cluster's."""
        return [p for p in self.ray_processes if not p["ours"] and not p.get("cluster")]

    @property
    def other_clusters(self) -> List[str]:
        """Other sfcluster clusters with Ray on this node (they may run beside us when no port
        clashes: the port check says)."""
        return sorted({p["cluster"] for p in self.ray_processes if not p["ours"] and p.get("cluster")})


def probe_request(cluster: Cluster, node: Node) -> Dict[str, Any]:
    ports = []
    for e in plan_ports(cluster).for_node(node.name):
        bind = node.link_bind if e.purpose in ("spu", "cross_silo") else "0.0.0.0"
        ports.append([e.port, e.port_end, e.purpose, bind])
    dashboard = cluster.mode.runs_ray and cluster.ray.dashboard is not None and node.name == cluster.head_name
    return {"ports": ports, "temp_dir": cluster.temp_dir, "ray_address": cluster.ray_address, "python": node.python,
            "dashboard": dashboard, **probe_fields(cluster, node)}


def gather(cluster: Cluster, node: Node, runner: Runner, timeout: float = 30) -> NodeFacts:
    """Run the probe (as root through sudo -n when possible: other users' sockets and firewall rules
    are only visible to root) and parse its JSON."""
    res = nodescripts.run(runner, node, "probe", probe_request(cluster, node), as_="root", timeout=timeout).check()
    data = json.loads(res.stdout.strip().splitlines()[-1])
    if data.get("python") is None:
        raise RemoteError(node.name, node.python, f"remote Python {node.python} not found",
                          f"make the venv there with `sfcluster provision` (the inventory's provision: pins), install "
                          f"it by hand, or set nodes.{node.name}.python in the inventory")
    data["user"] = runner.user or data["user"]
    return NodeFacts(node=node.name, raw=data, firewall=read_firewall(data["firewall"]), **{k: data[k] for k in (
        "hostname", "user", "python", "ray", "secretflow", "spu", "addresses", "ports", "ray_processes",
        "sudo", "mem_available", "shm_free", "tmp_free")})


def gather_all(cluster: Cluster, runners: Dict[str, Runner], timeout: float = 30) -> GroupResult[NodeFacts]:
    """The probe on every node of `runners`, in parallel: facts or the error, per node."""
    return fan_out(lambda n: gather(cluster, cluster.node(n), runners[n], timeout=timeout), runners)
