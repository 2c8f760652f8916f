"""Notebooks (issue 20), the parts that need no cluster: what the controller refuses before any
connection (not a notebook, an IPython magic the runner cannot run, a party the cluster lacks),
the party names it finds, and the runner's own pieces (magics rewritten, a cell's last value)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sfcluster import notebook as runner
from sfcluster.errors import NotInInventory, SfclusterError
from sfcluster.inventory import parse_inventory
from sfcluster.run import notebooks

INV = "cluster: c\nnodes:\n  alice: {host: 10.0.0.1}\n  bob: {host: 10.0.0.2}\n  carol: {host: 10.0.0.3}\n"


def nb(tmp_path: Path, *cells: str, name: str = "t.ipynb") -> str:
    f = tmp_path / name
    f.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "source": c.splitlines(True), "outputs": [], "metadata": {}} for c in cells]}))
    return str(f)


def test_the_parties_a_notebook_names_are_found_with_their_cell(tmp_path):
    got = notebooks.read(nb(tmp_path, "import secretflow as sf\nsf.init(['alice', 'charlie'], address='local')",
                            "spu = sf.SPU(sf.utils.testing.cluster_def(parties=('alice', 'charlie')))\n!ls /tmp",
                            "dave = sf.PYU('dave')\nname = 'x'\nsf.PYU(name)"))
    assert got.parties == ((1, "alice"), (1, "charlie"), (2, "alice"), (2, "charlie"), (3, "dave"))
    cluster = parse_inventory(INV)
    with pytest.raises(NotInInventory, match=r"(?s)cell 1 names party 'charlie'.*--party-map charlie=PARTY") as e:
        notebooks.check(cluster, got, {})
    assert e.value.exit_code == 78
    with pytest.raises(NotInInventory, match="cell 3 names party 'dave'"):
        notebooks.check(cluster, got, {"charlie": "carol"})
    notebooks.check(cluster, got, {"charlie": "carol", "dave": "bob"})
    with pytest.raises(NotInInventory, match="--party-map: no party 'erin'"):
        notebooks.check(cluster, got, {"charlie": "erin"})


def test_what_could_never_run_is_refused_naming_file_and_cell(tmp_path):
    with pytest.raises(SfclusterError, match=r"cell 2, line 2: IPython magic %timeit"):
        notebooks.read(nb(tmp_path, "x = 1", "y = 2\n%timeit y + 1"))
    notebooks.read(nb(tmp_path, "%pip install x\n%matplotlib inline\n!echo hi"))  # these the runner runs
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(SfclusterError, match="not a readable Jupyter notebook"):
        notebooks.read(str(bad))
    bad.write_text(json.dumps({"nbformat": 3, "worksheets": []}))
    with pytest.raises(SfclusterError, match="format 4"):
        notebooks.read(str(bad))
    prod = parse_inventory("mode: production\n" + INV)
    with pytest.raises(SfclusterError, match="simulation-mode"):
        notebooks.check(prod, notebooks.read(nb(tmp_path, "x = 1")), {})


def test_the_runner_rewrites_the_magics_it_knows_and_keeps_a_cells_last_value():
    src = runner.python_source("  !echo hi\n%pip install x==1\n%matplotlib inline\nx = 2")
    assert src.splitlines() == ["  __sfc_shell__('echo hi')", f"__sfc_shell__('{sys.executable} -m pip install x==1')",
                                "pass", "x = 2"]
    ns: dict = {}
    assert runner.run_cell("a = 20\na + 1", ns, 10, "<cell 1>") == 21 and ns["a"] == 20
    assert runner.run_cell("b = 1", ns, 10, "<cell 2>") is None
    with pytest.raises(runner.CellTimeout):
        runner.run_cell("while True:\n    pass", ns, 0.2, "<cell 3>")
    with pytest.raises(ZeroDivisionError):
        runner.run_cell("1 / 0", ns, 10, "<cell 4>")


def test_party_map_items_are_name_equals_party():
    assert notebooks.parse_party_map(["charlie=carol", "d=bob"]) == {"charlie": "carol", "d": "bob"}
    for bad in ("charlie", "=carol", "charlie="):
        with pytest.raises(SfclusterError, match="NOTEBOOK_NAME=PARTY"):
            notebooks.parse_party_map([bad])
