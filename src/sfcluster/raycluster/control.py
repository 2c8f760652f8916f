"""Ray on the nodes, in one place: start (`ray start` with its output kept off the channel), stop
(nodescripts/ray_stop.py: `ray stop`'s order, then this cluster's leftovers on planned ports), and
the GCS queries sfcluster makes on the head (nodescripts/gcs.py: join wait, parties, drivers).
The argv of `ray start` is built in raycluster/argv.py."""
from __future__ import annotations

import json
import threading
from typing import Callable, List, Optional

from sfcluster.connect import Nodes
from sfcluster.errors import SfclusterError
from sfcluster import nodescripts
from sfcluster.nodescripts import contract as C
from sfcluster.nodescripts.answers import GcsAnswer, RayStopped
from sfcluster.inventory.model import Cluster
from sfcluster.inventory.ports import plan_ports
from sfcluster.raycluster.argv import START_TIMEOUT
from sfcluster.tls.install import with_env

GCS_QUERY_TIMEOUT = 12  # a GCS query without a wait (status): a frozen head ends it, naming it
JOIN_GRACE = 8  # past the join wait's own end on the head, we stop waiting for its answer


def gcs_query(cluster: Cluster, nodes: Nodes, wait: float = 0, jobs: bool = False,
              on_line: Optional[Callable[[str], None]] = None, stop: Optional[threading.Event] = None,
              tls_dir: Optional[str] = None) -> GcsAnswer:
    """Ask the head's GCS (with the head's own Ray) about nodes, party resources and drivers."""
    head = cluster.head
    req = {"address": cluster.ray_address, "parties": {n.name: n.host for n in cluster.nodes}, "wait": wait, "jobs": jobs}
    buf = bytearray()
    lines: List[str] = []

    def on_out(data: bytes) -> None:
        buf.extend(data)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            text = line.decode(errors="replace")
            lines.append(text)
            if on_line and text.startswith("JOINED "):
                on_line(text[7:])
    err = bytearray()
    # with tls: on, the query is a Ray client like any other: it needs the head's certificate
    code = nodes.ray(head.name).stream(with_env(nodescripts.argv(head, "gcs", req), tls_dir), on_stdout=on_out, on_stderr=err.extend, stop=stop,
                                   timeout=wait + (GCS_QUERY_TIMEOUT if wait == 0 else JOIN_GRACE))
    if buf:
        lines.append(buf.decode(errors="replace"))
    try:
        data = json.loads(lines[-1]) if lines else {"error": err.decode(errors="replace")[-500:]}
    except ValueError:
        data = {"error": lines[-1][-500:]}
    if code != 0 and "error" not in data:
        data["error"] = f"exit {code}"
    return GcsAnswer.parse(data)


# A `ray start` whose output goes to a private file (mktemp: 0600, a fresh name) instead of the SSH
# channel: the channel may close before the CLI exits (up returns once every party joined) without a
# broken pipe killing it. On failure the log's tail comes back on stderr; the file is removed.
_QUIET = ('log=$(mktemp) || exit 1; "$@" >"$log" 2>&1; rc=$?; '
          '[ "$rc" = 0 ] || tail -n 40 "$log" >&2; rm -f "$log"; exit "$rc"')


# Before `ray start`, on every node: the parent of Ray's temp dir (Cluster.temp_root) made 0700 by
# us, or, when it is there, refused unless it is a directory (not a link) that we own. /tmp is
# sticky: once the directory is ours nobody else can swap or remove it. $1: the directory.
PRIVATE_TEMP = ('d="$1"; shift; mkdir -m 0700 "$d" 2>/dev/null; '
                'if [ -L "$d" ] || [ ! -d "$d" ]; then echo "sfcluster: $d (the parent of Ray\'s temp dir) is a link or '
                'not a directory: someone else put it there; look at it, remove it (as root), then retry" >&2; exit @UNSAFE@; fi; '
                'o=$(stat -c %u "$d"); if [ "$o" != "$(id -u)" ]; then echo "sfcluster: $d (the parent of Ray\'s temp dir) '
                'belongs to $(stat -c %U "$d") (uid $o), not to $(id -un), the user Ray runs as: another local user made it '
                'to get into Ray\'s sockets and logs; remove it (as root), then retry" >&2; exit @UNSAFE@; fi; '
                'chmod 0700 "$d" || exit @UNSAFE@; exec "$@"').replace("@UNSAFE@", str(C.UNSAFE_EXIT))


def start_quietly(cluster: Cluster, nodes: Nodes, n: str, argv: List[str], stop: threading.Event,
                  head: bool = False) -> Optional[SfclusterError]:
    """Run a `ray start` on node n with its output kept off the channel (_QUIET); the error to
    report, or None when it started (or `stop` was set: `up` no longer listens). A worker's
    `ray start` that `timeout` ended (124) never reached the head."""
    err = bytearray()
    code = nodes.ray(n).stream(["sh", "-c", PRIVATE_TEMP, "sh", cluster.temp_root, "sh", "-c", _QUIET, "sh", *argv],
                               on_stderr=err.extend, stop=stop,
                           timeout=START_TIMEOUT + 15)
    if code == 124 and not head:
        return SfclusterError(f"[{n}] `ray start` did not join the head {cluster.ray_address} within {START_TIMEOUT} s",
                              f"check that {n} reaches {cluster.ray_address} (tcp/{cluster.ray.gcs}): sfcluster check")
    if code == C.UNSAFE_EXIT:
        msg = err.decode(errors="replace").strip().splitlines()
        return SfclusterError(f"[{n}] {msg[-1] if msg else 'the parent of Ray' + chr(39) + 's temp dir is not safe'}",
                              f"only the user Ray runs as may own {cluster.temp_root} on {n}; nothing was started there")
    if code > 0:
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-8:])
        what, logs = (("ray start --head", f"{cluster.temp_dir}/session_latest/logs on the head") if head
                      else ("ray start", "/tmp/ray on that node"))
        return SfclusterError(f"[{n}] `{what}` exited {code}" + (f":\n{tail}" if tail else ""),
                              f"see the Ray log under {logs}")
    return None


def stop_ray(cluster: Cluster, nodes: Nodes, n: str) -> RayStopped:
    node = cluster.node(n)
    ports = sorted({e.port for e in plan_ports(cluster).for_node(n)})
    res = nodescripts.run(nodes[n], node, "ray_stop", {"temp_dir": cluster.temp_dir, "ray_address": cluster.ray_address,
                                                      "ports": ports, "grace": 5}, as_="root", timeout=30).check()
    return RayStopped.parse(json.loads(res.stdout.strip().splitlines()[-1]))
