"""The port plan: who binds which port, and which parties must reach it. Pure, no network."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sfcluster.inventory import load_inventory, parse_inventory
from sfcluster.inventory.model import Cluster
from sfcluster.inventory.ports import RAY_DEFAULT_RANGES, PortEntry, PortPlan, plan_ports, spu_clashes_with_ray_defaults

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
PARTIES = ("alice", "bob", "carol")
REACHABLE = ("node_manager", "object_manager", "worker_ports", "spu")     # on every node, from all peers
LOCAL_ONLY = ("metrics_export", "dashboard_agent_grpc", "dashboard_agent_http", "runtime_env_agent")


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_inventory(str(EXAMPLE))


@pytest.fixture(scope="module")
def plan(cluster) -> PortPlan:
    return plan_ports(cluster)


def with_spu_port(cluster: Cluster, name: str, port: int) -> Cluster:
    nodes = tuple(dataclasses.replace(n, spu_port=port) if n.name == name else n for n in cluster.nodes)
    return dataclasses.replace(cluster, nodes=nodes)


def test_head_gcs_reachable_by_all_workers(cluster, plan):
    gcs = plan.find("alice", "ray_gcs")
    assert gcs.port == 6379 and not gcs.is_range
    assert set(gcs.reachers) == {"bob", "carol"} == {w.name for w in cluster.workers}
    for worker in ("bob", "carol"):
        with pytest.raises(KeyError):
            plan.find(worker, "ray_gcs")


def test_head_follows_head_name():
    c = parse_inventory("cluster: c\nhead: bob\nnodes:\n  alice: {host: 10.0.0.1}\n  bob: {host: 10.0.0.2}\n")
    p = plan_ports(c)
    assert p.find("bob", "ray_gcs").reachers == ("alice",)
    assert p.find("bob", "ray_client_server").reachers == ()
    with pytest.raises(KeyError):
        p.find("alice", "ray_gcs")


@pytest.mark.parametrize("node", PARTIES)
@pytest.mark.parametrize("purpose", REACHABLE)
def test_every_node_reachable_ports_from_all_other_parties(plan, node, purpose):
    e = plan.find(node, purpose)
    assert set(e.reachers) == set(PARTIES) - {node}
    assert len(e.reachers) == len(PARTIES) - 1
    assert e.binds_here


def test_reachable_ports_values(cluster, plan):
    r = cluster.ray
    for n in cluster.nodes:
        assert plan.find(n.name, "node_manager").port == r.node_manager == 6380
        assert plan.find(n.name, "object_manager").port == r.object_manager == 6381
        w = plan.find(n.name, "worker_ports")
        assert (w.port, w.port_end) == (r.worker_min, r.worker_max) == (6400, 6499)
        assert w.is_range and w.label == "6400-6499"
        assert plan.find(n.name, "spu").port == n.spu_port
    assert [plan.find(p, "spu").port for p in PARTIES] == [20100, 20101, 20102]


@pytest.mark.parametrize("node", PARTIES)
@pytest.mark.parametrize("purpose", LOCAL_ONLY)
def test_local_only_ports_have_no_reachers(plan, node, purpose):
    e = plan.find(node, purpose)
    assert e.reachers == ()
    assert e not in list(plan.reachable())


def test_client_server_is_local_only_on_head(plan):
    assert plan.find("alice", "ray_client_server").reachers == ()
    assert plan.find("alice", "ray_client_server").port == 10001


def test_dashboard_off_by_default_local_only_when_given(cluster, plan):
    assert not [e for e in plan.entries if e.purpose == "dashboard"]
    c = dataclasses.replace(cluster, ray=dataclasses.replace(cluster.ray, dashboard=8265))
    dash = [e for e in plan_ports(c).entries if e.purpose == "dashboard"]
    assert len(dash) == 1
    assert (dash[0].node, dash[0].port, dash[0].reachers) == ("alice", 8265, ())


def test_reachable_and_for_node(plan):
    reach = list(plan.reachable())
    assert all(e.reachers for e in reach)
    assert {(e.node, e.purpose) for e in reach} == (
        {("alice", "ray_gcs")} | {(n, p) for n in PARTIES for p in REACHABLE})
    head = {e.purpose for e in plan.for_node("alice")}
    worker = {e.purpose for e in plan.for_node("bob")}
    assert head == worker | {"ray_gcs", "ray_client_server"}
    assert worker == set(REACHABLE) | set(LOCAL_ONLY)
    assert plan.for_node("dave") == []
    assert len(plan.entries) == sum(len(plan.for_node(p)) for p in PARTIES)


def test_find_unknown_raises_keyerror(plan):
    with pytest.raises(KeyError):
        plan.find("alice", "nope")


def test_probe_ports():
    rng = PortEntry("a", 6400, "worker_ports", ("b",), port_end=6499)
    assert rng.probe_ports() == (6400, 6499)
    one = PortEntry("a", 6380, "node_manager", ("b",))
    assert one.port_end == 6380 and not one.is_range
    assert one.probe_ports() == (6380,) and one.label == "6380"


def test_probe_ports_of_plan(plan):
    assert plan.find("bob", "worker_ports").probe_ports() == (6400, 6499)
    assert plan.find("bob", "spu").probe_ports() == (20101,)


def test_pinned_ray_ports_are_used():
    c = parse_inventory(
        "cluster: c\nports:\n  ray_gcs: 7379\n  node_manager: 7380\n  object_manager: 7381\n"
        "  worker_ports: {start: 30000, count: 10}\n  spu_base: 40000\n"
        "nodes:\n  alice: {host: 10.0.0.1}\n  bob: {host: 10.0.0.2}\n")
    p = plan_ports(c)
    assert p.find("alice", "ray_gcs").port == 7379
    assert p.find("bob", "node_manager").port == 7380
    assert p.find("bob", "object_manager").port == 7381
    assert p.find("bob", "worker_ports").probe_ports() == (30000, 30009)
    assert (p.find("alice", "spu").port, p.find("bob", "spu").port) == (40000, 40001)


def test_plan_is_pure(cluster):
    assert plan_ports(cluster) == plan_ports(cluster)


# --------------------------------------------------------------------------------------------
# SPU ports vs Ray's default ranges
# --------------------------------------------------------------------------------------------

def test_default_spu_ports_outside_ray_defaults(cluster):
    for n in cluster.nodes:
        assert not any(lo <= n.spu_port <= hi for lo, hi, _ in RAY_DEFAULT_RANGES)
    assert spu_clashes_with_ray_defaults(cluster) == []


def test_spu_port_15000_is_reported(cluster):
    c = with_spu_port(cluster, "bob", 15000)
    assert spu_clashes_with_ray_defaults(c) == [
        "bob: SPU port 15000 is inside Ray default worker ports (10002-19999)"]


@pytest.mark.parametrize("lo, hi, what", RAY_DEFAULT_RANGES)
def test_each_ray_default_range_edges(cluster, lo, hi, what):
    for port in {lo, hi}:
        out = spu_clashes_with_ray_defaults(with_spu_port(cluster, "carol", port))
        assert out == [f"carol: SPU port {port} is inside {what} ({lo}-{hi})"]
    for port in (lo - 1, hi + 1):
        if not any(a <= port <= b for a, b, _ in RAY_DEFAULT_RANGES):
            assert spu_clashes_with_ray_defaults(with_spu_port(cluster, "carol", port)) == []


# --------------------------------------------------------------------------------------------
# to_json
# --------------------------------------------------------------------------------------------

def test_to_json_shape_and_round_trip(plan):
    data = plan.to_json()
    assert isinstance(data, list) and len(data) == len(plan.entries)
    assert json.loads(json.dumps(data)) == data
    for d, e in zip(data, plan.entries):
        assert set(d) == {"node", "port", "port_end", "purpose", "reachers"}
        assert isinstance(d["reachers"], list)
        assert (d["node"], d["port"], d["port_end"], d["purpose"], tuple(d["reachers"])) == (
            e.node, e.port, e.port_end, e.purpose, e.reachers)
    rebuilt = PortPlan(tuple(PortEntry(d["node"], d["port"], d["purpose"], tuple(d["reachers"]), d["port_end"])
                             for d in json.loads(json.dumps(data))))
    assert rebuilt == plan
    gcs = next(d for d in data if d["purpose"] == "ray_gcs")
    assert gcs == {"node": "alice", "port": 6379, "port_end": 6379, "purpose": "ray_gcs",
                   "reachers": ["bob", "carol"]}
    workers = next(d for d in data if d["node"] == "carol" and d["purpose"] == "worker_ports")
    assert (workers["port"], workers["port_end"], workers["reachers"]) == (6400, 6499, ["alice", "bob"])
