"""`sfcluster run` on the harness: one driver, on the head, real SecretFlow training."""
from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.harness.harness import RAY_USER, state_dir, tls_dir
from tests.integration.cli import ENV, ROOT, SCRIPTS, SFC, STATE_DIR, sfc, start, wait_for

STATE = state_dir("harness")  # the cluster's private state on the head (the Ray user's)


def remote_left(h, node):
    """Drivers, SPU/PYU actors of a run still alive on a node."""
    # [x] in the patterns: grep must not match its own command line
    return h.docker_exec(node, "ps -eo pid,args | grep -E '[r]ay::SPURuntime|[r]ay::PYU|[.]sfcluster/harness/runs/' || true").stdout.strip()


def as_node(node):
    """A command prefix that gives a hand-started process the node's own certificate (tls: on, the
    default): what a local user who can read the Ray user's files (the Ray user itself, root) has.
    TLS keeps everyone else out (test_tls.py); these are the drivers the job-table watch is for."""
    d = tls_dir("harness")
    return f"env RAY_USE_TLS=1 RAY_TLS_SERVER_CERT={d}/node.pem RAY_TLS_SERVER_KEY={d}/node.key RAY_TLS_CA_CERT={d}/ca.pem "


def assert_nothing_left(h, within=20.0):
    """No driver, SPU or PYU actor of a run on any party's node, and the lock free, within `within` s."""
    deadline = time.monotonic() + within
    left = {}
    while time.monotonic() < deadline:
        left = {n: remote_left(h, n) for n in ("alice", "bob", "carol")}
        if not any(left.values()) and lock_free(h):
            break
        time.sleep(0.5)
    assert not any(left.values()), f"left after Ctrl-C: {left}"
    assert lock_free(h)


def lock_free(h):
    """Nobody holds the flock (a holder's info file may outlive a SIGKILLed holder: harmless)."""
    return h.docker_exec("alice", f"flock -n {STATE} true", check=False).returncode == 0


@pytest.fixture(scope="module")
def cluster(harness, tmp_path_factory):
    # cpus 4: SecureBoost's HEU and SS-XGB's tree worker actors hold CPUs on every party beside the
    # SPU's (the template's SFCLUSTER_NEEDS says how many)
    inv = harness.write_inventory(tmp_path_factory.mktemp("run") / "inv.yaml", firewall="open", data=True, cpus=4)
    harness.push_data(inv)
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    yield inv
    sfc("down", "-i", str(inv), "--force")


def test_train_lr_end_to_end_with_actors_on_their_own_nodes(harness, cluster):
    seen = {n: False for n in ("alice", "bob", "carol")}
    done = threading.Event()

    def watch():
        while not done.is_set():
            for n in seen:
                if harness.docker_exec(n, "ps -eo args | grep -c '^[r]ay::SPURuntime'", check=False).stdout.strip() not in ("", "0"):
                    seen[n] = True
            time.sleep(0.5)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    p = sfc("run", "-i", str(cluster), str(ROOT / "templates" / "train_lr.py"))
    done.set()
    t.join()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    line = next(l for l in p.stdout.splitlines() if l.startswith("RESULT"))
    auc = float(line.split("auc=")[1].split()[0])
    assert auc >= 0.9, line
    # the parties' own CSVs, aligned by PSI (each lacks some ids, each in its own order)
    psi = next(l for l in p.stdout.splitlines() if l.startswith("PSI:"))
    assert psi.startswith("PSI: alice 547 rows, bob 550 rows, carol 547 rows -> ") and "SYNTHETIC" not in p.stdout, psi
    common = int(psi.split("-> ")[1].split()[0])
    assert 480 < common < 547, psi
    # the metrics came home: the run's history on the controller holds them
    where = next(l for l in p.stderr.splitlines() if "outputs of run" in l)
    out_dir = Path(where.split(": ", 2)[2].split(" (")[0])
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["rows_in_common"] == common and abs(metrics["auc"] - auc) < 1e-3, metrics
    assert not (out_dir / "model.json").exists()   # weights stay secret-shared unless --reveal-model
    for n in seen:   # PSI's aligned copies are gone from every party's node
        assert harness.docker_exec(n, "ls -d /tmp/sfc-psi-* 2>/dev/null | wc -l").stdout.strip() == "0", n
    assert seen == {"alice": True, "bob": True, "carol": True}, f"SPU actor processes seen per node: {seen}"
    time.sleep(2)
    for n in seen:
        assert remote_left(harness, n) == ""
    assert lock_free(harness)


def test_template_names_the_party_and_data_it_cannot_find(harness, cluster):
    p = sfc("run", "-i", str(cluster), str(ROOT / "templates" / "train_lr.py"), "--", "--data", "iris")
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "no data named 'iris' at alice, bob, carol" in p.stdout + p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    assert "SPURuntime" not in remote_left(harness, "alice")


