# Runs on the head (after nodestate.py): what `status`, `logs` and `cancel` learn about the
# active run, verified instead of trusted. argv[1]: {"cluster", "action": "info" | "cancel"}.
#  - a run is active only while somebody holds the flock on the state dir; a lock info left
#    behind by a run that is gone is removed, never acted on;
#  - the pid in the lock info is signalled only when /proc shows it is OUR process running THIS
#    run's wrapper file; the log path is computed from the run id, never read from the info.
# Prints one JSON object.
import fcntl
import signal
import sys
import time

REQ = json.loads(sys.argv[1])


def main():
    state = state_dir(REQ["cluster"], create=False)
    if state is None:
        return {"active": False}
    fd = open_lock(state)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # held: a run is active
        else:
            stale = read_lock_info(state) is not None
            if stale:
                os.unlink(lock_info_path(state))
            return {"active": False, "removed_stale_info": stale}
    finally:
        os.close(fd)  # never keep the lock ourselves
    info = read_lock_info(state) or {}
    out = {"active": True, "verified": False}
    for k in ("user", "controller", "host", "since", "script", "run_id", "detached"):
        if isinstance(info.get(k), (str, bool)):
            out[k] = info[k]
    pid, driver_pid, run_id = info.get("pid"), info.get("driver_pid"), info.get("run_id")
    try:
        verified = is_wrapper_of(pid, state, run_id)
    except UnsafeState:
        verified = False
    if not verified:
        out["why"] = "the lock is held, but its info does not name this run's wrapper (starting, or tampered with)"
        return out
    out.update(verified=True, pid=pid, log=os.path.join(run_dir(state, run_id), "driver.log"))
    if isinstance(driver_pid, int) and not isinstance(driver_pid, bool) and driver_pid > 1:
        out["driver_pid"] = driver_pid
    if REQ.get("action") == "cancel":
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + float(REQ.get("wait", 20))
        while time.monotonic() < deadline and is_wrapper_of(pid, state, run_id):
            time.sleep(0.2)
        out["cancelled"] = not is_wrapper_of(pid, state, run_id)
    return out


try:
    print(json.dumps(main()))
except (UnsafeState, OSError) as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(3)
