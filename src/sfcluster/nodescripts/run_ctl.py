# Runs on the head: what `status`, `logs` and `cancel` learn about who holds
# the cluster lock (a run, or an `up`/`down`), verified instead of trusted. argv[1]: {"cluster", "action": "info" | "cancel"}.
#  - a run is active only while somebody holds the flock on the state dir; a lock info left
#    behind by a run that is gone is removed, never acted on;
#  - the pid in the lock info is signalled only when /proc shows it is OUR process running THIS
#    run's wrapper file; the log path is computed from the run id, never read from the info.
# Prints one JSON object.
import fcntl
import json
import os
import signal
import sys
import time

from sfcluster.nodescripts.nodestate import (
    describe_holder, is_wrapper_of, lock_info_path, open_lock, print_answer, read_lock_info, state_dir)

REQ = json.loads(sys.argv[1]) if __name__ == "__main__" else {}


def main():
    state = state_dir(REQ["cluster"], create=False)
    if state is None:
        return {"active": False}
    fd = open_lock(state)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # held: a run, an `up` or a `down` is active
        else:
            stale = read_lock_info(state) is not None
            if stale:
                os.unlink(lock_info_path(state))
            return {"active": False, "removed_stale_info": stale}
    finally:
        os.close(fd)  # never keep the lock ourselves
    out = dict(describe_holder(state, REQ["cluster"]), active=True)
    if not out["verified"] or out["op"] != "run":
        return out
    pid, run_id = out["pid"], out["run_id"]
    if REQ.get("action") == "cancel":
        detached = bool(out.get("detached"))
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + float(REQ.get("wait", 20))
        while time.monotonic() < deadline and is_wrapper_of(pid, state, run_id, detached):
            time.sleep(0.2)
        if is_wrapper_of(pid, state, run_id, detached):
            # a wrapper stops its driver within 15 s of SIGTERM; one that does not is no wrapper
            # of ours (or a hung one): it must not keep the cluster's lock
            os.kill(pid, signal.SIGKILL)
            time.sleep(1)
            out["killed"] = True
        out["cancelled"] = not is_wrapper_of(pid, state, run_id, detached)
    return out


if __name__ == "__main__":
    print_answer(main)