def test_two_runs_at_once_one_fails_fast_naming_the_holder(harness, cluster):
    first = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "15")
    try:
        wait_for(first, "tick 0")
        t0 = time.monotonic()
        second = sfc("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "1")
        took = time.monotonic() - t0
        assert second.returncode == 75  # EX_TEMPFAIL
        assert took < 5, f"second run took {took:.1f} s to fail"
        assert "is locked by run" in second.stderr and "(sleeper.py)" in second.stderr, second.stderr
        waiter = start("run", "-i", str(cluster), "--wait", str(SCRIPTS / "sleeper.py"), "--", "1")
        time.sleep(3)
        assert waiter.poll() is None  # --wait: queued behind the holder, not failed
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)
    out = waiter.communicate(timeout=120)[0]
    assert waiter.returncode == 0 and "done" in out, out[-2000:]
    assert lock_free(harness)


def test_guard_stops_a_driver_started_by_hand_on_bob(harness, cluster):
    cfg = sfc("config", "-i", str(cluster), "--json").stdout
    harness.docker_exec("bob", "mkdir -p /tmp/byhand/sfcluster && touch /tmp/byhand/sfcluster/__init__.py")
    subprocess.run(["docker", "cp", str(ROOT / "src/sfcluster/runtime.py"), "sfcluster-test-bob:/tmp/byhand/sfcluster/runtime.py"], check=True)
    subprocess.run(["docker", "cp", str(ROOT / "templates/train_lr.py"), "sfcluster-test-bob:/tmp/byhand/train_lr.py"], check=True)
    harness.docker_exec("bob", f"cat > /tmp/byhand/cfg.json <<'EOF'\n{cfg}\nEOF")
    p = harness.docker_exec("bob", "cd /tmp/byhand && SFCLUSTER_CONFIG=/tmp/byhand/cfg.json /opt/sf/bin/python train_lr.py",
                            check=False)
    assert p.returncode != 0
    assert "refusing to start" in p.stderr + p.stdout and "sfcluster run" in p.stderr + p.stdout
    assert harness.docker_exec("bob", "ps -eo args | grep -c '^[r]ay::SPURuntime'", check=False).stdout.strip() == "0"
    # on the head itself, with a made-up token but no lock held, the guard refuses too
    harness.docker_exec("alice", "mkdir -p /tmp/byhand/sfcluster && touch /tmp/byhand/sfcluster/__init__.py")
    subprocess.run(["docker", "cp", str(ROOT / "src/sfcluster/runtime.py"), "sfcluster-test-alice:/tmp/byhand/sfcluster/runtime.py"], check=True)
    harness.docker_exec("alice", f"cat > /tmp/byhand/cfg.json <<'EOF'\n{cfg}\nEOF")
    p = harness.docker_exec("alice", "cd /tmp/byhand && SFCLUSTER_CONFIG=/tmp/byhand/cfg.json SFCLUSTER_RUN_TOKEN=x "
                                     f"SFCLUSTER_LOCK_INFO={STATE}/lock.json "
                                     "/opt/sf/bin/python -c 'from sfcluster import runtime; runtime.guard(); print(\"PASSED GUARD\")'",
                            check=False)
    assert p.returncode != 0 and "PASSED GUARD" not in p.stdout
    assert "driver lock is not held" in p.stderr, p.stderr


