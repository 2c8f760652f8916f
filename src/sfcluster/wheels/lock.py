"""The hash lock `sfcluster provision` installs from: one `name==version --hash=sha256:...` line
per wheel (pip's requirements format, so `pip install --require-hashes -r` reads it as it is).

With a wheelhouse the lock is made once from the wheelhouse's own files (name and version from
each wheel's file name, PEP 427; a source distribution is refused: its build code would run on
every node) and kept beside it as LOCK_NAME: a wheel that changes afterwards, or one added, fails
naming the package. With an index the inventory names the lock (`provision.lock`): the index is
then trusted for nothing but bytes that hash to what the lock says."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from sfcluster.errors import SfclusterError
from sfcluster.wheels.markers import MarkerError, canonical, check as check_marker

LOCK_NAME = "sfcluster-lock.txt"
SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip", ".egg")
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
LINE_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)"
                     r"(?:\s*;\s*(?P<marker>[^#]*?))?(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64})+)\s*$")
HOW_TO_MAKE = ("make the wheelhouse and its lock with `sfcluster wheelhouse -i INVENTORY DIR` (it writes "
               f"DIR/{LOCK_NAME}), or a lock with `pip-compile --generate-hashes`")


class LockError(SfclusterError):
    """The lock and the wheels disagree, or the lock cannot be read: names the package or the line."""

    def __init__(self, message: str, hint: Optional[str] = None, package: Optional[str] = None) -> None:
        super().__init__(message, hint)
        self.package = package


@dataclass(frozen=True)
class WheelName:
    """What a wheel's file name says (PEP 427: name-version[-build]-python-abi-platform.whl)."""

    file: str
    name: str
    version: str

    @property
    def key(self) -> str:
        return canonical(self.name)


def wheel_name(file: str, where: str = "") -> WheelName:
    """The name and version of wheel `file` (in directory `where`, for messages); a source
    distribution, or a file that is no wheel, is refused naming it."""
    shown = os.path.join(where, file) if where else file
    if file.endswith(SDIST_SUFFIXES):
        raise LockError(f"{shown} is a source distribution: installing it runs its build code on every node",
                        "keep only wheels in the wheelhouse (pip download --only-binary=:all:, which `sfcluster "
                        "wheelhouse` uses), and remove this file")
    parts = file[:-4].split("-") if file.endswith(".whl") else []
    if len(parts) not in (5, 6) or not NAME_RE.match(parts[0]) or not VERSION_RE.match(parts[1]):
        raise LockError(f"{shown} is not a wheel file name (name-version[-build]-python-abi-platform.whl, PEP 427)",
                        "remove or rename it")
    return WheelName(file, parts[0], parts[1])


@dataclass(frozen=True)
class LockEntry:
    name: str
    version: str
    hashes: Tuple[str, ...]
    marker: Optional[str] = None
    line: int = 0

    @property
    def key(self) -> str:
        return canonical(self.name)

    def render(self) -> str:
        marker = f" ; {self.marker}" if self.marker else ""
        return f"{self.name}=={self.version}{marker} " + " ".join(f"--hash=sha256:{h}" for h in self.hashes)

    def to_json(self) -> list:
        return [self.name, self.version, list(self.hashes), self.marker]


@dataclass(frozen=True)
class Lock:
    """Canonical name -> entry, and the file it came from (for messages)."""

    entries: Dict[str, LockEntry]
    source: str

    @property
    def digest(self) -> str:
        text = "\n".join(self.entries[k].render() for k in sorted(self.entries))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def where(self, entry: LockEntry) -> str:
        return f"{self.source}:{entry.line}" if entry.line else self.source

    def render(self, title: str) -> str:
        head = [f"# {title}", f"# {len(self.entries)} wheel(s); install: pip install --require-hashes "
                              "--only-binary=:all: -r this file"]
        return "\n".join(head + [self.entries[k].render() for k in sorted(self.entries)]) + "\n"

    def to_json(self) -> List[list]:
        return [self.entries[k].to_json() for k in sorted(self.entries)]


