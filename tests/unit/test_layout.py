"""The house's floors, kept: no import circle between sfcluster's modules (at import time), and no
function over 60 lines (node scripts and templates included)."""
import ast
import collections
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_LINES = 60


def _modules():
    for p in sorted((SRC / "sfcluster").rglob("*.py")):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts)
        yield (name[: -len(".__init__")] if name.endswith(".__init__") else name), p


def _module_level(tree):
    """The statements that run when the module is imported (not function bodies, not TYPE_CHECKING)."""
    todo = list(tree.body)
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            continue
        yield n
        todo.extend(c for c in ast.iter_child_nodes(n) if isinstance(c, ast.stmt))


def test_no_import_circle():
    mods = dict(_modules())
    graph = collections.defaultdict(set)
    for m, p in mods.items():
        for n in _module_level(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").startswith("sfcluster"):
                subs = {f"{n.module}.{a.name}" for a in n.names if f"{n.module}.{a.name}" in mods}
                graph[m] |= subs
                if len(subs) < len(n.names) and n.module in mods:
                    graph[m].add(n.module)
            elif isinstance(n, ast.Import):
                graph[m] |= {a.name for a in n.names if a.name in mods}
    # a module reaches itself through its imports: a circle
    for start in mods:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            assert m != start, f"import circle through {start}"
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])


def test_no_function_over_60_lines():
    long = []
    for _, p in _modules():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_LINES:
                long.append(f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert not long, long