def test_foreign_driver_makes_run_refuse(harness, cluster):
    harness.docker_exec("bob", "setsid -f " + as_node("bob") + "/opt/sf/bin/python -c 'import ray,time; "
                               "ray.init(address=\"172.30.77.11:6379\"); time.sleep(60)' >/tmp/foreign.log 2>&1", user=RAY_USER)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = json.loads(sfc("status", "-i", str(cluster), "--json").stdout)
            if st["drivers"]:
                break
            time.sleep(1)
        assert st["drivers"] and not st["drivers"][0]["sanctioned"] and st["drivers"][0]["driver_ip"] == "172.30.77.12"
        p = sfc("status", "-i", str(cluster), "--json")  # not healthy for a run: degraded, naming it
        st = json.loads(p.stdout)
        assert p.returncode == 71 and st["health"] == "degraded", p.stdout
        assert any("172.30.77.12" in x["message"] and "did not start" in x["message"] for x in st["problems"])
        p = sfc("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "1")
        assert p.returncode == 76
        assert "another driver is connected" in p.stderr and "172.30.77.12" in p.stderr
    finally:
        harness.docker_exec("bob", "pkill -f 'ray[.]init' || true", check=False)
    deadline = time.monotonic() + 30
    while json.loads(sfc("status", "-i", str(cluster), "--json").stdout)["drivers"] and time.monotonic() < deadline:
        time.sleep(1)


def test_foreign_driver_mid_run_stops_the_run_naming_it(harness, cluster):
    proc = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "120")
    try:
        wait_for(proc, "tick 1")
        t0 = time.monotonic()
        harness.docker_exec("bob", "setsid -f " + as_node("bob") + "/opt/sf/bin/python -c 'import ray,time; "
                                   "ray.init(address=\"172.30.77.11:6379\"); print(\"FOREIGN UP\", flush=True); time.sleep(60)' "
                                   ">/tmp/foreign.log 2>&1", user=RAY_USER)
        out = proc.communicate(timeout=60)[0]
        took = time.monotonic() - t0
        up = harness.docker_exec("bob", "cat /tmp/foreign.log").stdout
        assert "FOREIGN UP" in up, up  # it really connected
        assert proc.returncode == 76, out[-2000:]
        last = out.strip().splitlines()[-1]
        assert "another driver connected" in last and "172.30.77.12" in last and "pid" in last, out[-2000:]
        assert took < 20, f"the second driver was stopped only after {took:.1f} s"
        assert "done" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
        harness.docker_exec("bob", "pkill -f 'ray[.]init' || true", check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (lock_free(harness) and remote_left(harness, "alice") == ""):
        time.sleep(0.5)
    assert lock_free(harness) and remote_left(harness, "alice") == ""
    while json.loads(sfc("status", "-i", str(cluster), "--json").stdout)["drivers"] and time.monotonic() < deadline + 30:
        time.sleep(1)


def test_files_module_importable_in_party_function(harness, cluster):
    p = sfc("run", "-i", str(cluster), "--files", str(SCRIPTS / "sfc_helper_mod.py"), str(SCRIPTS / "uses_helper.py"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "HELPER bob:42" in p.stdout


def test_ctrl_c_during_fit_stops_driver_and_spu_actors_and_frees_lock(harness, cluster):
    proc = start("run", "-i", str(cluster), str(ROOT / "templates" / "train_lr.py"), "--", "--synthetic")
    wait_for(proc, "training SS-LR on SPU", timeout=120)
    deadline = time.monotonic() + 30  # fit is under way once SPU actors run on the parties
    while "SPURuntime" not in remote_left(harness, "bob") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "SPURuntime" in remote_left(harness, "bob"), "fit never started"
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "RESULT" not in rest
    last = rest.strip().splitlines()[-1]  # below the driver's KeyboardInterrupt traceback: why
    assert "run stopped by sfcluster" in last and "sfcluster exits 130" in last, rest[-2000:]
    assert_nothing_left(harness)
    assert sfc("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "1").returncode == 0


def test_controller_killed_remote_driver_stops(harness, cluster):
    proc = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "120")
    wait_for(proc, "tick 1")
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (lock_free(harness) and remote_left(harness, "alice") == ""):
        time.sleep(0.5)
    assert lock_free(harness) and remote_left(harness, "alice") == ""
    assert sfc("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "1").returncode == 0


def test_remote_wrapper_killed_driver_dies_with_its_lock(harness, cluster):
    proc = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "120")
    wait_for(proc, "tick 1")
    info = json.loads(harness.docker_exec("alice", f"cat {STATE}/lock.json").stdout)
    driver = info["driver_pid"]
    assert info["pid"] != driver
    harness.docker_exec("alice", f"kill -KILL {info['pid']}")  # the wrapper holding the lock
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0
    deadline = time.monotonic() + 10
    while harness.docker_exec("alice", f"kill -0 {driver}", check=False).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert harness.docker_exec("alice", f"kill -0 {driver}", check=False).returncode != 0, "driver outlived its lock"
    assert lock_free(harness), out
    p = sfc("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "1")
    assert p.returncode == 0, p.stdout + p.stderr  # the stale info file is no obstacle


def test_detach_logs_and_cancel(harness, cluster):
    p = sfc("run", "-i", str(cluster), "--detach", str(SCRIPTS / "sleeper.py"), "--", "120")
    assert p.returncode == 0, p.stderr
    follow = start("logs", "-f", "-i", str(cluster))  # re-attaches: output goes on arriving live
    try:
        wait_for(follow, "tick 3", timeout=60)
        assert not lock_free(harness)  # the detached driver keeps the lock
        c = sfc("cancel", "-i", str(cluster))
        assert c.returncode == 0, c.stderr
        follow.communicate(timeout=30)  # `logs -f` ends with the run
    finally:
        if follow.poll() is None:
            follow.kill()
    time.sleep(1)
    assert lock_free(harness) and remote_left(harness, "alice") == ""


def test_node_cut_off_mid_run_ends_naming_it(harness, cluster):
    proc = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "300")
    wait_for(proc, "tick 1")
    rule = "INPUT -s 172.30.77.11 -j DROP"
    harness.docker_exec("carol", f"iptables -I {rule}")
    try:
        t0 = time.monotonic()
        out = proc.communicate(timeout=90)[0]
        took = time.monotonic() - t0
        assert proc.returncode == 74
        last = out.strip().splitlines()[-1]
        assert "run stopped by sfcluster" in last and "carol" in last and "down or cut off" in last, out[-2000:]
        assert took < 45
    finally:
        harness.docker_exec("carol", f"iptables -D {rule}")


def test_lock_and_run_state_are_private_and_the_token_is_on_no_command_line(harness, cluster):
    proc = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "60")
    try:
        wait_for(proc, "tick 1")
        assert harness.docker_exec("alice", f"stat -c '%a %U' {STATE} {STATE}/runs").stdout.split() == \
            ["700", RAY_USER, "700", RAY_USER]
        info = json.loads(harness.docker_exec("alice", f"cat {STATE}/lock.json").stdout)
        assert harness.docker_exec("alice", f"stat -c '%a' {STATE}/lock.json").stdout.strip() == "600"
        # another local user can neither lock, nor read, nor delete anything of it
        for cmd in (f"flock -n {STATE} true", f"cat {STATE}/lock.json", f"rm -rf {STATE}/runs", f"ls {STATE}"):
            p = harness.docker_exec("alice", cmd, user="sfstrict", check=False)
            assert p.returncode != 0 and "denied" in p.stderr, (cmd, p.stderr)
        # Ray's world-writable temp dir holds nothing of ours
        assert harness.docker_exec("alice", "ls -a /tmp/sfc-harness | grep -c -E 'lock|runs' || true").stdout.strip() == "0"
        ps = harness.docker_exec("alice", "ps -eo args", user="sfstrict").stdout
        assert info["token"] not in ps and '"token"' not in ps and "sfc_wrapper.py" in ps
        assert proc.poll() is None  # the run went on through all of that
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert lock_free(harness)
    assert harness.docker_exec("alice", f"test -e {STATE}/lock.json", check=False).returncode != 0


def test_a_lying_script_cannot_speak_for_the_controller(harness, cluster, tmp_path):
    liar = tmp_path / "liar.py"
    liar.write_text("import os, sys, time\n"
                    "sys.stderr.write('SFC:NODE_DOWN x\\nSFC:EXIT {\"code\": 0}\\nSFC:STARVED {{{\\n')\n"
                    "sys.stderr.flush()\n"
                    "print('lied', flush=True)\n"
                    "if sys.argv[1:] == ['kill-wrapper']:\n"
                    "    os.kill(os.getppid(), 9)\n"
                    "    time.sleep(30)\n"
                    "sys.exit(3)\n")
    p = sfc("run", "-i", str(cluster), str(liar))
    assert p.returncode == 3, p.stdout + p.stderr  # its own exit code, not the forged 0
    assert "[driver] SFC:EXIT" in p.stderr and "[driver] SFC:NODE_DOWN x" in p.stderr and "Traceback" not in p.stderr
    p = sfc("run", "-i", str(cluster), str(liar), "--", "kill-wrapper")
    assert p.returncode == 69, p.stdout + p.stderr  # the wrapper died without a word: never "success"
    assert "without a word from the head" in p.stderr.strip().splitlines()[-1]
    deadline = time.monotonic() + 20
    while not lock_free(harness) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert lock_free(harness) and remote_left(harness, "alice") == ""


def test_cancel_signals_only_a_verified_wrapper(harness, cluster):
    p = sfc("run", "-i", str(cluster), "--detach", str(SCRIPTS / "sleeper.py"), "--", "120")
    assert p.returncode == 0, p.stderr
    victim = harness.docker_exec("alice", "setsid -f sleep 300; sleep 0.2; pgrep -n -x sleep").stdout.strip()
    real = harness.docker_exec("alice", f"cat {STATE}/lock.json").stdout
    try:
        forged = dict(json.loads(real), pid=int(victim), log="/etc/shadow")
        # as the Ray user (a hostile driver has its uid): sfcluster reads only a lock info of that user
        harness.docker_exec("alice", f"cat > {STATE}/lock.json.f <<'EOF'\n{json.dumps(forged)}\nEOF\n"
                                     f"mv {STATE}/lock.json.f {STATE}/lock.json", user=RAY_USER)
        c = sfc("cancel", "-i", str(cluster))
        assert c.returncode == 1 and "nothing was signalled" in c.stderr, c.stderr
        lg = sfc("logs", "-i", str(cluster))
        assert lg.returncode == 1 and "root:" not in lg.stdout
        assert harness.docker_exec("alice", f"kill -0 {victim}", check=False).returncode == 0
        assert not lock_free(harness)  # the real run goes on
        harness.docker_exec("alice", f"cat > {STATE}/lock.json.f <<'EOF'\n{real}\nEOF\n"
                                     f"mv {STATE}/lock.json.f {STATE}/lock.json", user=RAY_USER)
        c = sfc("cancel", "-i", str(cluster))
        assert c.returncode == 0, c.stderr
    finally:
        harness.docker_exec("alice", f"kill {victim}", check=False)
    deadline = time.monotonic() + 20
    while not lock_free(harness) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert lock_free(harness)


def test_status_sanctions_exactly_the_runs_own_driver(harness, cluster):
    proc = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "30")
    try:
        wait_for(proc, "tick 1")
        p = sfc("status", "-i", str(cluster), "--json")
        st = json.loads(p.stdout)
        assert p.returncode == 0 and [d["sanctioned"] for d in st["drivers"]] == [True], p.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    # a driver on the head whose command line looks like ours is still not ours
    harness.docker_exec("alice", "setsid -f " + as_node("alice") + "/opt/sf/bin/python -c 'import ray,sys,time; "
                                 "ray.init(address=\"172.30.77.11:6379\"); time.sleep(60)' /tmp/sfc-harness/runs/x/train.py "
                                 ">/tmp/lookalike.log 2>&1")
    try:
        deadline = time.monotonic() + 30
        st = {}
        while time.monotonic() < deadline:
            p = sfc("status", "-i", str(cluster), "--json")
            st = json.loads(p.stdout)
            if st["drivers"]:
                break
            time.sleep(1)
        assert p.returncode == 71 and [d["sanctioned"] for d in st["drivers"]] == [False], p.stdout
    finally:
        harness.docker_exec("alice", "pkill -f 'ray[.]init' || true", check=False)
    deadline = time.monotonic() + 30
    while json.loads(sfc("status", "-i", str(cluster), "--json").stdout)["drivers"] and time.monotonic() < deadline:
        time.sleep(1)


# Keep this test last in the module: it takes the cluster down (and brings it back up).
def test_down_never_tears_the_cluster_away_under_a_run(harness, cluster):
    """`down` (and `up`) during a run fail at once naming it (75); `status` shows who holds the
    lock; `down --cancel-run` cancels the run, then tears down."""
    run = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "120")
    try:
        wait_for(run, "tick 1")
        for op in ("down", "up"):
            p = sfc(op, "-i", str(cluster), "--json")
            assert p.returncode == 75, p.stdout + p.stderr
            d = json.loads(p.stdout)
            assert d["exit_code"] == 75 and d["holder"]["op"] == "run" and d["holder"]["script"] == "sleeper.py"
            assert "is locked by run" in d["error"] and (op != "down" or "--cancel-run" in d["fix"]), d
        st = json.loads(sfc("status", "-i", str(cluster), "--json").stdout)
        assert st["health"] == "healthy" and st["lock"]["held"] is True and st["lock"]["op"] == "run", st
        assert st["lock"]["verified"] is True and "sleeper.py" in st["lock"]["text"]
        assert run.poll() is None  # the run went on, untouched
        p = sfc("down", "-i", str(cluster), "--cancel-run")
        assert p.returncode == 0 and "cancelled run" in p.stderr, p.stdout + p.stderr
        assert run.wait(60) == 130
    finally:
        if run.poll() is None:
            run.kill()
    for n in ("alice", "bob", "carol"):
        assert harness.docker_exec(n, "pgrep -x 'raylet|gcs_server' || true").stdout.strip() == "", n
    assert remote_left(harness, "alice") == "" and lock_free(harness)
    p = sfc("up", "-i", str(cluster))  # the module's cluster stays up for whatever runs next
    assert p.returncode == 0, p.stdout + p.stderr


