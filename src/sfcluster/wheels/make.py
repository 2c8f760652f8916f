"""`sfcluster wheelhouse`: the wheels the nodes need, for THEIR Python and platform, with the hash
lock provision installs from.

`pip download --python-version 3.10 --platform ...` picks wheels by the nodes' tags but evaluates
dependency markers with the interpreter it runs under (pip 23.2.1 on a Python 3.11 controller left
out `async-timeout`, which aiohttp needs below 3.11 only; provision then failed on every node
after streaming 69 wheels). So after pip, every wheel's `Requires-Dist` is evaluated here for the
nodes' environment (markers.py), what is missing is downloaded the same way, until nothing is;
what the nodes' Python does not need is removed. A requirement counts as present by name (pip
chose its version); the nodes' own `pip install` of the lock, which resolves again, is the last
word on versions."""
from __future__ import annotations

import os
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

from sfcluster.errors import SfclusterError
from sfcluster.wheels.lock import LOCK_NAME, Lock, hash_wheels, lock_from_files, wheel_name, write_lock
from sfcluster.wheels.markers import (MarkerError, Requirement, evaluate, parse_requirement, requires_dist,
                                     target_environment)

MAX_ROUNDS = 10          # downloads of what pip left out; each round closes at least one name
DOWNLOAD_TIMEOUT = 3600  # a GB of wheels
Download = Callable[[List[str]], None]   # requirements -> into the wheelhouse, or raise
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """The nodes' interpreter and platform: CPython `python` on Linux `arch` with glibc >= `glibc`."""

    python: str = "3.10"
    arch: str = "x86_64"
    glibc: str = "2.28"

    def platforms(self) -> List[str]:
        """Every manylinux tag such a node runs, newest first (pip takes the first that fits)."""
        major, minor = (int(x) for x in self.glibc.split("."))
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)]
        if minor >= 17:
            tags.append(f"manylinux2014_{self.arch}")
        if self.arch in ("x86_64", "i686"):
            tags += [f"manylinux_2_12_{self.arch}", f"manylinux2010_{self.arch}",
                     f"manylinux_2_5_{self.arch}", f"manylinux1_{self.arch}"]
        return tags

    def pip_args(self) -> List[str]:
        abi = "cp" + self.python.replace(".", "")
        out = ["--only-binary=:all:", "--python-version", self.python, "--implementation", "cp", "--abi", abi]
        for tag in self.platforms():
            out += ["--platform", tag]
        return out


def download_argv(python: str, target: Target, dest: str, requirements_file: str) -> List[str]:
    """pip download of a requirements file for `target`: wheels only, no pip.conf or PIP_* applies."""
    return [python, "-m", "pip", "download", "--isolated", "--no-input", "--disable-pip-version-check",
            "--progress-bar", "off", *target.pip_args(), "-d", dest, "-r", requirements_file]


def pip_download(python: str, target: Target, dest: str, index_url: Optional[str], secret: str) -> Download:
    """A Download that runs pip; the index (credentials included) goes in a 0600 requirements file,
    never on a command line."""
    def run(requirements: List[str]) -> None:
        head = []
        if index_url:
            url = index_url
            if secret:
                scheme, rest = url.split("://", 1)
                from urllib.parse import quote
                user, _, password = secret.partition(":")
                url = f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"
            head = [f"--index-url {url}"]
        fd, reqs = tempfile.mkstemp(prefix="sfcluster-download-", suffix=".txt")   # 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(head + requirements) + "\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
            env["PIP_CONFIG_FILE"] = os.devnull
            try:
                p = subprocess.run(download_argv(python, target, dest, reqs), capture_output=True, text=True,
                                   env=env, timeout=DOWNLOAD_TIMEOUT)
            except FileNotFoundError as e:
                raise SfclusterError(f"cannot run {python}: {e.strerror}") from e
        finally:
            os.unlink(reqs)
        if p.returncode != 0:
            text = (p.stderr or p.stdout).strip().splitlines()
            if any("No module named pip" in line for line in text):
                raise SfclusterError(f"{python} has no pip: `sfcluster wheelhouse` downloads with it",
                                     f"{python} -m ensurepip, or install sfcluster where pip is")
            raise SfclusterError(f"pip download of {', '.join(requirements)} for Python {target.python} "
                                 f"({target.arch}, glibc {target.glibc}) failed: " + " | ".join(text[-4:]),
                                 "check the names and versions exist as wheels for that Python and platform")
    return run


