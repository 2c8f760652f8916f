# Runs on the head, once per `sfcluster run`, as a FILE in the run's private
# dir (<state>/runs/<id>/sfc_wrapper.py): lock, job-table check and driver start in ONE remote
# process. The request (with the run token) comes as the first line of stdin, never on a command
# line (`ps` shows command lines to every local user); then the controller's heartbeats.
# Control lines go to stderr prefixed "SFC:". The driver's stderr is passed through line by line,
# and a driver line that starts with "SFC:" is passed as "[driver] SFC:...": control can only come
# from this process, never from the user's code. The driver's output is also kept in
# <run_dir>/driver.log; what it leaves in $SFCLUSTER_OUTPUT (<run_dir>/output) `run` fetches.
#  - the lock is an flock on the cluster's private state dir, held by this process: released
#    however we end, SIGKILL included, so a stale lock cannot outlive its holder;
#  - an SSH command without a terminal gets no SIGHUP when the controller vanishes: we watch our
#    stdin and stop the driver on EOF (unless detached);
#  - one watcher: a party's node lost, a second driver, a starved party end the run, naming it.
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from sfcluster.nodescripts.contract import (
    BEAT, CONTROL_PREFIX, DRIVER_MARK, ENV_CONFIG, ENV_GATE, ENV_LOCK_INFO, ENV_OUTPUT, ENV_READY, ENV_RUN_TOKEN,
    EXIT, FOREIGN, FOREIGN_EXIT, HELD_EXIT, LINKING, LOCKED, LOG_NAME, NODE_DOWN, NOGATE, NORAY, NORAY_EXIT,
    OUTPUT_DIR, READY, RESULT_NAME, STARTED, START_OUTCOMES, STARVED, STOPPING, UNSAFE, UNSAFE_EXIT)
from sfcluster.nodescripts.nodestate import (
    UnsafeState, controller_gone, describe_holder, lock_info_path, open_lock, private_dir, proc_status, run_dir,
    state_dir, write_private)
from sfcluster.gate import Gate


