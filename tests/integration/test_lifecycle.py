"""up -> status -> up (no-op) -> kill carol's Ray -> status degraded -> up repairs carol -> down."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.integration.cli import SFC, sfc


def raylet_pids(h, node):
    out = h.docker_exec(node, "pgrep -x raylet || true").stdout.split()
    return sorted(map(int, out))


def ruleset(h, node):
    return h.docker_exec(node, "iptables -S; nft -s list ruleset 2>/dev/null || true").stdout


def status(inv):
    p = sfc("status", "-i", str(inv), "--json")
    return p.returncode, json.loads(p.stdout)


def dry_run(inv):
    p = sfc("up", "-i", str(inv), "--dry-run", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


@pytest.fixture
def open_inventory(harness, tmp_path):
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="open")
    yield inv
    sfc("down", "-i", str(inv), "--force")


def test_lifecycle_idempotent_and_repairs(harness, open_inventory):
    inv = open_inventory
    before = {n: ruleset(harness, n) for n in ("alice", "bob", "carol")}
    # --dry-run: the plan of this up (every node's firewall commands, which Ray starts how, the
    # certificates), from the same checks; nothing changed anywhere
    plan = dry_run(inv)
    assert plan["dry_run"] is True and plan["changes"] is True
    assert sorted(plan["start"]) == ["alice", "bob", "carol"] and "--head" in plan["start"]["alice"]
    assert {f["node"]: f["action"] for f in plan["firewall"]} == {"alice": "add", "bob": "add", "carol": "add"}
    alice_fw = [f for f in plan["firewall"] if f["node"] == "alice"][0]
    assert any("SFC-harness" in c for c in alice_fw["commands"][0]), alice_fw
    assert sorted(plan["certificates"]) == ["alice", "bob", "carol"]
    assert {n: ruleset(harness, n) for n in before} == before
    assert not any(raylet_pids(harness, n) for n in before)
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    plan = dry_run(inv)
    assert plan["changes"] is False and plan["running"] == ["alice", "bob", "carol"], plan
    assert all(v.startswith("keep") for v in plan["certificates"].values()), plan
    code, st = status(inv)
    assert code == 0 and st["health"] == "healthy"
    # the party resource is a label (PARTY_RESOURCE units), whatever `cpus` is
    assert {r["party"]: r["resource"] for r in st["nodes"]} == {"alice": 1000, "bob": 1000, "carol": 1000}
    pids = {n: raylet_pids(harness, n) for n in ("alice", "bob", "carol")}
    assert all(pids.values())
    rules = {n: ruleset(harness, n) for n in ("alice", "bob", "carol")}
    assert "SFC-harness" in rules["alice"] and "sfc_harness" in rules["carol"]

    p = sfc("up", "-i", str(inv))  # no-op
    assert p.returncode == 0 and "nothing changed" in p.stdout, p.stdout + p.stderr
    p = sfc("up", "-i", str(inv), "--json")  # and says so to a machine
    d = json.loads(p.stdout)
    assert d["changed"] is False and d["actions"] == {} and d["ray_address"] == "172.30.77.11:6379"
    assert [n["party"] for n in d["config"]["spu_cluster_def"]["nodes"]] == ["alice", "bob", "carol"]
    assert {n: raylet_pids(harness, n) for n in pids} == pids
    assert {n: ruleset(harness, n) for n in rules} == rules

    # the INPUT jump to our chain is lost (a site script, `iptables -D`): the chain alone lets
    # everyone in. status names it; up repairs it and leaves the ruleset as up made it.
    harness.docker_exec("alice", "iptables -w -D INPUT -j SFC-harness")
    assert [(f["node"], f["action"]) for f in dry_run(inv)["firewall"]] == [("alice", "repair")]
    code, st = status(inv)
    assert code == 71 and any("alice" in x["message"] and "INPUT" in x["message"] for x in st["problems"]), st
    assert [r["firewall"] for r in st["nodes"] if r["party"] == "alice"] == ["iptables: INCOMPLETE"]
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 0 and "repairing" in p.stderr, p.stdout + p.stderr
    assert ruleset(harness, "alice") == rules["alice"]
    assert status(inv)[0] == 0

    harness.docker_exec("carol", "/opt/sf/bin/ray stop --force", user=harness.RAY_USER)
    deadline = time.monotonic() + 60
    while True:
        code, st = status(inv)
        if st["health"] == "degraded" or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert code == 71 and st["health"] == "degraded"
    assert [r["party"] for r in st["nodes"] if not r["ray_alive"]] == ["carol"]

    p = sfc("up", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "carol" in p.stdout and "ray worker started" in p.stdout
    assert raylet_pids(harness, "alice") == pids["alice"] and raylet_pids(harness, "bob") == pids["bob"]
    assert raylet_pids(harness, "carol") and raylet_pids(harness, "carol") != pids["carol"]

    p = sfc("down", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    for n in ("alice", "bob", "carol"):
        assert harness.docker_exec(n, "pgrep -x 'raylet|gcs_server' ; pgrep -f '^ray::' || true").stdout.strip() == ""
        assert ruleset(harness, n) == before[n]
        assert harness.docker_exec(n, "ss -ltn | grep -E ':(6379|6380|6381|2010[0-2]) ' || true").stdout.strip() == ""
    p = sfc("down", "-i", str(inv))  # idempotent
    assert p.returncode == 0


def assert_peers_only(harness, targets=(("bob", "172.30.77.12", 20101), ("carol", "172.30.77.13", 20102))):
    """A live listener on each target's SPU port: alice (a peer) connects, mallory (not a peer) times out."""
    for target, ip, port in targets:
        harness.docker_exec(target, f"setsid -f /opt/sf/bin/python -c 'import socket,time; s=socket.socket(); "
                                    f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\",{port})); "
                                    f"s.listen(); time.sleep(60)' >/dev/null 2>&1")
        time.sleep(0.5)
        probe = (f"/opt/sf/bin/python -c 'import socket; s=socket.socket(); s.settimeout(2); "
                 f"print(s.connect_ex((\"{ip}\",{port})))'")
        ok = harness.docker_exec("alice", probe, check=False)
        bad = harness.docker_exec("mallory", "timeout 5 " + probe, check=False)
        harness.docker_exec(target, f"fuser -k {port}/tcp", check=False)
        assert ok.stdout.strip() == "0", f"peer alice could not reach {target}:{port}"
        assert bad.stdout.strip() != "0", f"non-peer mallory reached {target}:{port}"


