"""Host names never reach a firewall rule (issue 17, item 8): a name in the inventory is resolved
once on the controller, every node's plan gets that same address set, `check` shows it, and a
name that does not resolve is an error naming the party before anything is changed."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from sfcluster.doctor.checks import Report, Status, _privileges_and_firewall
from sfcluster.facts import NodeFacts
from sfcluster.firewall import (FirewallFacts, UnresolvedHost, forget_resolved, peer_addresses, plan_add, plan_remove,
                                probe_fields)
from sfcluster.inventory import parse_inventory

INV = """
cluster: demo
python: /opt/sf/bin/python
nodes:
  alice: {host: 10.0.0.1}
  bob: {host: bob.example}
  carol: {host: 10.0.0.3}
"""
BACKENDS = ("iptables", "nftables", "ufw", "firewalld")


class FakeDns:
    """getaddrinfo with a changing answer: each call for bob.example gives the next address (as a
    round-robin DNS would), so asking twice shows as two address sets."""

    def __init__(self, answers=None) -> None:
        self.calls = []
        self.answers = answers if answers is not None else {"bob.example": ["10.0.0.2", "10.0.0.12", "10.0.0.22"]}
        self.lock = threading.Lock()

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        with self.lock:
            self.calls.append((host, family))
            if host not in self.answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            addrs = self.answers[host]
            ip = addrs[(len([c for c in self.calls if c[0] == host]) - 1) % len(addrs)] if addrs else None
        if ip is None:
            return []
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [(fam, socket.SOCK_STREAM, 6, "", (ip, 0) if fam == socket.AF_INET else (ip, 0, 0, 0))]


@pytest.fixture(autouse=True)
def fresh_resolution():
    forget_resolved()
    yield
    forget_resolved()


@pytest.fixture
def dns(monkeypatch):
    fake = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def every_word(plan) -> str:
    return json.dumps([plan.commands, plan.stdin])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_host_name_reaches_the_rules_as_its_address_only(dns, backend):
    cluster = parse_inventory(INV)
    for node in ("alice", "bob", "carol"):
        for plan in (plan_add(cluster, node, backend), plan_remove(cluster, node, backend)):
            assert "bob.example" not in every_word(plan)  # no argv, no nft ruleset names a host
    add = every_word(plan_add(cluster, "alice", backend))
    assert "10.0.0.2" in add and "10.0.0.12" not in add  # the first answer, and only it
    assert dns.calls == [("bob.example", socket.AF_INET)]  # once, IPv4 (the plans are IPv4)


def test_every_node_gets_the_same_peer_addresses_however_many_threads_ask(dns):
    cluster = parse_inventory(INV)
    plans = {}

    def plan(node: str) -> None:
        plans[node] = plan_add(cluster, node, "iptables").commands

    threads = [threading.Thread(target=plan, args=(n,)) for n in ("alice", "carol", "bob") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bob_sources = {node: {c[c.index("-s") + 1] for c in cmds if "-s" in c} - {"10.0.0.1/32", "10.0.0.3/32"}
                   for node, cmds in plans.items()}
    assert bob_sources["alice"] == bob_sources["carol"] == bob_sources["bob"] == {"10.0.0.2/32"}
    assert len(dns.calls) == 1
    # the probe of each node (what `check` and `status` compare against) reads the same answer
    fields = [probe_fields(cluster, cluster.node(n)) for n in ("alice", "carol")]
    assert all('source address="10.0.0.2"' in " ".join(f["firewalld_rules"]) for f in fields)


def test_a_change_of_dns_is_a_changed_plan(dns):
    cluster = parse_inventory(INV)
    before = {b: plan_add(cluster, "alice", b).digest for b in BACKENDS}
    forget_resolved()  # the next sfcluster command asks again; DNS now answers 10.0.0.12
    after = {b: plan_add(cluster, "alice", b).digest for b in BACKENDS}
    assert all(before[b] != after[b] for b in BACKENDS)


def test_a_name_with_several_addresses_lets_in_all_of_them_in_order(monkeypatch):
    def many(host, *a, **kw):
        assert host == "bob.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in ("10.0.0.9", "10.0.0.10", "10.0.0.9")]
    monkeypatch.setattr(socket, "getaddrinfo", many)
    cluster = parse_inventory(INV)
    assert peer_addresses(cluster).of("bob") == ("10.0.0.9", "10.0.0.10")
    assert peer_addresses(cluster).shown() == "bob: bob.example -> 10.0.0.9, 10.0.0.10"
    ruleset = plan_add(cluster, "alice", "nftables").stdin
    assert "ip saddr { 10.0.0.1, 10.0.0.9, 10.0.0.10, 10.0.0.3 } tcp dport 6379 accept" in ruleset


@pytest.mark.parametrize("answers, says", [({}, "does not resolve"), ({"bob.example": []}, "no IPv4 address"),
                                            ({"bob.example": ["2001:db8::2"]}, "no IPv4 address")])
def test_a_name_that_gives_no_ipv4_address_is_an_error_naming_the_party(monkeypatch, answers, says):
    monkeypatch.setattr(socket, "getaddrinfo", FakeDns(answers))
    cluster = parse_inventory(INV)
    for backend in BACKENDS:
        with pytest.raises(UnresolvedHost) as e:
            plan_add(cluster, "alice", backend)
        assert "[bob]" in e.value.message and "nodes.bob.host 'bob.example'" in e.value.message and says in e.value.message
        assert "nothing was changed" in e.value.message and "nodes.bob.host" in e.value.hint


def test_an_ipv6_host_is_refused_not_written_into_ipv4_rules():
    cluster = parse_inventory(INV.replace("bob.example", "'2001:db8::2'"))
    with pytest.raises(UnresolvedHost, match=r"\[bob\] nodes.bob.host is the IPv6 address 2001:db8::2"):
        plan_add(cluster, "alice", "iptables")


def test_status_and_down_still_probe_when_a_name_does_not_resolve(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", FakeDns({}))
    cluster = parse_inventory(INV)
    fields = probe_fields(cluster, cluster.node("alice"))
    assert fields["firewalld_rules"] == [] and fields["ufw_expect"] == [-1, -1]  # never "complete"
    assert fields["iptables_chain"] == "SFC-demo"  # our rules are still found by their names
    # iptables and nftables remove by name: no address needed
    assert plan_remove(cluster, "alice", "iptables").commands[0][-1] == "SFC-demo"


def facts_of(node: str) -> NodeFacts:
    return NodeFacts(node=node, hostname=node, user="sfops", python="3.10.13", ray=None, secretflow=None, spu=None,
                     addresses=[], ports={}, ray_processes=[], sudo="root", firewall=FirewallFacts("iptables"),
                     mem_available=None, shm_free=None, tmp_free=None)


def test_check_shows_the_resolved_addresses_on_every_nodes_firewall_row(dns):
    cluster = parse_inventory(INV)
    report = Report()
    for n in ("alice", "bob", "carol"):
        _privileges_and_firewall(cluster, report, facts_of(n))
    rows = [c for c in report.checks if c.name == "firewall"]
    assert [c.status for c in rows] == [Status.OK] * 3
    assert all(c.detail.endswith("rules carry addresses resolved here: bob: bob.example -> 10.0.0.2") for c in rows)


def test_check_fails_the_firewall_row_naming_a_host_that_does_not_resolve(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", FakeDns({}))
    cluster = parse_inventory(INV)
    report = Report()
    _privileges_and_firewall(cluster, report, facts_of("alice"))
    (row,) = [c for c in report.checks if c.name == "firewall"]
    assert row.status is Status.FAIL and "[bob]" in row.detail and "bob.example" in row.detail
    assert "nodes.bob.host" in row.fix
    # firewall: check adds no rules: a name is fine there
    report = Report()
    _privileges_and_firewall(parse_inventory(INV + "firewall: check\n"), report, facts_of("alice"))
    assert [c.status for c in report.checks if c.name == "firewall"] == [Status.OK]
