"""The argv of the system `ssh` that reaches one node the way the inventory says (`sfcluster ssh`).

Pure: target, jump host and remote command in, argv out (a table test holds it). Why each piece:
- `StrictHostKeyChecking=yes` with the inventory's `UserKnownHostsFile`: the trust every other
  command has (remote/ssh.py): an unknown or changed key is refused, never asked about or added.
  `UpdateHostKeys=no`: ssh never writes the operator's known_hosts either.
- No `BatchMode`: this is for a human at a terminal (a key's passphrase, sudo's password).
- A jump host goes into a ProxyCommand of our own, never `-J`: OpenSSH builds -J's inner ssh from
  -l, -p and -F alone, so the jump connection would drop these -o options and check the jump
  host's key against ~/.ssh/known_hosts, or ask. Ours carries the same trust options, identity and
  config file, and never jumps again itself (`Host *` + ProxyJump would recurse), as the transport's
  jump hop does.
- `%` in a path is doubled: OpenSSH expands %-tokens in IdentityFile, UserKnownHostsFile and in
  the ProxyCommand (twice for a path inside it: the outer ssh, then the inner one).
- The remote command is ONE word, shlex.join'ed: ssh joins its arguments with spaces for the
  remote shell, so `'a b'` would arrive as two words.
"""
from __future__ import annotations

import math
import os
import shlex
from typing import List, Optional, Sequence, Tuple

from sfcluster.errors import ConnectError
from sfcluster.remote.ssh import SshTarget

SSH = "ssh"
# what the jump host connects on to: ssh's own -J spelling, the brackets keep an IPv6 address whole
JUMP_DESTINATION = "[%h]:%p"


def ssh_argv(target: SshTarget, *, jump: Optional[str] = None, remote: Sequence[str] = (),
             tty: bool = False, ssh: str = SSH) -> List[str]:
    """argv for `ssh` to `target`: a login shell when `remote` is empty, else that command.
    `jump`: the one jump host, `[user@]host[:port]` (remote/ssh.configured_jump resolves it)."""
    argv = [ssh, *_common(target)]
    if jump:
        argv += ["-o", "ProxyCommand=" + proxy_command(target, jump, ssh)]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.user:
        argv += ["-l", target.user]
    if tty:
        argv.append("-t")
    argv += ["--", target.host]
    if remote:
        argv.append(shlex.join(remote))
    return argv


def proxy_command(target: SshTarget, jump: str, ssh: str = SSH) -> str:
    """The ProxyCommand that reaches `target` through `jump` with the same trust options."""
    user, host, port = parse_jump(jump, target.label)
    inner = [ssh, *_common(target), "-o", "ProxyJump=none", "-o", "ProxyCommand=none"]
    if port:
        inner += ["-p", str(port)]
    if user:
        inner += ["-l", user]
    inner += ["-W", JUMP_DESTINATION, "--", host]
    # the outer ssh expands %-tokens in the whole line: ours (%h %p) stay, every other % is literal
    return " ".join(shlex.quote(w if w == JUMP_DESTINATION else _literal(w)) for w in inner)


def as_user_command(user: str, command: Sequence[str]) -> List[str]:
    """The remote command that runs `command` (or a login shell) as `user`: `sudo -u USER -i`,
    which needs the SSH user's sudo (it asks for a password where sudo does)."""
    return ["sudo", "-u", user, "-i", *(["--", *command] if command else [])]


def parse_jump(spec: str, label: str = "") -> Tuple[Optional[str], str, Optional[int]]:
    """`[user@]host[:port]` (`[v6-address]:port` too) as (user, host, port). One hop only, as the
    SSH transport supports."""
    hops = [h.strip() for h in spec.split(",") if h.strip()]
    if len(hops) != 1:
        raise ConnectError(label, "", f"ProxyJump with several hops ({spec}) is not supported",
                           "use one jump host, or chain them in ~/.ssh/config")
    rest = hops[0]
    user: Optional[str] = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
    port: Optional[int] = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = _port(tail[1:], spec, label)
    elif rest.count(":") == 1:
        host, p = rest.split(":")
        port = _port(p, spec, label)
    else:
        host = rest
    return user, host, port


def _port(text: str, spec: str, label: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConnectError(label, "", f"jump host {spec!r}: {text!r} is not a port",
                           "write the jump host as [user@]host[:port]")
    return int(text)


def _common(target: SshTarget) -> List[str]:
    """The options of both hops: config file, strict host keys, identity, connect timeout."""
    out: List[str] = []
    if target.config_file:
        out += ["-F", os.path.expanduser(target.config_file)]
    out += ["-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no"]
    if target.known_hosts:
        out += ["-o", "UserKnownHostsFile=" + known_hosts_value(target.known_hosts)]
    if target.identity_file:
        path = os.path.expanduser(target.identity_file)
        # -i checks the file before token expansion and drops a path it cannot stat (a doubled %)
        out += ["-o", "IdentityFile=" + _literal(path)] if "%" in path else ["-i", path]
    out += ["-o", f"ConnectTimeout={max(1, math.ceil(target.connect_timeout))}"]
    return out


def known_hosts_value(known: str) -> str:
    """The inventory's known_hosts (one path, or several separated by spaces, as the transport
    reads it) as UserKnownHostsFile's value: each path expanded, literal, quoted when it holds a
    space."""
    paths = shlex.split(known) if " " in known else [known]
    return " ".join(_quoted(_literal(os.path.expanduser(p))) for p in paths)


def _literal(text: str) -> str:
    """`text` as OpenSSH's token expansion gives it back unchanged."""
    return text.replace("%", "%%")


def _quoted(path: str) -> str:
    return f'"{path}"' if any(c.isspace() for c in path) else path