def test_outputs_come_home_runs_and_logs_list_them_and_the_head_is_cleaned(harness, cluster, tmp_path):
    """`run` fetches $SFCLUSTER_OUTPUT (never a link in it) into the history and says where; `runs`
    and `logs RUN_ID` read the history; a detached run is fetched later with `fetch RUN_ID DEST`;
    the head keeps the last few run dirs, and Ray's old session dirs go while the live one stays."""
    temp = "/tmp/sfc-harness/r"
    live = harness.docker_exec("alice", f"readlink -f {temp}/session_latest").stdout.strip()
    old_sessions = [f"{temp}/session_2020-01-01_00-00-0{i}_000000_1" for i in range(4)]
    harness.docker_exec("alice", "mkdir -p " + " ".join(f"{s}/logs" for s in old_sessions), user=RAY_USER)
    # leftovers of earlier runs, fetched long ago (the cleanup keeps the newest 5 run dirs)
    old_runs = [f"{STATE}/runs/20200101-00000{i}-000000" for i in range(7)]
    harness.docker_exec("alice", " && ".join(f"mkdir -m 700 -p {r} && touch {r}/driver.log {r}/.fetched" for r in old_runs),
                        user=RAY_USER)
    try:
        _outputs_come_home(harness, cluster, tmp_path, temp, live, old_sessions)
    finally:  # what the cleanup was right to keep of the planted leftovers
        harness.docker_exec("alice", "rm -rf " + " ".join(old_sessions + old_runs))


