"""`up`'s plan (upplan.py) as a table: node facts in, actions out (firewall rules to add and why,
the head and the workers to start), or the refusal, without a node or a harness."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import pytest

from sfcluster.lifecycle import bringup, preflight
from sfcluster.connect import Nodes
from sfcluster.errors import PlanError, PrivilegeError
from sfcluster.facts import NodeFacts
from sfcluster.firewall import FirewallFacts, Recorded, plan_add
from sfcluster.inventory import parse_inventory
from sfcluster.inventory.model import Cluster
from sfcluster.remote.group import GroupResult
from sfcluster.firewall.steps import FirewallStep
from sfcluster.upplan import UpPlan, plan_up

INV = """
cluster: demo
python: /opt/sf/bin/python
firewall: {mode}
nodes:
  alice: {{host: 10.0.0.1}}
  bob: {{host: 10.0.0.2}}
  carol: {{host: 10.0.0.3}}
"""
NODES = ("alice", "bob", "carol")  # alice is the head


def cluster_for(mode: str) -> Cluster:
    if mode == "open-bob-none":  # firewall: open, bob opted out explicitly
        return parse_inventory(INV.format(mode="open").replace("bob: {host: 10.0.0.2}",
                                                               "bob: {host: 10.0.0.2, firewall_backend: none}"))
    return parse_inventory(INV.format(mode=mode))


def firewall(cluster: Cluster, node: str, backend: str, rules: str) -> FirewallFacts:
    """Our rules on `node` as the probe reads them: absent, current (complete, the record names the
    plan of this inventory), incomplete, older (complete, the record names another plan) or
    unrecorded (complete, no record: added by an older sfcluster)."""
    record = Recorded(backend, plan_add(cluster, node, backend).digest)
    return {"absent": FirewallFacts(backend),
            "current": FirewallFacts(backend, True, True, record=record),
            "incomplete": FirewallFacts(backend, True, False, missing="ray_gcs", record=record),
            "older": FirewallFacts(backend, True, True, record=Recorded(backend, "digest-of-an-older-plan")),
            "unrecorded": FirewallFacts(backend, True, True)}[rules]


def raylet(pid: int, ours: bool, cluster: Optional[str] = None) -> Dict[str, Any]:
    p: Dict[str, Any] = {"pid": pid, "kind": "raylet", "ours": ours, "name": "raylet", "cmdline": "raylet ..."}
    if cluster:
        p["cluster"] = cluster
    return p


RAY = {
    "down": [],
    "ours": [raylet(101, True)],
    "foreign": [raylet(4242, False)],                             # a Ray sfcluster did not start
    "demo2": [raylet(202, False, "demo2")],                       # another sfcluster cluster's Ray
    "demo2+ours": [raylet(202, False, "demo2"), raylet(101, True)],
}


def node_facts(cluster: Cluster, node: str, *, ray: str = "down", backend: str = "iptables", rules: str = "absent",
               sudo: str = "root") -> NodeFacts:
    return NodeFacts(node=node, hostname=node, user="sfops", python="3.10.13", ray="2.9.3", secretflow="1.5.0",
                     spu="0.9.0", addresses=[], ports={}, ray_processes=list(RAY[ray]), sudo=sudo,
                     firewall=firewall(cluster, node, backend, rules), mem_available=None, shm_free=None,
                     tmp_free=None)


def facts_for(cluster: Cluster, spec: Dict[str, Dict[str, str]]) -> Dict[str, NodeFacts]:
    """One NodeFacts per node, in the inventory's order; a node not in `spec` is fresh (no Ray,
    iptables without our rules, root)."""
    return {n: node_facts(cluster, n, **spec.get(n, {})) for n in NODES}


UP = {"ray": "ours", "rules": "current"}
ALL_UP = {n: UP for n in NODES}
FRESH_START = (True, ("bob", "carol"))
Steps = Dict[str, Tuple[str, str]]  # node -> (action, backend)

PLANS = [
    # id, firewall mode, node facts, firewall steps, (start head, workers to start)
    ("fresh, open: rules everywhere, start all", "open", {},
     {"alice": ("add", "iptables"), "bob": ("add", "iptables"), "carol": ("add", "iptables")}, FRESH_START),
    ("fresh, open: each node's own backend", "open",
     {"alice": {"backend": "ufw"}, "bob": {"backend": "firewalld"}, "carol": {"backend": "nftables"}},
     {"alice": ("add", "ufw"), "bob": ("add", "firewalld"), "carol": ("add", "nftables")}, FRESH_START),
    ("fresh, check: backend none/unknown is not up's business", "check",
     {"bob": {"backend": "none"}, "carol": {"backend": "unknown"}}, {}, FRESH_START),
    ("fresh, check: no firewall action", "check", {}, {}, FRESH_START),
    ("fresh, off: no firewall action", "off", {}, {}, FRESH_START),
    ("already up: nothing", "open", ALL_UP, {}, (False, ())),
    ("already up, check, no rules: nothing", "check", {n: {"ray": "ours"} for n in NODES}, {}, (False, ())),
    ("head up, bob down: only bob", "open", {**ALL_UP, "bob": {"rules": "current"}}, {}, (False, ("bob",))),
    ("head down, workers up: only the head", "open", {**ALL_UP, "alice": {"rules": "current"}}, {}, (True, ())),
    ("incomplete rules: repair", "open", {**ALL_UP, "bob": {"ray": "ours", "rules": "incomplete", "backend": "ufw"}},
     {"bob": ("repair", "ufw")}, (False, ())),
    ("record names another plan: replace", "open",
     {**ALL_UP, "carol": {"ray": "ours", "rules": "older", "backend": "firewalld"}},
     {"carol": ("replace", "firewalld")}, (False, ())),
    ("complete rules without a record: left alone", "open", {n: {"ray": "ours", "rules": "unrecorded"} for n in NODES},
     {}, (False, ())),
    ("repair and replace skipped in check", "check",
     {**ALL_UP, "bob": {"ray": "ours", "rules": "incomplete"}, "carol": {"ray": "ours", "rules": "older"}},
     {}, (False, ())),
    ("explicit firewall_backend: none opts a node out", "open-bob-none",
     {**ALL_UP, "bob": {"ray": "ours", "rules": "incomplete", "backend": "none"}}, {}, (False, ())),
    ("another sfcluster cluster's Ray is not foreign", "open", {**ALL_UP, "bob": {"ray": "demo2", "rules": "current"}},
     {}, (False, ("bob",))),
    ("ours beside another cluster's: up", "open", {**ALL_UP, "bob": {"ray": "demo2+ours", "rules": "current"}},
     {}, (False, ())),
    ("password sudo without firewall: open is fine", "check", {"bob": {"sudo": "password"}}, {}, FRESH_START),
    ("password sudo with firewall: off is fine", "off", {"bob": {"sudo": "password"}}, {}, FRESH_START),
]


@pytest.mark.parametrize("mode,spec,steps,starts", [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_plan(mode: str, spec: Dict[str, Dict[str, str]], steps: Steps, starts: Tuple[bool, Tuple[str, ...]]) -> None:
    cluster = cluster_for(mode)
    plan = plan_up(cluster, facts_for(cluster, spec))
    assert {s.node: (s.action, s.backend) for s in plan.firewall} == steps
    assert (plan.start_head, plan.start_workers) == starts


def test_the_plan_is_plain_data_in_node_order() -> None:
    cluster = cluster_for("open")
    plan = plan_up(cluster, facts_for(cluster, {"alice": UP, "bob": {"backend": "ufw"}, "carol": {"rules": "older"}}))
    assert plan == UpPlan(firewall=(FirewallStep("bob", "ufw", "add"), FirewallStep("carol", "iptables", "replace")),
                          start_head=False, start_workers=("bob", "carol"))
    assert plan.firewall_backends == {"bob": "ufw", "carol": "iptables"}


REFUSALS = [
    # id, firewall mode, node facts, error, what its message names
    ("foreign Ray", "open", {"carol": {"ray": "foreign"}}, PlanError, ["[carol]", "not cluster 'demo'", "raylet pid 4242"]),
    ("foreign Ray, whatever the firewall mode", "off", {"bob": {"ray": "foreign"}}, PlanError, ["[bob]", "pid 4242"]),
    ("foreign Ray goes before password sudo", "open", {"alice": {"sudo": "password"}, "carol": {"ray": "foreign"}},
     PlanError, ["[carol]"]),
    ("password sudo, firewall open", "open", {"bob": {"sudo": "password"}}, PrivilegeError,
     ["[bob]", "`iptables -w -N SFC-demo`", "user sfops", "passwordless sudo for sfops on bob"]),
    ("password sudo names its backend's first command", "open", {"bob": {"sudo": "password", "backend": "ufw"}},
     PrivilegeError, ["[bob]", "`ufw prepend "]),
    ("password sudo, backend unknown: iptables's command", "open",
     {"carol": {"sudo": "password", "backend": "unknown"}}, PrivilegeError, ["[carol]", "`iptables -w -N SFC-demo`"]),
    # firewall: open never ends in an unfiltered cluster
    ("open, no firewall tool: refused naming the node", "open", {"bob": {"backend": "none"}}, PlanError,
     ["[bob]", "no firewall tool", "firewall_backend: none"]),
    ("open, firewall unreadable: refused", "open", {"carol": {"backend": "unknown"}}, PlanError, ["[carol]", "sudo"]),
    ("open, no sudo at all: refused", "open", {"bob": {"sudo": "absent"}}, PlanError, ["[bob]", "sudo is not installed"]),
    ("password sudo with current rules", "open", {**ALL_UP, "bob": {**UP, "sudo": "password"}}, PrivilegeError,
     ["[bob]"]),
]


@pytest.mark.parametrize("mode,spec,error,names", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusal(mode: str, spec: Dict[str, Dict[str, str]], error: type, names: list) -> None:
    cluster = cluster_for(mode)
    with pytest.raises(error) as e:
        plan_up(cluster, facts_for(cluster, spec))
    assert type(e.value) is error
    for text in names:
        assert text in str(e.value)


class Untouchable:
    """A Runner that fails the test when `up` runs anything on its node."""

    user = "sfops"

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, argv, **kw):  # noqa: ANN001, ANN003
        raise AssertionError(f"{self.name}: ran {argv[:3]} although the plan refused")

    def close(self) -> None:
        pass


def test_up_refuses_before_touching_any_node(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    cluster = cluster_for("open")
    facts = facts_for(cluster, {"carol": {"sudo": "password"}})
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(preflight, "gather_all", lambda *a, **kw: GroupResult(results=facts))
    nodes = Nodes(cluster, runners={n: Untouchable(n) for n in NODES})
    with pytest.raises(PrivilegeError, match=r"\[carol\]"):
        bringup._up(cluster, nodes, skip_check=True, keep_on_failure=False, progress=lambda n, m: None,
                      join_timeout=1)  # _up: without the cluster lock
    assert not list(tmp_path.iterdir())  # no state saved either


@pytest.mark.parametrize("dashboard,missing,row", [
    (8265, ["aiohttp-cors", "opencensus"], "FAIL"),   # secretflow-lite's plain `ray`: the head would not start
    (8265, [], None),                                # ray[default] there
    (None, ["aiohttp-cors"], None),                  # no dashboard asked for: nothing to say
])
def test_check_fails_a_dashboard_the_heads_venv_cannot_start(dashboard, missing, row):
    from sfcluster.doctor.checks import Report, _dashboard
    cluster = parse_inventory(INV.format(mode="open") + (f"ports: {{dashboard: {dashboard}}}\n" if dashboard else ""))
    report = Report()
    report.facts = facts_for(cluster, {})
    report.facts["alice"].raw["dashboard_missing"] = missing if dashboard else []
    _dashboard(cluster, report)
    got = [(c.node, c.status.value, c.detail, c.fix) for c in report.checks]
    if row is None:
        assert got == []
    else:
        [(node, status, detail, fix)] = got
        assert (node, status) == ("alice", row) and "aiohttp-cors, opencensus" in detail
        assert "ray[default]==2.9.3" in fix and "remove ports.dashboard" in fix
