"""The cluster lock's node side (nodescripts/oplock.py, run_ctl.py), run here as the head runs
them: one holder at a time, the second names the first (verified), --wait is bounded, the holder
lets go when the controller does, and forged lock info is never believed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sfcluster.clusterlock import held_error
from sfcluster.nodescripts.answers import LockHolder
from sfcluster.inventory import parse_inventory
from sfcluster.nodescripts import bundle
from sfcluster.nodescripts import contract as C
from tests.unit.test_nodestate import ctl

CLUSTER = parse_inventory("cluster: demo\nnodes: {a: {host: 10.0.0.1}, b: {host: 10.0.0.2}}\n")


def oplock(home: Path, op: str = "up", wait: float = 0) -> subprocess.Popen:
    req = {"cluster": "demo", "op": op, "user": "ops", "controller": "ctl1", "wait": wait}
    return subprocess.Popen([sys.executable, "-c", bundle("oplock"), json.dumps(req)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, SFCLUSTER_NODE_HOME=str(home)))


def first_line(p: subprocess.Popen) -> tuple:
    kind, _, payload = p.stdout.readline().strip().partition(" ")
    return kind, (json.loads(payload) if payload else None)


def test_one_holder_at_a_time_and_the_second_names_the_first(tmp_path, login_parent):
    a = oplock(tmp_path, "up")
    try:
        assert first_line(a) == ("LOCKED", None)
        b = oplock(tmp_path, "down")
        kind, holder = first_line(b)
        assert kind == "HELD" and b.wait(10) == C.HELD_EXIT
        assert holder["op"] == "up" and holder["verified"] is True and holder["pid"] == a.pid
        assert holder["user"] == "ops" and holder["controller"] == "ctl1"
        info = ctl(tmp_path)  # what status shows
        assert info["active"] is True and info["op"] == "up" and info["verified"] is True
        assert "cancelled" not in ctl(tmp_path, "cancel") and a.poll() is None  # an up is never signalled
    finally:
        a.stdin.close()
    assert a.wait(10) == 0
    assert not (tmp_path / ".sfcluster" / "demo" / "lock.json").exists()  # the holder cleans up after itself
    assert ctl(tmp_path) == {"active": False, "removed_stale_info": False}


def test_wait_is_bounded_and_takes_the_lock_once_free(tmp_path):
    a = oplock(tmp_path, "up")
    assert first_line(a)[0] == "LOCKED"
    t0 = time.monotonic()
    b = oplock(tmp_path, "down", wait=1.5)
    assert first_line(b)[0] == "WAITING"
    assert first_line(b)[0] == "HELD" and b.wait(10) == C.HELD_EXIT and time.monotonic() - t0 < 8
    c = oplock(tmp_path, "down", wait=20)
    assert first_line(c)[0] == "WAITING"
    a.stdin.close()  # the first controller lets go
    assert first_line(c)[0] == "LOCKED"
    c.stdin.close()
    assert a.wait(10) == 0 and c.wait(10) == 0


def test_a_controller_that_vanishes_releases_the_lock(tmp_path):
    a = oplock(tmp_path, "up")  # its stdin stays open but silent: no heartbeat
    assert first_line(a)[0] == "LOCKED"
    assert a.wait(20) == 0  # 10 s without a heartbeat
    b = oplock(tmp_path, "up")
    assert first_line(b)[0] == "LOCKED"
    b.stdin.close()
    b.wait(10)


def test_forged_op_holder_is_not_verified(tmp_path):
    victim = subprocess.Popen(["sleep", "60"])
    a = oplock(tmp_path, "up")
    try:
        assert first_line(a)[0] == "LOCKED"
        (tmp_path / ".sfcluster" / "demo" / "lock.json").write_text(json.dumps({"op": "down", "pid": victim.pid}))
        b = oplock(tmp_path, "up")
        kind, holder = first_line(b)
        assert kind == "HELD" and holder["verified"] is False and "pid" not in holder
        assert "unverified" in LockHolder.parse(holder).text()
    finally:
        victim.kill()
        a.stdin.close()
        a.wait(10)


def test_a_bad_op_is_refused(tmp_path):
    p = oplock(tmp_path, "rm")
    assert first_line(p)[0] == "ERROR" and p.wait(10) == 3


def test_held_error_names_the_holder_and_the_way_out():
    run = {"op": "run", "verified": True, "run_id": "20261201-000000-abcdef", "script": "train.py",
           "user": "ann", "controller": "lap", "since": "2026-12-01 10:00:00 UTC"}
    e = held_error(CLUSTER, LockHolder.parse(run), "down")
    assert e.exit_code == 75 and "run 20261201-000000-abcdef (train.py)" in e.message and "ann@lap" in e.message
    assert "--cancel-run" in e.hint and e.details() == {"holder": run}
    e = held_error(CLUSTER, LockHolder.parse({"op": "up", "verified": True, "user": "bo", "controller": "c2",
                                            "since": "x"}), "run")
    assert "`sfcluster up` from bo@c2" in e.message and "--wait" in e.hint and "--cancel-run" not in e.hint


def test_a_detached_imitation_of_an_oplock_is_not_verified(tmp_path, login_parent):
    """A driver's setsid grandchild ran oplock.py's very command line and took the lock: it was
    shown as a verified `up` and the next `up` could only wait. Its ancestry gives it away: no
    root sshd/sudo above it, it was re-parented when it detached."""
    req = {"cluster": "demo", "op": "up", "user": "ops", "controller": "ctl1", "wait": 0}
    detach = ("import os, sys\n"
              "if os.fork(): os._exit(0)\n"
              "os.setsid()\n"
              "if os.fork(): os._exit(0)\n"
              "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1], sys.argv[2]])\n")
    fake = subprocess.Popen([sys.executable, "-c", detach, bundle("oplock"), json.dumps(req)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, SFCLUSTER_NODE_HOME=str(tmp_path)))
    try:
        assert fake.wait(10) == 0  # the launcher is gone; its grandchild holds the lock
        assert first_line(fake) == ("LOCKED", None)
        b = oplock(tmp_path, "up")
        kind, holder = first_line(b)
        assert kind == "HELD" and b.wait(10) == C.HELD_EXIT
        assert holder["verified"] is False and "pid" not in holder
        assert ctl(tmp_path)["verified"] is False
    finally:
        fake.stdin.close()  # EOF: the imitation lets go
