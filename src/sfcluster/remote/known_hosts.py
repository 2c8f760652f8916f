"""known_hosts files as OpenSSH writes them, markers included, read into what paramiko checks.

paramiko's own loader reads `@revoked` and `@cert-authority` lines as if the marker were a host
name and raises on the key field, so one such line made every connection fail. Here:
- `@revoked` lines are honoured, more strictly than OpenSSH: a key listed revoked is refused for
  every host, whatever host pattern the line names, and a plain line for the same key trusts nothing.
- `@cert-authority` lines are skipped: sfcluster (paramiko) does not check host certificates. The
  plain keys of the same file keep working; a host trusted only through a CA line is refused, and
  the error says that host certificates are unsupported and how to pin the host's own key.
- a line that cannot be read (a marker OpenSSH does not know either, a broken key) is skipped, as
  OpenSSH skips it: it trusts nothing, so skipping it never accepts a key.
"""
from __future__ import annotations

import binascii
import re
from base64 import b64decode
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"


class RevokedHostKey(paramiko.SSHException):
    """The server showed a key that a known_hosts file lists as revoked."""

    def __init__(self, hostname: str, key: paramiko.PKey, where: str) -> None:
        super().__init__(f"{hostname} showed a {key.get_name()} key that {where} lists as @revoked")
        self.hostname, self.key, self.where = hostname, key, where


@dataclass
class KnownHosts:
    """The keys to trust (paramiko's HostKeys), the revoked ones (key blob -> `file:line`) and the
    skipped `@cert-authority` lines (`file:line`)."""

    keys: paramiko.HostKeys = field(default_factory=paramiko.HostKeys)
    revoked: Dict[bytes, str] = field(default_factory=dict)
    cert_authorities: List[str] = field(default_factory=list)

    def revoked_at(self, key: paramiko.PKey) -> Optional[str]:
        """Where `key` is listed revoked, or None."""
        return self.revoked.get(key.asbytes())


def load(paths: Iterable[str], keys: Optional[paramiko.HostKeys] = None) -> KnownHosts:
    """Read the files in order (OpenSSH's: the user's, then the global one) into `keys` (an SSH
    client's own table, or a new one). As with paramiko's own loader, a host name matches exactly
    (paramiko knows no patterns) and for a host and key type the first key listed is the one checked."""
    known = KnownHosts(keys if keys is not None else paramiko.HostKeys())
    plain: List[HostKeyEntry] = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                where = f"{path}:{lineno}"
                if line.startswith("@"):
                    marker, _, rest = line.partition(" ")
                    if marker == REVOKED:
                        blob = _key_blob(rest)
                        if blob is not None:
                            known.revoked[blob] = where
                    elif marker == CERT_AUTHORITY:
                        known.cert_authorities.append(where)
                    continue
                try:
                    entry = HostKeyEntry.from_line(line, lineno)
                except (InvalidHostKey, paramiko.SSHException, ValueError):
                    continue
                if entry is not None:
                    plain.append(entry)
    for entry in plain:
        if entry.key.asbytes() in known.revoked:
            continue  # a revoked key is trusted nowhere, even where a plain line still lists it
        for name in entry.hostnames:
            listed = known.keys.lookup(name)
            if listed is None or entry.key.get_name() not in listed:
                known.keys.add(name, entry.key.get_name(), entry.key)
    return known


def _key_blob(fields: str) -> Optional[bytes]:
    """The key of `hosts keytype base64 [comment]`, decoded; None when it is not one."""
    parts = re.split(r"[ \t]+", fields.strip())
    if len(parts) < 3:
        return None
    try:
        return b64decode(parts[2], validate=True)
    except (binascii.Error, ValueError):
        return None


class StrictPolicy(paramiko.RejectPolicy):
    """paramiko's RejectPolicy (an unknown key is refused, never added), which also says why when
    the key is a revoked one."""

    def __init__(self, known: KnownHosts, files: List[str]) -> None:
        self.known, self.files = known, files  # files: the user's known_hosts, named in errors

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        where = self.known.revoked_at(key)
        if where is not None:
            raise RevokedHostKey(hostname, key, where)
        super().missing_host_key(client, hostname, key)
