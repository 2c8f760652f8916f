"""A federation on the harness: two organisations, two controllers (two state dirs: two CAs, two
run histories), each operating only its own party with `--party`. Each controller's inventory
points the other party's SSH entry at a closed port, so a single dial to the peer's node would fail
the command: the peer's node is reached only by its own operator. The operators exchange CA
certificates (`sfcluster ca`), bring up their own node, start their own driver with the same run
id, and the two drivers train together under mutual TLS across the two CAs."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.harness import tls_dir
from tests.integration.cli import ROOT, SCRIPTS, sfc, start

CLUSTER = "fedr"
ORGS = ("alice", "bob")
PEER = {"alice": "bob", "bob": "alice"}
TLS_DIR = {n: tls_dir(CLUSTER) for n in ("alice", "bob")}  # the Ray user's, on every node


def rules(harness, node: str) -> str:
    return harness.docker_exec(node, "iptables -w -S; nft list ruleset 2>/dev/null || true").stdout


def ours(text: str) -> bool:
    return f"SFC-{CLUSTER}" in text or f"sfc_{CLUSTER}" in text


def org_sfc(org: str, base: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI as organisation `org`'s operator: its own controller state."""
    return sfc(*args, timeout=timeout, state_dir=base / f"state-{org}")


def org_start(org: str, base: Path, *args: str) -> subprocess.Popen:
    return start(*args, state_dir=base / f"state-{org}", stderr=subprocess.PIPE)


def start_idle_pair(base: Path, invs: dict, run_id: str, watch: str) -> dict:
    """Both parties' drivers of spu_idle.py (300 s) under one run id, returned once `watch`'s SPU is up
    (every link is up then)."""
    procs = {org: org_start(org, base, "run", "-i", str(invs[org]), "--party", org, "--run-id", run_id,
                            str(SCRIPTS / "spu_idle.py"), "--", "300") for org in ORGS}
    line = ""
    deadline = time.monotonic() + 180
    while "spu up" not in line and time.monotonic() < deadline:
        line = procs[watch].stdout.readline()
        if not line and procs[watch].poll() is not None:
            for p in procs.values():
                p.kill()
            raise AssertionError(procs[watch].stderr.read()[-3000:])
    if "spu up" not in line:
        for p in procs.values():
            p.kill()
        raise AssertionError(f"{watch}'s SPU never came up")
    return procs


@pytest.fixture(scope="module")
def fed(harness, tmp_path_factory):
    base = tmp_path_factory.mktemp("federation")
    invs = {}
    for org in ORGS:
        text = harness.inventory_text(cluster=CLUSTER, firewall="open", nodes=list(ORGS), data=True,
                                      extra_top="tls: on\nmode: production")
        # the peer's SSH entry leads nowhere: port 1 on its host is closed
        peer = PEER[org]
        lines = text.splitlines()
        at = lines.index(f"  {peer}:")
        port_line = next(i for i in range(at, len(lines)) if lines[i].strip().startswith("port:"))
        lines[port_line] = "      port: 1"
        invs[org] = base / f"{org}.yaml"
        invs[org].write_text("\n".join(lines) + "\n")
    # each operator prints its own CA; the other saves it and names it in its inventory
    for org in ORGS:
        p = org_sfc(org, base, "ca", "-i", str(invs[org]), "--party", org)
        assert p.returncode == 0 and "BEGIN CERTIFICATE" in p.stdout, p.stderr
        (base / f"{org}-ca.pem").write_text(p.stdout)
    for org in ORGS:
        peer = PEER[org]
        text = invs[org].read_text().replace(f"  {peer}:\n", f"  {peer}:\n    ca_cert: {base / f'{peer}-ca.pem'}\n")
        invs[org].write_text(text)
        harness.push_data(invs[org], [org])
    yield {"base": base, "inv": invs}
    for org in ORGS:
        org_sfc(org, base, "down", "-i", str(invs[org]), "--party", org, "--force", "--purge")


