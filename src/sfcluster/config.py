"""The generated SecretFlow configuration: the contract between sfcluster and the driver script.

SPU facts (SecretFlow 1.10): a cluster_def node's bind address is the key `listen_address`
(`listen_addr` belongs to RayFed's production-mode config and SPU silently ignores it), and
runtime_config wants strings ('SEMI2K', 'FM128'), not spu.ProtocolKind enums (not JSON-serialisable).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from sfcluster.inventory.model import Cluster
from sfcluster.inventory.ports import plan_ports
from sfcluster.tls.install import enabled, spu_tls_opts, tls_files

CONFIG_VERSION = 1

# SPU link timeouts, handed to sf.SPU(link_desc=...) by runtime.init(). SecretFlow 1.10 sets both
# to 120 s, so a message that is never delivered fails the run after 120 s with no retry. That
# happens under TLS: the brpc inside SPU 0.9 leaves the tail of a write in OpenSSL's buffer BIO when
# the kernel's send buffer is full at the final flush (fixed upstream in apache/brpc#3105), and the
# bytes leave only with the next write on that connection. Reproduced on the harness: a 4 KiB TCP
# send buffer on alice and bob stalls the first SPU matmul under TLS (E1008 "Reached
# timeout=120000ms", the run fails), never without TLS. yacl retries a timed-out send (3 times; the
# receiver drops the duplicate by sequence id), and the retry is the write that flushes the stalled
# bytes: a short send timeout under a long receive timeout turns a fatal 120 s stall into a 10 s
# pause. The receive timeout also bounds how long a party waits for a peer's local computation.
SPU_LINK_DESC = {"http_timeout_ms": 10_000, "recv_timeout_ms": 600_000}


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
        "mode": cluster.mode.value,
        "cluster": cluster.name,
        "head": cluster.head_name,
        "ray_address": cluster.ray_address,
        "parties": {n.name: {"host": n.host, "cpus": n.cpus, "data": n.data_paths} for n in cluster.nodes},
        "spu_cluster_def": spu_cluster_def(cluster, tls_dirs),
        "spu_link_desc": dict(SPU_LINK_DESC),
        "tls": cluster.tls.value,
        "temp_dir": cluster.temp_dir,
        "ports": plan_ports(cluster).to_json(),
        **({"spu_gate": spu_gate(cluster)} if enabled(cluster) and tls_dirs else {}),
    }


def spu_gate(cluster: Cluster) -> Dict[str, Any]:
    """Simulation mode, tls on: where each party's TLS-only SPU gate listens (the SPU's own public
    address: listen_address, else address) and the unix socket the SPU runtime listens on behind it,
    in the cluster's temp root (0700, the Ray user's, on every node). runtime.load() puts the socket
    in the cluster_def; brpc alone would serve clear text beside TLS on the public port (gate.py)."""
    return {"root": cluster.temp_root, "socket": "spu.sock",
            "listen": {n.name: [n.link_bind, n.spu_port] for n in cluster.nodes}}


# Production mode's cross-silo link (SecretFlow's `brpc_link` backend, secretflow/distributed/fed/
# proxy/brpc_link), handed to sf.init as `cross_silo_comm_options` (1.10 and 1.13: an unknown
# keyword such as `cross_silo_comm_config` is swallowed without a word, and SecretFlow's own
# defaults apply: 3600 connect retries of 1 s). Its waits are bounded here. connect_retry_* bound
# how long a party's driver waits for a peer's port at the start.
CROSS_SILO_BACKEND = "brpc_link"
# The HTTP timeout goes in as `timeout_in_ms` (brpc_link copies it to the link's http_timeout_ms):
# its own `http_timeout_ms` works too but logs "http_timeout_ms and timeout_ms are set at the same
# time" on every party at every start, whatever timeout_in_ms is (1.10 and 1.13).
CROSS_SILO_COMM = {"timeout_in_ms": 10_000, "recv_timeout_ms": 600_000,
                   "connect_retry_times": 60, "connect_retry_interval_ms": 1_000}


def production_config(cluster: Cluster, party: str, run_id: str,
                      tls_dirs: Optional[Dict[str, str]] = None, start_timeout: float = 120) -> Dict[str, Any]:
    """The config of `party`'s own driver in production mode: SecretFlow's `cluster_config` (every
    party's cross-silo address, this party's listen address), the SPU's cluster_def, this party's
    certificate files, and the job name every party's driver must share (the run id).

    Why the backend is brpc_link and not SecretFlow's default grpc: with a tls_config, 1.10 and 1.13
    crash in their grpc proxy (`channel_credentials ... got ServerCredentials`). brpc_link fills the
    link's SSL options but never sets `enable_ssl`, so its link is clear text however it is
    configured; runtime.init() sets it (measured on the harness: the port then answers a TLS
    handshake with this party's certificate, refuses a client without a certificate and one of
    another CA)."""
    me = cluster.node(party)
    parties: Dict[str, Dict[str, str]] = {}
    for n in cluster.nodes:
        parties[n.name] = {"address": f"{n.spu_advertise}:{n.cross_silo_port}"}
    parties[party]["listen_addr"] = f"{me.link_bind}:{me.cross_silo_port}"
    cfg = secretflow_config(cluster, tls_dirs)
    del cfg["ray_address"], cfg["temp_dir"]
    own_tls = (tls_dirs or {}).get(party) if enabled(cluster) else None
    cfg.update({
        "mode": "production", "self_party": party, "job_name": run_id, "self_listen": parties[party]["listen_addr"],
        "cluster_config": {"parties": parties, "self_party": party},
        # a peer that is not there yet is retried for longer than `run`'s start deadline: the
        # controller, which knows who never came, ends the run and names them, not the link
        "cross_silo": {"backend": CROSS_SILO_BACKEND,
                       "comm_config": dict(CROSS_SILO_COMM, connect_retry_times=int(start_timeout) + 30),
                       "tls_config": tls_files(own_tls) if own_tls else None},
    })
    # the SPU's cluster_def: only this party's own certificate paths (the others' are theirs)
    for entry in cfg["spu_cluster_def"]["nodes"]:
        if entry["party"] != party:
            entry.pop("tls_opts", None)
    return cfg
