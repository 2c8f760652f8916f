"""The one route for files to and from a node: a tar over the SSH channel (no scp/sftp, no
temporary file on a shared path), into or out of a private directory of the cluster's state dir
on the node (~/.sfcluster/<cluster>/..., 0700, checked there by nodescripts/ship.sh)."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath
from typing import List, Tuple

from sfcluster.errors import SfclusterError
from sfcluster.remote.base import Runner

SHIP_SCRIPT = Path(__file__).resolve().parents[1] / "nodescripts" / "ship.sh"
Member = Tuple[str, bytes, int]  # (relative path, content, mode)


def bundle(members: List[Member], dirs: Tuple[str, ...] = ()) -> bytes:
    """An in-memory tar of (relative path, content, mode); directories are 0700."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = tuple(sorted(set(dirs) | {str(p) for name, _, _ in members
                                         for p in PurePosixPath(name).parents if str(p) != "."}))
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(info)
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ship_argv(cluster: str, dest: str, mode: str = "fresh") -> List[str]:
    """The node side of a push (nodescripts/ship.sh): `dest` relative to the cluster's state dir
    (`runs/<run id>` or `tls`); mode "fresh" (must not exist) or "replace"."""
    return ["sh", "-c", SHIP_SCRIPT.read_text(), "sh", cluster, dest, mode]


def unsafe_state(node: str, why: str) -> SfclusterError:
    """What the node side (nodestate.py, ship.sh) refused about ~/.sfcluster/<cluster>."""
    return SfclusterError(f"[{node}] the cluster's state dir is not safe to use: {why}",
                          "sfcluster keeps its lock and run dirs in ~/.sfcluster/<cluster> (0700, ours): "
                          "look at what is there and fix or remove it")


def push(runner: Runner, cluster: str, dest: str, payload: bytes, mode: str = "fresh", timeout: float = 60) -> str:
    """Unpack the tar `payload` into <state dir>/<dest> on the node; its absolute path there."""
    res = runner.run(ship_argv(cluster, dest, mode), stdin=payload, timeout=timeout)
    last = (res.stdout.strip().splitlines() or [""])[-1]
    kind, _, value = last.partition(" ")
    if kind == "ERROR":
        raise unsafe_state(runner.name, value)
    if kind != "DIR" or not res.ok:
        res.check()
        raise SfclusterError(f"[{runner.name}] copying files there gave no answer: {res.stdout[-300:]}")
    return checked_dir(runner.name, cluster, dest, value)


def checked_dir(node: str, cluster: str, dest: str, value: str) -> str:
    """A directory path a node answered, as the controller will use it (in every worker's
    PYTHONPATH, in the wrapper's request): absolute, normal (no `.`/`..`, no `//`), ending in
    /.sfcluster/<cluster>/<dest>, and free of what would make it another path or several there (the
    path separator `:`, control characters). Anything else is the node's lie or a home dir
    sfcluster cannot use, and is refused naming the node."""
    import posixpath
    ok = (value.startswith("/") and posixpath.normpath(value) == value and not value.startswith("//")
          and value.endswith(f"/.sfcluster/{cluster}/{dest}") and ":" not in value
          and not any(ord(c) < 0x20 or ord(c) == 0x7f for c in value))
    if not ok:
        what = "run" if dest.startswith("runs/") else dest
        raise SfclusterError(f"[{node}] answered {value[:200]!r} as its {what} dir: not an absolute, plain path "
                             f"ending in /.sfcluster/{cluster}/{dest} (no ':' and no control characters)",
                             "the home dir of the user Ray runs as there must be a plain absolute path "
                             "without ':'; or the node's shell altered what sfcluster's script printed")
    return value
