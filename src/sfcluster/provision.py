"""`sfcluster provision`: make each node's `python` a venv, owned by the user Ray runs as, with
exactly the SecretFlow and Ray the inventory pins (`provision:`), from the node's own CPython 3.10.

Read, compare, then act (or say it is a no-op): a provisioned venv carries a marker with the digest
of what it was asked to install; a node whose marker matches is left alone (one SSH command), any
other is rebuilt in place, the old venv kept aside until the new one imports its pins. Packages
come from the node's package index (https; credentials on stdin, never on a command line) or from
a wheelhouse on this controller, streamed once to each node's private state dir and reused by
digest. Either way pip installs exactly a hash lock (wheels/lock.py): wheels only, every one with
its sha256, isolated from every pip.conf and PIP_* variable of the node, so neither the index nor
the Ray user's configuration decides what runs. The node side is nodescripts/provision.py."""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple

from sfcluster.connect import Nodes
from sfcluster.errors import PrivilegeError, RemoteError, SfclusterError
from sfcluster.exitcodes import Exit
from sfcluster.inventory.model import Cluster, Node, Provision
from sfcluster import nodescripts
from sfcluster.nodescripts.answers import NodeStep, VenvBuilt, VenvFound, WheelsThere
from sfcluster.nodescripts.contract import PROVISION_PYTHON, SYSTEM_DIRS
from sfcluster.remote.base import Runner
from sfcluster.remote.group import fan_out
from sfcluster.wheels.lock import Lock, hash_wheels, read_lock, wheelhouse_lock

INSPECT_TIMEOUT = 60
PUSH_TIMEOUT = 3600    # a GB of wheels over SSH
BUILD_TIMEOUT = 3600   # pip unpacking SecretFlow's dependencies on a slow disk
PYTHON_NAME = re.compile(r"^python(3(\.[0-9]+)?)?$")
PYPI = "https://pypi.org/simple"
Progress = Callable[[str, str], None]


@dataclass
class NodeOutcome:
    """What provision did on one node."""

    party: str
    venv: str
    changed: bool
    versions: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    wheels_sent: int = 0
    bytes_sent: int = 0
    restored: bool = False

    def to_json(self) -> dict:
        return dict(self.__dict__)


class ProvisionError(RemoteError):
    """A node's venv could not be built: names the node and, when pip says, the package."""

    def __init__(self, node: str, message: str, hint: Optional[str] = None, package: Optional[str] = None) -> None:
        super().__init__(node, "", message, hint)
        self.package = package


def venv_dir(node: Node) -> str:
    """The venv the node's `python` belongs to (<venv>/bin/python): refused when `python` is no
    such path (a bare `python3` cannot be provisioned: nothing says where the venv goes)."""
    py = node.python
    parts = Path(py).parts
    venv = str(Path(py).parent.parent)
    if (not py.startswith("/") or len(parts) < 5 or parts[-2] != "bin" or not PYTHON_NAME.match(parts[-1])
            or venv in SYSTEM_DIRS):
        raise SfclusterError(f"{node.name}: python {py!r} is not <venv>/bin/python of a venv directory of its own: "
                             f"provision does not know where to make the venv",
                             f"set nodes.{node.name}.python (or the top-level python) to e.g. /opt/sf/bin/python")
    return venv


def requested(prov: Provision) -> Dict[str, str]:
    """Distribution -> exact version the new venv must report."""
    return {prov.package: prov.version, **({"ray": prov.ray_version} if prov.ray_version else {})}


def source_of(prov: Provision) -> str:
    """Where packages come from, as the digest records it (never credentials)."""
    return "wheelhouse" if prov.wheelhouse else (prov.index_url or PYPI)