def test_firewall_open_lets_peers_in_and_keeps_others_out(harness, open_inventory):
    p = sfc("up", "-i", str(open_inventory))
    assert p.returncode == 0, p.stdout + p.stderr
    assert_peers_only(harness)


@pytest.fixture
def ufw_and_firewalld(harness):
    """bob on ufw, carol on firewalld (alice stays on iptables); the usual backends afterwards."""
    harness.recreate({"bob": "ufw", "carol": "firewalld"})
    yield
    harness.recreate({"bob": "iptables", "carol": "nftables"})


def test_firewall_ufw_and_firewalld_scope_to_peers_and_down_restores_them(harness, ufw_and_firewalld, open_inventory):
    inv = open_inventory
    ours = {"bob": "ufw status", "carol": "firewall-cmd --list-rich-rules"}
    before = {n: ruleset(harness, n) for n in ours}
    before_tool = {n: harness.docker_exec(n, c).stdout for n, c in ours.items()}
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr  # every party joined: Ray's own ports pass too
    assert "rules added (ufw)" in p.stdout and "rules added (firewalld)" in p.stdout
    code, st = status(inv)
    assert code == 0 and {r["party"]: r["firewall"] for r in st["nodes"] if r["party"] in ours} == {
        "bob": "ufw: present", "carol": "firewalld: present"}
    added = {n: harness.docker_exec(n, c).stdout for n, c in ours.items()}
    assert "sfcluster:harness" in added["bob"] and 'source address="172.30.77.11"' in added["carol"]

    p = sfc("up", "-i", str(inv))  # no-op: the rules are recognised as complete, nothing added twice
    assert p.returncode == 0 and "nothing changed" in p.stdout, p.stdout + p.stderr
    assert {n: harness.docker_exec(n, c).stdout for n, c in ours.items()} == added

    assert_peers_only(harness)

    p = sfc("down", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    assert {n: ruleset(harness, n) for n in ours} == before
    assert {n: harness.docker_exec(n, c).stdout for n, c in ours.items()} == before_tool

    # alice is renumbered (.11 -> .111) and the inventory follows: `down` with the NEW inventory
    # must still remove the rules `up` added for the OLD address (each node's record names them;
    # recomputed from the inventory, 5 ufw allows and 5 rich rules for .11 survived)
    renumbered = inv.parent / "renumbered.yaml"
    known = inv.parent / "known_hosts"
    kh = (harness.BUILD / "known_hosts").read_text()
    alice_key = next(l for l in kh.splitlines() if l.startswith("172.30.77.11 ")).split(" ", 1)[1]
    known.write_text(kh + f"172.30.77.111 {alice_key}\n")
    harness.docker_exec("alice", "ip addr add 172.30.77.111/24 dev eth0")
    try:
        old = inv.read_text().replace(f"known_hosts: {harness.BUILD / 'known_hosts'}", f"known_hosts: {known}")
        inv.write_text(old)
        renumbered.write_text(old.replace("host: 172.30.77.11\n", "host: 172.30.77.111\n"))
        assert "172.30.77.111" in renumbered.read_text()
        p = sfc("up", "-i", str(inv))
        assert p.returncode == 0, p.stdout + p.stderr
        assert all("172.30.77.11" in harness.docker_exec(n, c).stdout for n, c in ours.items())
        p = sfc("down", "-i", str(renumbered))
        assert p.returncode == 0, p.stdout + p.stderr
        assert {n: harness.docker_exec(n, c).stdout for n, c in ours.items()} == before_tool
        assert {n: ruleset(harness, n) for n in ours} == before
        assert raylet_pids(harness, "alice") == []
    finally:
        sfc("down", "-i", str(inv), "--force")
        harness.docker_exec("alice", "ip addr del 172.30.77.111/24 dev eth0", check=False)


def test_two_ups_at_once_one_wins_the_other_fails_naming_it_and_changes_nothing(harness, open_inventory):
    """Two operators start `up` at the same moment: exactly one brings the cluster up; the other
    fails at once naming it (75) and touches nothing (before the cluster lock, its rollback
    deleted the winner's firewall chain while the winner reported success)."""
    inv = str(open_inventory)
    env = dict(os.environ, SFCLUSTER_STATE_DIR="/tmp/sfc-test-state")
    procs = [subprocess.Popen([*SFC, "up", "-i", inv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 75], outs
    loser = outs[[p.returncode for p in procs].index(75)][1]
    assert "is locked by `sfcluster up`" in loser and "--wait" in loser, loser
    code, st = status(inv)
    assert code == 0 and st["health"] == "healthy", st
    assert {r["party"]: r["firewall"] for r in st["nodes"]} == {
        "alice": "iptables: present", "bob": "iptables: present", "carol": "nftables: present"}
    assert st["lock"]["held"] is False
    assert_peers_only(harness)

    # an `up` that waits: queued behind a `down`, then brings the cluster up again
    down = subprocess.Popen([*SFC, "down", "-i", inv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while harness.docker_exec("alice", f"flock -n {harness.state_dir('harness')} true", check=False).returncode == 0:
        assert time.monotonic() < deadline and down.poll() is None, "down never held the cluster lock"
        time.sleep(0.1)
    p = sfc("up", "-i", inv, "--wait", "--wait-timeout", "120")
    assert down.wait(120) == 0
    assert p.returncode == 0 and "waiting for the cluster lock" in p.stderr and "`sfcluster down`" in p.stderr, \
        p.stdout + p.stderr
    assert status(inv)[0] == 0


DEMO2_PORTS = """ports:
  ray_gcs: 7379
  ray_client_server: 11001
  node_manager: 7380
  object_manager: 7381
  metrics_export: 7382
  dashboard_agent_grpc: 7383
  dashboard_agent_http: 7384
  runtime_env_agent: 7385
  worker_ports: {start: 7400, count: 100}
  spu_base: 21100
"""


def test_clusters_demo_and_demo2_side_by_side_down_touches_only_its_own(harness, tmp_path):
    """Two clusters whose names share a prefix on the same nodes: each recognises only its own
    Ray, rules and lock; tearing down `demo` leaves `demo2` exactly as it was."""
    demo = harness.write_inventory(tmp_path / "demo.yaml", cluster="demo", firewall="open")
    demo2 = harness.write_inventory(tmp_path / "demo2.yaml", cluster="demo2", firewall="open", extra_top=DEMO2_PORTS)
    nodes = ("alice", "bob", "carol")
    before = {n: ruleset(harness, n) for n in nodes}
    try:
        p = sfc("up", "-i", str(demo2))
        assert p.returncode == 0, p.stdout + p.stderr
        only_demo2 = {n: ruleset(harness, n) for n in nodes}
        pids2 = {n: raylet_pids(harness, n) for n in nodes}
        p = sfc("up", "-i", str(demo))
        assert p.returncode == 0, p.stdout + p.stderr  # demo2's Ray is not "foreign": it may run beside us
        assert status(demo)[0] == 0 and status(demo2)[0] == 0
        for n in nodes:
            assert len(raylet_pids(harness, n)) == 2, n
            assert ruleset(harness, n) != only_demo2[n]  # demo added its own rules beside demo2's
        checks = json.loads(sfc("check", "-i", str(demo), "--json").stdout)["checks"]
        assert {c["node"] for c in checks if c["name"] == "ray_running" and c["status"] == "WARN"
                and "'demo2'" in c["detail"]} == set(nodes), checks

        p = sfc("down", "-i", str(demo))
        assert p.returncode == 0, p.stdout + p.stderr
        assert {n: raylet_pids(harness, n) for n in nodes} == pids2  # demo2's Ray untouched
        assert {n: ruleset(harness, n) for n in nodes} == only_demo2  # and its rules, exactly
        code, st = status(demo2)
        assert code == 0 and st["health"] == "healthy", st
        assert status(demo)[0] == 69
    finally:
        sfc("down", "-i", str(demo), "--force")
        sfc("down", "-i", str(demo2), "--force")
    assert {n: ruleset(harness, n) for n in nodes} == before


def test_password_sudo_stops_before_any_change(harness, tmp_path):
    inv = tmp_path / "inv.yaml"
    # Ray as the SSH users (--skip-check: `check` would fail on root and sfops as the Ray user)
    inv.write_text(harness.inventory_text(firewall="open", ray_user=None).replace("user: sfops\n      port: 2222",
                                                                                  "user: sfstrict\n      port: 2222"))
    before = {n: ruleset(harness, n) for n in ("alice", "bob", "carol")}
    p = sfc("up", "-i", str(inv), "--skip-check")
    if p.returncode == 0:
        sfc("down", "-i", str(inv), "--force")
    assert p.returncode == 77, p.stderr  # EX_NOPERM
    assert "[carol]" in p.stderr and "sudo" in p.stderr and "iptables" in p.stderr, p.stderr
    for n in ("alice", "bob", "carol"):
        assert raylet_pids(harness, n) == []
        assert ruleset(harness, n) == before[n]


def test_gcs_blocked_for_carol_fails_naming_carol(harness, tmp_path):
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check")
    rule = "OUTPUT -d 172.30.77.11 -p tcp --dport 6379 -j DROP"
    harness.docker_exec("carol", f"iptables -I {rule}")
    try:
        start = time.monotonic()
        p = sfc("up", "-i", str(inv))
        took = time.monotonic() - start
        assert p.returncode != 0
        out = p.stdout + p.stderr
        assert "carol" in out and "6379" in out
        assert took < 120
        for n in ("alice", "bob", "carol"):
            assert raylet_pids(harness, n) == []  # rolled back
    finally:
        harness.docker_exec("carol", f"iptables -D {rule}")


def test_head_failing_after_its_gcs_opened_rolls_back_every_node(harness, tmp_path):
    """Workers start once the head's GCS port opens; when the head's `ray start` fails after that
    (its raylet port is taken), `up` names the head and leaves no Ray on any node."""
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check")
    harness.docker_exec("alice", "setsid -f /opt/sf/bin/python -c 'import socket,time; s=socket.socket(); "
                                 "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\",6380)); "
                                 "s.listen(); time.sleep(120)' >/dev/null 2>&1")
    try:
        p = sfc("up", "-i", str(inv), "--skip-check")  # the preflight would have caught the port
        assert p.returncode != 0, p.stdout
        assert "error: [alice]" in p.stderr and "ray start --head" in p.stderr, p.stderr
        for n in ("alice", "bob", "carol"):
            assert raylet_pids(harness, n) == []
            assert harness.docker_exec(n, "pgrep -x gcs_server || true").stdout.strip() == ""
    finally:
        harness.docker_exec("alice", "fuser -k 6380/tcp", check=False)
        sfc("down", "-i", str(inv), "--force")


def test_down_with_a_node_unreachable_stops_nothing_then_force_tears_down_the_rest(harness, tmp_path):
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check")
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    pids = {n: raylet_pids(harness, n) for n in ("alice", "bob")}
    harness.pause("carol")  # sshd and Ray frozen: a hung host
    try:
        t0 = time.monotonic()
        code, st = status(inv)
        assert time.monotonic() - t0 < 60
        assert code == 71 and st["health"] == "degraded"
        assert [r["party"] for r in st["nodes"] if not r["reachable"]] == ["carol"]

        t0 = time.monotonic()
        p = sfc("down", "-i", str(inv))
        assert time.monotonic() - t0 < 60, "down hung on an unreachable node"
        assert p.returncode == 69 and "carol" in p.stderr and "--force" in p.stderr, p.stderr
        assert {n: raylet_pids(harness, n) for n in pids} == pids  # nothing stopped anywhere

        p = sfc("down", "-i", str(inv), "--force")
        assert p.returncode == 1 and "carol" in p.stderr, p.stdout + p.stderr
        assert raylet_pids(harness, "alice") == [] and raylet_pids(harness, "bob") == []
    finally:
        harness.unpause("carol")
    p = sfc("down", "-i", str(inv))  # carol back: its leftovers go too
    assert p.returncode == 0, p.stdout + p.stderr
    assert raylet_pids(harness, "carol") == []
    code, st = status(inv)  # nothing up anywhere: down, 69, naming every party
    assert code == 69 and st["health"] == "down" and st["ok"] is False and st["exit_code"] == 69
    assert sorted(p["path"] for p in st["problems"]) == ["alice", "bob", "carol"]


def started_until(text, *args):
    """An sfcluster command started in the background, once `text` is in its output (or it ended)."""
    proc = subprocess.Popen([*SFC, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, SFCLUSTER_STATE_DIR="/tmp/sfc-test-state"))
    while text not in (proc.stdout.readline() or text):
        pass
    return proc


def test_a_frozen_head_ends_status_run_and_up_in_bounded_time_naming_it(harness, tmp_path):
    """A head that vanishes silently (power loss, a cable: `docker pause`, no FIN, no RST) must not
    hang any command: every remote step has a deadline, or beats and has an idle limit."""
    from pathlib import Path
    sleeper = Path(__file__).parent / "scripts" / "sleeper.py"
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check")
    p = sfc("up", "-i", str(inv))
    assert p.returncode == 0, p.stdout + p.stderr
    try:
        run = started_until("tick 1", "run", "-i", str(inv), str(sleeper), "--", "300")
        harness.pause("alice")
        try:
            t0 = time.monotonic()
            code, st = status(inv)
            took = time.monotonic() - t0
            assert took < 30, f"status took {took:.0f} s on a frozen head"
            assert code == 69 and any(x["path"] == "alice" for x in st["problems"]), st
            out = run.communicate(timeout=90)[0]
            took = time.monotonic() - t0
            assert run.returncode == 69 and "alice went silent" in "".join(out.strip().splitlines()[-2:]), out[-2000:]
            assert took < 60, f"run noticed the frozen head after {took:.0f} s"
        finally:
            harness.unpause("alice")
        # the run's wrapper on the thawed head lets go of the lock once it notices its controller
        # is gone: `down` waits for that (a plain `down` would refuse: a run holds the lock)
        assert sfc("down", "-i", str(inv), "--force", "--wait", "--wait-timeout", "60").returncode == 0

        up = started_until("starting Ray worker", "up", "-i", str(inv), "--join-timeout", "20")
        harness.pause("alice")
        try:
            t0 = time.monotonic()
            out = up.communicate(timeout=120)[0]
            took = time.monotonic() - t0
            assert up.returncode == 69 and "[alice] went silent" in out, out[-3000:]
            assert took < 20 + 15, f"up ended {took:.0f} s after the head froze (join timeout 20 s)"
            for n in ("bob", "carol"):  # the rollback on the others happened, and in bounded time
                assert raylet_pids(harness, n) == [], n
        finally:
            harness.unpause("alice")
        assert sfc("down", "-i", str(inv), "--force", "--wait", "--wait-timeout", "60").returncode == 0

        # the head gone for good: `down --force` cannot take the lock there, says so, and tears
        # down the others anyway
        assert sfc("up", "-i", str(inv)).returncode == 0
        harness.pause("alice")
        try:
            p = sfc("down", "-i", str(inv))
            assert p.returncode == 69 and "alice" in p.stderr and "--force" in p.stderr, p.stderr
            assert raylet_pids(harness, "bob") and raylet_pids(harness, "carol")  # nothing stopped
            p = sfc("down", "-i", str(inv), "--force")
            assert p.returncode == 1 and "WITHOUT the cluster lock" in p.stderr, p.stdout + p.stderr
            assert raylet_pids(harness, "bob") == [] and raylet_pids(harness, "carol") == []
        finally:
            harness.unpause("alice")
    finally:
        harness.unpause("alice")
        assert sfc("down", "-i", str(inv), "--force", "--wait", "--wait-timeout", "60").returncode == 0