def _outputs_come_home(harness, cluster, tmp_path, temp, live, old_sessions):
    p = sfc("run", "-i", str(cluster), str(SCRIPTS / "writes_output.py"), "--", "attached")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "wrote outputs attached" in p.stdout
    line = next(ln for ln in p.stderr.splitlines() if "outputs of run" in ln)
    run_id = line.split("outputs of run ")[1].split(":")[0]
    home = Path(STATE_DIR) / "harness" / "runs" / run_id
    assert f"{home}/output (2 file(s)" in line and "skipped output/shadow: a symbolic link" in line, line
    assert json.loads((home / "output" / "metrics.json").read_text())["tag"] == "attached"
    assert (home / "output" / "model" / "weights.bin").stat().st_size == 4096
    assert not (home / "output" / "shadow").exists() and not (home / "output" / "shadow").is_symlink()

    runs = json.loads(sfc("runs", "-i", str(cluster), "--json").stdout)
    first = runs["runs"][0]
    assert first["run_id"] == run_id and first["exit_code"] == 0 and first["script"] == "writes_output.py"
    assert first["args"] == ["attached"] and first["duration"] > 0 and first["inventory_digest"].startswith("sha256:")
    other = subprocess.run([*SFC, "runs", "-i", str(cluster), "--json"], capture_output=True, text=True, timeout=60,
                           env=dict(ENV, SFCLUSTER_STATE_DIR=str(tmp_path / "other-controller")))
    assert json.loads(other.stdout)["runs"] == []  # another controller's history is its own
    logs = sfc("logs", "-i", str(cluster), run_id)
    assert logs.returncode == 0 and "wrote outputs attached" in logs.stdout and "driver exited 0" in logs.stdout

    head_runs = sorted(harness.docker_exec("alice", f"ls {STATE}/runs").stdout.split())
    # this run's dir stays; the three oldest planted leftovers (fetched, with at least 5 newer dirs
    # on any run of this test) are gone; runs of earlier tests that were never fetched (a killed
    # controller, a refused start) may stay: their outputs are only on the head (7 days, or 1 hour
    # for a run that never started)
    assert run_id in head_runs and not [r for r in head_runs if r.startswith("20200101-00000") and r[14] in "012"], head_runs
    fetched = harness.docker_exec("alice", f"cd {STATE}/runs && ls -d */.fetched 2>/dev/null || true").stdout.split()
    older_fetched = [f.split("/")[0] for f in fetched if f.split("/")[0] not in head_runs[-5:]]
    assert not older_fetched, (older_fetched, head_runs)
    sessions = harness.docker_exec("alice", f"ls {temp}").stdout.split()
    assert live and harness.docker_exec("alice", f"test -d {live}", check=False).returncode == 0
    others = [s for s in sessions if s.startswith("session_2") and s != live.rsplit("/", 1)[1]]
    assert len(others) <= 2 and "session_2020-01-01_00-00-00_000000_1" not in sessions, sessions  # 2 others stay

    # detached: not fetchable while it runs; fetched (with its exit code) into DEST once it ended
    d = sfc("run", "-i", str(cluster), "--detach", str(SCRIPTS / "writes_output.py"), "--", "detached", "8")
    assert d.returncode == 0, d.stderr
    det_id = d.stderr.split("sfcluster fetch ")[1].split()[0].strip("`")
    early = sfc("fetch", "-i", str(cluster), det_id)
    assert early.returncode == 1 and "still running" in early.stderr, early.stderr
    refused = sfc("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "1")
    assert refused.returncode == 75, refused.stderr  # the lock is held: no run, nothing to remember
    deadline = time.monotonic() + 60
    while not lock_free(harness) and time.monotonic() < deadline:
        time.sleep(1)
    dest = tmp_path / "results"
    f = sfc("fetch", "-i", str(cluster), det_id, str(dest), "--json")
    assert f.returncode == 0, f.stderr
    got = json.loads(f.stdout)
    assert got["run"]["exit_code"] == 0 and got["outputs"]["files"] == 2
    assert json.loads((dest / "metrics.json").read_text())["tag"] == "detached"
    assert "wrote outputs detached" in sfc("logs", "-i", str(cluster), det_id).stdout
    again = sfc("fetch", "-i", str(cluster), det_id, str(dest))  # idempotent
    assert again.returncode == 0, again.stderr
    listed = [r["run_id"] for r in json.loads(sfc("runs", "-i", str(cluster), "--json").stdout)["runs"]]
    assert listed[:2] == [det_id, run_id], listed
    table = sfc("runs", "-i", str(cluster))
    assert table.returncode == 0 and det_id in table.stdout and "writes_output.py detached 8" in table.stdout


# Issue 17, item 11: the watcher's gaps. Last in this file: the extra raylet leaves a dead node in
# the GCS's table (the module's cluster goes down after).
def test_a_driver_that_comes_and_goes_between_two_polls_still_stops_the_run(harness, cluster):
    proc = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "120")
    try:
        wait_for(proc, "tick 1")
        t0 = time.monotonic()
        # connects, then leaves at once: well under the watcher's 2 s poll once connected
        harness.docker_exec("bob", as_node("bob") + "/opt/sf/bin/python -c 'import ray; "
                                   "ray.init(address=\"172.30.77.11:6379\"); print(\"FOREIGN UP\", flush=True); "
                                   "ray.shutdown()' >/tmp/foreign.log 2>&1", user=RAY_USER, check=False)
        up = harness.docker_exec("bob", "cat /tmp/foreign.log").stdout
        assert "FOREIGN UP" in up, up  # it really connected
        out = proc.communicate(timeout=60)[0]
        took = time.monotonic() - t0
        assert proc.returncode == 76, out[-2000:]
        last = out.strip().splitlines()[-1]
        assert "another driver connected" in last and "172.30.77.12" in last and "already gone" in last, out[-2000:]
        assert took < 30, f"the run stopped only after {took:.1f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not lock_free(harness):
        time.sleep(0.5)
    assert lock_free(harness)


