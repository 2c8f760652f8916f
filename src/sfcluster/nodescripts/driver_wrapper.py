# Runs on the head, once per `sfcluster run`: lock, job-table check and driver start in ONE remote
# process. Control lines go to stderr prefixed "SFC:"; the driver's own output is passed through
# (and kept in <run_dir>/driver.log).
#  - the lock is an flock on <temp_dir>/driver.lock held by this process: it is released however
#    we end, SIGKILL included, so a stale lock cannot outlive its holder;
#  - an SSH command without a terminal gets no SIGHUP when the controller vanishes: we watch our
#    stdin and stop the driver on EOF (unless detached);
#  - a party's node that dies or is cut off ends the run within seconds, naming the node.
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

R = json.loads(sys.argv[1])
LOCK = os.path.join(R["temp_dir"], "driver.lock")
INFO = LOCK + ".json"
LOG = os.path.join(R["run_dir"], "driver.log")


def ctl(kind, payload=""):
    # never raises: once the controller is gone, stderr is a broken pipe and we must still clean up
    try:
        sys.stderr.write("SFC:%s %s\n" % (kind, payload if isinstance(payload, str) else json.dumps(payload)))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def die_with(parent):
    """The driver never outlives its lock: the lock dies with this process (flock), and the driver
    gets SIGKILL from the kernel when this process dies, however it dies (PR_SET_PDEATHSIG)."""
    def arm():
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # died before the signal was armed
            os._exit(1)
    return arm


