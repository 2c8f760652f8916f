"""Each party's data stays on its party's node: the inventory's `data:` (name -> path on that
party's node), checked by `check` (exists, readable by the user Ray runs as, size, sha256) and
copied by `sfcluster data push PARTY NAME FILE` to that party's node only, idempotent by digest.
The node side is nodescripts/data_files.py: digests cached there by path, device, inode, size,
mtime and ctime for `check`; `push` says "unchanged" only when the node has just read its copy
through and found this sha256, never from that cache."""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from sfcluster.connect import Nodes
from sfcluster.errors import NotInInventory, SfclusterError
from sfcluster.inventory.model import Cluster
from sfcluster import nodescripts
from sfcluster.nodescripts import answer
from sfcluster.nodescripts import contract as C
from sfcluster.remote.base import Result, Runner
from sfcluster.remote.group import fan_out

PUSH_TIMEOUT = 3600  # bytes over SSH: an hour for the largest file anyone should push this way
CHECK_TIMEOUT = 600  # the first digest of a large file reads all of it
# The node script beats every DATA_BEAT_EVERY s while it reads or receives (contract.py): this long
# without a byte from it, the node (its sshd, its disk, its session) is stuck, not busy, and the
# command ends naming it (69) instead of waiting for CHECK_TIMEOUT or PUSH_TIMEOUT.
DATA_IDLE = 60


@dataclass
class DataFile:
    party: str
    name: str
    path: str
    size: Optional[int] = None
    sha256: Optional[str] = None
    cached: bool = False
    error: Optional[str] = None
    unchecked: bool = False   # the node could not be asked at all (`error` says why): nothing is known of the file


def local_digest(path: str) -> tuple:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def target(cluster: Cluster, party: str, name: str) -> str:
    """The path `name` has at `party` in the inventory; errors name what is missing and where."""
    if party not in cluster.party_names:
        raise NotInInventory(f"no party {party!r} in the inventory (parties: {', '.join(cluster.party_names)})")
    paths = cluster.node(party).data_paths
    if name not in paths:
        known = ", ".join(sorted(paths)) or "none"
        raise NotInInventory(f"party {party} has no data named {name!r} in the inventory (its data: {known})",
                             f"add it: nodes.{party}.data.{name}: /absolute/path/on/{party}/file.csv")
    return paths[name]


def check(cluster: Cluster, nodes: Nodes, parties: Optional[List[str]] = None) -> Dict[str, List[DataFile]]:
    """Every data file of the given parties, looked at on its own node as the user Ray runs as."""
    wanted = [p for p in (parties or cluster.party_names) if cluster.node(p).data_paths]

    def one(p: str) -> List[DataFile]:
        node = cluster.node(p)
        req = {"cluster": cluster.name, "action": "check", "files": node.data_paths}
        res = _ask(nodes.ray(p), nodescripts.argv(node, "data_files", req), CHECK_TIMEOUT)
        files = answer(res, "its data files").get("files", {})
        return [DataFile(p, name, f.get("path", ""), f.get("size"), f.get("sha256"), bool(f.get("cached")), f.get("error"))
                for name, f in sorted(files.items())]

    g = fan_out(one, wanted)
    out: Dict[str, List[DataFile]] = {}
    for p in wanted:
        if p in g.results:
            out[p] = g.results[p]
        else:
            err = g.errors[p]
            out[p] = [DataFile(p, name, path, error=str(getattr(err, "message", err)), unchecked=True)
                      for name, path in sorted(cluster.node(p).data_paths.items())]
    return out


def push(cluster: Cluster, nodes: Nodes, party: str, name: str, local_file: str) -> dict:
    """Copy `local_file` to `party`'s node only, at the path its `data: {name}` entry names, as the
    user Ray runs as (0600). Nothing is sent to any other node; an identical file is not re-sent."""
    path = target(cluster, party, name)
    if not os.path.isfile(local_file):
        raise SfclusterError(f"{local_file}: no such file on this controller")
    size, digest = local_digest(local_file)
    node = cluster.node(party)
    runner = nodes.ray(party)
    req = {"cluster": cluster.name, "action": "put", "name": name, "path": path, "size": size, "sha256": digest}
    argv = nodescripts.argv(node, "data_files", req)
    # first ask with no bytes: a file already there with this digest costs no transfer
    res = _ask(runner, nodescripts.argv(node, "data_files", dict(req, probe=True)), CHECK_TIMEOUT)
    data = _accepted(answer(res, f"data {name!r}"), party, name, path)
    if not same_file(data, size, digest):
        with open(local_file, "rb") as f:   # streamed, never the whole file in memory
            res = _ask(runner, argv, PUSH_TIMEOUT, stdin=f)
        data = _accepted(answer(res, f"data {name!r}"), party, name, path)
    return {"party": party, "name": name, "path": path, "size": size, "sha256": digest,
            "unchanged": bool(data.get("unchanged")), "node": node.host}


def _accepted(data: dict, party: str, name: str, path: str) -> dict:
    """The node's answer, unless it refused (the probe or the put): then the error, and where the
    user Ray runs as may not write where the file goes, what to do about it."""
    if not data.get("refused"):
        return data
    fix = None
    if data.get("denied_dir"):
        d, user = data["denied_dir"], data.get("user", "the user Ray runs as")
        make = (f"give {user} a directory it may write, on {party}" if data.get("dir_exists") else
                f"make the directory once, on {party}: sudo install -d -o {user} -m 0700 {d}")
        fix = f"{make}; or point nodes.{party}.data.{name} at a path under {user}'s home"
    raise SfclusterError(f"[{party}] data {name!r} at {path}: {data['refused']}", fix)


def _ask(runner: Runner, argv: List[str], timeout: float, stdin: Any = None) -> Result:
    """One data_files.py command, bounded by `timeout` and by DATA_IDLE s of silence (the script
    beats while it works); its beat lines are not part of what it said."""
    out, err = bytearray(), bytearray()
    start = time.monotonic()
    code = runner.stream(argv, on_stdout=out.extend, on_stderr=err.extend, stdin=stdin, timeout=timeout,
                         idle_timeout=DATA_IDLE)
    said = "".join(line for line in err.decode(errors="replace").splitlines(keepends=True)
                   if line.rstrip("\n") != C.DATA_BEAT)
    return Result(runner.name, "data_files", code, out.decode(errors="replace"), said, time.monotonic() - start)


def same_file(probe: dict, size: int, digest: str) -> bool:
    """Whether the node's answer to a probe says its file IS this one: read there just now
    ("hashed", never a cached digest), with this size and sha256. Anything less sends the file."""
    return (probe.get("unchanged") is True and probe.get("hashed") is True
            and probe.get("size") == size and probe.get("sha256") == digest)


def to_json(files: Dict[str, List[DataFile]]) -> list:
    return [dict(f.__dict__) for fs in files.values() for f in fs]