def read_metadata(wheel: Path) -> str:
    """The METADATA of a wheel (its top-level *.dist-info)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                parts = name.split("/")
                if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                    return z.read(name).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile) as e:
        raise SfclusterError(f"{wheel}: not a readable wheel ({e})", "delete it and download again") from e
    raise SfclusterError(f"{wheel}: no *.dist-info/METADATA: not a wheel", "delete it and download again")


@dataclass
class Closure:
    """What the pins need on the target: wheel files reached, and requirements no wheel answers."""

    reached: Set[str] = field(default_factory=set)
    missing: Dict[str, Requirement] = field(default_factory=dict)


def closure(wheelhouse: Path, pins: List[str], env: Dict[str, str]) -> Closure:
    """Walk the pins' Requires-Dist in `wheelhouse`, markers evaluated in `env` (with each
    requested extra): the wheels reached and the requirements that have no wheel there."""
    by_key: Dict[str, List[str]] = {}
    for p in sorted(wheelhouse.iterdir()):
        if p.is_file() and p.name.endswith(".whl"):
            by_key.setdefault(wheel_name(p.name, str(wheelhouse)).key, []).append(p.name)
    out = Closure()
    extras_seen: Dict[str, Set[str]] = {}
    todo: List[Tuple[Requirement, Optional[str]]] = [(parse_requirement(pin), None) for pin in pins]
    while todo:
        req, needed_by = todo.pop()
        files = by_key.get(req.key)
        if not files:
            out.missing.setdefault(req.key, req)
            continue
        seen = extras_seen.get(req.key)
        if seen is not None and req.extras <= seen:
            continue
        extras = set(req.extras) | (seen or set())
        extras_seen[req.key] = extras
        out.reached.update(files)
        metadata = read_metadata(wheelhouse / files[0])
        for dep in requires_dist(metadata):
            try:
                applies = dep.marker is None or evaluate(dep.marker, env, frozenset(extras))
            except MarkerError as e:
                raise SfclusterError(f"{files[0]}: Requires-Dist {dep.for_pip()}: {e}") from e
            if applies:
                todo.append((dep, req.name))
    return out


@dataclass
class MadeWheelhouse:
    dir: str
    lock: Lock
    lock_path: str
    added: List[str]      # what pip left out and the closure fetched
    removed: List[str]    # wheels the target's Python does not need
    bytes: int

    def to_json(self) -> dict:
        wheels = sum(len(e.hashes) for e in self.lock.entries.values())
        return {"dir": self.dir, "lock": self.lock_path, "wheels": wheels,
                "packages": len(self.lock.entries), "bytes": self.bytes, "added": self.added, "removed": self.removed}


def make_wheelhouse(dest: str, pins: List[str], target: Target, download: Download,
                    progress: Optional[Progress] = None) -> MadeWheelhouse:
    """Download the pins into `dest`, close the set for `target`, write the lock beside it."""
    say = progress or (lambda m: None)
    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    hash_wheels(d)   # a source distribution already there is refused before any download
    say(f"downloading {' '.join(pins)} for CPython {target.python} on {target.arch} (glibc {target.glibc})")
    download(pins)
    env = target_environment(target.python, target.arch)
    added: List[str] = []
    asked: Set[str] = set()
    for _ in range(MAX_ROUNDS):
        got = closure(d, pins, env)
        if not got.missing:
            break
        again = sorted(k for k in got.missing if k in asked)
        if again:
            r = got.missing[again[0]]
            raise SfclusterError(f"{r.for_pip()} is needed on Python {target.python} but its download brought no "
                                 f"wheel of {r.name}", "check it exists as a wheel for that Python and platform")
        wanted = [got.missing[k].for_pip() for k in sorted(got.missing)]
        say(f"pip left out what Python {target.python} needs: {', '.join(wanted)}; downloading")
        download(wanted)
        asked.update(got.missing)
        added += wanted
    else:
        raise SfclusterError(f"the wheelhouse did not close after {MAX_ROUNDS} rounds of downloads")
    removed = []
    for p in sorted(d.iterdir()):
        if p.is_file() and p.name.endswith(".whl") and p.name not in got.reached:
            p.unlink()
            removed.append(p.name)
    if removed:
        say(f"removed {len(removed)} wheel(s) Python {target.python} does not need: {', '.join(removed)}")
    files = hash_wheels(d)
    lock_path = str(d / LOCK_NAME)
    lock = lock_from_files(files, lock_path)
    if not write_lock(lock, lock_path, f"sfcluster lock: {' '.join(pins)} for CPython {target.python} on "
                                       f"{target.arch}, glibc {target.glibc} (sfcluster wheelhouse)"):
        raise SfclusterError(f"cannot write {lock_path}", f"make {dest} writable")
    return MadeWheelhouse(str(d), lock, lock_path, added, removed, sum(s for s, _ in files.values()))
