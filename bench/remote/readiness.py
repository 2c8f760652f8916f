# Runs ON the head (the bench's readiness poller), the same for every contender:
#   /opt/sf/bin/python -u /tmp/sfbench_readiness.py HOST PORT WANT GIVE_UP
# Imports Ray's GCS client first, prints "READY-TO-POLL <monotonic>", then polls the GCS every
# 0.2 s and prints "COUNT <monotonic> <ready nodes>" whenever that count changes (ready: alive and
# reporting resources); "DONE" once WANT nodes are ready, "GAVE-UP" after GIVE_UP seconds. Exits on stdin EOF (the controller
# is gone or done).
#
# Facts (ray 2.9.3) this depends on:
#  - GcsClient(address) against a closed port retries for ~6 s (~1 s with nums_reconnect_retry=0)
#    before raising: far too slow for a 0.2 s poll, so a plain TCP connect comes first and the
#    client is made only once the port answers (and made again after any error: during
#    `sfcluster up`'s preflight a reachability listener, not the GCS, briefly holds the port).
#  - `ray stop` kills by name/command line (raylet, gcs_server, ray::, monitor.py, reporter.py,
#    log_monitor.py, ...): this file's name and arguments match none of them. HOST and PORT are
#    separate arguments so the command line never holds "host:port", which sfcluster's
#    ray_stop/probe use to recognise the cluster's own processes. It is not a raylet or
#    gcs_server either, so sfcluster's preflight does not see a foreign Ray.
#  - Containers share the host kernel's CLOCK_MONOTONIC (no time namespace), so the times printed
#    here are on the controller's clock too.
#  - With `tls: on` the controller starts this under Ray's TLS environment (RAY_USE_TLS and the
#    head's certificate files): the GCS takes mutual-TLS clients only. Those files appear during
#    `sfcluster up` (the clock is running), so no client is made before all of them exist.
import os
import socket
import sys
import threading
import time

HOST, PORT, WANT, GIVE_UP = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
INTERVAL = 0.2

from ray._raylet import GcsClient  # noqa: E402  (0.7 s: before READY-TO-POLL, outside any timing)


def watch_stdin():
    while sys.stdin.buffer.read1(4096):
        pass
    os._exit(0)


def port_open():
    try:
        with socket.create_connection((HOST, PORT), timeout=INTERVAL):
            return True
    except OSError:
        return False


TLS_FILES = [os.environ.get(k, "") for k in ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
             if os.environ.get("RAY_USE_TLS") == "1"]


def tls_files_ready():
    return all(os.path.exists(f) for f in TLS_FILES)


client = None


def alive_nodes():
    """Nodes that are ready: alive in the GCS node table AND reporting their resources (their party
    resource included) to the GCS, i.e. what a SecretFlow task can be scheduled on. A raylet
    registers ~0.5-2 s before its first resource report under load; counting the registration
    alone made a contender that waits for the resources (sfcluster up) look late. None when the
    GCS cannot be asked right now."""
    global client
    try:
        if client is None:
            if not port_open() or not tls_files_ready():
                return 0
            client = GcsClient(address="%s:%d" % (HOST, PORT), nums_reconnect_retry=0)
        alive = sum(1 for info in client.get_all_node_info(timeout=1).values() if info["state"] == 0)
        batch = client.get_all_resource_usage(timeout=1).resource_usage_data.batch
        reporting = sum(1 for b in batch if len(b.resources_total) > 0)
        return min(alive, reporting)
    except Exception:  # noqa: BLE001 - not the GCS yet, or not answering: ask again next tick
        client = None
        return None


threading.Thread(target=watch_stdin, daemon=True).start()
start = time.monotonic()
print("READY-TO-POLL %.6f" % start, flush=True)
last = -1
next_tick = start
while True:
    n = alive_nodes()
    now = time.monotonic()
    if n is not None and n != last:
        print("COUNT %.6f %d" % (now, n), flush=True)
        last = n
    if last >= WANT:
        print("DONE", flush=True)
        break
    if now - start > GIVE_UP:
        print("GAVE-UP", flush=True)
        break
    next_tick += INTERVAL
    time.sleep(max(0.0, next_tick - time.monotonic()))
# stay until the controller closes the connection (watch_stdin exits), so DONE never races the reader
threading.Event().wait()
