"""Each party's data stays on its party's node: `check` shows every data file (size, sha256) and
fails on a missing one naming party, name and path; `data push` copies a file to ONE party's node
(as the user Ray runs as, 0600), idempotent by sha256, never written through a link."""
from __future__ import annotations

import hashlib
import json

import pytest

from tests.integration.cli import ROOT, sfc

DATA = ROOT / "data" / "breast_cancer"


@pytest.fixture(scope="module")
def inv(harness, tmp_path_factory):
    inv = harness.write_inventory(tmp_path_factory.mktemp("data") / "inv.yaml", firewall="check", data=True)
    for n in ("alice", "bob", "carol"):   # a clean start: no data file on any node
        harness.docker_exec(n, f"rm -rf $(dirname {harness.data_path(n)})")
    return inv


def data_rows(p):
    return [c for c in json.loads(p.stdout)["checks"] if c["name"] == "data"]


def test_check_fails_on_missing_data_naming_party_name_and_path(harness, inv):
    p = sfc("check", "-i", str(inv), "--json", "--no-reach")
    assert p.returncode == 65, p.stdout[-2000:] + p.stderr[-2000:]
    rows = {r["node"]: r for r in data_rows(p)}
    assert set(rows) == {"alice", "bob", "carol"} and all(r["status"] == "FAIL" for r in rows.values()), rows
    bob = rows["bob"]
    assert bob["detail"] == f"breast_cancer: {harness.data_path('bob')}: missing", bob
    assert "sfcluster data push bob breast_cancer" in bob["fix"], bob


def test_push_reaches_only_that_party_private_and_idempotent(harness, inv, tmp_path):
    local = DATA / "bob.csv"
    p = sfc("data", "push", "-i", str(inv), "bob", "breast_cancer", str(local), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    got = json.loads(p.stdout)
    want = hashlib.sha256(local.read_bytes()).hexdigest()
    assert got["sha256"] == want and got["unchanged"] is False and got["path"] == harness.data_path("bob"), got
    path = harness.data_path("bob")
    st = harness.docker_exec("bob", f"stat -c '%a %U' {path} && sha256sum {path}").stdout.split()
    assert st[:3] == ["600", harness.RAY_USER, want], st
    for other in ("alice", "carol"):   # bob's file went to bob only
        assert harness.docker_exec(other, "ls /root/data /home/*/data 2>/dev/null | grep -c csv", check=False).stdout.strip() in ("", "0")
    again = sfc("data", "push", "-i", str(inv), "bob", "breast_cancer", str(local))
    assert again.returncode == 0 and "nothing sent" in again.stdout, again.stdout + again.stderr
    # a changed file replaces the old one, whole
    changed = tmp_path / "bob.csv"
    changed.write_bytes(local.read_bytes() + b"p9999,1,2,3,4,5,6,7,8,9,10\n")
    p = sfc("data", "push", "-i", str(inv), "bob", "breast_cancer", str(changed), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["unchanged"] is False, p.stdout + p.stderr
    assert harness.docker_exec("bob", f"tail -1 {path}").stdout.startswith("p9999")
    sfc("data", "push", "-i", str(inv), "bob", "breast_cancer", str(local))


def test_push_refuses_unknown_party_or_name_and_a_link_at_the_target(harness, inv, tmp_path):
    p = sfc("data", "push", "-i", str(inv), "mallory", "breast_cancer", str(DATA / "bob.csv"))
    assert p.returncode == 78 and "no party 'mallory'" in p.stderr + p.stdout, p.stdout + p.stderr
    p = sfc("data", "push", "-i", str(inv), "carol", "iris", str(DATA / "carol.csv"))
    assert p.returncode == 78 and "party carol has no data named 'iris'" in p.stderr + p.stdout, p.stdout + p.stderr
    path = harness.data_path("carol")
    harness.docker_exec("carol", f"mkdir -p $(dirname {path}) && ln -sf /etc/passwd {path}", user=harness.RAY_USER)
    try:
        p = sfc("data", "push", "-i", str(inv), "carol", "breast_cancer", str(DATA / "carol.csv"))
        assert p.returncode == 1 and "link" in p.stderr + p.stdout, p.stdout + p.stderr
        assert "root:x:0:0" in harness.docker_exec("carol", "head -1 /etc/passwd").stdout
    finally:
        harness.docker_exec("carol", f"rm -f {path}", user=harness.RAY_USER)


def test_check_shows_each_file_size_and_digest_once_pushed(harness, inv):
    for n in ("alice", "bob", "carol"):
        assert sfc("data", "push", "-i", str(inv), n, "breast_cancer", str(DATA / f"{n}.csv")).returncode == 0
    p = sfc("check", "-i", str(inv), "--json", "--no-reach")
    rows = {r["node"]: r for r in data_rows(p)}
    for n, r in rows.items():
        digest = hashlib.sha256((DATA / f"{n}.csv").read_bytes()).hexdigest()
        assert r["status"] == "OK" and digest[:16] in r["detail"], r
    # the digest is cached on the node (inode, size, mtime, ctime): the next check does not re-read the file
    p = sfc("check", "-i", str(inv), "--json", "--no-reach")
    assert all("(cached)" in r["detail"] for r in data_rows(p)), data_rows(p)
    # a file the user Ray runs as cannot read fails, naming it
    harness.docker_exec("bob", f"chmod 000 {harness.data_path('bob')}")
    try:
        rows = {r["node"]: r for r in data_rows(sfc("check", "-i", str(inv), "--json", "--no-reach"))}
        assert rows["bob"]["status"] == "FAIL" and f"not readable by {harness.RAY_USER}" in rows["bob"]["detail"], rows["bob"]
    finally:
        harness.docker_exec("bob", f"chmod 600 {harness.data_path('bob')}")


def test_push_where_the_ray_user_may_not_make_the_directory_says_what_to_do(harness, tmp_path):
    where = "/srv/sfc-denied/bob.csv"  # /srv is root's: the Ray user cannot make sfc-denied there
    inv = harness.write_inventory(tmp_path / "inv.yaml", firewall="check",
                                  extra_node={"bob": {"data": f"{{breast_cancer: {where}}}"}})
    harness.docker_exec("bob", "rm -rf /srv/sfc-denied")
    p = sfc("data", "push", "-i", str(inv), "bob", "breast_cancer", str(DATA / "bob.csv"), "--json")
    got = json.loads(p.stdout)
    assert p.returncode == 1 and "Permission denied" in got["error"] and harness.RAY_USER in got["error"], got
    assert got["fix"].startswith(f"make the directory once, on bob: sudo install -d -o {harness.RAY_USER} -m 0700 "
                                 "/srv/sfc-denied"), got
    # followed literally, it works
    harness.docker_exec("bob", f"install -d -o {harness.RAY_USER} -m 0700 /srv/sfc-denied")
    try:
        p = sfc("data", "push", "-i", str(inv), "bob", "breast_cancer", str(DATA / "bob.csv"))
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        harness.docker_exec("bob", "rm -rf /srv/sfc-denied")
