"""Planners: firewall rules per backend, ray start argv, SecretFlow config (facts in, commands out)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from sfcluster.config import secretflow_config
from sfcluster.firewall import allows_for, plan_add, plan_remove
from sfcluster.inventory import parse_inventory
from sfcluster.raycluster.argv import head_start_argv, worker_start_argv
from sfcluster.raycluster.resources import PARTY_RESOURCE

INV = """
cluster: demo
python: /opt/sf/bin/python
cpus: 2
nodes:
  alice: {host: 10.0.0.1}
  bob: {host: 10.0.0.2, advertise: 203.0.113.7, bind: 10.0.0.2}
  carol: {host: 10.0.0.3, cpus: 4}
"""


@pytest.fixture
def cluster():
    return parse_inventory(INV)


def test_allows_scope_each_port_to_self_and_the_peers_that_need_it(cluster):
    by_purpose = {a.purpose: a for a in allows_for(cluster, "alice")}
    assert by_purpose["ray_gcs"].sources == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert by_purpose["metrics_export"].sources == ("10.0.0.1",)  # local only
    assert (by_purpose["worker_ports"].port, by_purpose["worker_ports"].port_end) == (6400, 6499)
    assert "ray_gcs" not in {a.purpose for a in allows_for(cluster, "bob")}


def test_iptables_plan_accepts_peers_then_drops_and_hooks_input_last(cluster):
    cmds = [" ".join(c) for c in plan_add(cluster, "bob", "iptables").commands]
    assert cmds[0] == "iptables -w -N SFC-demo"
    assert "iptables -w -A SFC-demo -s 10.0.0.1/32 -p tcp --dport 20101 -j ACCEPT" in cmds
    assert "iptables -w -A SFC-demo -p tcp --dport 20101 -j DROP" in cmds
    assert cmds.index("iptables -w -A SFC-demo -s 10.0.0.3/32 -p tcp --dport 20101 -j ACCEPT") < \
        cmds.index("iptables -w -A SFC-demo -p tcp --dport 20101 -j DROP")
    assert cmds[-1] == "iptables -w -I INPUT 1 -j SFC-demo"
    assert [" ".join(c) for c in plan_remove(cluster, "bob", "iptables").commands] == [
        "iptables -w -D INPUT -j SFC-demo", "iptables -w -F SFC-demo", "iptables -w -X SFC-demo"]


def test_iptables_plan_is_the_expected_data_and_accepts_loopback_on_our_ports_only(cluster):
    """INPUT jumps to our chain first: an ACCEPT there beats the site's own INPUT rules, so each one
    names a port of ours (issue 17, item 15: a bare `-i lo -j ACCEPT` let all loopback traffic in)."""
    text = (Path(__file__).parent / "data" / "firewall" / "iptables_bob.txt").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    add, remove = lines[:lines.index("remove:")], lines[lines.index("remove:") + 1:]
    assert [shlex.join(c) for c in plan_add(cluster, "bob", "iptables").commands] == add
    assert [shlex.join(c) for c in plan_remove(cluster, "bob", "iptables").commands] == remove
    for node in ("alice", "bob", "carol"):
        cmds = plan_add(cluster, node, "iptables").commands
        accepts = [c for c in cmds if c[-2:] == ("-j", "ACCEPT")]
        assert all(c[c.index("-p"):c.index("-p") + 4][::2] == ("-p", "--dport") for c in accepts)  # tcp, a port
        lo_ports = [c[c.index("--dport") + 1] for c in cmds if "lo" in c]
        assert lo_ports == [f"{a.port}:{a.port_end}" if a.port != a.port_end else str(a.port)
                            for a in allows_for(cluster, node)]


def test_nftables_plan_is_one_own_table(cluster):
    plan = plan_add(cluster, "carol", "nftables")
    assert plan.commands == (("nft", "-f", "-"),)
    assert plan.stdin.startswith("table inet sfc_demo {")
    assert "ip saddr { 10.0.0.3, 10.0.0.1, 10.0.0.2 } tcp dport 6400-6499 accept" in plan.stdin
    assert "flush" not in plan.stdin  # never touch anyone else's rules
    assert plan_remove(cluster, "carol", "nftables").commands == (("nft", "delete", "table", "inet", "sfc_demo"),)


def test_ufw_prepends_so_allows_end_up_above_denies_and_deletes_the_same_rules(cluster):
    add = plan_add(cluster, "alice", "ufw").commands
    assert all(c[:2] == ("ufw", "prepend") for c in add)
    # each prepend goes to the top: the LAST command is the first rule, so allows are prepended last
    verbs = [c[2] for c in add]
    assert verbs.index("allow") > max(i for i, v in enumerate(verbs) if v == "deny")
    assert all(c[-2:] == ("comment", "sfcluster:demo") for c in add)
    rem = plan_remove(cluster, "alice", "ufw").commands
    assert sorted(c[2:] for c in rem) == sorted(c[2:] for c in add)
    assert all(c[:2] == ("ufw", "delete") for c in rem)


def test_a_plan_digest_changes_with_a_peers_address_whatever_the_backend(cluster):
    moved = parse_inventory(INV.replace("10.0.0.2", "10.0.0.22"))
    for backend in ("iptables", "nftables", "ufw", "firewalld"):
        assert plan_add(cluster, "alice", backend).digest == plan_add(parse_inventory(INV), "alice", backend).digest
        assert plan_add(cluster, "alice", backend).digest != plan_add(moved, "alice", backend).digest
    assert plan_add(cluster, "alice", "ufw").digest != plan_add(cluster, "alice", "firewalld").digest


def test_firewalld_rich_rules_match_on_removal(cluster):
    add = [c[1].split("=", 1)[1] for c in plan_add(cluster, "alice", "firewalld").commands]
    rem = [c[1].split("=", 1)[1] for c in plan_remove(cluster, "alice", "firewalld").commands]
    assert add == rem and any('source address="10.0.0.2"' in r and "accept" in r for r in add)


def test_ray_start_argv_pins_every_port_and_names_the_party(cluster):
    head = head_start_argv(cluster)
    # in the cluster's temp root (the Ray user's): the workers keep that cwd, and SPU writes spu.log there
    assert head[:2] == ["env", "--chdir=/tmp/sfc-demo"]
    assert head[2:6] == ["timeout", "-k", "5", "60"] and head[6] == "/opt/sf/bin/ray"
    assert "--head" in head and "--port=6379" in head and "--temp-dir=/tmp/sfc-demo/r" in head
    assert "--include-dashboard=false" in head and "--disable-usage-stats" in head
    # the party resource is a label of PARTY_RESOURCE units, never the CPU count (that starves runs)
    assert f"--resources={json.dumps({'alice': PARTY_RESOURCE})}" in head and "--num-cpus=2" in head
    w = worker_start_argv(cluster, cluster.node("carol"))
    assert w[:2] == ["env", "--chdir=/tmp/sfc-demo"]
    assert "--address=10.0.0.1:6379" in w and "--num-cpus=4" in w and '--resources={"carol": 1000}' in w
    assert PARTY_RESOURCE >= 16  # SecretFlow's deployment docs: 16 or more
    assert not any(a.startswith("--temp-dir") for a in w)  # honoured on the head only (ray 2.9.3)
    for flag in ("--node-manager-port=6380", "--object-manager-port=6381", "--min-worker-port=6400",
                 "--max-worker-port=6499", "--runtime-env-agent-port=6385", "--node-ip-address=10.0.0.3"):
        assert flag in w


def test_gcs_port_wait_is_bash_only_and_bounded(cluster, tmp_path):
    import socket
    import subprocess
    from sfcluster.raycluster.argv import GCS_WAIT_SCRIPT, gcs_port_wait_argv
    argv = gcs_port_wait_argv(cluster)
    # the script text is constant: host and port travel as its positional arguments ($1, $2)
    assert argv == ["bash", "-c", GCS_WAIT_SCRIPT, "bash", "10.0.0.1", "6379", "1200", "0.05"]
    assert "10.0.0.1" not in argv[2] and "6379" not in argv[2]
    other = parse_inventory(INV.replace("10.0.0.1", "node-a.example.com"))
    assert gcs_port_wait_argv(other)[2] == argv[2] and gcs_port_wait_argv(other)[4] == "node-a.example.com"
    # against loopback: open port -> 0 at once; closed port -> 1 when the tries run out
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    assert subprocess.run([*argv[:4], "127.0.0.1", str(port), *argv[6:]], timeout=10).returncode == 0
    srv.close()
    assert subprocess.run([*argv[:4], "127.0.0.1", str(port), "3", "0.05"], timeout=10).returncode == 1


def test_cluster_def_uses_listen_address_only_where_needed_and_string_protocol(cluster):
    cd = secretflow_config(cluster)["spu_cluster_def"]
    assert cd["runtime_config"] == {"protocol": "SEMI2K", "field": "FM128"}
    nodes = {n["party"]: n for n in cd["nodes"]}
    assert nodes["bob"] == {"party": "bob", "address": "203.0.113.7:20101", "listen_address": "10.0.0.2:20101"}
    assert "listen_address" not in nodes["alice"] and "\"listen_addr\"" not in json.dumps(cd)


def test_spu_link_desc_retries_a_stalled_send_long_before_the_receiver_gives_up(cluster):
    # config.SPU_LINK_DESC: a send retried after http_timeout_ms flushes a write stalled in brpc's
    # SSL buffer; the receiver must still be waiting then (yacl retries a send up to 3 times)
    from sfcluster.config import SPU_LINK_DESC
    ld = secretflow_config(cluster)["spu_link_desc"]
    assert ld == SPU_LINK_DESC and set(ld) <= {"http_timeout_ms", "recv_timeout_ms"}
    assert 4 * (ld["http_timeout_ms"] + 1000) < ld["recv_timeout_ms"]




def test_iptables_chain_names_never_collide_and_fit():
    from sfcluster.firewall import iptables_chain
    a = parse_inventory(INV.replace("cluster: demo", "cluster: " + "x" * 24 + "_one"))
    b = parse_inventory(INV.replace("cluster: demo", "cluster: " + "x" * 24 + "_two"))
    ca, cb = iptables_chain(a), iptables_chain(b)
    assert ca != cb and len(ca) <= 28 and len(cb) <= 28
    assert iptables_chain(parse_inventory(INV)) == "SFC-demo"  # short names stay as they were
