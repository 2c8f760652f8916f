"""`up --rotate-certs` (tls/install.ensure_certs with rotate): a NEW CA for the cluster, the old one
deleted, every node's ca.pem replaced and every node certificate reissued from the new CA, so a
certificate and key from before the rotation (a leaked one) are useless: they no longer verify,
and a real mutual-TLS handshake over loopback with them is refused. A rotation that misses a node
says so, and `check` (tls/install.inspect) flags that node with the fix.

The nodes are simulated here: each has its own home (SFCLUSTER_NODE_HOME) and runs sfcluster's own
node scripts (tls_check.py, ship.sh) as the nodes run them."""
from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from sfcluster.connect import Nodes
from sfcluster.errors import SfclusterError
from sfcluster.inventory import parse_inventory
from sfcluster.remote.base import Result
from sfcluster.tls import install, pki

INVENTORY = "cluster: demo\nnodes: {a: {host: 10.0.0.1}, b: {host: 10.0.0.2}}\n"


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "controller"
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(d))
    return d


class LocalNode:
    """A node of the test: commands run here with the node's home; the node's Python is ours.
    `refuse_copies`: every file copy to it fails (a node that drops out mid-rotation)."""

    user = "me"

    def __init__(self, name: str, home: Path) -> None:
        self.name, self.home = name, home
        home.mkdir(mode=0o700)
        self.env = dict(os.environ, SFCLUSTER_NODE_HOME=str(home))
        self.refuse_copies = False

    def run(self, argv, *, sudo: bool = False, timeout: Optional[float] = None, stdin=None) -> Result:
        argv = list(argv)
        if argv[0] == "sh" and self.refuse_copies:
            return Result(self.name, "ship", 255, "", "ssh: connect to host: Connection refused")
        if argv[0] != "sh":
            argv = [sys.executable, *argv[1:]]
        data = stdin.encode() if isinstance(stdin, str) else stdin
        p = subprocess.run(argv, input=data, capture_output=True, timeout=timeout or 60, env=self.env)
        return Result(self.name, argv[0], p.returncode, p.stdout.decode(), p.stderr.decode())

    def close(self) -> None:
        pass

    def tls(self) -> Path:
        return self.home / ".sfcluster" / "demo" / "tls"

    def files(self) -> Dict[str, bytes]:
        return {n: (self.tls() / n).read_bytes() for n in ("node.key", "node.pem", "ca.pem")}


def cluster_of(tmp_path: Path):
    cluster = parse_inventory(INVENTORY)
    runners = {n: LocalNode(n, tmp_path / f"home-{n}") for n in cluster.party_names}
    return cluster, Nodes(cluster, runners=runners), runners


def write_pair(tmp_path: Path, tag: str, key: bytes, cert: bytes) -> Tuple[Path, Path]:
    k, c = tmp_path / f"{tag}.key", tmp_path / f"{tag}.pem"
    k.write_bytes(key)
    os.chmod(k, 0o600)
    c.write_bytes(cert)
    return c, k


def server_context(tmp_path: Path, files: Dict[str, bytes]) -> ssl.SSLContext:
    """A node's TLS server as Ray's and SPU's is set up: its pair, peers verified against its ca.pem,
    a client certificate required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*write_pair(tmp_path, "server", files["node.key"], files["node.pem"]))
    ctx.load_verify_locations(cadata=files["ca.pem"].decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(tmp_path: Path, tag: str, key: bytes, cert: bytes, trust: Optional[bytes]) -> ssl.SSLContext:
    """A client presenting (key, cert); trust=None: it does not check the server at all (an
    intruder holding a leaked key only wants in)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(*write_pair(tmp_path, tag, key, cert))
    if trust is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=trust.decode())
    return ctx


