"""`sfcluster check` on the harness: each fault injected for real, then cleared."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.cli import ENV

SFC = [sys.executable, "-m", "sfcluster.cli.main"]


def check(inv: Path, *extra: str):
    start = time.monotonic()
    p = subprocess.run([*SFC, "check", "-i", str(inv), "--json", *extra], capture_output=True, text=True, timeout=120,
                       env=ENV)  # the suite's controller state: the CA of a cluster an earlier module left up
    took = time.monotonic() - start
    assert p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout), took


def failures(report: dict, name: str):
    return [c for c in report["checks"] if c["status"] == "FAIL" and c["name"] == name]


def test_healthy_harness_passes_in_seconds(inventory):
    code, report, took = check(inventory)
    assert code == 0, [c for c in report["checks"] if c["status"] != "OK"]
    names = {c["name"] for c in report["checks"]}
    assert {"ssh", "versions", "ports_free", "spu_address", "ray_running", "firewall", "reachability"} <= names
    assert took < 30  # functional bound: a few seconds, never a hang


def test_port_held_by_a_process_on_bob(harness, inventory):
    # SO_REUSEADDR: earlier reachability probes may leave 6380 in TIME_WAIT (free for Ray and brpc)
    harness.docker_exec("bob", "setsid -f /opt/sf/bin/python -c 'import socket,time; s=socket.socket(); "
                               "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                               "s.bind((\"0.0.0.0\",6380)); s.listen(); time.sleep(600)' >/dev/null 2>&1")
    try:
        time.sleep(0.5)
        code, report, _ = check(inventory)
        assert code != 0
        [f] = failures(report, "ports_free")
        assert f["node"] == "bob" and f["port"] == 6380
        assert "held by pid" in f["detail"] and "python" in f["detail"]
        assert f["fix"].startswith("stop pid")
    finally:
        harness.docker_exec("bob", "fuser -k 6380/tcp", check=False)
    time.sleep(0.3)
    code, report, _ = check(inventory)
    assert code == 0 and not failures(report, "ports_free")


def test_firewall_drop_on_bob_for_the_spu_port(harness, inventory):
    rule = "INPUT -p tcp --dport 20101 -j DROP"
    harness.docker_exec("bob", f"iptables -I {rule}")
    try:
        code, report, took = check(inventory)
        assert code != 0
        fails = failures(report, "reachability")
        assert fails and all(f["node"] == "bob" and f["port"] == 20101 for f in fails)
        assert {f["detail"].split(" ->")[0] for f in fails} == {"alice", "carol"}
        assert all("blocked" in f["detail"] and "allow tcp/20101" in f["fix"] for f in fails)
        assert took < 30
    finally:
        harness.docker_exec("bob", f"iptables -D {rule}")
    code, report, _ = check(inventory)
    assert code == 0


def test_different_ray_version_on_carol(harness, tmp_path):
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check",
                                  extra_node={"carol": {"python": "/opt/ray-other/bin/python"}})
    code, report, _ = check(inv, "--no-reach")
    assert code != 0
    fails = failures(report, "versions")
    assert {f["node"] for f in fails} == {"carol"}
    text = " ".join(f["detail"] + f["fix"] for f in fails)
    assert "ray 2.10.0" in text and "ray 2.9.3" in text and "ray==2.9.3" in text
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check")
    code, report, _ = check(inv, "--no-reach")
    assert code == 0


def test_unknown_host_key(harness, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(l + "\n" for l in (harness.BUILD / "known_hosts").read_text().splitlines()
                          if "172.30.77.13" not in l))
    inv = tmp_path / "inv.yaml"
    inv.write_text(harness.inventory_text(firewall="check").replace(str(harness.BUILD / "known_hosts"), str(kh)))
    code, report, _ = check(inv)
    assert code != 0
    [f] = failures(report, "ssh")
    assert f["node"] == "carol" and "not in known_hosts" in f["detail"] and "ssh-keyscan -p 2222" in f["fix"]
    kh.write_text((harness.BUILD / "known_hosts").read_text())
    code, report, _ = check(inv)
    assert code == 0


NAT = "OUTPUT -d 172.30.77.99 -p tcp -j DNAT --to-destination 172.30.77.12"


def test_advertised_spu_address_not_local(harness, tmp_path):
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check",
                                  extra_node={"bob": {"advertise": "172.30.77.99"}})
    for peer in ("alice", "carol"):  # peers reach bob's "public" address through NAT
        harness.docker_exec(peer, f"iptables -t nat -A {NAT}")
    try:
        code, report, _ = check(inv)
        assert code != 0
        [f] = failures(report, "spu_address")
        assert f["node"] == "bob" and f["port"] == 20101 and "Fail to listen" in f["detail"]
        assert "bind: 172.30.77.12" in f["fix"] and "listen_address" in f["fix"]
        inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check",
                                      extra_node={"bob": {"advertise": "172.30.77.99", "bind": "172.30.77.12"}})
        code, report, _ = check(inv)
        assert code == 0, [c for c in report["checks"] if c["status"] == "FAIL"]
    finally:
        for peer in ("alice", "carol"):
            harness.docker_exec(peer, f"iptables -t nat -D {NAT}", check=False)


def test_firewall_open_on_a_node_without_a_firewall_tool_fails_naming_it(harness, tmp_path):
    """firewall: open never ends in an unfiltered cluster: mallory as a party, its firewall tools
    taken away (a host without any), makes check and up fail naming it; its explicit opt-out
    (firewall_backend: none) is a warning."""
    tools = "/usr/sbin/iptables /usr/sbin/nft /usr/sbin/ufw /usr/bin/firewall-cmd"
    harness.docker_exec("mallory", f"for t in {tools}; do mv $t $t.hidden; done")
    try:
        inv = tmp_path / "inv.yaml"
        text = harness.inventory_text(firewall="open", nodes=["alice", "mallory"])
        inv.write_text(text)
        code, report, _ = check(inv)
        rows = failures(report, "firewall")
        assert code == 65 and [c["node"] for c in rows] == ["mallory"] and "no firewall tool" in rows[0]["detail"], rows
        # up --skip-check: the probe's facts still say so, and nothing is started
        p = subprocess.run([*SFC, "up", "-i", str(inv), "--skip-check"], capture_output=True, text=True, timeout=120)
        assert p.returncode != 0 and "[mallory]" in p.stderr and "no firewall tool" in p.stderr, p.stderr
        assert harness.docker_exec("alice", "pgrep -x raylet || true").stdout.strip() == ""
        inv.write_text(text.replace("    host: 172.30.77.20\n", "    host: 172.30.77.20\n    firewall_backend: none\n"))
        _, report, _ = check(inv)
        assert [c["status"] for c in report["checks"] if c["node"] == "mallory" and c["name"] == "firewall"] == ["WARN"]
    finally:
        harness.docker_exec("mallory", f"for t in {tools}; do mv $t.hidden $t; done", check=False)


def test_a_dashboard_the_heads_venv_cannot_start_fails_naming_the_packages(harness, tmp_path):
    """secretflow-lite installs plain `ray`: `ray start --include-dashboard=true` would exit "Cannot
    include dashboard with missing packages". check says so before up tries."""
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check", extra_top="ports: {dashboard: 8265}")
    code, report, _ = check(inv, "--no-reach")
    assert code == 65
    [f] = failures(report, "dashboard")
    assert f["node"] == "alice" and "opencensus" in f["detail"] and "ray[default]==2.9.3" in f["fix"]
