"""The node side of `check` for TLS (nodescripts/tls_check.py), run here as the nodes run it, on a
tls dir made with tls/pki.py: what it reports, what it refuses to follow, and that the key never
comes back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sfcluster.nodescripts import bundle
from sfcluster.tls import pki

NAMES = ["10.0.0.1", "alice.example"]
FILES = ("node.key", "node.pem", "ca.pem")


@pytest.fixture(autouse=True)
def controller_state(tmp_path, monkeypatch):
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path / "controller"))


def check(home: Path, cluster: str = "demo") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", bundle("tls_check"), json.dumps({"cluster": cluster})],
                          capture_output=True, timeout=60, env=dict(os.environ, SFCLUSTER_NODE_HOME=str(home)))


def answer(home: Path) -> dict:
    p = check(home)
    assert p.returncode == 0, p.stderr
    assert b"PRIVATE KEY" not in p.stdout  # the key never leaves the node
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def tls_dir(home: Path) -> Path:
    return home / ".sfcluster" / "demo" / "tls"


def install(home: Path) -> tuple:
    """A tls dir as `up` leaves it (0700 dirs, 0600 files); (ca, key_pem, cert_pem)."""
    ca = pki.ensure_ca("demo")
    key_pem, cert_pem = ca.issue("alice", NAMES)
    d = tls_dir(home)
    for p in (d.parent.parent, d.parent, d):
        p.mkdir(mode=0o700)
    for name, data in (("node.key", key_pem), ("node.pem", cert_pem), ("ca.pem", ca.cert_pem)):
        fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)
    return ca, key_pem, cert_pem


def problems_of(out: dict, name: str) -> list:
    return [p["message"] for p in out["problems"] if p["file"] == name]


def test_a_good_tls_dir_has_no_problems_and_its_certificates_verify(tmp_path):
    ca, _, cert_pem = install(tmp_path)
    out = answer(tmp_path)
    assert out["problems"] == [] and out["key_matches"] is True
    assert out["dir"] == str(tls_dir(tmp_path))
    assert out["files"] == {n: {"exists": True, "mode": "0600", "owner_ok": True, "link": False} for n in FILES}
    assert out["cert_pem"].encode() == cert_pem and out["ca_pem"].encode() == ca.cert_pem
    assert pki.verify_node_cert(out["ca_pem"].encode(), out["cert_pem"].encode(), NAMES) == []


def test_no_state_dir_means_every_file_missing(tmp_path):
    out = answer(tmp_path)
    assert out["dir"] is None and out["key_matches"] is None and out["cert_pem"] is None
    assert all(not f["exists"] for f in out["files"].values()) and sorted(out["files"]) == sorted(FILES)
    assert sorted(p["file"] for p in out["problems"]) == sorted(FILES)
    (tmp_path / ".sfcluster" / "demo").mkdir(parents=True, mode=0o700)
    os.chmod(tmp_path / ".sfcluster", 0o700)
    out = answer(tmp_path)  # a state dir, no tls dir
    assert out["dir"] is None and all(not f["exists"] for f in out["files"].values())


def test_a_readable_key_is_a_problem(tmp_path):
    install(tmp_path)
    os.chmod(tls_dir(tmp_path) / "node.key", 0o644)
    out = answer(tmp_path)
    assert out["files"]["node.key"]["mode"] == "0644"
    [msg] = problems_of(out, "node.key")
    assert "0644" in msg and "chmod 600" in msg
    assert out["key_matches"] is True and len(out["problems"]) == 1


def test_a_key_of_another_pair_does_not_match(tmp_path):
    ca, _, _ = install(tmp_path)
    other_key, _ = ca.issue("alice", NAMES)
    (tls_dir(tmp_path) / "node.key").write_bytes(other_key)
    out = answer(tmp_path)
    assert out["key_matches"] is False
    [msg] = problems_of(out, "node.key")
    assert "not a usable key for node.pem" in msg and "KEY_VALUES_MISMATCH" in msg, msg


def test_an_encrypted_key_fails_without_asking_for_a_password(tmp_path):
    install(tmp_path)
    path = tls_dir(tmp_path) / "node.key"
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret")))
    out = answer(tmp_path)  # check() has a timeout: a prompt would hang it
    assert out["key_matches"] is False and problems_of(out, "node.key")


def test_a_missing_ca_pem_is_named(tmp_path):
    install(tmp_path)
    (tls_dir(tmp_path) / "ca.pem").unlink()
    out = answer(tmp_path)
    assert out["files"]["ca.pem"]["exists"] is False and out["ca_pem"] is None
    [msg] = problems_of(out, "ca.pem")
    assert msg == "missing"
    assert out["key_matches"] is True and out["cert_pem"] is not None and len(out["problems"]) == 1


def test_a_linked_certificate_is_never_followed(tmp_path):
    _, _, cert_pem = install(tmp_path)
    elsewhere = tmp_path / "elsewhere.pem"
    elsewhere.write_bytes(cert_pem)
    (tls_dir(tmp_path) / "node.pem").unlink()
    (tls_dir(tmp_path) / "node.pem").symlink_to(elsewhere)
    out = answer(tmp_path)
    assert out["files"]["node.pem"]["link"] is True
    [msg] = problems_of(out, "node.pem")
    assert "symbolic link" in msg
    assert out["cert_pem"] is None and out["key_matches"] is None  # nothing read through the link


def test_a_file_of_another_user_is_a_problem(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to chown")
    install(tmp_path)
    os.chown(tls_dir(tmp_path) / "ca.pem", 65534, 65534)
    out = answer(tmp_path)
    assert out["files"]["ca.pem"]["owner_ok"] is False and out["ca_pem"] is None
    assert "belongs to uid 65534" in problems_of(out, "ca.pem")[0]


def test_an_unsafe_tls_dir_is_a_problem_and_never_looked_into(tmp_path):
    install(tmp_path)
    os.rename(tls_dir(tmp_path), tmp_path / "real_tls")
    tls_dir(tmp_path).symlink_to(tmp_path / "real_tls")
    out = answer(tmp_path)
    assert [p["file"] for p in out["problems"]] == ["."] and "not a directory" in out["problems"][0]["message"]
    assert out["dir"] == str(tls_dir(tmp_path))
    assert out["cert_pem"] is None and out["key_matches"] is None


def test_an_unsafe_state_dir_is_refused(tmp_path):
    install(tmp_path)
    os.chmod(tmp_path / ".sfcluster" / "demo", 0o755)
    p = check(tmp_path)
    assert p.returncode == 3
    out = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert "mode 755" in out["error"] and "demo" in out["error"]