def loopback_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> Dict[str, object]:
    """One mutual-TLS exchange over a TCP connection on 127.0.0.1: what each side saw."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    seen: Dict[str, object] = {}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                seen["server_peer"] = s.getpeercert()
                s.sendall(b"ok")
        except (ssl.SSLError, OSError) as e:
            seen["server_error"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as c:
                seen["client_got"] = c.recv(2)
    except (ssl.SSLError, OSError) as e:
        seen["client_error"] = e
    finally:
        t.join(15)
        listener.close()
    return seen


def test_rotation_makes_a_new_ca_and_every_old_certificate_useless(state, tmp_path):
    cluster, nodes, runners = cluster_of(tmp_path)
    install.ensure_certs(cluster, nodes)
    old_ca = pki.load_ca("demo")
    old = {n: r.files() for n, r in runners.items()}
    assert all(f["ca.pem"] == old_ca.cert_pem for f in old.values())
    notes = []
    install.ensure_certs(cluster, nodes, rotate=True, progress=lambda n, m: notes.append((n, m)))
    new_ca = pki.load_ca("demo")
    new = {n: r.files() for n, r in runners.items()}

    # a new CA on the controller; the old one (its key) is gone from the controller's disk
    assert new_ca.cert_pem != old_ca.cert_pem
    old_key = pki._key_pem(old_ca.key)
    for root, _dirs, names in os.walk(state):
        for name in names:
            assert (Path(root) / name).read_bytes() != old_key, f"the old CA key survived in {root}/{name}"
    assert sorted(os.listdir(state / "demo")) == ["ca"]
    assert any(n == "controller" and "new CA" in m for n, m in notes), notes
    # every node: ca.pem is the new CA, a new pair from it
    for n, f in new.items():
        assert f["ca.pem"] == new_ca.cert_pem and f["node.key"] != old[n]["node.key"]
        assert pki.verify_node_cert(f["ca.pem"], f["node.pem"], install.cert_names(cluster.node(n))) == []
    # (a) an old node certificate does not verify against the new CA
    for n in runners:
        with pytest.raises((InvalidSignature, ValueError)):
            x509.load_pem_x509_certificate(old[n]["node.pem"]).verify_directly_issued_by(new_ca.cert)
        found = pki.verify_node_cert(new["a"]["ca.pem"], old[n]["node.pem"], install.cert_names(cluster.node(n)))
        assert any(level == "FAIL" and "rotate-certs" in msg for level, msg in found), found

    server = server_context(tmp_path, new["a"])
    # (b) node a's server, as restarted after the rotation, refuses a client with b's OLD pair ...
    seen = loopback_handshake(server, client_context(tmp_path, "old-b", old["b"]["node.key"], old["b"]["node.pem"],
                                                     trust=None))
    assert "client_got" not in seen and "server_peer" not in seen, seen
    assert "CERTIFICATE_VERIFY_FAILED" in str(seen.get("server_error")), seen
    assert "certificate verify failed" in str(seen["server_error"]), seen
    # ... and even a's own old pair
    seen = loopback_handshake(server, client_context(tmp_path, "old-a", old["a"]["node.key"], old["a"]["node.pem"],
                                                     trust=None))
    assert "client_got" not in seen and "CERTIFICATE_VERIFY_FAILED" in str(seen.get("server_error")), seen
    # ... while b's NEW pair gets in, and b checks a's server against its new ca.pem
    seen = loopback_handshake(server, client_context(tmp_path, "new-b", new["b"]["node.key"], new["b"]["node.pem"],
                                                     trust=new["b"]["ca.pem"]))
    assert seen.get("client_got") == b"ok" and dict(x[0] for x in seen["server_peer"]["subject"])["commonName"] == "b"
    # a server still holding an old pair (an impersonator with the leaked key) is refused by a new client
    seen = loopback_handshake(server_context(tmp_path, old["a"]),
                              client_context(tmp_path, "new-b2", new["b"]["node.key"], new["b"]["node.pem"],
                                             trust=new["b"]["ca.pem"]))
    assert isinstance(seen.get("client_error"), ssl.SSLCertVerificationError), seen


def test_a_rotation_that_misses_a_node_says_so_and_check_flags_it(state, tmp_path):
    cluster, nodes, runners = cluster_of(tmp_path)
    install.ensure_certs(cluster, nodes)
    old_b = runners["b"].files()
    runners["b"].refuse_copies = True
    with pytest.raises(SfclusterError) as e:
        install.ensure_certs(cluster, nodes, rotate=True)
    text = f"{e.value.message} {e.value.hint}"
    assert "b" in e.value.message and "old CA" in text and "sfcluster up --rotate-certs" in (e.value.hint or ""), text
    assert runners["b"].files() == old_b  # b untouched: on the old CA
    assert runners["a"].files()["ca.pem"] == pki.load_ca("demo").cert_pem
    seen = install.inspect(cluster, nodes)
    assert seen["a"].ok, seen["a"]
    assert not seen["b"].ok
    [ca_problem] = [p for p in seen["b"].problems if "/ca.pem:" in p]
    assert "not this cluster's CA" in ca_problem and "sfcluster up --rotate-certs" in ca_problem, seen["b"].problems
    # a plain `up` refuses to start a cluster split over two CAs, naming the fix
    with pytest.raises(SfclusterError) as e:
        install.ensure_certs(cluster, nodes)
    assert "[b]" in e.value.message and "--rotate-certs" in (e.value.hint or "")
    # the fix the messages name makes the whole cluster one CA again
    runners["b"].refuse_copies = False
    install.ensure_certs(cluster, nodes, rotate=True)
    ca_pem = pki.load_ca("demo").cert_pem
    assert all(r.files()["ca.pem"] == ca_pem for r in runners.values())
    assert all(t.ok for t in install.inspect(cluster, nodes).values())


def test_an_unreachable_node_stops_a_rotation_before_the_ca_changes(state, tmp_path):
    cluster, nodes, runners = cluster_of(tmp_path)
    install.ensure_certs(cluster, nodes)
    before = pki.load_ca("demo").cert_pem

    def gone(argv, **kw):
        return Result("b", "tls_check", 255, "", "ssh: connect to host 10.0.0.2: No route to host")
    runners["b"].run = gone
    with pytest.raises(SfclusterError, match="cannot check the certificates on b"):
        install.ensure_certs(cluster, nodes, rotate=True)
    assert pki.load_ca("demo").cert_pem == before
    assert runners["a"].files()["ca.pem"] == before