def guard_self():
    """Before anything else, two kernel settings a driver (same uid as we are) cannot undo:
    - not dumpable (PR_SET_DUMPABLE 0): /proc/<our pid>/fd, mem and environ become root's, so the
      driver cannot open our stderr (the SSH channel the controller reads control lines from) nor
      read the run's secrets from our memory; the driver itself is dumpable again after exec;
    - child subreaper (PR_SET_CHILD_SUBREAPER): whatever the driver starts and detaches (setsid,
      double fork) is re-parented to us, never to pid 1, so kill_descendants() finds it before
      the cluster lock is released (a detached child once took the lock and posed as an `up`)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0 or libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER
        sys.stderr.write("%s%s %s\n" % (CONTROL_PREFIX, UNSAFE, json.dumps("prctl failed: errno %d" % ctypes.get_errno())))
        sys.exit(UNSAFE_EXIT)


def descendants():
    """Pids of every live process below us (children, and orphans re-parented to us)."""
    kids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_status(int(name))
            if st is not None:
                kids.setdefault(st["ppid"], []).append(int(name))
    out, todo = [], [os.getpid()]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def kill_descendants(deadline=10.0):
    """SIGKILL everything below us and reap it, until nothing is left (a process forking as we kill
    is caught on the next pass). Returns how many were killed."""
    killed = set()
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        pids = descendants()
        while True:  # reap the zombies among our children (orphans re-parented to us included)
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        live = [p for p in pids if (proc_status(p) or {}).get("state", "Z") != "Z"]  # gone or a zombie: dead
        if not live:
            return len(killed)
        for p in live:
            try:
                os.kill(p, signal.SIGKILL)
                killed.add(p)
            except OSError:
                pass
        time.sleep(0.05)
    return len(killed)


def read_request():
    """The first line of stdin, read byte by byte: nothing past it leaves the pipe (the heartbeat
    watch reads the rest with os.read)."""
    buf = b""
    while not buf.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            break
        buf += c
    return json.loads(buf.decode())


if __name__ == "__main__":  # the run's own globals, read by the functions below (unit tests import them)
    guard_self()
    R = read_request()
    try:
        STATE = state_dir(R["cluster"])
        RUN_DIR = run_dir(STATE, R["run_id"])
        private_dir(RUN_DIR, create=False)
    except UnsafeState as e:
        sys.stderr.write("%s%s %s\n" % (CONTROL_PREFIX, UNSAFE, json.dumps(str(e))))
        sys.exit(UNSAFE_EXIT)
    INFO = lock_info_path(STATE)
    LOG = os.path.join(RUN_DIR, LOG_NAME)
    FILES_DIR = os.path.join(RUN_DIR, "files")
OUT_LOCK = threading.Lock()  # one writer at a time on our stderr: a control line is never cut in two


def ctl(kind, payload=""):
    # never raises: once the controller is gone, stderr is a broken pipe and we must still clean up
    line = "%s%s %s\n" % (CONTROL_PREFIX, kind, payload if isinstance(payload, str) else json.dumps(payload))
    with OUT_LOCK:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


# Gate (production mode's TLS-only doors): sfcluster/gate.py, pasted before this script
PEER_PROBE, PEER_MISSES = 3, 5  # a federation's peer watch: a dial every 3 s, 5 misses in a row (15 s)


def open_gates():
    """The gates of this party's public ports; {purpose: "unix:<path>"} for the driver (runtime.load
    puts them in the config as this party's listen addresses). A port that cannot be held fails the
    start, naming it."""
    where = {}
    for purpose, (bind, port) in sorted((R.get("gate") or {}).items()):
        inner = os.path.join(RUN_DIR, "%s.sock" % purpose)
        if len(inner) > 100:
            ctl(NOGATE, json.dumps("the unix socket path %s is too long (over 100 bytes): use a shorter home dir "
                                   "for the user Ray runs as" % inner))
            sys.exit(1)
        try:
            GATES.append(Gate(purpose, bind, int(port), inner))
        except OSError as e:
            ctl(NOGATE, json.dumps("%s port %s:%s: %s" % (purpose.replace("_", "-"), bind, port, e.strerror or e)))
            sys.exit(1)
        where[purpose] = "unix:" + inner
    return where


GATES = []


def die_with(parent):
    """The driver never outlives its lock: the lock dies with this process (flock), and the driver
    gets SIGKILL from the kernel when this process dies, however it dies (PR_SET_PDEATHSIG)."""
    def arm():
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # died before the signal was armed
            os._exit(1)
    return arm


BEAT_STOP = threading.Event()


def beat():
    """A control line every 5 s, for the whole run: the controller ends the run when the head
    goes silent (a frozen or powered-off head sends nothing, not even an EOF)."""
    while not BEAT_STOP.wait(5):
        ctl(BEAT)


def take_lock():
    fd = open_lock(STATE)
    deadline = time.monotonic() + (R.get("wait_seconds") or 0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if time.monotonic() >= deadline:
                ctl(LOCKED, describe_holder(STATE, R["cluster"]))  # verified, never the token
                sys.exit(HELD_EXIT)
            time.sleep(0.5)


def job_drivers(client, since=None, table=None):
    """Drivers of Ray's job table (`table`: one already read): those alive (anything connected to
    the cluster right now), and with `since` (the job ids the table held when this run began) every
    job that came after, dead or alive: a driver that connects and leaves between two polls is
    still in the table, dead."""
    out = []
    for jid, info in (table if table is not None else client.get_all_job_info(timeout=5)).items():
        if not info.is_dead or (since is not None and jid not in since):
            out.append({"ip": info.driver_ip_address, "pid": info.driver_pid, "dead": bool(info.is_dead),
                        "entrypoint": getattr(info, "entrypoint", "")})
    return out


def live_drivers():
    """(GCS client, the drivers alive now, the job ids of the table now), from ONE read of the
    table: a job that starts between two reads can be neither in the baseline nor seen alive."""
    try:
        from ray._raylet import GcsClient
        c = GcsClient(address=R["ray_address"])
        jobs = c.get_all_job_info(timeout=5)
        return c, job_drivers(c, table=jobs), set(jobs)
    except Exception as e:  # noqa: BLE001
        ctl(NORAY, str(e))
        sys.exit(NORAY_EXIT)


def foreign_nodes(client):
    """Ray nodes that are not the inventory's (the GCS's resource view, every alive raylet): one at
    an address no party has, one that carries another party's resource (SecretFlow places a party's
    work by that label), or a second raylet at a party's address. [] when the GCS does not answer
    (the node watch's business)."""
    try:
        batch = client.get_all_resource_usage(timeout=3).resource_usage_data.batch
    except Exception:  # noqa: BLE001
        return []
    hosts = {party: p["host"] for party, p in R["parties"].items()}
    seen, out = {}, []
    for b in batch:
        addr = b.node_manager_address
        labels = sorted(k for k in b.resources_total if k in hosts)
        owner = sorted(party for party, h in hosts.items() if h == addr)
        seen[addr] = seen.get(addr, 0) + 1
        if not owner or labels != owner or seen[addr] > 1:
            out.append({"address": addr, "parties": labels, "inventory": owner})
    return out


def node_alive_by_gcs(client):
    try:
        infos = client.get_all_node_info(timeout=3).values()
    except Exception:  # noqa: BLE001
        return None
    alive = set()
    for i in infos:
        ip = i["node_name"]
        if i["state"] == 0:
            alive.add(ip.decode() if isinstance(ip, bytes) else ip)
    return alive


def resource_snapshot(client):
    """(pending demands, fingerprint) from the GCS, as Ray's autoscaler reads them (ray 2.9.3:
    GetAllResourceUsage -> resource_usage_data.resource_load_by_shape.resource_demands).
    pending: {shape as sorted (resource, amount) tuples: requests queued}; fingerprint: every
    node's available resources, which change whenever a task or actor of the run starts or ends,
    or an object is stored. None when the GCS does not answer."""
    try:
        data = client.get_all_resource_usage(timeout=3).resource_usage_data
    except Exception:  # noqa: BLE001
        return None
    pending = {}
    for d in data.resource_load_by_shape.resource_demands:
        n = d.num_ready_requests_queued + d.num_infeasible_requests_queued + d.backlog_size
        if n:
            pending[tuple(sorted(d.shape.items()))] = n
    fingerprint = tuple(sorted((bytes(b.node_id), tuple(sorted(b.resources_available.items()))) for b in data.batch))
    return pending, fingerprint


class StallClock:
    """Starvation: a resource demand pending while nothing of the run changes (the fingerprint of
    every node's available resources). Only a change of the fingerprint is progress and restarts
    the clock. A poll that shows no demand while nothing changed is not: the GCS's aggregated
    demand can be missing from one report, and the first version reset the clock there and never
    set it again until the fingerprint moved (a run starved for 10 minutes on the harness went
    unnamed; tests/unit/test_contract.py keeps the blip)."""

    def __init__(self, limit):
        self.limit, self.since, self.last_fp = limit, None, None

    def update(self, pending, fp, now):
        """Feed one poll; True when a demand has waited `limit` seconds with nothing changing."""
        if fp != self.last_fp:
            self.since = now if pending else None
        elif pending and self.since is None:
            self.since = now
        self.last_fp = fp
        return bool(pending) and self.since is not None and now - self.since >= self.limit


def starvation_message(pending, waited):
    """Name the starved parties, the resource and the fix."""
    starved = {}
    for shape in sorted(pending, key=lambda k: -pending[k]):
        res = dict(shape)
        for party in (k for k in res if k in R["parties"]):
            starved.setdefault(party, res)
    if not starved:
        what = "; ".join("{%s}" % ", ".join("%s: %g" % kv for kv in shape) for shape in pending)
        return ("resource requests %s have waited %d s while no task of the run made progress (no party named in "
                "them)" % (what, waited))
    parts = []
    for party, res in sorted(starved.items()):
        other = [k for k in sorted(res) if k != party and not k.startswith("node:")]
        parts.append("party %s needs {%s} and its %s is all taken (cpus: %s)" % (
            party, ", ".join("%s: %g" % (k, res[k]) for k in sorted(res)), "/".join(other) or "resource",
            R["parties"][party]["cpus"]))
    names = ", ".join(sorted(starved))
    return ("starved: %s; waited %d s while no task of the run made progress. Fix: raise `cpus` for %s in the "
            "inventory (at least %d; `sfcluster check` fails below it), then `sfcluster down` and `sfcluster up`"
            % ("; ".join(parts), waited, names, R["min_cpus"]))


def tcp_ok(host, port, timeout=2.0):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def stop(proc, why):
    if proc.poll() is not None:
        return
    ctl(STOPPING, why)
    for sig, wait in ((signal.SIGINT, 5), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        if proc.poll() is not None:
            return


def pump(src, dst, log):
    """The driver's stdout: chunks as they come (control never travels there)."""
    for chunk in iter(lambda: src.read1(65536), b""):
        try:
            if dst is not None:
                dst.write(chunk)
                dst.flush()
        except (OSError, ValueError):
            pass  # the controller is gone; keep the log
        log.write(chunk)
        log.flush()


def pump_lines(src, dst, log):
    """The driver's stderr, which shares our stderr with the control lines: whole lines only, and
    a line that would pass for control is marked as the driver's."""
    for line in iter(src.readline, b""):
        log.write(line)
        log.flush()
        if line.startswith(CONTROL_PREFIX.encode()):
            line = DRIVER_MARK.encode() + line
        if not line.endswith(b"\n"):
            line += b"\n"
        if dst is None:
            continue
        with OUT_LOCK:
            try:
                dst.write(line)
                dst.flush()
            except (OSError, ValueError):
                pass


def detach():
    """`run --detach`: the child goes on in its own session, output to the log only. Until the
    driver has started, its control lines reach the parent through a pipe; the parent reports them
    and leaves with the start's outcome (its code); the child gets None."""
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        data = b""
        for chunk in iter(lambda: os.read(r, 65536), b""):
            data += chunk
            try:  # as it comes: the controller counts the beats
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        for kind, code in START_OUTCOMES:
            if (CONTROL_PREFIX + kind).encode() in data:
                return code
        return 1
    os.close(r)
    os.setsid()
    guard_self()  # a subreaper is not inherited by fork
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(w, 2)
    os.close(w)
    return None


def driver_env(output, gates):
    """The driver's environment: the run's config, token, output dir, lock info, ready file and
    gates; never the operator's SSH agent."""
    env = dict(os.environ)
    env.update({ENV_CONFIG: os.path.join(RUN_DIR, "sfcluster.json"), ENV_RUN_TOKEN: R["token"], ENV_OUTPUT: output,
                ENV_LOCK_INFO: INFO, ENV_READY: os.path.join(RUN_DIR, "ready"), ENV_GATE: json.dumps(gates),
                "PYTHONUNBUFFERED": "1",
                # Ray (2.9.3) auto-starts a LOCAL Ray instance when a Ray API is touched after
                # shutdown (e.g. an ObjectRef freed at exit): a second Ray on the head. Never.
                "RAY_ENABLE_AUTO_CONNECT": "0",
                "PYTHONPATH": os.pathsep.join([RUN_DIR, FILES_DIR] + [p for p in [env.get("PYTHONPATH")] if p]),
                # Ray injects this job config into the driver's ray.init: party functions find --files
                # modules on every node (each node's copy is under its own user's home).
                "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(
                    {"runtime_env": {"env_vars": {"PYTHONPATH": os.pathsep.join(R["files_dirs"])}}})})
    env.pop("SSH_AUTH_SOCK", None)  # the user's code gets no way to the operator's SSH agent
    return env


def read_stage():
    """How far this party's driver got, as runtime.py writes it: linking, ready, stopping."""
    try:
        fd = os.open(os.path.join(RUN_DIR, "ready"), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            return os.read(fd, 16).decode(errors="replace").strip()
        finally:
            os.close(fd)
    except OSError:
        return ""


class Watch:
    """The running driver and what watches it; `reason`: why sfcluster ended it (the first wins;
    the controller maps its `kind` to its exit code)."""

    def __init__(self, proc, client, jobs_before):
        self.proc, self.client, self.jobs_before = proc, client, jobs_before
        self.reason = {}

    def stop_for(self, kind, why):
        self.reason.setdefault("kind", kind)
        self.reason.setdefault("why", why)
        stop(self.proc, self.reason["why"])

    def running(self):
        return self.proc.poll() is None

    def start(self, production):
        signal.signal(signal.SIGTERM, lambda *a: self.stop_for("cancelled", "cancelled (sfcluster cancel)"))
        watchers = []
        if production:
            watchers.append(self.watch_ready)
            if R.get("peers"):
                watchers.append(self.watch_peers)
        if not R.get("detach"):
            watchers.append(self.watch_stdin)
        if not production:
            watchers.append(self.watch_cluster)
        for w in watchers:
            threading.Thread(target=w, daemon=True).start()

    def watch_stdin(self):
        # The controller sends a heartbeat line every second; EOF or HEARTBEAT_SILENCE s of silence
        # means it is gone.
        if controller_gone(self.running):
            self.stop_for("controller_gone", "the controller's connection closed")

    def watch_cluster(self):
        """ONE watcher on the head, every 2 s, for the run's whole life:
        - a party's node that dies or is cut off (GCS node table + TCP to its raylet, 3 misses);
        - a driver in Ray's job table that is not ours (a second driver is the failure sfcluster
          exists to prevent), alive or already gone (a job that came after this run began):
          named (IP, pid, entrypoint) and the run stops;
        - a Ray node that is not the inventory's (an extra raylet, or one carrying another
          party's resource, would be given that party's work): named and the run stops;
        - starvation: a resource demand pending while nothing of the run changes (Ray's GCS knows
          the demands; with one driver on the cluster, every demand is this run's)."""
        misses = {}
        starve_limit = float(R.get("starve_seconds") or 0)
        clock = StallClock(starve_limit)
        while self.running():
            if self.node_lost(misses) or self.foreign_driver() or self.foreign_node() \
                    or (starve_limit > 0 and self.starved(clock)):
                return
            time.sleep(2)

    def node_lost(self, misses):
        alive = node_alive_by_gcs(self.client)
        for party, (host, port) in R["watch"].items():
            gone = (alive is not None and host not in alive) or not tcp_ok(host, port)
            misses[party] = misses.get(party, 0) + 1 if gone else 0
            if misses[party] >= 3:
                ctl(NODE_DOWN, {"party": party, "host": host})
                self.stop_for("node_lost", "party %s (%s) is down or cut off" % (party, host))
                return True
        return False

    def foreign_driver(self):
        ours = {(R["head_host"], self.proc.pid)}
        try:
            others = [d for d in job_drivers(self.client, self.jobs_before) if (d["ip"], d["pid"]) not in ours]
        except Exception:  # noqa: BLE001 - the GCS being away is the node watch's business
            others = []
        if not others:
            return False
        d = others[0]
        ctl(FOREIGN, others)
        self.stop_for("foreign_driver", "another driver connected to the cluster mid-run: %s pid %s (%s)%s"
                      % (d["ip"], d["pid"], (d["entrypoint"] or "?")[:200], " (already gone)" if d["dead"] else ""))
        return True

    def foreign_node(self):
        strangers = foreign_nodes(self.client)
        if not strangers:
            return False
        n = strangers[0]
        self.stop_for("foreign_node", "a Ray node the inventory does not have joined the cluster mid-run: %s, "
                      "carrying the resource of %s (the inventory's node there: %s)"
                      % (n["address"], ", ".join(n["parties"]) or "no party", ", ".join(n["inventory"]) or "none"))
        return True

    def starved(self, clock):
        snap = resource_snapshot(self.client)
        if snap is None:
            return False
        pending, fp = snap
        now = time.monotonic()
        if not clock.update(pending, fp, now):
            return False
        msg = starvation_message(pending, now - clock.since)
        ctl(STARVED, {"message": msg})
        self.stop_for("starved", msg)
        return True

    def watch_ready(self):
        """Production mode: LINKING once the driver is in runtime.init waiting for its peers, READY
        once every peer answered (runtime.init writes the stage into the ready file; the driver
        could lie, but only about its own party's start). The controller's start deadline reads them."""
        said = set()
        while self.running() and READY not in said:
            stage = read_stage()
            for kind, word in ((LINKING, "linking"), (READY, "ready")):
                if stage in (word, "ready", "stopping") and kind not in said:
                    said.add(kind)
                    ctl(kind)
            time.sleep(0.3)

    def watch_peers(self):
        """A federation (`run --party`): the peers' drivers are other controllers', so no controller
        sees them all and stops the rest when one ends. From READY (every peer linked) until this
        driver's sf.shutdown() has passed its barrier ("stopping"), each peer's cross-silo port is
        dialled every PEER_PROBE s; a peer whose port stays closed PEER_MISSES times in a row has no
        driver any more (its link, or its wrapper's gate, closed with it), and this party's driver
        would otherwise wait for it up to the link's receive timeout: stopped, naming the peer."""
        misses = {}
        while self.running():
            stage = read_stage()
            if stage == "stopping":
                return
            if stage == "ready":
                for party, (host, port) in sorted(R["peers"].items()):
                    misses[party] = 0 if tcp_ok(host, int(port)) else misses.get(party, 0) + 1
                    if misses[party] >= PEER_MISSES:
                        ctl(NODE_DOWN, {"party": party, "host": host})
                        self.stop_for("node_lost", "party %s's driver is gone: its cross-silo port %s:%s stayed closed "
                                      "for %d s (its operator stopped it, it failed, or its node is cut off)"
                                      % (party, host, port, PEER_MISSES * PEER_PROBE))
                        return
            time.sleep(PEER_PROBE)

    def lost_peer_after_exit(self, code):
        """A federation: this driver failed by itself before the peer watch's fifth miss (SPU's link
        gives up after ~10 s of retries when a peer's driver is gone, sooner than PEER_MISSES *
        PEER_PROBE). Still linked ("ready", not past sf.shutdown's barrier) with a peer's
        cross-silo port closed, asked twice 1 s apart: that peer ended the run, named."""
        if self.reason or code == 0 or not R.get("peers") or read_stage() != "ready":
            return
        for party, (host, port) in sorted(R["peers"].items()):
            if not tcp_ok(host, int(port)) and (time.sleep(1) or not tcp_ok(host, int(port))):
                ctl(NODE_DOWN, {"party": party, "host": host})
                self.reason.update(kind="node_lost", why="party %s's driver is gone: its cross-silo port %s:%s is "
                                   "closed (its operator stopped it, it failed, or its node is cut off)" % (party, host, port))
                return

    def lost_party_after_exit(self, code):
        """The driver died before the watcher's third miss: SPU crashes (SIGSEGV in yacl's link) a
        few seconds after a peer's node vanishes. Was a party's node lost? Asked twice, 1 s apart."""
        if self.reason or code == 0:
            return
        for party, (host, port) in R["watch"].items():
            if not tcp_ok(host, port) and (time.sleep(1) or not tcp_ok(host, port)):
                ctl(NODE_DOWN, {"party": party, "host": host})
                self.reason.update(kind="node_lost", why="party %s (%s) is down or cut off" % (party, host))
                return


def main():
    if R.get("detach"):
        code = detach()
        if code is not None:
            return code
    threading.Thread(target=beat, daemon=True).start()
    lock_fd = take_lock()  # production mode: this party's own lock, on its own node
    # Production mode has no Ray to ask: one driver per party is the lock on each party's node, and
    # the controller watches every party (run/production.py).
    production = R.get("mode") == "production"
    client, drivers, jobs_before = (None, [], set()) if production else live_drivers()
    if drivers:
        ctl(FOREIGN, drivers)
        return FOREIGN_EXIT
    info = {"op": "run", "user": R["user"], "controller": R["controller"], "host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "script": R["script_name"], "run_id": R["run_id"],
            "token": R["token"], "detached": bool(R.get("detach"))}
    write_private(INFO, json.dumps(info))
    output = private_dir(os.path.join(RUN_DIR, OUTPUT_DIR))  # what the driver leaves there, `run` fetches
    env = driver_env(output, open_gates() if production else {})
    started = time.time()
    log = open(os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600), "ab")
    # production mode: through sfcluster/launch.py, which makes a failed driver's exit final (SecretFlow's
    # cross-silo threads would otherwise keep it waiting for its peers)
    launch = [os.path.join(RUN_DIR, "sfcluster", "launch.py")] if production else []
    proc = subprocess.Popen([R["python"]] + launch + [os.path.join(RUN_DIR, R["script_name"])] + R["args"], cwd=RUN_DIR,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=die_with(os.getpid()))
    ctl(STARTED, {"pid": proc.pid, "log": LOG, "wrapper_pid": os.getpid()})
    if R.get("detach"):
        BEAT_STOP.set()  # nobody listens any more
        with OUT_LOCK:
            os.dup2(log.fileno(), 2)  # closes the pipe: the reporting parent ends, the run goes on
    write_private(INFO, json.dumps(dict(info, driver_pid=proc.pid)))
    out, err = (None, None) if R.get("detach") else (sys.stdout.buffer, sys.stderr.buffer)  # detached: the log only
    pumps = [threading.Thread(target=pump, args=(proc.stdout, out, log), daemon=True),
             threading.Thread(target=pump_lines, args=(proc.stderr, err, log), daemon=True)]
    for t in pumps:
        t.start()
    watch = Watch(proc, client, jobs_before)
    watch.start(production)
    code = proc.wait()
    if production:
        watch.lost_peer_after_exit(code)
    else:
        watch.lost_party_after_exit(code)
    finish(code, watch.reason, pumps, log, started)
    os.close(lock_fd)
    return code if code >= 0 else 128 - code


def finish(code, reason, pumps, log, started):
    """After the driver: nothing it started left, the lock info gone, the result kept, EXIT said."""
    for g in GATES:
        g.close()
    left = kill_descendants()  # nothing the run started outlives it, however it detached
    for t in pumps:
        t.join(5)
    if left:
        log.write(("\n[sfcluster] killed %d process(es) the driver left behind\n" % left).encode())
    try:
        os.unlink(INFO)  # still under the lock: the next holder never sees ours
    except OSError:
        pass
    result = {"code": code, "why": reason.get("why", ""), "kind": reason.get("kind", "")}
    try:  # the exit code of a detached run, for `sfcluster fetch` (replaces, never follows, a link there)
        write_private(os.path.join(RUN_DIR, RESULT_NAME), json.dumps(dict(result, started=started, ended=time.time())))
    except OSError:
        pass
    ctl(EXIT, result)
    log.write(("\n[sfcluster] driver exited %d%s\n" % (code, ": stopped by sfcluster: " + reason["why"]
                                                       if reason else "")).encode())
    log.close()


if __name__ == "__main__":
    rc = main()
    # No interpreter teardown: with Ray's GCS client loaded and the watcher possibly inside a call, it
    # can take seconds (C++ destructors wait for in-flight RPCs), and `run` waits for this process.
    # Everything that matters is done: the lock info is gone, the log closed, the EXIT line written.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(rc if isinstance(rc, int) and 0 <= rc < 256 else 1)
