"""Pure argv builders for `ray start`. Every port is pinned so the firewall can be scoped.

Facts (ray 2.9.3): `--temp-dir` is honoured on the head only (workers use the head's), the
dashboard stays off (`--include-dashboard=false`), `ray start --address` on a worker never returns
when the head is unreachable (so callers wrap it in `timeout`), and Ray swaps 127.0.0.1 for the
host's NIC address, hence an explicit `--node-ip-address`.
"""
from __future__ import annotations

import json
import posixpath
from typing import List

from sfcluster.inventory.model import Cluster, Node
from sfcluster.raycluster.resources import PARTY_RESOURCE

START_TIMEOUT = 60
# Where the dashboard listens on the head, when the inventory turns it on: loopback only, never
# opened to the peers; `sfcluster dashboard` tunnels to it over SSH.
DASHBOARD_HOST = "127.0.0.1"


def ray_executable(node: Node) -> str:
    return posixpath.join(posixpath.dirname(node.python), "ray")


def _common(cluster: Cluster, node: Node) -> List[str]:
    r = cluster.ray
    return [
        f"--node-ip-address={node.host}",
        f"--node-manager-port={r.node_manager}",
        f"--object-manager-port={r.object_manager}",
        f"--metrics-export-port={r.metrics_export}",
        f"--dashboard-agent-grpc-port={r.dashboard_agent_grpc}",
        f"--dashboard-agent-listen-port={r.dashboard_agent_http}",
        f"--runtime-env-agent-port={r.runtime_env_agent}",
        f"--min-worker-port={r.worker_min}",
        f"--max-worker-port={r.worker_max}",
        f"--num-cpus={node.cpus}",
        # the party resource is a label, not a CPU budget (raycluster/resources.py)
        f"--resources={json.dumps({node.name: PARTY_RESOURCE})}",
        "--disable-usage-stats",
    ]


def _in_temp_root(cluster: Cluster) -> List[str]:
    """`ray start` runs in the cluster's temp root (0700, the Ray user's, made before Ray starts):
    Ray's workers keep the raylet's working directory, and SPU's runtime writes `spu.log` into it
    (secretflow 1.10, device/spu.py setup_logging). Started from the SSH user's home, a `ray_user`
    could not write there and every SPU actor died at once ("Failed opening file spu.log for
    writing: Permission denied", then "'SPURuntime' object has no attribute 'id'"); and the log
    had landed in the SSH user's home. GNU env's --chdir (coreutils 8.28+)."""
    return ["env", f"--chdir={cluster.temp_root}"]


def head_start_argv(cluster: Cluster) -> List[str]:
    head = cluster.head
    r = cluster.ray
    dash = ["--include-dashboard=true", f"--dashboard-host={DASHBOARD_HOST}", f"--dashboard-port={r.dashboard}"] \
        if r.dashboard else ["--include-dashboard=false"]
    return [*_in_temp_root(cluster), "timeout", "-k", "5", str(START_TIMEOUT), ray_executable(head), "start", "--head",
            f"--port={r.gcs}", f"--ray-client-server-port={r.client_server}", f"--temp-dir={cluster.temp_dir}",
            *dash, *_common(cluster, head)]


def worker_start_argv(cluster: Cluster, node: Node) -> List[str]:
    return [*_in_temp_root(cluster), "timeout", "-k", "5", str(START_TIMEOUT), ray_executable(node), "start",
            f"--address={cluster.ray_address}", *_common(cluster, node)]


# bash -c GCS_WAIT_SCRIPT bash HOST PORT TRIES INTERVAL: the text is constant, the values are arguments.
GCS_WAIT_SCRIPT = 'for _ in $(seq "$3"); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && exit 0; sleep "$4"; done; exit 1'


def gcs_port_wait_argv(cluster: Cluster, interval: float = 0.05) -> List[str]:
    """Run on the head: return 0 as soon as the GCS accepts TCP connections (bash's /dev/tcp: no
    Python start), 1 after START_TIMEOUT. The head's `ray start` opens the GCS port ~1.5 s in and
    then spends ~2 s more on the raylet and agents: workers may start at the port, not at the end.
    Host and port are positional arguments of the script, never part of its text."""
    tries = int(START_TIMEOUT / interval)
    return ["bash", "-c", GCS_WAIT_SCRIPT, "bash", cluster.head.host, str(cluster.ray.gcs), str(tries), str(interval)]
