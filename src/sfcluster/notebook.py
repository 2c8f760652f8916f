"""A notebook as the cluster's one driver (`sfcluster run NOTEBOOK.ipynb`), on the head: its code
cells run in order in THIS process, in one namespace, as a Jupyter kernel would run them, and the
executed notebook (each cell's output, the failing cell's traceback) is written to
$SFCLUSTER_OUTPUT after every cell. Python 3.10 and the stdlib only: shipped with the run beside
runtime.py.

Why in-process and not nbclient: nbclient runs the cells in a kernel that jupyter_client starts
in a new session (start_new_session=True), so the Ray driver would be the kernel, a process the
run's wrapper did not start: the run watcher would see a second driver (76), the lock's driver
pid would not be the driver's, and Ctrl-C would not reach it through the wrapper's process group.
Here the driver is the wrapper's own child, and every guarantee of a script run holds as it is.

What a kernel has and this has not: IPython's magics. `!cmd` and `%pip ...` run as IPython runs
them (a shell, `python -m pip`), `%matplotlib ...` does nothing (no display here); any other magic
stops the run before the first cell, naming the cell (run/notebooks.py checks on the controller).
The last expression of a cell is shown, as Jupyter shows it (`execute_result`, text/plain).

Usage (the wrapper's driver command): python notebook.py NOTEBOOK.ipynb CELL_TIMEOUT PARTY_MAP_JSON
"""
import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback

MAGIC = re.compile(r"^(\s*)(!|%)(\S*)(.*)$")


class CellTimeout(Exception):
    pass


class Tee:
    """One of the driver's streams during a cell: passed through to the run's log and terminal as
    it comes, and kept for the cell's outputs."""

    def __init__(self, inner, name):
        self.inner, self.name, self.parts = inner, name, []

    def write(self, s):
        self.inner.write(s)
        self.inner.flush()
        self.parts.append(s)
        return len(s)

    def flush(self):
        self.inner.flush()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def shell(cmd):
    """`!cmd` of a cell: the shell's output into the cell's, its exit code ignored (as IPython does)."""
    p = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(p.stdout)


def magics(cell_source):
    """The IPython magics of a cell this runner cannot run: [(line number, %name)]."""
    bad = []
    for n, line in enumerate(cell_source.splitlines(), 1):
        m = MAGIC.match(line)
        if m and m.group(2) == "%" and m.group(3) not in ("pip", "matplotlib"):
            bad.append((n, "%" + m.group(3)))
    return bad


def python_source(cell_source):
    """A code cell's text as Python: the magics this runner knows rewritten (module docstring)."""
    out = []
    for line in cell_source.splitlines():
        m = MAGIC.match(line)
        if not m:
            out.append(line)
        elif m.group(2) == "!":
            out.append("%s__sfc_shell__(%r)" % (m.group(1), m.group(3) + m.group(4)))
        elif m.group(3) == "pip":
            out.append("%s__sfc_shell__(%r)" % (m.group(1), "%s -m pip%s" % (sys.executable, m.group(4))))
        elif m.group(3) == "matplotlib":
            out.append(m.group(1) + "pass")
        else:  # the controller refused it already (run/notebooks.py); a notebook changed since is refused here
            raise SyntaxError("IPython magic %%%s is not supported by sfcluster's notebook runner" % m.group(3))
    return "\n".join(out)


def _on_alarm(signum, frame):
    raise CellTimeout()


def run_cell(code, ns, timeout, filename):
    """Execute one cell in ns; the value of its last expression, or None."""
    tree = ast.parse(code, filename, "exec")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        exec(compile(tree, filename, "exec"), ns)  # noqa: S102 - the user's notebook, as its kernel would
        if last is not None:
            return eval(compile(ast.Expression(last.value), filename, "eval"), ns)  # noqa: S307
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def save(nb, path):
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(nb, f, indent=1)
    os.replace(tmp, path)


def main(argv):
    nb_path, timeout, party_map = argv[0], float(argv[1]), json.loads(argv[2])
    from sfcluster import runtime
    cfg = runtime.guard()                      # before any cell: this is the run's one driver
    runtime.notebook_compat(cfg, party_map)    # address='local', testing.cluster_def, party names
    with open(nb_path) as f:
        nb = json.load(f)
    out_dir = os.environ.get("SFCLUSTER_OUTPUT") or "."
    out_path = os.path.join(out_dir, os.path.basename(nb_path))
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    ns = {"__name__": "__main__", "__sfc_shell__": shell}
    for c in cells:
        c["outputs"], c["execution_count"] = [], None
    for i, cell in enumerate(cells, 1):
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        print("sfcluster: cell %d/%d" % (i, len(cells)), file=sys.stderr, flush=True)
        out, err = Tee(sys.__stdout__, "stdout"), Tee(sys.__stderr__, "stderr")
        sys.stdout, sys.stderr = out, err
        started, failure, value = time.time(), None, None
        try:
            value = run_cell(python_source(src), ns, timeout, "<cell %d>" % i)
            if value is not None:  # on the terminal; in the notebook as the cell's result, not a print
                sys.__stdout__.write(repr(value) + "\n")
                sys.__stdout__.flush()
        except CellTimeout:
            failure = ("CellTimeout", "cell %d ran longer than %g s (sfcluster run --cell-timeout)" % (i, timeout),
                       ["CellTimeout: cell %d ran longer than %g s" % (i, timeout)])
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C / cancel, or the notebook's own sys.exit: the end
            cell["execution_count"] = i
            save(nb, out_path)
            raise
        except Exception as e:  # noqa: BLE001 - the cell's error is the notebook's outcome
            tb = traceback.format_exception(type(e), e, e.__traceback__)
            failure = (type(e).__name__, str(e), [ln.rstrip("\n") for ln in tb])
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        cell["execution_count"] = i
        for tee in (out, err):
            if tee.parts:
                cell["outputs"].append({"output_type": "stream", "name": tee.name, "text": "".join(tee.parts)})
        if value is not None:
            cell["outputs"].append({"output_type": "execute_result", "execution_count": i, "metadata": {},
                                    "data": {"text/plain": repr(value)}})
        cell.setdefault("metadata", {})["sfcluster"] = {"seconds": round(time.time() - started, 3)}
        if failure is not None:
            ename, evalue, tb = failure
            cell["outputs"].append({"output_type": "error", "ename": ename, "evalue": evalue, "traceback": tb})
            save(nb, out_path)
            print("\n".join(tb), file=sys.stderr, flush=True)
            print("sfcluster: cell %d/%d failed (%s); the executed notebook: %s" % (i, len(cells), ename, out_path),
                  file=sys.stderr, flush=True)
            return 1
        save(nb, out_path)
    print("sfcluster: %d cell(s) ran; the executed notebook: %s" % (len(cells), out_path), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