def digest(prov: Provision, node: Node, base_version: str, lock_digest: str = "") -> str:
    """What a node's venv is asked to hold: the pins, the base interpreter, the package source and
    the lock (every wheel and its sha256): a wheelhouse or lock that changes rebuilds the venv."""
    what = {"requirements": list(prov.requirements), "base": node.base_python, "base_version": base_version,
            "python": node.python, "source": source_of(prov), "lock": lock_digest}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def read_credentials(prov: Provision) -> str:
    """USER:PASSWORD from the 0600 file `index_credentials` names ("" without one)."""
    if not prov.index_credentials:
        return ""
    path = prov.index_credentials
    try:
        st = os.stat(path)
    except OSError as e:
        raise SfclusterError(f"provision.index_credentials: cannot read {path}: {e.strerror}") from e
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise SfclusterError(f"provision.index_credentials: {path} has mode {stat.S_IMODE(st.st_mode):o}: others "
                             "can read the index password", f"chmod 600 {path}")
    text = Path(path).read_text().strip()
    if ":" not in text or "\n" in text:
        raise SfclusterError(f"provision.index_credentials: {path} must hold one line USER:PASSWORD")
    return text


class Wheelhouse:
    """The controller's wheelhouse: file name -> (size, sha256), read once per command."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._files: Optional[Dict[str, Tuple[int, str]]] = None
        self._lock = threading.Lock()

    def files(self) -> Dict[str, Tuple[int, str]]:
        with self._lock:
            if self._files is None:
                if not self.path.is_dir():
                    raise SfclusterError(f"provision.wheelhouse: {self.path} is not a directory on this controller",
                                         "make it with: sfcluster wheelhouse -i INVENTORY DIR (wheels for the nodes' "
                                         "Python 3.10 and platform, with their hash lock)")
                out = hash_wheels(self.path)   # a source distribution is refused, named
                if not out:
                    raise SfclusterError(f"provision.wheelhouse: no wheels in {self.path}")
                self._files = out
            return self._files

    def stream(self, names: List[str]) -> BinaryIO:
        """A readable binary stream: a tar of `names`, written by a thread as it is read."""
        read_fd, write_fd = os.pipe()

        def writer() -> None:
            with os.fdopen(write_fd, "wb") as out:
                try:
                    with tarfile.open(fileobj=out, mode="w|") as tar:
                        for name in names:
                            tar.add(str(self.path / name), arcname=name, recursive=False)
                except (BrokenPipeError, OSError):
                    pass  # the node stopped reading: its answer says why
        threading.Thread(target=writer, daemon=True, name="wheel-stream").start()
        return os.fdopen(read_fd, "rb")


def _ask(runner: Runner, node: Node, req: dict, timeout: float, stdin: object = None, privileged: bool = False) -> dict:
    """One action of nodescripts/provision.py: as the Ray user with the node's base Python; or,
    `privileged` (making the venv's directory where only root may), as root with the node's
    root_python in isolated mode, like every privileged node script (never an interpreter another
    user could change: base_python may be anyone's)."""
    res = nodescripts.run(runner, node, "provision", req, as_="root" if privileged else "base", stdin=stdin,
                          timeout=timeout)
    if not res.stdout.strip() and (res.exit_code == 127 or "command not found" in res.stderr
                                   or "No such file" in res.stderr):
        raise ProvisionError(node.name, f"no Python {PROVISION_PYTHON} at {node.base_python!r}: the venv is made from "
                                        "the node's own CPython",
                             f"install it there (Ubuntu 22.04: apt-get install python3.10 python3.10-venv; elsewhere a "
                             f"CPython {PROVISION_PYTHON} of the distribution or python.org), or name the one it has: "
                             f"nodes.{node.name}.base_python (or provision.base_python): /path/to/python3.10")
    return nodescripts.answer(res, f"provision ({req['action']})")


def _check_base(node: Node, info: VenvFound) -> None:
    version = info.base_version
    if not version.startswith(PROVISION_PYTHON + "."):
        raise ProvisionError(node.name, f"{node.base_python} is Python {version}; SecretFlow's wheels need "
                                        f"{PROVISION_PYTHON}",
                             f"install python{PROVISION_PYTHON} there, or name it: nodes.{node.name}.base_python")
    if info.venv_module:
        raise ProvisionError(node.name, f"{node.base_python} cannot make venvs ({info.venv_module})",
                             f"install python{PROVISION_PYTHON}-venv there (Debian/Ubuntu split it off)")


def provision_lock(prov: Provision, wheelhouse: Optional[Wheelhouse], progress: Progress) -> Lock:
    """The hash lock the nodes install from: the inventory's `provision.lock`, or the wheelhouse's
    own (made from its files the first time, then checked against them). An index without a lock
    is refused: whoever serves it would decide what runs on every node."""
    if wheelhouse is not None:
        lock, made = wheelhouse_lock(str(wheelhouse.path), wheelhouse.files(), prov.lock)
        if made:
            progress("lock", f"{lock.source}: made from the wheelhouse's {len(lock.entries)} package(s); a wheel "
                             "that changes from now on fails naming its package")
        return lock
    if not prov.lock:
        raise SfclusterError(f"provision: installing from {source_of(prov)} needs a hash lock (provision.lock): "
                             "without one, whoever serves the index decides what runs on every node",
                             "make one with `sfcluster wheelhouse -i INVENTORY DIR` (it downloads the wheels and "
                             "writes DIR/sfcluster-lock.txt), then set provision.wheelhouse: DIR, or keep index_url "
                             "and set provision.lock: DIR/sfcluster-lock.txt")
    return read_lock(prov.lock)


def provision_node(cluster: Cluster, nodes: Nodes, party: str, force: bool, progress: Progress,
                   wheelhouse: Optional[Wheelhouse], secret: str, lock: Lock) -> NodeOutcome:
    """Read the node's venv, compare with the pins, rebuild it only when they differ."""
    prov = cluster.provision
    assert prov is not None
    node = cluster.node(party)
    venv = venv_dir(node)
    ray = nodes.ray(party)
    started = time.monotonic()
    info = VenvFound.parse(_ask(ray, node, {"action": "inspect", "venv": venv}, INSPECT_TIMEOUT))
    _check_base(node, info)
    want = digest(prov, node, info.base_version, lock.digest)
    if not force and info.python_ok and info.marker_digest == want:
        progress(party, f"{venv}: already {', '.join(prov.requirements)} (digest {want[:12]}): nothing to do")
        return NodeOutcome(party, venv, False, dict(info.versions), time.monotonic() - started)
    if info.busy:
        b = info.busy[0]
        raise ProvisionError(party, f"{venv} is in use (pid {b.pid}: {b.cmd}): it cannot be replaced under a "
                                    f"running program", "stop what runs from it first (`sfcluster down`), then provision")
    out = NodeOutcome(party, venv, True)
    # the venv's directory first (nothing sent to a node that cannot have it): the Ray user makes it
    # where it may; else root does (sudo -n) and hands it to that user
    privileged = not info.self_swap
    swap_req = {"action": "swap_in", "venv": venv, "owner": info.user}
    swapped = NodeStep.parse(_ask(nodes[party] if privileged else ray, node, swap_req, INSPECT_TIMEOUT,
                                  privileged=privileged))
    if swapped.refused and swapped.needs_root and not privileged:
        privileged = True
        swapped = NodeStep.parse(_ask(nodes[party], node, swap_req, INSPECT_TIMEOUT, privileged=True))
    if swapped.refused:
        if swapped.needs_root:
            raise PrivilegeError(f"[{party}] cannot make {venv} for {info.user}: {swapped.refused}; that needs "
                                 "root, and sudo asks for a password",
                                 f"make it once by hand: sudo install -d -o {info.user} {venv} (and move an old "
                                 f"venv there aside), or give the SSH user passwordless sudo")
        raise ProvisionError(party, swapped.refused)
    built: Optional[VenvBuilt] = None
    try:
        built = _install(cluster, node, ray, out, info, want, wheelhouse, secret, progress, lock)
    finally:  # the new venv when it imports its pins, else what was there before: never half a venv
        done = NodeStep.parse(_ask(nodes[party] if privileged else ray, node,
                                   {"action": "finish", "venv": venv, "ok": built is not None and not built.failed},
                                   INSPECT_TIMEOUT, privileged=privileged))
    assert built is not None  # _install returned
    if built.failed:
        what = f" ({built.package})" if built.package else ""
        kept = "the previous venv is back in place" if done.restored else f"nothing is left at {venv}"
        if built.stage == "lock check":
            hint = ("the pins, the lock and the wheels must agree: remake the wheelhouse and its lock with "
                    "`sfcluster wheelhouse -i INVENTORY DIR`")
        else:
            hint = ("check that the pins exist for Python 3.10 on this platform (in the wheelhouse, or on the index) "
                    "and that the lock lists every wheel they need (`sfcluster wheelhouse` makes both)")
        raise ProvisionError(party, f"{built.stage} failed{what}: {built.failed}; {kept}", hint, package=built.package)
    out.versions, out.seconds = dict(built.versions), time.monotonic() - started
    progress(party, f"{venv}: {', '.join(f'{k} {v}' for k, v in out.versions.items())} in {out.seconds:.0f} s")
    return out


def _named(party: str, e: BaseException) -> str:
    text = str(getattr(e, "message", None) or e)
    return text if text.startswith(f"[{party}]") else f"[{party}] {text}"


def _install(cluster: Cluster, node: Node, ray: Runner, out: NodeOutcome, info: VenvFound, want: str,
             wheelhouse: Optional[Wheelhouse], secret: str, progress: Progress, lock: Lock) -> VenvBuilt:
    """Into the fresh venv dir: the wheels the node lacks (wheelhouse), then venv + pip + verify."""
    prov = cluster.provision
    assert prov is not None
    party, venv = node.name, out.venv
    source: dict = {"index_url": prov.index_url or PYPI}
    if wheelhouse is not None:
        files = wheelhouse.files()
        got = WheelsThere.parse(_ask(ray, node, {"action": "wheels", "cluster": cluster.name, "files": files},
                                     INSPECT_TIMEOUT))
        missing = [n for n in got.missing if n in files]
        if missing:
            out.wheels_sent, out.bytes_sent = len(missing), sum(files[n][0] for n in missing)
            progress(party, f"sending {len(missing)} of {len(files)} wheel(s), {out.bytes_sent / 2**20:.0f} MiB")
            sent = NodeStep.parse(_ask(ray, node, {"action": "wheels_put", "cluster": cluster.name,
                                                   "files": {n: files[n] for n in missing}}, PUSH_TIMEOUT,
                                       stdin=wheelhouse.stream(missing)))
            if sent.refused:
                raise ProvisionError(party, f"the wheelhouse did not arrive whole: {sent.refused}")
        source = {"wheelhouse": got.dir}
    progress(party, f"building {venv} with {node.base_python} (Python {info.base_version}) from "
                    f"{'the wheelhouse' if wheelhouse else source_of(prov)}: {', '.join(prov.requirements)}")
    marker = {"digest": want, "requirements": list(prov.requirements), "base": node.base_python,
              "base_version": info.base_version, "source": source_of(prov), "lock": lock.digest}
    return VenvBuilt.parse(_ask(ray, node, {"action": "build", "cluster": cluster.name, "venv": venv,
                            "requirements": list(prov.requirements), "check": requested(prov), "source": source,
                            "lock": lock.to_json(), "marker": marker}, BUILD_TIMEOUT, stdin=secret))


def provision(cluster: Cluster, nodes: Nodes, parties: Optional[List[str]] = None, force: bool = False,
              progress: Optional[Progress] = None) -> Dict[str, NodeOutcome]:
    """Every node (of `parties`) in parallel; one error at the end naming each node that failed."""
    prov = cluster.provision
    if prov is None:
        raise SfclusterError(f"{cluster.source}: no `provision:` section: nothing says what to install",
                             "add provision: {package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3} "
                             "(`sfcluster init --example` documents it)")
    names = list(parties or cluster.party_names)
    for n in names:
        venv_dir(cluster.node(n))
    secret = read_credentials(prov)
    wheelhouse = Wheelhouse(prov.wheelhouse) if prov.wheelhouse else None
    say = progress or (lambda n, m: None)
    lock = provision_lock(prov, wheelhouse, say)  # a missing wheelhouse or lock: one error, before any node
    g = fan_out(lambda n: provision_node(cluster, nodes, n, force, say, wheelhouse, secret, lock), names)
    if g.errors:
        codes = {int(getattr(e, "exit_code", Exit.FAILURE)) for e in g.errors.values()}
        err = SfclusterError(f"provision failed on {len(g.errors)} of {len(names)} node(s):\n" +
                             "\n".join(f"  {_named(n, e)}" for n, e in g.errors.items()),
                             "; ".join(sorted({e.hint for e in g.errors.values() if getattr(e, "hint", None)})) or None)
        err.exit_code = codes.pop() if len(codes) == 1 else Exit.FAILURE
        raise err
    return g.results
