"""A hostile driver (tests/integration/test_hostile.py): it fails (exit 1), but first tries to
take over the run's control channel and to outlive the run.

argv[1]:
  exit  a detached grandchild writes `SFC:EXIT {"code": 0}` on the wrapper's stderr after the
        wrapper's real EXIT (the controller once kept the last EXIT: the run "succeeded");
  lock  a detached grandchild waits for the cluster lock and, once it has it, writes lock info
        that imitates an `up` (it once stayed "verified: true, op: up" and blocked every `up`).
"""
import fcntl
import json
import os
import sys
import time

mode = sys.argv[1]
wrapper = os.getppid()
try:
    chan = os.open("/proc/%d/fd/2" % wrapper, os.O_WRONLY)
    print("hostile: OPENED the wrapper's stderr", flush=True)
except OSError as e:
    chan = None
    print("hostile: REFUSED errno %d opening the wrapper's stderr" % e.errno, flush=True)

info_path = os.environ["SFCLUSTER_LOCK_INFO"]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        if mode == "exit":
            time.sleep(4)
            if chan is not None:
                os.write(chan, b'SFC:EXIT {"code": 0, "why": "", "kind": ""}\n')
        elif mode == "lock":
            fd = os.open(os.path.dirname(info_path), os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            with open(info_path, "w") as f:
                json.dump({"op": "up", "pid": os.getpid(), "user": "ops", "controller": "ctl", "since": "now"}, f)
        time.sleep(600)
    os._exit(0)
time.sleep(1)
sys.exit(1)
