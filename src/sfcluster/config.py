"""The generated SecretFlow configuration: the contract between sfcluster and the driver script.

SPU facts (SecretFlow 1.10): a cluster_def node's bind address is the key `listen_address`
(`listen_addr` belongs to RayFed's production-mode config and SPU silently ignores it), and
runtime_config wants strings ('SEMI2K', 'FM128'), not spu.ProtocolKind enums (not JSON-serialisable).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from sfcluster.inventory.model import Cluster
from sfcluster.ports import plan_ports
from sfcluster.tls.install import enabled, spu_tls_opts

CONFIG_VERSION = 1


def spu_cluster_def(cluster: Cluster, tls_dirs: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """SPU's cluster_def; with `tls: on` and each node's certificate dir known (`up` records them),
    every node carries its `tls_opts` (paths on that node: SPU's link is mutual TLS)."""
    nodes = []
    for n in cluster.nodes:
        entry: Dict[str, Any] = {"party": n.name, "address": f"{n.spu_advertise}:{n.spu_port}"}
        if n.spu_bind:
            entry["listen_address"] = f"{n.spu_bind}:{n.spu_port}"
        if enabled(cluster) and tls_dirs and n.name in tls_dirs:
            entry["tls_opts"] = spu_tls_opts(tls_dirs[n.name])
        nodes.append(entry)
    return {"nodes": nodes, "runtime_config": {"protocol": cluster.spu.protocol, "field": cluster.spu.field}}


def secretflow_config(cluster: Cluster, tls_dirs: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    return {
        "version": CONFIG_VERSION,
        "cluster": cluster.name,
        "head": cluster.head_name,
        "ray_address": cluster.ray_address,
        "parties": {n.name: {"host": n.host, "cpus": n.cpus, "data": n.data_paths} for n in cluster.nodes},
        "spu_cluster_def": spu_cluster_def(cluster, tls_dirs),
        "tls": cluster.tls.value,
        "temp_dir": cluster.temp_dir,
        "ports": plan_ports(cluster).to_json(),
    }
