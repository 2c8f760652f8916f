"""The cluster CA (tls/pki.py): private on disk, refused when it is not, created once even by
concurrent callers; the node certificates it issues carry what mutual TLS needs, verify_node_cert
finds what is wrong with one, and Python's ssl really accepts the pairs (and refuses strangers')."""
from __future__ import annotations

import os
import socket
import ssl
import stat
import threading
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sfcluster.errors import SfclusterError
from sfcluster.tls import pki

NAMES = ["10.0.0.1", "alice.example", "fd00::1"]


@pytest.fixture(autouse=True)
def state_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def other_ca(tmp_path: Path, monkeypatch, cluster: str = "demo") -> pki.CA:
    """A CA made elsewhere (another state dir), for certificates this cluster must not trust."""
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path / "elsewhere"))
    ca = pki.ensure_ca(cluster)
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path / "state"))
    return ca


# --- the CA on disk ---------------------------------------------------------------------------

def test_ca_is_created_private_and_reused(state_home):
    assert pki.load_ca("demo") is None
    ca = pki.ensure_ca("demo")
    d = pki.ca_dir("demo")
    assert d == state_home / "demo" / "ca"
    for p in (state_home, state_home / "demo", d):
        assert mode(p) == 0o700, p
    assert mode(d / "ca.key") == 0o600 and (d / "ca.pem").read_bytes() == ca.cert_pem
    assert sorted(os.listdir(state_home / "demo")) == ["ca"]  # no temp dir left behind
    key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)  # PKCS8, unencrypted
    assert (d / "ca.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key.key_size == 256
    cert = ca.cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sfcluster CA demo"
    assert cert.issuer == cert.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    assert 3640 < (cert.not_valid_after_utc - cert.not_valid_before_utc).days < 3660
    again = pki.ensure_ca("demo")
    assert again.cert_pem == ca.cert_pem and pki.load_ca("demo").cert_pem == ca.cert_pem


def test_existing_parent_dirs_are_left_alone(state_home):
    state_home.mkdir(mode=0o755)
    os.chmod(state_home, 0o755)
    pki.ensure_ca("demo")
    assert mode(state_home) == 0o755 and mode(state_home / "demo") == 0o700


@pytest.mark.parametrize("plant", ["key_0644", "key_0640", "key_symlink", "dir_symlink", "dir_0755", "key_other_owner",
                                   "pem_symlink"])
def test_an_unsafe_ca_is_refused_naming_the_path_and_the_fix(state_home, tmp_path, plant):
    pki.ensure_ca("demo")
    d = pki.ca_dir("demo")
    if plant == "key_0644":
        os.chmod(d / "ca.key", 0o644)
        culprit, fix = d / "ca.key", "chmod 600"
    elif plant == "key_0640":
        os.chmod(d / "ca.key", 0o640)
        culprit, fix = d / "ca.key", "chmod 600"
    elif plant == "key_symlink":
        real = tmp_path / "real.key"
        os.rename(d / "ca.key", real)
        (d / "ca.key").symlink_to(real)
        culprit, fix = d / "ca.key", "remove the link"
    elif plant == "pem_symlink":
        real = tmp_path / "real.pem"
        os.rename(d / "ca.pem", real)
        (d / "ca.pem").symlink_to(real)
        culprit, fix = d / "ca.pem", "remove the link"
    elif plant == "dir_symlink":
        os.rename(d, tmp_path / "real_ca")
        d.symlink_to(tmp_path / "real_ca")
        culprit, fix = d, "remove"
    elif plant == "dir_0755":
        os.chmod(d, 0o755)
        culprit, fix = d, "chmod 700"
    else:
        if os.getuid() != 0:
            pytest.skip("needs root to chown")
        os.chown(d / "ca.key", 65534, 65534)
        culprit, fix = d / "ca.key", "restore"
    for call in (pki.load_ca, pki.ensure_ca):
        with pytest.raises(SfclusterError) as e:
            call("demo")
        assert str(culprit) in e.value.message and fix in (e.value.hint or ""), str(e.value)
    if plant.startswith("key_0"):
        assert "down --purge" in e.value.hint  # a key others could read is as good as leaked


def test_an_incomplete_or_mismatched_ca_is_refused_not_replaced(state_home, tmp_path, monkeypatch):
    pki.ensure_ca("demo")
    d = pki.ca_dir("demo")
    (d / "ca.key").unlink()
    with pytest.raises(SfclusterError, match="incomplete.*ca.key is missing"):
        pki.ensure_ca("demo")
    other = other_ca(tmp_path, monkeypatch)
    fd = os.open(d / "ca.key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, other.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    os.close(fd)
    with pytest.raises(SfclusterError, match="is not the key of"):
        pki.load_ca("demo")


def test_an_empty_ca_dir_is_filled(state_home):
    (state_home / "demo" / "ca").mkdir(parents=True, mode=0o700)
    assert pki.load_ca("demo") is None
    assert pki.ensure_ca("demo").cert_pem == (state_home / "demo" / "ca" / "ca.pem").read_bytes()


def test_purge_removes_the_ca_and_the_next_one_is_new(state_home, tmp_path):
    first = pki.ensure_ca("demo")
    pki.purge_ca("demo")
    assert not pki.ca_dir("demo").exists() and pki.load_ca("demo") is None
    pki.purge_ca("demo")  # nothing there: fine
    assert pki.ensure_ca("demo").cert_pem != first.cert_pem
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    pki.purge_ca("demo")
    pki.ca_dir("demo").symlink_to(target)
    pki.purge_ca("demo")  # the link goes, what it points at stays
    assert not os.path.lexists(pki.ca_dir("demo")) and (target / "keep").exists()


def test_replace_makes_a_new_ca_and_deletes_the_old_one(state_home):
    old = pki.ensure_ca("demo")
    old_key = (pki.ca_dir("demo") / "ca.key").read_bytes()
    fresh = pki.replace_ca("demo")
    d = pki.ca_dir("demo")
    assert fresh.cert_pem != old.cert_pem and pki.load_ca("demo").cert_pem == fresh.cert_pem
    assert (d / "ca.pem").read_bytes() == fresh.cert_pem and (d / "ca.key").read_bytes() != old_key
    assert mode(d) == 0o700 and mode(d / "ca.key") == 0o600
    assert sorted(os.listdir(state_home / "demo")) == ["ca"]  # the old CA is not kept aside
    _, cert_pem = old.issue("alice", NAMES)
    assert fails(pki.verify_node_cert(fresh.cert_pem, cert_pem, NAMES), "signature", "rotate-certs")
    made = pki.new_ca("demo")  # made first (in memory), stored by replace_ca as it is
    assert pki.replace_ca("demo", made) is made and pki.load_ca("demo").cert_pem == made.cert_pem
    with pytest.raises(SfclusterError, match="cannot replace"):
        pki.replace_ca("other", made)
    assert pki.load_ca("demo").cert_pem == made.cert_pem


def test_replace_takes_the_place_of_a_broken_ca_and_leaves_nothing_old(state_home, tmp_path):
    assert pki.replace_ca("demo").cert_pem == pki.load_ca("demo").cert_pem  # none before: made
    (pki.ca_dir("demo") / "ca.key").unlink()  # an incomplete CA: a rotation replaces it
    pki.replace_ca("demo")
    assert pki.load_ca("demo") is not None
    # an old CA an interrupted rotation or purge left aside goes with the next one
    aside = state_home / "demo" / ".ca.123.abcd.old"
    aside.mkdir(mode=0o700)
    (aside / "ca.key").write_bytes(b"old key")
    target = tmp_path / "target"  # a link in the CA's place is removed, never followed
    target.mkdir()
    (target / "keep").write_text("x")
    pki.purge_ca("demo")
    pki.ca_dir("demo").symlink_to(target)
    aside.mkdir(mode=0o700)
    pki.replace_ca("demo")
    assert (target / "keep").exists() and not os.path.islink(pki.ca_dir("demo"))
    assert sorted(os.listdir(state_home / "demo")) == ["ca"] and pki.load_ca("demo") is not None


def test_a_bad_cluster_name_has_no_ca_dir():
    with pytest.raises(SfclusterError, match="bad cluster name"):
        pki.ca_dir("../etc")


def test_concurrent_creators_end_with_one_ca(state_home):
    barrier = threading.Barrier(4)
    got: Dict[int, bytes] = {}

    def create(i: int) -> None:
        barrier.wait()
        got[i] = pki.ensure_ca("demo").cert_pem

    for _round in range(5):
        pki.purge_ca("demo")
        threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(got) == 4 and len(set(got.values())) == 1
        assert set(got.values()) == {pki.load_ca("demo").cert_pem}
        assert sorted(os.listdir(state_home / "demo")) == ["ca"]  # the losers cleaned up
        got.clear()


# --- issued certificates ----------------------------------------------------------------------

def test_issued_certificate_has_what_mutual_tls_needs():
    ca = pki.ensure_ca("demo")
    key_pem, cert_pem = ca.issue("alice", NAMES + ["ALICE.example", "10.0.0.1"])
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert key.key_size == 256 and cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert cert.issuer == ca.cert.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ip_address("10.0.0.1"), ip_address("fd00::1")]
    assert san.get_values_for_type(x509.DNSName) == ["alice.example"]  # deduplicated
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_agreement and not ku.key_cert_sign
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    now = datetime.now(timezone.utc)
    assert timedelta(minutes=4) < now - cert.not_valid_before_utc < timedelta(minutes=6)
    assert 364.9 < pki.days_left(cert_pem) <= 365
    assert pki.cert_expiry(cert_pem) == cert.not_valid_after_utc
    assert pki.verify_node_cert(ca.cert_pem, cert_pem, NAMES) == []
    assert pki.fingerprint(cert_pem) != pki.fingerprint(ca.issue("alice", NAMES)[1])  # a random serial each time
    assert len(pki.fingerprint(cert_pem)) == 64


def test_issue_refuses_what_cannot_be_certified():
    ca = pki.ensure_ca("demo")
    for names in ([], [""], ["bücher.example"]):
        with pytest.raises(SfclusterError):
            ca.issue("alice", names)
    with pytest.raises(SfclusterError):
        ca.issue("alice", NAMES, days=0)


def fails(findings, *words) -> bool:
    return any(level == "FAIL" and all(w in msg for w in words) for level, msg in findings)


@pytest.mark.parametrize("same_name", [True, False])
def test_a_certificate_from_another_ca_fails(tmp_path, monkeypatch, same_name):
    ca = pki.ensure_ca("demo")
    stranger = other_ca(tmp_path, monkeypatch, "demo" if same_name else "other")
    _, cert_pem = stranger.issue("alice", NAMES)
    found = pki.verify_node_cert(ca.cert_pem, cert_pem, NAMES)
    assert found and fails(found, "signature" if same_name else "issued by", "rotate-certs"), found


def test_a_missing_name_fails_naming_it():
    ca = pki.ensure_ca("demo")
    _, cert_pem = ca.issue("alice", ["10.0.0.1"])
    found = pki.verify_node_cert(ca.cert_pem, cert_pem, ["10.0.0.1", "10.0.0.2", "alice.example"])
    assert len(found) == 1 and fails(found, "10.0.0.2", "alice.example"), found
    assert "10.0.0.1," not in found[0][1].split("(")[0]
    _, cert_pem = ca.issue("alice", NAMES)
    # names compare as what they are: DNS without case, IPs by value, whatever their spelling
    assert pki.verify_node_cert(ca.cert_pem, cert_pem, ["ALICE.Example", "fd00:0:0::1", "10.0.0.1"]) == []
    assert fails(pki.verify_node_cert(ca.cert_pem, cert_pem, [""]), "''")


@pytest.mark.parametrize("days, later, level, words", [
    (365, 345, "WARN", ("expires in 20 days",)),
    (365, 362, "FAIL", ("expires in 3.0 days", "under 7")),
    (365, 366, "FAIL", ("expired 1.0 days ago",)),
    (20, 0, "WARN", ("expires in 20 days",)),
    (3, 0, "FAIL", ("expires in 3.0 days",)),
])
def test_expiry_warns_then_fails(days, later, level, words):
    ca = pki.ensure_ca("demo")
    _, cert_pem = ca.issue("alice", NAMES, days=days)
    now = datetime.now(timezone.utc) + timedelta(days=later)
    found = pki.verify_node_cert(ca.cert_pem, cert_pem, NAMES, now=now)
    assert len(found) == 1 and found[0][0] == level and all(w in found[0][1] for w in words), found
    assert "sfcluster up --rotate-certs" in found[0][1]


def test_a_certificate_not_yet_valid_fails():
    ca = pki.ensure_ca("demo")
    _, cert_pem = ca.issue("alice", NAMES)
    found = pki.verify_node_cert(ca.cert_pem, cert_pem, NAMES, now=datetime.now(timezone.utc) - timedelta(hours=1))
    assert fails(found, "not valid before", "clock"), found


def test_garbage_is_a_failure_not_a_crash():
    ca = pki.ensure_ca("demo")
    assert fails(pki.verify_node_cert(ca.cert_pem, b"not a cert", NAMES), "cannot be read")


# --- the pairs work with a real TLS stack -----------------------------------------------------

def contexts(tmp_path: Path, trust: pki.CA, pair: Tuple[bytes, bytes], tag: str,
             server: bool) -> ssl.SSLContext:
    """An ssl context for one side of mutual TLS: presents `pair`, trusts only `trust`."""
    key, cert = tmp_path / f"{tag}.key", tmp_path / f"{tag}.pem"
    key.write_bytes(pair[0])
    os.chmod(key, 0o600)
    cert.write_bytes(pair[1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cadata=trust.cert_pem.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED  # the server side too: a client certificate is required
    return ctx


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
              hostname: str) -> Dict[str, object]:
    """One TLS exchange over a socketpair: what each side saw (its peer, the bytes, or its error)."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    seen: Dict[str, object] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                seen["server_peer"] = s.getpeercert()
                s.sendall(b"ok")
        except (ssl.SSLError, OSError) as e:
            seen["server_error"] = e

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=hostname) as c:
            seen["client_peer"] = c.getpeercert()
            seen["client_got"] = c.recv(2)
    except (ssl.SSLError, OSError) as e:
        seen["client_error"] = e
    finally:
        t.join(15)
        a.close()
        b.close()
    return seen


def peer_cn(peer: Optional[dict]) -> str:
    return dict(x[0] for x in peer["subject"])["commonName"]


@pytest.mark.parametrize("hostname", ["10.0.0.1", "alice.example", "fd00::1"])
def test_issued_pairs_make_a_mutual_tls_handshake(tmp_path, hostname):
    ca = pki.ensure_ca("demo")
    server = contexts(tmp_path, ca, ca.issue("alice", NAMES), "alice", server=True)
    client = contexts(tmp_path, ca, ca.issue("bob", ["10.0.0.2"]), "bob", server=False)
    seen = handshake(server, client, hostname)
    assert seen.get("client_got") == b"ok", seen
    assert peer_cn(seen["server_peer"]) == "bob" and peer_cn(seen["client_peer"]) == "alice"


def test_a_client_certificate_from_another_ca_is_rejected(tmp_path, monkeypatch):
    ca = pki.ensure_ca("demo")
    stranger = other_ca(tmp_path, monkeypatch)  # same cluster name, so the same issuer name
    server = contexts(tmp_path, ca, ca.issue("alice", NAMES), "alice", server=True)
    # the intruder trusts our CA (ca.pem is public) but holds a certificate of its own CA
    client = contexts(tmp_path, ca, stranger.issue("mallory", ["10.0.0.9"]), "mallory", server=False)
    seen = handshake(server, client, "10.0.0.1")
    assert "server_peer" not in seen and "client_got" not in seen, seen
    assert "CERTIFICATE_VERIFY_FAILED" in str(seen["server_error"]), seen
    if "client_error" in seen:
        assert any(w in str(seen["client_error"]) for w in ("unknown ca", "certificate unknown", "EOF", "reset")), seen


def test_a_client_without_a_certificate_is_rejected(tmp_path):
    ca = pki.ensure_ca("demo")
    server = contexts(tmp_path, ca, ca.issue("alice", NAMES), "alice", server=True)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=ca.cert_pem.decode())
    seen = handshake(server, client, "10.0.0.1")
    assert "client_got" not in seen and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(seen.get("server_error")), seen


@pytest.mark.parametrize("case", ["server_from_another_ca", "name_not_in_san"])
def test_the_client_rejects_a_server_it_should_not_trust(tmp_path, monkeypatch, case):
    ca = pki.ensure_ca("demo")
    issuer = other_ca(tmp_path, monkeypatch) if case == "server_from_another_ca" else ca
    server = contexts(tmp_path, ca, issuer.issue("alice", NAMES), "alice", server=True)
    client = contexts(tmp_path, ca, ca.issue("bob", ["10.0.0.2"]), "bob", server=False)
    seen = handshake(server, client, "10.0.0.1" if case == "server_from_another_ca" else "10.0.0.7")
    assert isinstance(seen.get("client_error"), ssl.SSLCertVerificationError), seen
    assert "client_got" not in seen and "server_peer" not in seen
    if case == "name_not_in_san":
        assert "10.0.0.7" in str(seen["client_error"])
