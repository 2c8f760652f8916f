"""A federation in production mode: each organisation's operator touches only its own party's node
(`--party`), keeps its own CA and trusts the peers' CA certificates (`nodes.<party>.ca_cert`).
Pure logic: the inventory's `ca_cert`, `--party`'s cluster view, the trust bundle a node gets, and
the refusals that come before any node is touched."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest
from cryptography import x509

from sfcluster.connect import Nodes
from sfcluster.errors import InventoryError, SfclusterError
from sfcluster.exitcodes import Exit
from sfcluster.inventory import parse_inventory
from sfcluster.inventory.load import load_inventory, operated_by
from sfcluster.run import production
from sfcluster.run.driver import RunOptions
from sfcluster.tls import pki
from sfcluster.tls.install import expected_ca_pem, peer_cas
from sfcluster.upplan import plan_up

from tests.unit.test_upplan import node_facts

FED = dedent("""
    cluster: fed
    mode: production
    tls: on
    nodes:
      alice: {host: 10.0.0.1}
      bob: {host: 10.0.0.2, ca_cert: bob-ca.pem}
      carol: {host: 10.0.0.3, ca_cert: carol-ca.pem}
""").lstrip()


def ca_file(tmp_path: Path, name: str, data: bytes = b"") -> bytes:
    pem = data or pki.new_ca(name).cert_pem
    (tmp_path / f"{name}-ca.pem").write_bytes(pem)
    return pem


@pytest.fixture
def fed(tmp_path):
    pems = {p: ca_file(tmp_path, p) for p in ("bob", "carol")}
    inv = tmp_path / "inventory.yaml"
    inv.write_text(FED)
    return load_inventory(str(inv)), pems, inv


def problems(tmp_path: Path, text: str) -> str:
    inv = tmp_path / "bad.yaml"
    inv.write_text(text)
    with pytest.raises(InventoryError) as ei:
        load_inventory(str(inv))
    return "\n".join(ei.value.problems)


def test_ca_cert_is_resolved_next_to_the_inventory_and_read_as_one_ca_certificate(fed, tmp_path):
    cluster, _, _ = fed
    assert cluster.node("bob").ca_cert == str(tmp_path / "bob-ca.pem")
    assert cluster.node("alice").ca_cert is None


@pytest.mark.parametrize("content, why", [
    (b"not a certificate", "not a PEM certificate"),
    (b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", "holds a private key"),
    ("two", "2 certificates: expected exactly one"),
    ("leaf", "not a CA certificate"),
])
def test_a_ca_cert_that_is_not_one_ca_certificate_is_refused_naming_path_and_line(tmp_path, content, why):
    ca = pki.new_ca("bob")
    if content == "two":
        content = ca.cert_pem + pki.new_ca("x").cert_pem
    elif content == "leaf":  # a node's certificate, as a confused operator might send it
        content = ca.issue("bob", ["10.0.0.2"])[1]
    ca_file(tmp_path, "bob", content)
    ca_file(tmp_path, "carol")
    out = problems(tmp_path, FED)
    assert "nodes.bob.ca_cert (line 6): " in out and why in out, out


def test_a_missing_ca_cert_file_and_ca_cert_in_simulation_mode_are_refused(tmp_path):
    ca_file(tmp_path, "carol")
    assert "nodes.bob.ca_cert (line 6): cannot read " in problems(tmp_path, FED)
    ca_file(tmp_path, "bob")
    out = problems(tmp_path, FED.replace("mode: production\n", ""))
    assert "nodes.bob.ca_cert" in out and "is for production mode" in out, out


def test_party_view_touches_only_the_named_party_and_locks_there(fed):
    cluster, _, _ = fed
    bob = operated_by(cluster, ["bob"])
    assert bob.operated_names == ("bob",) and bob.federated and bob.lock_party == "bob"
    assert [n.name for n in bob.nodes] == ["alice", "bob", "carol"]  # every party's address stays known
    with Nodes(bob) as nodes:   # SSH runners only for bob: alice's and carol's nodes are never dialled
        assert list(nodes.runners) == ["bob"]
    assert operated_by(cluster, ["alice"]).lock_party == "alice"
    everyone = operated_by(cluster, ["alice", "bob", "carol"])
    assert not everyone.federated and everyone.lock_party == "alice"
    assert not cluster.federated and cluster.operated_names == ("alice", "bob", "carol")


def test_party_refusals_name_the_option(fed):
    cluster, _, _ = fed
    with pytest.raises(InventoryError) as ei:
        operated_by(cluster, ["dave"])
    assert ei.value.exit_code == Exit.CONFIG and "--party: no party 'dave'" in str(ei.value)
    sim = parse_inventory("cluster: s\nnodes:\n  a: {host: 10.0.0.1}\n  b: {host: 10.0.0.2}\n")
    with pytest.raises(InventoryError) as ei:
        operated_by(sim, ["a"])
    assert "is for production mode" in str(ei.value)


def test_a_node_trusts_its_own_ca_and_exactly_the_peers_cas(fed):
    cluster, pems, _ = fed
    own = pki.new_ca("fed")
    bundle = expected_ca_pem(operated_by(cluster, ["alice"]), own)
    certs = x509.load_pem_x509_certificates(bundle)
    assert [c.subject.rfc4514_string() for c in certs] == [
        "CN=sfcluster CA fed", "CN=sfcluster CA bob", "CN=sfcluster CA carol"]
    # one operator of every party (not a federation): the cluster's one CA, as before
    assert expected_ca_pem(cluster, own) == own.cert_pem
    # bob's operator: its own CA and carol's; alice gave none, so bob cannot verify alice
    with pytest.raises(SfclusterError) as ei:
        peer_cas(operated_by(cluster, ["bob"]))
    assert "nodes.alice.ca_cert" in ei.value.message and "sfcluster ca" in (ei.value.hint or "")


def test_trust_bundle_keeps_each_ca_once_own_first():
    a, b = pki.new_ca("a").cert_pem, pki.new_ca("b").cert_pem
    out = pki.trust_bundle(a, [b, a, b])
    assert [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(out)] == [
        "CN=sfcluster CA a", "CN=sfcluster CA b"]


def test_up_plan_of_one_party_needs_no_facts_of_the_others(fed):
    bob = operated_by(fed[0], ["bob"])
    plan = plan_up(bob, {"bob": node_facts(bob, "bob")})   # the head (alice) is another operator's
    assert [s.node for s in plan.firewall] == ["bob"] and not plan.start_head and plan.start_workers == ()


def test_a_federated_run_needs_the_agreed_run_id_before_touching_a_node(fed, tmp_path):
    bob = operated_by(fed[0], ["bob"])
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    with pytest.raises(SfclusterError) as ei:
        production.run(bob, None, RunOptions(script=str(script)), out=print, err=print, note=print)  # type: ignore[arg-type]
    assert "same run id" in ei.value.message and "--run-id 2" in (ei.value.hint or "")


def cli(*args: str, state: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sfcluster.cli.main", *args], capture_output=True, text=True,
                          env=dict(os.environ, SFCLUSTER_STATE_DIR=str(state)), timeout=60)


def test_ca_prints_this_controllers_ca_certificate_and_never_its_key(fed, tmp_path):
    _, _, inv = fed
    state = tmp_path / "state"
    first = cli("ca", "-i", str(inv), "--party", "alice", state=state)
    assert first.returncode == 0, first.stderr
    assert "PRIVATE" not in first.stdout and pki.ca_cert_problem(first.stdout.encode()) is None
    again = cli("ca", "-i", str(inv), "--party", "alice", "--json", state=state)
    data = json.loads(again.stdout)
    assert data["cert_pem"] == first.stdout and data["fingerprint"] in first.stderr  # the same CA, kept
    assert "PRIVATE" not in again.stdout


def test_run_id_is_refused_in_simulation_mode_and_checked_for_form(tmp_path):
    inv = tmp_path / "sim.yaml"
    inv.write_text("cluster: s\nnodes:\n  a: {host: 10.0.0.1}\n  b: {host: 10.0.0.2}\n")
    script = tmp_path / "x.py"
    script.write_text("")
    p = cli("run", "-i", str(inv), "--run-id", "20261203-170000-a1b2c3", str(script), state=tmp_path / "st")
    assert p.returncode == 1 and "--run-id is for production mode" in p.stderr, p.stderr
    p = cli("run", "-i", str(inv), "--run-id", "../../etc", str(script), state=tmp_path / "st")
    assert p.returncode == 2 and "is not a run id" in p.stderr, p.stderr


def test_only_a_federated_party_watches_its_peers_ports(fed):
    cluster, _, _ = fed
    opts = RunOptions(script="train.py")
    bob = operated_by(cluster, ["bob"])
    assert production._request(bob, opts, "r", "bob", "/d", "t")["peers"] == {
        "alice": ["10.0.0.1", 20200], "carol": ["10.0.0.3", 20202]}
    # one operator of every party: its controller sees every driver and stops the rest itself
    assert production._request(cluster, opts, "r", "bob", "/d", "t")["peers"] == {}