def take_lock():
    os.makedirs(R["temp_dir"], exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + (R.get("wait_seconds") or 0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if time.monotonic() >= deadline:
                try:
                    with open(INFO) as f:
                        holder = json.load(f)
                except (OSError, ValueError):
                    holder = {"note": "holder is starting"}
                ctl("LOCKED", {k: v for k, v in holder.items() if k != "token"})
                sys.exit(75)
            time.sleep(0.5)


def job_drivers(client):
    """Drivers Ray's job table shows alive (anything connected to the cluster right now)."""
    out = []
    for _, info in client.get_all_job_info(timeout=5).items():
        if not info.is_dead:
            out.append({"ip": info.driver_ip_address, "pid": info.driver_pid,
                        "entrypoint": getattr(info, "entrypoint", "")})
    return out


def live_drivers():
    try:
        from ray._raylet import GcsClient
        c = GcsClient(address=R["ray_address"])
        return c, job_drivers(c)
    except Exception as e:  # noqa: BLE001
        ctl("NORAY", str(e))
        sys.exit(77)


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
    ctl("STOPPING", why)
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
    for chunk in iter(lambda: src.read1(65536), b""):
        try:
            dst.write(chunk)
            dst.flush()
        except (OSError, ValueError):
            pass  # the controller is gone; keep the log
        log.write(chunk)
        log.flush()


def main():
    if R.get("detach"):
        # The child goes on in its own session, output to the log only. Until the driver has
        # started, its control lines reach us through a pipe; then we report and leave.
        r, w = os.pipe()
        if os.fork() > 0:
            os.close(w)
            data = b""
            for chunk in iter(lambda: os.read(r, 65536), b""):
                data += chunk
            sys.stderr.write(data.decode(errors="replace"))
            return 0 if b"SFC:STARTED" in data else (75 if b"SFC:LOCKED" in data else 76)
        os.close(r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(w, 2)
        os.close(w)
    lock_fd = take_lock()
    client, drivers = live_drivers()
    if drivers:
        ctl("FOREIGN", drivers)
        return 76
    info = {"user": R["user"], "controller": R["controller"], "host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "script": R["script_name"], "run_id": R["run_id"],
            "token": R["token"], "log": LOG, "detached": bool(R.get("detach"))}
    tmp = INFO + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, INFO)
    env = dict(os.environ)
    env.update({"SFCLUSTER_CONFIG": os.path.join(R["run_dir"], "sfcluster.json"), "SFCLUSTER_RUN_TOKEN": R["token"],
                "SFCLUSTER_LOCK_INFO": INFO, "PYTHONUNBUFFERED": "1",
                # Ray (2.9.3) auto-starts a LOCAL Ray instance when a Ray API is touched after
                # shutdown (e.g. an ObjectRef freed at exit): a second Ray on the head. Never.
                "RAY_ENABLE_AUTO_CONNECT": "0",
                "PYTHONPATH": os.pathsep.join([R["run_dir"], R["files_dir"]] + [p for p in [env.get("PYTHONPATH")] if p]),
                # Ray injects this job config into the driver's ray.init: party functions then find
                # --files modules at the same path on every node.
                "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"env_vars": {"PYTHONPATH": R["files_dir"]}}})})
    log = open(LOG, "ab")
    if R.get("detach"):
        out = err = log
    else:
        out, err = sys.stdout.buffer, sys.stderr.buffer
    proc = subprocess.Popen([R["python"], os.path.join(R["run_dir"], R["script_name"])] + R["args"], cwd=R["run_dir"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=die_with(os.getpid()))
    ctl("STARTED", {"pid": proc.pid, "log": LOG, "wrapper_pid": os.getpid()})
    if R.get("detach"):
        os.dup2(log.fileno(), 2)  # closes the pipe: the reporting parent ends, the run goes on
    with open(INFO + ".tmp", "w") as f:
        json.dump(dict(info, driver_pid=proc.pid), f)
    os.replace(INFO + ".tmp", INFO)
    pumps = [threading.Thread(target=pump, args=(proc.stdout, out, log), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, err, log), daemon=True)]
    for t in pumps:
        t.start()
    reason = {}

    def stop_for(kind, why):
        """sfcluster ends the run: the first reason wins; the controller maps `kind` to its exit code."""
        reason.setdefault("kind", kind)
        reason.setdefault("why", why)
        stop(proc, reason["why"])

    def watch_stdin():
        # The controller sends a heartbeat line every second; EOF or 10 s of silence means it is gone.
        import select
        last = time.monotonic()
        while proc.poll() is None:
            ready, _, _ = select.select([0], [], [], 1.0)
            if ready:
                try:
                    data = os.read(0, 1024)
                except OSError:
                    data = b""
                if not data:
                    break
                last = time.monotonic()
            elif time.monotonic() - last > 10:
                break
        else:
            return
        stop_for("controller_gone", "the controller's connection closed")

    def watch_cluster():
        """ONE watcher on the head, every 2 s, for the run's whole life:
        - a party's node that dies or is cut off (GCS node table + TCP to its raylet, 3 misses);
        - a driver in Ray's job table that is not ours (a second driver is the failure sfcluster
          exists to prevent): named (IP, pid, entrypoint) and the run stops;
        - starvation: a resource demand pending while nothing of the run changes (Ray's GCS knows
          the demands; with one driver on the cluster, every demand is this run's)."""
        misses = {}
        ours = {(R["head_host"], proc.pid)}
        starve_limit = float(R.get("starve_seconds") or 0)
        stalled_since, last_fp = None, None
        while proc.poll() is None:
            alive = node_alive_by_gcs(client)
            for party, (host, port) in R["watch"].items():
                gone = (alive is not None and host not in alive) or not tcp_ok(host, port)
                misses[party] = misses.get(party, 0) + 1 if gone else 0
                if misses[party] >= 3:
                    ctl("NODE_DOWN", {"party": party, "host": host})
                    stop_for("node_lost", "party %s (%s) is down or cut off" % (party, host))
                    return
            try:
                others = [d for d in job_drivers(client) if (d["ip"], d["pid"]) not in ours]
            except Exception:  # noqa: BLE001 - the GCS being away is the node watch's business
                others = []
            if others:
                d = others[0]
                ctl("FOREIGN", others)
                stop_for("foreign_driver", "another driver connected to the cluster mid-run: %s pid %s (%s)"
                         % (d["ip"], d["pid"], (d["entrypoint"] or "?")[:200]))
                return
            snap = resource_snapshot(client) if starve_limit > 0 else None
            if snap is not None:
                pending, fp = snap
                now = time.monotonic()
                if not pending or fp != last_fp:
                    stalled_since = now if pending else None
                elif stalled_since is not None and now - stalled_since >= starve_limit:
                    msg = starvation_message(pending, now - stalled_since)
                    ctl("STARVED", {"message": msg})
                    stop_for("starved", msg)
                    return
                last_fp = fp
            time.sleep(2)

    signal.signal(signal.SIGTERM, lambda *a: stop_for("cancelled", "cancelled (sfcluster cancel)"))
    if not R.get("detach"):
        threading.Thread(target=watch_stdin, daemon=True).start()
    threading.Thread(target=watch_cluster, daemon=True).start()
    code = proc.wait()
    for t in pumps:
        t.join(5)
    try:
        os.unlink(INFO)
    except OSError:
        pass
    ctl("EXIT", {"code": code, "why": reason.get("why", ""), "kind": reason.get("kind", "")})
    log.write(("\n[sfcluster] driver exited %d%s\n" % (code, ": stopped by sfcluster: " + reason["why"]
                                                       if reason else "")).encode())
    log.close()
    os.close(lock_fd)
    return code if code >= 0 else 128 - code


sys.exit(main())