def parse_lock(text: str, source: str) -> Lock:
    """A lock file: `name==version [; marker] --hash=sha256:HEX...` per requirement, comments and
    backslash continuations as pip-compile writes them; anything else is refused by line."""
    entries: Dict[str, LockEntry] = {}
    logical: List[Tuple[int, str]] = []
    pending, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append((start, " ".join(pending.split())))
        pending = ""
    if pending.strip():
        logical.append((start, " ".join(pending.split())))
    for n, line in logical:
        m = LINE_RE.match(line)
        if not m:
            raise LockError(f"{source}:{n}: not a locked requirement (name==version --hash=sha256:<64 hex>, one or "
                            f"more hashes; only sha256): {line[:120]!r}", HOW_TO_MAKE)
        marker = (m.group("marker") or "").strip() or None
        if marker:
            try:
                check_marker(marker)
            except MarkerError as e:
                raise LockError(f"{source}:{n}: {e}", HOW_TO_MAKE) from None
        hashes = tuple(re.findall(r"sha256:([0-9a-f]{64})", m.group("hashes")))
        entry = LockEntry(m.group("name"), m.group("version"), hashes, marker, n)
        if entry.key in entries:
            raise LockError(f"{source}:{n}: {entry.name} is locked twice (first at line {entries[entry.key].line})",
                            "keep one line per package")
        entries[entry.key] = entry
    if not entries:
        raise LockError(f"{source}: the lock holds no requirement", HOW_TO_MAKE)
    return Lock(entries, source)


def read_lock(path: str) -> Lock:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise LockError(f"provision.lock: cannot read {path}: {getattr(e, 'strerror', None) or e}", HOW_TO_MAKE) from e
    return parse_lock(text, path)


def lock_from_files(files: Dict[str, Tuple[int, str]], source: str) -> Lock:
    """The lock of a wheelhouse: its wheels (file -> (size, sha256)), one entry per package with
    the hash of each of its files (several platforms of one version share a line)."""
    entries: Dict[str, LockEntry] = {}
    files_of: Dict[str, str] = {}
    for file, (_size, sha) in sorted(files.items()):
        w = wheel_name(file)
        have = entries.get(w.key)
        if have and have.version != w.version:
            raise LockError(f"{source}: two versions of {w.name} ({files_of[w.key]} and {file}): a lock pins one",
                            "remove the one the pins do not need")
        hashes = (have.hashes if have else ()) + (sha,)
        entries[w.key] = LockEntry(w.key, w.version, hashes)
        files_of.setdefault(w.key, file)
    return Lock(entries, source)


def check_files(lock: Lock, files: Dict[str, Tuple[int, str]], wheelhouse: str) -> None:
    """Every wheel of the wheelhouse is in the lock with its version and hash, else an error
    naming the package: the wheelhouse changed since its lock was made."""
    remake = (f"if the change is yours, remake the lock: delete {lock.source} (provision makes it again from the "
              f"wheelhouse's files) or run `sfcluster wheelhouse`")
    for file, (_size, sha) in sorted(files.items()):
        w = wheel_name(file)
        entry = lock.entries.get(w.key)
        if entry is None:
            raise LockError(f"{w.key} {w.version}: {wheelhouse}/{file} is not in the lock {lock.source}", remake,
                            package=w.key)
        if entry.version != w.version:
            raise LockError(f"{w.key}: {wheelhouse}/{file} is version {w.version}, the lock "
                            f"({lock.where(entry)}) pins {entry.version}", remake, package=w.key)
        if sha not in entry.hashes:
            raise LockError(f"{w.key}=={w.version}: {wheelhouse}/{file} has sha256 {sha[:16]}..., the lock "
                            f"({lock.where(entry)}) says {', '.join(h[:16] + '...' for h in entry.hashes)}: the "
                            f"wheel changed after the lock was made", remake, package=w.key)


def hash_wheels(wheelhouse: Path) -> Dict[str, Tuple[int, str]]:
    """Wheel file -> (size, sha256) of a wheelhouse directory; a source distribution in it is
    refused naming it. Dot files, the lock and other files (notes) are not wheels and stay out."""
    out = {}
    for p in sorted(wheelhouse.iterdir()):
        if p.is_file() and p.name.endswith((".whl",) + SDIST_SUFFIXES) and not p.name.startswith("."):
            wheel_name(p.name, str(wheelhouse))
            h = hashlib.sha256()
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[p.name] = (p.stat().st_size, h.hexdigest())
    return out


def wheelhouse_lock(wheelhouse: str, files: Dict[str, Tuple[int, str]],
                    named: Optional[str] = None) -> Tuple[Lock, bool]:
    """The lock of a wheelhouse and whether it was made now: the one the inventory names, else
    LOCK_NAME beside the wheels, else one made from the files and written there (when the
    directory lets us). The wheels are checked against a lock that already existed."""
    path = named or os.path.join(wheelhouse, LOCK_NAME)
    if named or os.path.exists(path):
        lock = read_lock(path)
        check_files(lock, files, wheelhouse)
        return lock, False
    lock = lock_from_files(files, path)
    write_lock(lock, path, f"sfcluster lock of the wheelhouse {wheelhouse}, made from its files")
    return lock, True


def write_lock(lock: Lock, path: str, title: str) -> bool:
    """Write the lock atomically; False when the directory is not ours to write (the lock then
    lives for this command only)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        Path(tmp).write_text(lock.render(title))
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
