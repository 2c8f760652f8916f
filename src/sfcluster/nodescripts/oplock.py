# sfcluster-oplock: holds the cluster lock for one up/down
# (The line above is how nodestate.is_oplock_of recognises this process: keep it.)
# Runs on the head, as the SSH user, for the whole of one `up` or `down`:
# takes the cluster lock (the flock on ~/.sfcluster/<cluster>, the same lock a run's wrapper
# holds for the run's whole life), writes the lock info, says LOCKED, and holds the lock until
# the controller lets go: EOF on stdin, or 10 s without its heartbeat (a controller that died or
# lost the network). The flock dies with this process however it ends.
# argv[1]: {"cluster", "op": "up" | "down", "user", "controller", "wait": seconds}.
# stdout (contract.py): OP_WAITING <holder json> (once, while waiting), then OP_LOCKED, or OP_HELD
# <holder json> and HELD_EXIT.
import fcntl
import json
import os
import socket
import sys
import time

from sfcluster.nodescripts.contract import BAD_EXIT, HELD_EXIT, OP_ERROR, OP_HELD, OP_LOCKED, OP_WAITING
from sfcluster.nodescripts.nodestate import (
    UnsafeState, controller_gone, describe_holder, lock_info_path, open_lock, state_dir, write_private)

REQ = json.loads(sys.argv[1]) if __name__ == "__main__" else {}


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def take(state):
    fd = open_lock(state)
    deadline = time.monotonic() + float(REQ.get("wait") or 0)
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            holder = describe_holder(state, REQ["cluster"])
            if time.monotonic() >= deadline:
                say(OP_HELD + " " + json.dumps(holder))
                sys.exit(HELD_EXIT)
            if not waiting:
                say(OP_WAITING + " " + json.dumps(holder))
                waiting = True
            time.sleep(0.5)


def main():
    if REQ.get("op") not in ("up", "down"):
        raise UnsafeState("bad op %r" % (REQ.get("op"),))
    state = state_dir(REQ["cluster"])
    fd = take(state)
    info = {"op": REQ["op"], "user": str(REQ.get("user", "?")), "controller": str(REQ.get("controller", "?")),
            "host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    write_private(lock_info_path(state), json.dumps(info))
    say(OP_LOCKED)
    try:
        controller_gone()  # holds the lock until then
    finally:
        try:
            os.unlink(lock_info_path(state))  # still under the lock: the next holder never sees ours
        except OSError:
            pass
        os.close(fd)


if __name__ == "__main__":
    try:
        main()
    except (UnsafeState, OSError) as e:
        say(OP_ERROR + " " + json.dumps(str(e)))
        sys.exit(BAD_EXIT)