# --- notebooks (issue 20): written for one machine, run unchanged as the one driver ----------------

def notebook(path: Path, *cells: str) -> Path:
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# a tutorial"]},
        *({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": c} for c in cells)]}))
    return path


TUTORIAL_INIT = ("import secretflow as sf\n"
                 "sf.shutdown()\n"
                 "sf.init(['alice', 'charlie'], address='local', num_cpus=8)")  # as SecretFlow's tutorials begin
TUTORIAL_SPU = ("alice, charlie = sf.PYU('alice'), sf.PYU('charlie')\n"
                "spu = sf.SPU(sf.utils.testing.cluster_def(['alice', 'charlie']))")


def test_a_tutorial_notebook_runs_unchanged_as_the_one_driver(harness, cluster, tmp_path):
    nb = notebook(tmp_path / "tutorial.ipynb", TUTORIAL_INIT, TUTORIAL_SPU,
                  "x = alice(lambda: 3)()\ny = charlie(lambda: 4)()\n"
                  "z = spu(lambda a, b: a + b)(x.to(spu), y.to(spu))\nprint('sum', sf.reveal(z))\n"
                  "print('charlie runs on', sf.reveal(charlie(lambda: __import__('socket').gethostname())()))",
                  "sf.reveal(z) * 2")
    p = sfc("run", "-i", str(cluster), "--party-map", "charlie=carol", str(nb), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-4000:]
    assert "sfcluster: cell 3/4" in p.stderr and "sum 7" in p.stdout and "14" in p.stdout.splitlines()
    assert "charlie runs on carol" in p.stdout  # --party-map: the notebook's charlie is the inventory's carol
    got = max(Path(STATE_DIR, "harness", "runs").glob("*/output/tutorial.ipynb"), key=lambda f: f.stat().st_mtime)
    cells = [c for c in json.loads(got.read_text())["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in cells] == [1, 2, 3, 4]
    assert {"output_type": "stream", "name": "stdout", "text": "sum 7\ncharlie runs on carol\n"} in cells[2]["outputs"]
    assert [o["data"]["text/plain"] for o in cells[3]["outputs"] if o["output_type"] == "execute_result"] == ["14"]
    rec = json.loads(sfc("runs", "-i", str(cluster), "--json").stdout)["runs"][0]
    assert rec["script"] == "tutorial.ipynb" and rec["exit_code"] == 0


def test_a_failing_cell_ends_the_run_with_its_traceback_in_the_notebook_and_on_the_terminal(harness, cluster, tmp_path):
    nb = notebook(tmp_path / "fails.ipynb", TUTORIAL_INIT.replace("'charlie'", "'bob'"),
                  "print('cell 2 ran')", "raise ValueError('boom in cell 3')", "print('never')")
    p = sfc("run", "-i", str(cluster), str(nb), timeout=600)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-3000:]
    assert "ValueError: boom in cell 3" in p.stderr and "cell 3/4 failed" in p.stderr and "never" not in p.stdout
    got = max(Path(STATE_DIR, "harness", "runs").glob("*/output/fails.ipynb"), key=lambda f: f.stat().st_mtime)
    cells = [c for c in json.loads(got.read_text())["cells"] if c["cell_type"] == "code"]
    [err] = [o for o in cells[2]["outputs"] if o["output_type"] == "error"]
    assert err["ename"] == "ValueError" and any("boom in cell 3" in ln for ln in err["traceback"])
    assert cells[3]["execution_count"] is None and cells[3]["outputs"] == []
    assert lock_free(harness)


def test_a_notebook_naming_a_party_the_cluster_lacks_fails_before_anything_runs(harness, cluster, tmp_path):
    nb = notebook(tmp_path / "dave.ipynb", TUTORIAL_INIT.replace("'charlie'", "'dave'"))
    p = sfc("run", "-i", str(cluster), str(nb))
    assert p.returncode == 78 and "cell 1 names party 'dave'" in p.stderr and "--party-map dave=PARTY" in p.stderr


def test_ctrl_c_mid_cell_leaves_nothing_running(harness, cluster, tmp_path):
    nb = notebook(tmp_path / "sleeps.ipynb", TUTORIAL_INIT.replace("'charlie'", "'bob'"), TUTORIAL_SPU.replace(
        "charlie", "bob"), "x = alice(lambda: 3)()\nsf.reveal(spu(lambda a: a + 1)(x.to(spu)))",
        "import time\nprint('sleeping', flush=True)\ntime.sleep(600)")
    proc = start("run", "-i", str(cluster), str(nb))
    wait_for(proc, "sleeping", timeout=180)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, rest[-2000:]
    assert_nothing_left(harness)


@pytest.mark.parametrize("model,args,name,facts", [
    ("xgb", ["--trees", "3", "--depth", "3"], "SS-XGB", {"trees": 3, "depth": 3}),
    ("glm", ["--epochs", "3"], "SS-GLM", {"epochs": 3}),
    ("sgb", ["--trees", "3", "--depth", "3"], "SecureBoost", {"trees": 3, "depth": 3}),
])
def test_the_templates_other_models_on_the_same_vertical_data(harness, cluster, model, args, name, facts):
    """The template's SS-XGB and SS-GLM (issue 20): PSI on the parties' own CSVs, the model fitted
    on the SPU, AUC on the held-out split, metrics home."""
    p = sfc("run", "-i", str(cluster), "train_lr", "--", "--model", model, *args, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert f"training {name} on SPU" in p.stdout and "PSI:" in p.stdout
    auc = float(p.stdout.split("RESULT auc=")[1].split()[0])
    assert auc > 0.9, p.stdout[-2000:]
    got = max(Path(STATE_DIR, "harness", "runs").glob("*/output/metrics.json"), key=lambda f: f.stat().st_mtime)
    m = json.loads(got.read_text())
    assert m["model"] == name and m["rows_in_common"] > 500 and all(m[k] == v for k, v in facts.items()), m


def test_ss_xgb_with_too_few_cpus_per_party_fails_at_once_saying_how_many(harness, cluster, tmp_path):
    """Not a starved run 60 s later: `run` reads what the template says it needs (SFCLUSTER_NEEDS)
    and refuses before it ships anything (78); `check --for` says the same."""
    two = tmp_path / "inv.yaml"
    two.write_text(cluster.read_text().replace("cpus: 4", "cpus: 2"))
    start = time.monotonic()
    p = sfc("run", "-i", str(two), "train_lr", "--", "--model", "xgb", timeout=300)
    assert p.returncode == 78 and "(--model xgb) needs cpus: 3" in p.stderr and "alice has 2" in p.stderr, p.stderr[-2000:]
    assert time.monotonic() - start < 30 and lock_free(harness)
    c = sfc("check", "-i", str(two), "--no-reach", "--json", "--for", "train_lr", "--", "--model", "xgb")
    rows = [r for r in json.loads(c.stdout)["checks"] if r["name"] == "script needs"]
    assert c.returncode == 65 and {r["node"] for r in rows if r["status"] == "FAIL"} == {"alice", "bob", "carol"}, rows


# Last in the module: the rogue raylet, once killed, stays alive in the GCS until its health checks
# fail (some 30 s), and a run started meanwhile is stopped for it (rightly: Ray still has that node).
def test_an_extra_raylet_with_another_partys_resource_stops_the_run_naming_it(harness, cluster):
    proc = start("run", "-i", str(cluster), str(SCRIPTS / "sleeper.py"), "--", "120")
    rogue = "/tmp/rogue-ray"
    try:
        wait_for(proc, "tick 1")
        # carol's Ray user (it holds carol's certificate) starts a second raylet there that says it is bob
        p = harness.docker_exec("carol", as_node("carol") + f"timeout 60 /opt/sf/bin/ray start --address=172.30.77.11:6379 "
                                f"--node-ip-address=172.30.77.13 --temp-dir={rogue} --resources='{{\"bob\": 1000}}' "
                                "--num-cpus=1 --disable-usage-stats 2>&1 | tail -5", user=RAY_USER, check=False)
        out = proc.communicate(timeout=90)[0]
        assert proc.returncode == 76, p.stdout + out[-2000:]
        last = out.strip().splitlines()[-1]
        assert "Ray node the inventory does not have" in last and "172.30.77.13" in last and "bob" in last, out[-2000:]
        assert "done" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
        harness.docker_exec("carol", f"pkill -f '{rogue}' || true", check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not lock_free(harness):
        time.sleep(0.5)
    assert lock_free(harness)
    # the rogue raylet is gone, carol's own was left alone
    assert harness.docker_exec("carol", f"pgrep -f '[r]aylet.*{rogue}'", check=False).returncode == 1
    assert harness.docker_exec("carol", "pgrep -f '[r]aylet.*/tmp/sfc-harness/'", check=False).returncode == 0
