"""Scripts that run ON the nodes (Python 3.10, stdlib only; psutil/ray when present).

They are shipped as source text (`python -c`), so that one remote process start gathers
everything a step needs; the controller imports only contract.py and answers.py of them (the
unit tests import the rest: nothing acts on import). Each is a module that imports what it
needs of sfcluster (contract, nodestate, gate) and acts under `if __name__ == "__main__"` only,
so that unit tests import it; `bundle` ships it with those modules. The controller starts them
through one funnel: `call` (ask and read the answer), `run` (the Result), `argv` (for a streamed
call); each picks the interpreter for who runs it.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, List

if TYPE_CHECKING:
    from sfcluster.inventory.model import Node
    from sfcluster.remote.base import Result, Runner

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


GATE_FILE = HERE.parent / "gate.py"
# A node script imports what it needs of sfcluster like any module (`from sfcluster.nodescripts.
# nodestate import state_dir`, `from sfcluster.gate import Gate`): the node has no sfcluster, so
# bundle() ships those modules with it (ansible's module_utils are the precedent) and LOADER
# registers each under its name before the script runs; each is compiled under its own file name,
# so a traceback's lines are the file's own.
_IMPORT = re.compile(r"^from sfcluster\.(nodescripts\.\w+|gate) import ", re.M)
LOADER = """import sys as _sys, types as _types
def _sfc_module(name, path, text):
    for pkg in ("sfcluster", "sfcluster.nodescripts"):
        if pkg not in _sys.modules:
            _sys.modules[pkg] = _types.ModuleType(pkg)
            _sys.modules[pkg].__path__ = []
    mod = _types.ModuleType(name)
    mod.__file__ = path
    _sys.modules[name] = mod
    exec(compile(text, path, "exec"), mod.__dict__)
    parent, _, leaf = name.rpartition(".")
    setattr(_sys.modules[parent], leaf, mod)
def _sfc_main(path, text):
    real = _sys.argv[0] if _sys.argv and _sys.argv[0] not in ("", "-c") else path
    exec(compile(text, path, "exec"), {"__name__": "__main__", "__file__": real, "__builtins__": __builtins__})
"""


def _module_file(module: str) -> Path:
    """`nodescripts.nodestate` -> nodescripts/nodestate.py; `gate` -> sfcluster/gate.py."""
    return GATE_FILE if module == "gate" else HERE / f"{module.split('.', 1)[1]}.py"


def imports(name: str) -> List[str]:
    """The sfcluster modules nodescripts/<name>.py needs, each after those it needs itself."""
    out: List[str] = []

    def visit(path: Path) -> None:
        for found in _IMPORT.finditer(path.read_text()):
            module = found.group(1)
            if module not in out:
                visit(_module_file(module))
                if module not in out:
                    out.append(module)
    visit(HERE / f"{name}.py")
    return out


@lru_cache(maxsize=None)
def bundle(name: str) -> str:
    """The text shipped for nodescripts/<name>.py: the modules it imports, then itself as
    __main__. Its first line stays a line of its own (oplock's is how nodestate.is_oplock_of
    recognises it in a command line)."""
    text = source(name)
    first = text.split("\n", 1)[0] if text.startswith("#") else ""
    parts = [f"# sfcluster node script {name}.py, with the modules it imports (nodescripts.bundle)", first, LOADER]
    for module in imports(name):
        path = _module_file(module)
        parts.append(f"_sfc_module({'sfcluster.' + module!r}, {path.name!r}, {path.read_text()!r})")
    parts.append(f"_sfc_main({name + '.py'!r}, {text!r})")
    return "\n".join(parts) + "\n"


def wrapper() -> str:
    """The run's wrapper (driver_wrapper.py) as shipped, with what it imports: contract,
    nodestate and gate.py (the TLS-only doors production mode's wrapper holds; simulation mode's
    driver runs the same file as Ray actors, shipped beside runtime.py)."""
    return bundle("driver_wrapper")


# Who runs a node script, with which interpreter:
#   ray   the user Ray runs as (or the SSH user), with the node's venv python
#   base  the same user with the node's base Python (provision: the venv may not exist yet)
#   root  root (directly or through `sudo -n`), with root_python in isolated mode (PRIVILEGED)
#   self  the sudo-capable SSH user with root_python in isolated mode (it calls sudo itself)
AS = ("ray", "base", "root", "self")


def argv(node: "Node", script: str, request: Any = None, *, as_: str = "ray") -> List[str]:
    """The argv that runs nodescripts/<script>.py (with what it needs) on `node` as `as_`;
    `request` (JSON) becomes its argv[1]. Only for requests that are no secret (`ps` shows command
    lines to every local user): secrets go on stdin."""
    text = bundle(script)
    args = [] if request is None else [json.dumps(request)]
    if as_ == "ray":
        return [node.python, "-c", text, *args]
    if as_ == "base":
        return [node.base_python, "-c", text, *args]
    if as_ in ("root", "self"):
        return privileged_argv(node, text, *args, as_root=as_ == "root")
    raise ValueError(f"as_ must be one of {AS}, not {as_!r}")


def run(runner: "Runner", node: "Node", script: str, request: Any = None, *, as_: str = "ray",
        stdin: Any = None, timeout: float) -> "Result":
    """Run nodescripts/<script>.py once (see argv). A privileged script whose root_python cannot be
    used (PRIVILEGED's 126/127 before the script starts) is the error naming it."""
    from sfcluster.errors import RemoteError
    res = runner.run(argv(node, script, request, as_=as_), stdin=stdin, timeout=timeout)
    if as_ in ("root", "self") and not res.stdout.strip() and res.exit_code in (126, 127):
        said = res.stderr.strip().splitlines()
        raise RemoteError(node.name, node.root_python, said[-1] if said else f"root_python {node.root_python} cannot be used",
                          f"privileged node scripts run with a root-owned system Python only: install python3 there "
                          f"(apt-get install python3) or set nodes.{node.name}.root_python to one only root can change")
    return res


def call(runner: "Runner", node: "Node", script: str, request: Any = None, *, what: str, as_: str = "ray",
         stdin: Any = None, timeout: float) -> dict:
    """Run nodescripts/<script>.py once and return its answer (see answer): the one way the
    controller asks a node something."""
    return answer(run(runner, node, script, request, as_=as_, stdin=stdin, timeout=timeout), what)


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
