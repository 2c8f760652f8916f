"""A party's data files on its node (nodescripts/data_files.py through data.py), run here as the
node runs it: the digest cache is keyed on more than size and mtime (a same-size edit with its
mtime put back is hashed anew), and `data push` never says "unchanged" from the cache alone."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sfcluster import data as party_data
from sfcluster.connect import Nodes
from sfcluster.inventory import parse_inventory
from sfcluster.remote.local import LocalRunner



@pytest.fixture
def node(tmp_path):
    """(cluster, nodes, runner, the data file's path on the node)."""
    target = tmp_path / "srv" / "train.csv"
    inv = (f"cluster: demo\npython: {sys.executable}\n"
           f"nodes:\n  alice: {{host: 10.0.0.1, data: {{train: {target}}}}}\n  bob: {{host: 10.0.0.2}}\n")
    cluster = parse_inventory(inv)
    (tmp_path / "home").mkdir()
    runner = LocalRunner("alice", home=tmp_path / "home", python=sys.executable)
    return cluster, Nodes(cluster, runners={"alice": runner, "bob": runner}), runner, target


def edit_keeping_size_and_mtime(path: Path, new: bytes) -> None:
    """What the issue reproduced: same size, the mtime put back (os.utime); only ctime moves."""
    st = os.stat(path)
    assert len(new) == st.st_size
    path.write_bytes(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_size == st.st_size


def checked(cluster, nodes) -> party_data.DataFile:
    (f,) = party_data.check(cluster, nodes)["alice"]
    assert f.error is None, f.error
    return f


def test_a_same_size_edit_with_its_mtime_put_back_is_hashed_anew(node):
    cluster, nodes, _, target = node
    target.parent.mkdir()
    target.write_bytes(b"age,label\n1,0\n")
    first = checked(cluster, nodes)
    assert not first.cached and checked(cluster, nodes).cached  # the cache works for an untouched file
    edit_keeping_size_and_mtime(target, b"age,label\n9,1\n")
    after = checked(cluster, nodes)
    assert after.sha256 == party_data.local_digest(str(target))[1] != first.sha256
    assert not after.cached


def test_push_over_a_changed_file_the_cache_calls_the_same_sends_it(node, tmp_path):
    cluster, nodes, runner, target = node
    local = tmp_path / "alice.csv"
    local.write_bytes(b"age,label\n1,0\n")
    got = party_data.push(cluster, nodes, "alice", "train", str(local))
    assert not got["unchanged"] and target.read_bytes() == local.read_bytes()
    assert party_data.push(cluster, nodes, "alice", "train", str(local))["unchanged"]  # idempotent
    sent = len(runner.sent)
    # someone edits the node's copy, same size and mtime: the cache's key for it stays the same
    edit_keeping_size_and_mtime(target, b"age,label\n9,1\n")
    got = party_data.push(cluster, nodes, "alice", "train", str(local))
    assert not got["unchanged"], "said unchanged over a file that is not the controller's"
    assert len(runner.sent) == sent + 1 and target.read_bytes() == local.read_bytes()


def test_push_hashes_the_target_even_when_the_cache_entry_matches_exactly(node, tmp_path):
    """A cache entry whose key matches the file (ctime too) but whose digest lies (the state dir is
    the Ray user's): push still reads the file before it says it is the same."""
    cluster, nodes, runner, target = node
    local = tmp_path / "alice.csv"
    local.write_bytes(b"age,label\n1,0\n")
    party_data.push(cluster, nodes, "alice", "train", str(local))
    target.write_bytes(b"age,label\n7,7\n")  # same size: only the digest tells
    checked(cluster, nodes)  # caches the new file's true digest under its current key
    cache = tmp_path / "home" / ".sfcluster" / "demo" / "data-digests.json"
    text = cache.read_text()
    want = party_data.local_digest(str(local))[1]
    cache.write_text(text.replace(party_data.local_digest(str(target))[1], want))
    assert checked(cluster, nodes).cached  # check trusts its cache (cheap), and says so: "(cached)"
    got = party_data.push(cluster, nodes, "alice", "train", str(local))
    assert not got["unchanged"] and target.read_bytes() == local.read_bytes()


@pytest.mark.parametrize("probe, same", [
    ({"unchanged": True, "hashed": True, "size": 14, "sha256": "ab" * 32}, True),
    ({"unchanged": True, "size": 14, "sha256": "ab" * 32}, False),                  # from a cache, or an old script
    ({"unchanged": True, "hashed": True, "size": 15, "sha256": "ab" * 32}, False),
    ({"unchanged": True, "hashed": True, "size": 14, "sha256": "cd" * 32}, False),
    ({"unchanged": "yes", "hashed": True, "size": 14, "sha256": "ab" * 32}, False),
    ({"path": "/srv/x", "unchanged": False}, False),
])
def test_the_controller_skips_the_bytes_only_for_a_file_read_through_just_now(probe, same):
    assert party_data.same_file(probe, 14, "ab" * 32) is same


def test_a_node_that_cannot_be_asked_leaves_its_files_not_checked_never_a_wrong_fix(node):
    from sfcluster.doctor.checks import Report, Status, _data
    from sfcluster.errors import ConnectError

    cluster, nodes, runner, target = node

    class Down(LocalRunner):
        def stream(self, argv, **kw):
            raise ConnectError("alice", "ssh", "sudo: a password is required")
    down = Down("alice", home=runner.env["SFCLUSTER_NODE_HOME"], python=sys.executable)
    got = party_data.check(cluster, Nodes(cluster, runners={"alice": down, "bob": down}))
    assert [(f.unchecked, f.error) for f in got["alice"]] == [(True, "[alice] sudo: a password is required")]
    report = Report()
    report.facts["alice"] = object()  # its SSH row answered; the data command did not
    _data(cluster, {"alice": down, "bob": down}, report)
    (row,) = report.checks
    assert row.status is Status.WARN and "not checked" in row.detail and "regular file" not in row.fix, row