def test_each_operator_checks_and_brings_up_only_its_own_node(harness, fed):
    base, invs = fed["base"], fed["inv"]
    # without --party the peer's node is dialled, and that fails: this controller has no way there
    p = org_sfc("alice", base, "check", "-i", str(invs["alice"]), "--json", timeout=120)
    assert p.returncode != 0
    for org in ORGS:
        p = org_sfc(org, base, "check", "-i", str(invs[org]), "--party", org, "--json", timeout=120)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
        rows = json.loads(p.stdout)["checks"]
        assert {r["node"] for r in rows} <= {org, "*"}, rows
        assert any(r["name"] == "reachability" and r["status"] == "WARN" for r in rows), rows
        p = org_sfc(org, base, "up", "-i", str(invs[org]), "--party", org, "--json", timeout=300)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
        assert list(json.loads(p.stdout)["parties"]) == [org]
    # each node trusts its own organisation's CA and the peer's, nothing else
    for org in ORGS:
        bundle = harness.docker_exec(org, f"cat {TLS_DIR[org]}/ca.pem").stdout
        assert bundle.count("BEGIN CERTIFICATE") == 2, bundle
        own = (base / f"{org}-ca.pem").read_text().strip()
        assert bundle.strip().startswith(own), "the node's own CA comes first"
        assert (base / f"{PEER[org]}-ca.pem").read_text().strip() in bundle
        # its certificate is of its own organisation's CA only
        issuer = harness.docker_exec(org, f"openssl x509 -in {TLS_DIR[org]}/node.pem -noout -issuer").stdout
        assert f"CA {CLUSTER}" in issuer, issuer
    # status of one's own party only
    p = org_sfc("bob", base, "status", "-i", str(invs["bob"]), "--party", "bob", "--json", timeout=120)
    st = json.loads(p.stdout)
    assert p.returncode == 0 and [r["party"] for r in st["nodes"]] == ["bob"], p.stdout[-2000:]


def test_two_operators_start_one_run_together_and_it_trains(harness, fed):
    base, invs = fed["base"], fed["inv"]
    run_id = time.strftime("%Y%m%d-%H%M%S-") + "fed001"[:6]
    procs = {org: org_start(org, base, "run", "-i", str(invs[org]), "--party", org, "--run-id", run_id,
                            str(ROOT / "templates" / "train_lr.py")) for org in ORGS}
    outs = {}
    for org, p in procs.items():
        try:
            outs[org] = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            raise
    for org, p in procs.items():
        out, err = outs[org]
        assert p.returncode == 0, (org, out[-3000:], err[-3000:])
        results = [line for line in out.splitlines() if "RESULT auc=" in line]
        assert len(results) == 1 and results[0].startswith(f"[{org}]"), out[-2000:]
        assert float(results[0].split("auc=")[1].split()[0]) > 0.9, results
        # this controller's history holds its own party's outputs only
        home = base / f"state-{org}" / CLUSTER / "runs" / run_id
        assert (home / "output" / org / "metrics.json").is_file(), sorted(str(x) for x in home.rglob("*"))
        assert not (home / "output" / PEER[org]).exists()
        rec = json.loads((home / "run.json").read_text())
        assert list(rec["parties"]) == [org] and rec["mode"] == "production", rec
    # the run id is used once
    again = org_sfc("alice", base, "run", "-i", str(invs["alice"]), "--party", "alice", "--run-id", run_id,
                    str(ROOT / "templates" / "train_lr.py"))
    assert again.returncode != 0 and "already in this controller's history" in again.stderr, again.stderr


def test_a_peer_that_never_starts_its_driver_ends_the_run_at_the_start_deadline(harness, fed):
    base, invs = fed["base"], fed["inv"]
    run_id = time.strftime("%Y%m%d-%H%M%S-") + "a10e00"
    t0 = time.monotonic()
    p = org_sfc("alice", base, "run", "-i", str(invs["alice"]), "--party", "alice", "--run-id", run_id,
                "--start-timeout", "20", str(ROOT / "templates" / "train_lr.py"), timeout=200)
    took = time.monotonic() - t0
    assert p.returncode == 69, p.stdout[-2000:] + p.stderr[-3000:]
    assert "did not reach every peer within 20 s" in p.stderr and f"--run-id {run_id}" in p.stderr, p.stderr[-2000:]
    assert took < 120, took
    left = harness.docker_exec("alice", "pgrep -af '[r]uns/.*/train_lr.py' || true", check=False).stdout
    assert not left.strip(), left


