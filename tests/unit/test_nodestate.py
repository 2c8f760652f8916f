"""The node side of the cluster's private state (nodescripts/nodestate.py, ship.py, run_ctl.py),
run here as the nodes run them: the lock and run dirs are private, links and foreign files are
refused, and lock info is verified before anything is signalled or read."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sfcluster.nodescripts import bundle as node_script
from sfcluster.inventory import parse_inventory
from sfcluster.remote.transfer import bundle, ship_argv

RUN_ID = "20261201-000000-abcdef"


def node(script: str, req: dict, home: Path, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", node_script(script), json.dumps(req)], input=stdin,
                          capture_output=True, timeout=60, env=dict(os.environ, SFCLUSTER_NODE_HOME=str(home)))


def answer(p: subprocess.CompletedProcess) -> dict:
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def ship(home: Path, run_id: str = RUN_ID) -> subprocess.CompletedProcess:
    data = bundle([("sfcluster/runtime.py", b"x = 1\n", 0o644), ("train.py", b"print(1)\n", 0o600)], dirs=("files",))
    argv = ship_argv(parse_inventory("cluster: demo\nnodes: {a: {host: 10.0.0.1}, b: {host: 10.0.0.2}}\n").name,
                     f"runs/{run_id}")
    return subprocess.run(argv, input=data, capture_output=True, timeout=60,
                          env=dict(os.environ, SFCLUSTER_NODE_HOME=str(home)))


def shipped(p: subprocess.CompletedProcess) -> tuple:
    kind, _, value = p.stdout.decode().strip().splitlines()[-1].partition(" ")
    return kind, value


def test_ship_makes_a_private_fresh_run_dir_and_never_reuses_one(tmp_path):
    p = ship(tmp_path)
    assert p.returncode == 0, p.stderr
    kind, value = shipped(p)
    assert kind == "DIR"
    rd = Path(value)
    assert rd == tmp_path / ".sfcluster" / "demo" / "runs" / RUN_ID
    for d in (tmp_path / ".sfcluster", tmp_path / ".sfcluster" / "demo", rd.parent, rd, rd / "files"):
        assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700, d
    assert (rd / "train.py").read_bytes() == b"print(1)\n" and stat.S_IMODE(os.stat(rd / "train.py").st_mode) == 0o600
    again = ship(tmp_path)
    assert again.returncode == 3 and shipped(again)[0] == "ERROR" and "exists" in shipped(again)[1]


@pytest.mark.parametrize("plant", ["symlink", "group_writable", "other_owner", "file"])
def test_ship_refuses_a_state_dir_it_does_not_own_alone(tmp_path, plant):
    base = tmp_path / ".sfcluster"
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    if plant == "symlink":
        base.mkdir(mode=0o700)
        (base / "demo").symlink_to(target)
    elif plant == "group_writable":
        base.mkdir(mode=0o700)
        (base / "demo").mkdir()
        os.chmod(base / "demo", 0o770)
    elif plant == "other_owner":
        if os.getuid() != 0:
            pytest.skip("needs root to chown")
        base.mkdir(mode=0o700)
        (base / "demo").mkdir(mode=0o700)
        os.chown(base / "demo", 65534, 65534)
    else:
        base.mkdir(mode=0o700)
        (base / "demo").write_text("x")
    p = ship(tmp_path)
    assert p.returncode == 3 and shipped(p)[0] == "ERROR" and "demo" in shipped(p)[1], p.stdout
    assert list(target.iterdir()) == []  # nothing written through the link


def test_replace_swaps_a_whole_directory_in_and_refuses_other_destinations(tmp_path):
    def push(dest, members, mode="replace"):
        return subprocess.run(ship_argv("demo", dest, mode), input=bundle(members), capture_output=True, timeout=60,
                              env=dict(os.environ, SFCLUSTER_NODE_HOME=str(tmp_path)))
    p = push("tls", [("node.key", b"k1", 0o600), ("old.pem", b"x", 0o644)])
    assert p.returncode == 0 and shipped(p) == ("DIR", str(tmp_path / ".sfcluster" / "demo" / "tls"))
    p = push("tls", [("node.key", b"k2", 0o600)])  # replaced whole: nothing of the old one stays
    tls = tmp_path / ".sfcluster" / "demo" / "tls"
    assert p.returncode == 0 and sorted(os.listdir(tls)) == ["node.key"] and (tls / "node.key").read_bytes() == b"k2"
    assert stat.S_IMODE(os.lstat(tls).st_mode) == 0o700 and stat.S_IMODE(os.lstat(tls / "node.key").st_mode) == 0o600
    for dest in ("../x", "tls/../../x", "runs", "/etc"):
        p = push(dest, [("a", b"a", 0o600)])
        assert p.returncode == 3 and "bad destination" in shipped(p)[1], dest


def test_bad_run_id_is_refused(tmp_path):
    p = ship(tmp_path, run_id="../../etc")
    assert p.returncode == 3 and "bad destination" in shipped(p)[1]


def ctl(home: Path, action: str = "info") -> dict:
    p = node("run_ctl", {"cluster": "demo", "action": action, "wait": 2}, home)
    assert p.returncode == 0, p.stderr
    return answer(p)


def _hold_lock(home: Path) -> subprocess.Popen:
    state = home / ".sfcluster" / "demo"
    holder = subprocess.Popen(["flock", str(state), "sleep", "60"])
    deadline = time.monotonic() + 5
    while subprocess.run(["flock", "-n", str(state), "true"]).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return holder


def test_no_state_no_run(tmp_path):
    assert ctl(tmp_path) == {"active": False}


def test_stale_lock_info_is_removed_not_acted_on(tmp_path):
    assert ship(tmp_path).returncode == 0
    info = tmp_path / ".sfcluster" / "demo" / "lock.json"
    victim = subprocess.Popen(["sleep", "60"])
    try:
        info.write_text(json.dumps({"pid": victim.pid, "run_id": RUN_ID}))
        assert ctl(tmp_path, "cancel") == {"active": False, "removed_stale_info": True}
        assert not info.exists() and victim.poll() is None  # nobody signalled
    finally:
        victim.kill()


@pytest.mark.parametrize("forged", [{"pid": -1}, {"pid": 1}, {"pid": "victim"}, {"log": "/etc/shadow"}])
def test_forged_lock_info_while_the_lock_is_held_signals_and_reads_nothing(tmp_path, forged):
    assert ship(tmp_path).returncode == 0
    victim = subprocess.Popen(["sleep", "60"])
    holder = _hold_lock(tmp_path)
    try:
        info = {"run_id": RUN_ID, "pid": victim.pid, "log": "/etc/shadow", "script": "x.py"}
        info.update({k: (victim.pid if v == "victim" else v) for k, v in forged.items()})
        (tmp_path / ".sfcluster" / "demo" / "lock.json").write_text(json.dumps(info))
        out = ctl(tmp_path, "cancel")
        assert out["active"] is True and out["verified"] is False and "log" not in out and "cancelled" not in out
        time.sleep(0.2)
        assert victim.poll() is None and holder.poll() is None
    finally:
        victim.kill()
        holder.kill()


def test_the_real_wrapper_is_verified_and_cancelled(tmp_path, login_parent):
    rd = Path(shipped(ship(tmp_path))[1])
    fake = rd / "sfc_wrapper.py"  # stands in for the wrapper: holds the lock, exits on SIGTERM
    fake.write_text("import fcntl, os, signal, sys, time\n"
                    f"fd = os.open({str(rd.parent.parent)!r}, os.O_RDONLY)\n"
                    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
                    "print('ready', flush=True)\n"
                    "time.sleep(60)\n")
    w = subprocess.Popen([sys.executable, str(fake)], stdout=subprocess.PIPE, text=True)
    try:
        assert w.stdout.readline().strip() == "ready"
        (tmp_path / ".sfcluster" / "demo" / "lock.json").write_text(
            json.dumps({"run_id": RUN_ID, "pid": w.pid, "driver_pid": 4242, "log": "/etc/shadow"}))
        out = ctl(tmp_path)
        assert out["verified"] is True and out["pid"] == w.pid and out["driver_pid"] == 4242
        assert out["log"] == str(rd / "driver.log")  # computed, not the forged one
        out = ctl(tmp_path, "cancel")
        assert out["cancelled"] is True and w.wait(5) == 0
    finally:
        if w.poll() is None:
            w.send_signal(signal.SIGKILL)
