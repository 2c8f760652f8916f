"""Production mode on the harness: no Ray anywhere; `run` starts one driver of the same script per
party, each on its own node, and stops them together. The parties talk only over each one's
cross-silo and SPU ports, which only the peers reach, under mutual TLS that is proven on the wire
(a client without a certificate, or with one of another CA, is refused in the handshake)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.harness.harness import RAY_USER, state_dir, tls_dir
from tests.integration.cli import ROOT, SCRIPTS, sfc, start, wait_for
from tests.integration.test_tls import PLAIN_PUSH, TLS_PROBE, _rogue_certs

CLUSTER = "prod"
TLS_DIRS = {n: tls_dir(CLUSTER) for n in ("alice", "bob", "carol")}  # the Ray user's, on every node
XS = {"alice": 20200, "bob": 20201, "carol": 20202}
IP = {"alice": "172.30.77.11", "bob": "172.30.77.12", "carol": "172.30.77.13"}


LISTENER = """
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 20200))
s.listen(5)
time.sleep(30)
"""


@pytest.fixture(scope="module")
def prod(harness, tmp_path_factory):
    inv = harness.write_inventory(tmp_path_factory.mktemp("prod") / "inv.yaml", cluster=CLUSTER, firewall="open",
                                  extra_top="tls: on\nmode: production", data=True)
    harness.push_data(inv)
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    yield inv
    sfc("down", "-i", str(inv), "--force", "--purge")


def _drivers_left(harness, script: str) -> dict:
    out = {}
    for n in IP:
        p = harness.docker_exec(n, f"pgrep -af '[r]uns/.*/{script}' || true", check=False)
        if p.stdout.strip():
            out[n] = p.stdout.strip()
    return out


def test_up_starts_no_ray_scopes_both_ports_to_the_peers_and_status_says_so(harness, prod):
    for n in IP:
        assert not harness.docker_exec(n, "pgrep -x raylet; pgrep -x gcs_server; true", check=False).stdout.strip(), n
    rules = harness.docker_exec("alice", "iptables -w -S").stdout
    for port in (20200, 20100):
        allowed = {line.split("-s ")[1].split("/")[0] for line in rules.splitlines()
                   if f"--dport {port}" in line and "-s " in line and "ACCEPT" in line}
        assert allowed == {IP["alice"], IP["bob"], IP["carol"]}, (port, rules)  # the node itself and its peers
    assert "6379" not in rules  # no Ray port is opened in production mode
    # mallory (not a party) cannot reach a party's cross-silo port; a peer can
    probe = "timeout 5 bash -c 'echo > /dev/tcp/172.30.77.11/20200' && echo OPEN || echo CLOSED"
    harness.docker_exec("alice", f"cat > /tmp/xs_listen.py <<'EOF'\n{LISTENER}EOF")
    listen = harness.docker_exec("alice", "nohup /opt/sf/bin/python /tmp/xs_listen.py >/dev/null 2>&1 & sleep 1; echo started")
    assert "started" in listen.stdout
    assert "OPEN" in harness.docker_exec("bob", probe, check=False).stdout
    assert "CLOSED" in harness.docker_exec("mallory", probe, check=False).stdout
    harness.docker_exec("alice", "pkill -f 'xs_liste[n]'; sleep 0.5", check=False)
    st = sfc("status", "-i", str(prod), "--json")
    s = json.loads(st.stdout)
    assert st.returncode == 0 and s["mode"] == "production" and s["health"] == "healthy", s
    assert [r["cross_silo_port"] for r in s["nodes"]] == [20200, 20201, 20202], s
    p = sfc("up", "-i", str(prod))  # idempotent
    assert p.returncode == 0 and "nothing changed" in p.stdout, p.stdout + p.stderr


def test_train_lr_one_driver_per_party_with_every_partys_outputs_home(harness, prod, tmp_path):
    t0 = time.monotonic()
    p = sfc("run", "-i", str(prod), str(ROOT / "templates" / "train_lr.py"), timeout=600)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    results = [line for line in p.stdout.splitlines() if "RESULT auc=" in line]
    assert sorted(line.split("]")[0] for line in results) == ["[alice", "[bob", "[carol"], p.stdout[-3000:]
    for line in results:
        assert float(line.split("auc=")[1].split()[0]) > 0.9, line
    assert "this driver is party bob" in p.stdout
    # SecretFlow's and SPU's INFO logging stays off the terminal, in each party's log
    # (and the warnings known to mean nothing, with the one SecretFlow logged at every start gone)
    shown = "\n".join(line for line in (p.stdout + p.stderr).splitlines() if not line.startswith("sfcluster:"))
    for chatter in (" INFO ", "[info]", "Already exposed", "http_timeout_ms", "Channel destructor"):
        assert chatter not in shown, (chatter, shown[-3000:])
    assert "line(s) of SecretFlow/SPU/brpc/Ray logging not shown" in p.stderr, p.stderr[-2000:]
    where = next(line for line in p.stderr.splitlines() if "outputs of run" in line)
    home = Path(where.split(": ", 2)[2].split("/output/")[0].split(" (")[0])
    run_id = home.name
    for n in IP:
        m = json.loads((home / "output" / n / "metrics.json").read_text())
        assert m["auc"] > 0.9 and m["rows_in_common"] > 400, (n, m)
        assert "[info]" in (home / "logs" / f"{n}.log").read_text(errors="replace"), n
    rec = json.loads((home / "run.json").read_text())
    assert rec["mode"] == "production" and rec["exit_code"] == 0, rec
    assert {n: v["driver_exit"] for n, v in rec["parties"].items()} == {"alice": 0, "bob": 0, "carol": 0}, rec
    assert not _drivers_left(harness, "train_lr.py")
    runs = sfc("runs", "-i", str(prod))
    assert run_id in runs.stdout, runs.stdout
    # fetched again, from every party, and copied out
    f = sfc("fetch", "-i", str(prod), run_id, str(tmp_path / "dest"))
    assert f.returncode == 0 and (tmp_path / "dest" / "carol" / "metrics.json").is_file(), f.stdout + f.stderr
    print(f"production train_lr, 3 parties: {took:.1f} s from `run` to its exit")


@pytest.mark.parametrize("model,args,name", [("xgb", ["--trees", "3", "--depth", "3"], "SS-XGB"),
                                             ("glm", ["--epochs", "3"], "SS-GLM"),
                                             ("sgb", ["--trees", "3", "--depth", "3"], "SecureBoost")])
def test_the_templates_other_models_one_driver_per_party(harness, prod, model, args, name):
    """The template's SS-XGB and SS-GLM in production mode (issue 20): every party's driver fits
    the same model over the cross-silo and SPU links; each reports the AUC the head's labels give."""
    p = sfc("run", "-i", str(prod), "train_lr", "--", "--model", model, *args, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    results = [line for line in p.stdout.splitlines() if "RESULT auc=" in line]
    assert sorted(line.split("]")[0] for line in results) == ["[alice", "[bob", "[carol"], p.stdout[-3000:]
    assert all(float(line.split("auc=")[1].split()[0]) > 0.9 for line in results), results
    assert f"training {name} on SPU" in p.stdout and not _drivers_left(harness, "train_lr.py")


def test_the_cross_silo_link_is_mutual_tls_on_the_wire_and_one_run_per_party(harness, prod, tmp_path):
    run = start("run", "-i", str(prod), str(SCRIPTS / "spu_idle.py"), "--", "90")
    try:
        lines = wait_for(run, "spu up", timeout=180)
        harness.docker_exec("alice", f"cat > /tmp/tls_probe.py <<'EOF'\n{TLS_PROBE}EOF")
        ca = f"{TLS_DIRS['alice']}/ca.pem"
        # the server's certificate is of the cluster's CA (the probe verifies it), but the probe
        # brings no client certificate: refused in the handshake
        for port in (XS["bob"], 20101):
            p = harness.docker_exec("alice", f"/opt/sf/bin/python /tmp/tls_probe.py {IP['bob']} {port} {ca}", check=False)
            assert p.stdout.startswith("REFUSED"), (port, p.stdout + p.stderr)
        # a client certificate of another CA: refused too
        _rogue_certs(harness, "alice", tmp_path)
        rogue = harness.docker_exec(
            "alice", f"openssl s_client -connect {IP['bob']}:{XS['bob']} -CAfile {ca} -cert /tmp/rogue/node.pem "
                     "-key /tmp/rogue/node.key -quiet </dev/null 2>&1 | head -20; true", check=False).stdout
        # ... while alice's own certificate completes the handshake: the port speaks TLS, with bob's certificate
        good = harness.docker_exec(
            "alice", f"echo Q | timeout 10 openssl s_client -connect {IP['bob']}:{XS['bob']} -CAfile {ca} "
                     f"-cert {TLS_DIRS['alice']}/node.pem -key {TLS_DIRS['alice']}/node.key 2>&1; true",
            check=False).stdout
        assert "Verify return code: 0 (ok)" in good and "CN = bob" in good.replace("CN=bob", "CN = bob"), good[-3000:]
        assert "Verify return code: 0" not in rogue or "alert" in rogue.lower(), rogue
        assert ("alert" in rogue.lower() or "error" in rogue.lower()), rogue
        # clear text from another user of a peer node, with no certificate: closed at the door
        harness.docker_exec("bob", f"cat > /tmp/plain_push.py <<'EOF'\n{PLAIN_PUSH}EOF\nchmod 644 /tmp/plain_push.py")
        for port in (XS["alice"], 20100):
            p = harness.docker_exec("bob", f"/opt/sf/bin/python /tmp/plain_push.py {IP['alice']} {port}", user="sfstrict",
                                    check=False)
            assert p.stdout.startswith("REFUSED"), (port, p.stdout + p.stderr)
        # a driver started by hand on bob, as the Ray user, with this run's own files: without the
        # run's token refused by the guard; with a made-up one, refused naming the run that holds
        # bob's lock; and bypassing the helper, it cannot take bob's port (the gate holds it)
        rd = harness.docker_exec("bob", f"ls -td {state_dir(CLUSTER)}/runs/*/ | head -1", user=RAY_USER).stdout.strip()
        hand = (f"cd {rd} && SFCLUSTER_CONFIG={rd}sfcluster.json /opt/sf/bin/python -c "
                "'from sfcluster import runtime; runtime.guard(); print(\"PASSED GUARD\")'")
        p = harness.docker_exec("bob", hand, user=RAY_USER, check=False)
        assert p.returncode != 0 and "PASSED GUARD" not in p.stdout and "not started by `sfcluster run`" in p.stderr, p.stderr
        p = harness.docker_exec("bob", hand.replace("SFCLUSTER_CONFIG=", f"SFCLUSTER_RUN_TOKEN=made-up SFCLUSTER_LOCK_INFO="
                                                    f"{state_dir(CLUSTER)}/lock.json SFCLUSTER_CONFIG="),
                                user=RAY_USER, check=False)
        assert p.returncode != 0 and "another run holds the driver lock (spu_idle.py" in p.stderr, p.stderr
        p = harness.docker_exec("bob", f"/opt/sf/bin/python -c 'import socket; socket.socket().bind((\"0.0.0.0\", "
                                       f"{XS['bob']}))' 2>&1 || true", user=RAY_USER, check=False)
        assert "Address already in use" in p.stdout, p.stdout
        # a second run is refused while this one holds a party's lock, naming it
        second = sfc("run", "-i", str(prod), str(SCRIPTS / "spu_idle.py"), "--", "1")
        assert second.returncode == 75, second.stdout + second.stderr
        assert "lock is held" in second.stderr and "spu_idle.py" in second.stderr, second.stderr
        assert sum("spu up" in line for line in lines + [run.stdout.readline()]) >= 1
    finally:
        run.terminate()  # as Ctrl-C: every party's driver is stopped
        out, _ = run.communicate(timeout=90)
    assert run.returncode == 130, out[-3000:]
    assert not _drivers_left(harness, "spu_idle.py")
    assert not _drivers_left(harness, "spu_idle.py"), "a party's driver outlived the run"


def test_cancel_from_another_terminal_stops_every_party(harness, prod):
    run = start("run", "-i", str(prod), str(SCRIPTS / "spu_idle.py"), "--", "300")
    try:
        wait_for(run, "spu up", timeout=180)
        c = sfc("cancel", "-i", str(prod))
        assert c.returncode == 0, c.stdout + c.stderr
        out, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, out[-3000:]
    assert not _drivers_left(harness, "spu_idle.py")


def test_a_failing_party_stops_the_others_at_once(harness, prod):
    t0 = time.monotonic()
    p = sfc("run", "-i", str(prod), str(SCRIPTS / "party_fails.py"), "--", "bob", "3", "300", timeout=300)
    took = time.monotonic() - t0
    out = p.stdout + p.stderr
    assert p.returncode == 3, out[-4000:]
    assert took < 150, (took, out[-3000:])   # not the 300 s the other parties would wait
    assert "party bob's driver exited 3" in p.stderr, p.stderr[-3000:]
    assert "waited it out" not in out
    assert not _drivers_left(harness, "party_fails.py")


def test_a_party_that_never_comes_stops_every_party_at_the_start_deadline(harness, prod):
    t0 = time.monotonic()
    p = sfc("run", "-i", str(prod), "--start-timeout", "20", str(SCRIPTS / "party_late.py"), "--", "carol", "300",
            timeout=200)
    took = time.monotonic() - t0
    out = p.stdout + p.stderr
    assert p.returncode == 69, out[-4000:]
    assert "the driver of carol did not come to sf.init within 20 s" in p.stderr, p.stderr[-3000:]
    assert took < 90 and "all linked" not in out, (took, out[-3000:])
    assert not _drivers_left(harness, "party_late.py")


def test_a_party_node_lost_mid_run_stops_every_driver_naming_it(harness, prod):
    run = start("run", "-i", str(prod), str(SCRIPTS / "spu_idle.py"), "--", "300")
    try:
        wait_for(run, "spu up", timeout=180)
        t0 = time.monotonic()
        harness.pause("bob")
        try:
            out, _ = run.communicate(timeout=120)
            took = time.monotonic() - t0
        finally:
            harness.unpause("bob")
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 74, out[-3000:]
    assert "party bob" in out and took < 45, (took, out[-3000:])
    assert not {n: v for n, v in _drivers_left(harness, "spu_idle.py").items() if n != "bob"}
    # bob's own wrapper stops its driver once it is back and finds the controller gone
    deadline = time.monotonic() + 40
    while _drivers_left(harness, "spu_idle.py") and time.monotonic() < deadline:
        time.sleep(2)
    assert not _drivers_left(harness, "spu_idle.py")


def test_down_removes_exactly_the_rules_up_added(harness, prod):
    before = harness.docker_exec("alice", "iptables -w -S").stdout
    assert "SFC-prod" in before
    p = sfc("down", "-i", str(prod))
    assert p.returncode == 0, p.stdout + p.stderr
    for n in IP:
        rules = harness.docker_exec(n, "iptables -w -S; nft list ruleset 2>/dev/null || true").stdout
        assert "SFC-prod" not in rules and "sfc_prod" not in rules, (n, rules[-2000:])
    p = sfc("up", "-i", str(prod))  # and back, for the fixture's own down
    assert p.returncode == 0, p.stdout + p.stderr
