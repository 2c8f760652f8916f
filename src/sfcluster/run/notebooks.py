"""`sfcluster run NOTEBOOK.ipynb`, the controller's half: the notebook read and checked before
anything is contacted (a notebook, not a script; no IPython magic the runner cannot run; every
party it names, after --party-map, in the inventory), then run as the one driver by
sfcluster/notebook.py, shipped as the run's script with the notebook beside it."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from sfcluster import notebook as runner
from sfcluster.errors import NotInInventory, SfclusterError
from sfcluster.inventory.model import Cluster

RUNNER_FILE = Path(runner.__file__).resolve()
CELL_TIMEOUT = 1800.0   # seconds a cell may run (`run --cell-timeout`)
MAX_NOTEBOOK_BYTES = 64 << 20
PARTY_CALLS = {"init": "sf.init", "cluster_def": "sf.utils.testing.cluster_def", "PYU": "sf.PYU"}


@dataclass(frozen=True)
class Notebook:
    path: str
    cells: Tuple[str, ...]            # the code cells' sources
    parties: Tuple[Tuple[int, str], ...]   # (cell number, a party name it gives sf.init / cluster_def / PYU)


def is_notebook(path: str) -> bool:
    return path.endswith(".ipynb")


def read(path: str) -> Notebook:
    """The notebook's code cells, and the party names they pass as literals; an error naming the
    file (and cell) for what could never run."""
    try:
        data = Path(path).read_bytes()[:MAX_NOTEBOOK_BYTES + 1]
        nb = json.loads(data)
    except (OSError, ValueError) as e:
        raise SfclusterError(f"{path}: not a readable Jupyter notebook ({e})", "save it from Jupyter as .ipynb") from None
    if len(data) > MAX_NOTEBOOK_BYTES or not isinstance(nb, dict) or nb.get("nbformat") != 4 \
            or not isinstance(nb.get("cells"), list):
        raise SfclusterError(f"{path}: not a Jupyter notebook of format 4 (or larger than {MAX_NOTEBOOK_BYTES >> 20} MiB)",
                             "save it from Jupyter (nbformat 4)")
    cells = []
    for c in nb["cells"]:
        if isinstance(c, dict) and c.get("cell_type") == "code":
            src = c.get("source", "")
            cells.append("".join(src) if isinstance(src, list) else str(src))
    for i, src in enumerate(cells, 1):
        for line, magic in runner.magics(src):
            raise SfclusterError(f"{path}: cell {i}, line {line}: IPython magic {magic} cannot run here (sfcluster "
                                 "runs the cells in the driver itself: `!cmd`, %pip and %matplotlib are understood)",
                                 "write it as Python in that cell")
    return Notebook(path, tuple(cells), tuple(_party_literals(cells)))


def _party_literals(cells: Sequence[str]) -> List[Tuple[int, str]]:
    """(cell, name) of each string literal given as a party to sf.init, testing.cluster_def or sf.PYU."""
    found: List[Tuple[int, str]] = []
    for i, src in enumerate(cells, 1):
        try:
            tree = ast.parse(runner.python_source(src))
        except SyntaxError:
            continue  # the cell's own error, shown when it runs
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in PARTY_CALLS:
                continue
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg in ("parties", "party")), None)
            items = arg.elts if isinstance(arg, (ast.List, ast.Tuple)) else [arg] if arg is not None else []
            found += [(i, e.value) for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return found


def check(cluster: Cluster, nb: Notebook, party_map: Mapping[str, str]) -> None:
    """Simulation mode; every --party-map target and every party the notebook names is the
    inventory's (78, naming the cell), before any connection."""
    if not cluster.mode.runs_ray:
        raise SfclusterError(f"{nb.path}: a notebook runs as the one driver of a simulation-mode cluster; cluster "
                             f"'{cluster.name}' runs in production mode", "run it as a script there (one driver per party)")
    parties = set(cluster.party_names)
    bad_map = sorted(v for v in party_map.values() if v not in parties)
    if bad_map:
        raise NotInInventory(f"--party-map: no party {', '.join(map(repr, bad_map))} in the inventory "
                             f"(parties: {', '.join(cluster.party_names)})")
    for cell, name in nb.parties:
        if party_map.get(name, name) not in parties:
            raise NotInInventory(f"{nb.path}: cell {cell} names party {name!r}, which cluster '{cluster.name}' lacks "
                                 f"(parties: {', '.join(cluster.party_names)})",
                                 f"map it to one of them: sfcluster run --party-map {name}=PARTY ...")


def runner_args(nb: Notebook, cell_timeout: float, party_map: Mapping[str, str]) -> List[str]:
    return [Path(nb.path).name, repr(float(cell_timeout)), json.dumps(dict(party_map))]


def parse_party_map(items: Sequence[str]) -> Dict[str, str]:
    out: Dict[str, Any] = {}
    for item in items:
        name, eq, party = item.partition("=")
        if not eq or not name or not party:
            raise SfclusterError(f"--party-map {item!r}: expected NOTEBOOK_NAME=PARTY (e.g. charlie=carol)")
        out[name] = party
    return out