def test_a_peer_whose_operator_stops_its_driver_ends_the_others_run_within_seconds(harness, fed):
    # no controller sees both drivers: alice's wrapper watches bob's cross-silo port, and stops
    # alice's driver once bob's is gone, instead of alice waiting for bob up to the receive timeout
    base, invs = fed["base"], fed["inv"]
    run_id = time.strftime("%Y%m%d-%H%M%S-") + "b0b0b0"
    procs = start_idle_pair(base, invs, run_id, "bob")
    try:
        procs["bob"].terminate()  # bob's operator presses Ctrl-C
        assert procs["bob"].wait(timeout=60) == 130
        t0 = time.monotonic()
        out, err = procs["alice"].communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    assert procs["alice"].returncode == 74, err[-3000:]
    assert "party bob's driver is gone" in err, err[-3000:]
    assert took < 60, took
    left = harness.docker_exec("alice", "pgrep -af '[r]uns/.*/spu_idle.py' || true", check=False).stdout
    assert not left.strip(), left


def test_cancel_of_one_party_stops_its_driver_and_the_peer_follows(harness, fed):
    base, invs = fed["base"], fed["inv"]
    run_id = time.strftime("%Y%m%d-%H%M%S-") + "ca0ce1"
    procs = start_idle_pair(base, invs, run_id, "alice")
    try:
        # alice's operator, from another terminal: the lock (and the run) on alice's node only
        c = org_sfc("alice", base, "cancel", "-i", str(invs["alice"]), "--party", "alice", timeout=90)
        assert c.returncode == 0 and "cancelled run " + run_id in c.stderr, c.stdout + c.stderr
        assert procs["alice"].wait(timeout=60) == 130
        out, err = procs["bob"].communicate(timeout=120)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    assert procs["bob"].returncode == 74 and "party alice's driver is gone" in err, err[-3000:]


def test_a_changed_peer_ca_is_flagged_by_check_and_installed_by_up(harness, fed, tmp_path):
    base, invs = fed["base"], fed["inv"]
    from sfcluster.tls.pki import new_ca
    other = tmp_path / "bob-new-ca.pem"
    other.write_bytes(new_ca("bob-new").cert_pem)   # bob's operator made a new CA and sent it
    original = invs["alice"].read_text()
    changed = tmp_path / "alice.yaml"
    changed.write_text(original.replace(str(base / "bob-ca.pem"), str(other)))
    try:
        p = org_sfc("alice", base, "check", "-i", str(changed), "--party", "alice", "--json", timeout=120)
        rows = [r for r in json.loads(p.stdout)["checks"] if r["name"] == "tls" and r["node"] == "alice"]
        assert rows and rows[0]["status"] == "WARN" and "trusts other CAs" in rows[0]["detail"], rows
        p = org_sfc("alice", base, "up", "-i", str(changed), "--party", "alice", timeout=300)
        assert p.returncode == 0 and "the CAs it trusts changed" in p.stderr, p.stdout + p.stderr
        bundle = harness.docker_exec("alice", f"cat {TLS_DIR['alice']}/ca.pem").stdout
        assert other.read_text().strip() in bundle and (base / "bob-ca.pem").read_text().strip() not in bundle
    finally:
        p = org_sfc("alice", base, "up", "-i", str(invs["alice"]), "--party", "alice", timeout=300)  # and back
    assert p.returncode == 0, p.stdout + p.stderr
    assert (base / "bob-ca.pem").read_text().strip() in harness.docker_exec("alice", f"cat {TLS_DIR['alice']}/ca.pem").stdout


def test_each_operator_takes_down_only_its_own_node(harness, fed):
    base, invs = fed["base"], fed["inv"]
    p = org_sfc("alice", base, "down", "-i", str(invs["alice"]), "--party", "alice")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not ours(rules(harness, "alice")) and ours(rules(harness, "bob")), (rules(harness, "alice")[-1500:],
                                                                              rules(harness, "bob")[-1500:])
    p = org_sfc("bob", base, "down", "-i", str(invs["bob"]), "--party", "bob")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not ours(rules(harness, "bob")), rules(harness, "bob")[-1500:]
    p = org_sfc("alice", base, "up", "-i", str(invs["alice"]), "--party", "alice")  # the fixture's down --purge
    assert p.returncode == 0, p.stdout + p.stderr
