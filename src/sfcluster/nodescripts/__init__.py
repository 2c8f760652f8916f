"""Scripts that run ON the nodes (Python 3.10, stdlib only; psutil/ray when present).

They are shipped as source text (`python -c`), never imported on the controller, so that one
remote process start gathers everything a step needs.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sfcluster.inventory.model import Node
    from sfcluster.remote.base import Result

HERE = Path(__file__).parent


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """Text of nodescripts/<name>.py."""
    return (HERE / f"{name}.py").read_text()


def answer(res: "Result", what: str) -> dict:
    """The JSON object a node script of the state dir prints as its last line; an error naming the
    node when there is none, or when the script refused the node's state dir."""
    from sfcluster.errors import SfclusterError
    from sfcluster.remote.transfer import unsafe_state
    try:
        data = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res.check()
        raise SfclusterError(f"[{res.host}] no answer about {what}: {res.stdout[-300:]}") from None
    if isinstance(data, dict) and "error" in data:
        raise unsafe_state(res.host, data["error"])
    return data


def with_state(name: str) -> str:
    """Text of nodescripts/<name>.py after contract.py (the controller <-> node contract) and
    nodestate.py (the private state dir helpers it uses)."""
    return source("contract") + "\n\n" + source("nodestate") + "\n\n" + source(name)


GATE_FILE = HERE.parent / "gate.py"


def wrapper() -> str:
    """The run's wrapper (driver_wrapper.py) as shipped: with_state's text, and gate.py (the
    TLS-only doors production mode's wrapper holds; simulation mode's driver runs the same file as
    Ray actors, shipped beside runtime.py) before the script itself."""
    return (source("contract") + "\n\n" + source("nodestate") + "\n\n" + GATE_FILE.read_text() + "\n\n"
            + source("driver_wrapper"))


# How a privileged node script starts (as root, or as the sudo-capable SSH user): with the node's
# `root_python`, never the venv of the user Ray runs as (a .pth there ran as root once). Before it
# runs, every component of the interpreter's real path must be root's and writable by nobody else;
# then isolated mode (-I: no user site, no PYTHON* variables, no script dir on the path; -S: no
# site, so no .pth at all), and ROOT_GUARD checks the stdlib the same way from inside.
# $1: root_python, $2: "root" (as root: directly or through `sudo -n`, as the probe always was) or
# "self" (as the SSH user: the firewall step, which calls sudo itself); the rest: python's args.
PRIVILEGED = (
    'py=$(readlink -f "$1") && [ -f "$py" ] && [ -x "$py" ] || { echo "sfcluster: root_python $1 not found" >&2; exit 127; }; '
    'p="$py"; while [ -n "$p" ]; do '
    'm=$(stat -c "%u %A" "$p") || exit 126; case "$m" in "0 "?????w????|"0 "????????w?) '
    'echo "sfcluster: $p (root_python $1) is writable by others: privileged scripts will not run with it" >&2; exit 126;; '
    '"0 "*) ;; *) echo "sfcluster: $p (root_python $1) is not owned by root: privileged scripts will not run with it" >&2; '
    'exit 126;; esac; [ "$p" = / ] && break; p=$(dirname "$p"); done; '
    'how="$2"; shift 2; '
    'if [ "$how" = self ] || [ "$(id -u)" = 0 ]; then exec "$py" -I -S "$@"; '
    'elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then exec sudo -n -- "$py" -I -S "$@"; '
    'else exec "$py" -I -S "$@"; fi')

ROOT_GUARD = '''import os as _os, sys as _sys
def _root_guard():
    if not (_sys.flags.isolated and _sys.flags.no_site):
        raise SystemExit("sfcluster: a privileged node script must run with -I -S")
    for d in _sys.path:
        while d and _os.path.exists(d):
            st = _os.stat(d)
            if st.st_uid != 0 or st.st_mode & 0o022:
                raise SystemExit("sfcluster: %s (on the root interpreter's path) is not root's alone" % d)
            if d == "/":
                break
            d = _os.path.dirname(d)
_root_guard()
del _root_guard
'''


def privileged_argv(node: "Node", text: str, *args: str, as_root: bool = True) -> list:
    """argv of a privileged node script `text` (see PRIVILEGED); `args` become its sys.argv[1:].
    Only for arguments that are no secret (`ps` shows command lines); secrets go on stdin."""
    return ["sh", "-c", PRIVILEGED, "sh", node.root_python, "root" if as_root else "self",
            "-c", ROOT_GUARD + text, *args]
