# Runs on a node: stop THIS cluster's Ray/SPU processes only. A process is this cluster's when its
# command line (or an ancestor's) names the cluster's temp dir; a leftover holding a planned port
# is stopped only when it is this cluster's too. Never `ray stop` (it kills every Ray on the host).
# argv[1]: {"temp_dir": ..., "ports": [port, ...], "grace": seconds}. Prints JSON of what it stopped.
import json
import os
import re
import signal
import sys
import time


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        return int(s[s.rindex(")") + 2:].split()[1])
    except (OSError, ValueError):
        return 0


def gone(pid):
    """Exited: no /proc entry, or a zombie waiting for its parent (docker-init, sshd) to reap it."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        return st[st.rindex(")") + 2] in "ZX"
    except (OSError, ValueError, IndexError):
        return True


def exe_is(pid, name):
    return os.path.basename(cmdline(pid).split(" ", 1)[0]) == name


def ours_here(marker):
    """The processes of this cluster: their command line (or an ancestor's) names a marker."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    parent = {p: ppid(p) for p in pids}
    # never ourselves nor our ancestors (sudo, sh, sshd): their command lines carry the markers too
    me, spare = os.getpid(), set()
    while me > 1:
        spare.add(me)
        me = parent.get(me, 0)
    ours = {p for p in pids if p not in spare and marker.search(cmdline(p))}
    changed = True
    while changed:  # children of ours are ours (Ray workers, SPU actors, agents)
        changed = False
        for p in pids:
            if p not in ours and p not in spare and parent.get(p) in ours:
                ours.add(p)
                changed = True
    return ours


def main(req):
    markers = [m for m in (req["temp_dir"], req.get("ray_address")) if m]
    # a marker counts only as a whole word: /tmp/sfc-demo is not /tmp/sfc-demo2, 10.0.0.1:6379 is
    # not 10.0.0.1:63790 (another cluster on the same nodes)
    marker = re.compile("|".join("(?:%s)(?![A-Za-z0-9_.-])" % re.escape(m) for m in markers) or "(?!x)x")
    ours = ours_here(marker)
    # The order `ray stop` uses (ray/scripts/scripts.py, 2.9.3): raylet first (its fate-sharing agents
    # and workers would otherwise complain and suicide slowly), then everything else, gcs_server last.
    # Sent SIGTERM all at once, gcs_server and the autoscaler monitor outlive a 5 s grace; in this
    # order each bucket is gone within a fraction of a second.
    raylet = {p for p in ours if exe_is(p, "raylet")}
    gcs = {p for p in ours if exe_is(p, "gcs_server")}
    buckets = [raylet, ours - raylet - gcs, gcs]
    grace = float(req.get("grace", 5)) / len(buckets)
    stopped = sorted(ours)
    killed = []
    for bucket in buckets:
        for p in bucket:
            try:
                os.kill(p, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not all(gone(p) for p in bucket):
            time.sleep(0.05)
        for p in sorted(bucket):
            if not gone(p):
                try:
                    os.kill(p, signal.SIGKILL)
                    killed.append(p)
                except OSError:
                    pass
    return {"stopped": stopped, "killed": killed}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
