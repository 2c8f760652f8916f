"""`sfcluster init` and the packaged templates (issue 19): a pip user gets an inventory that
validates for the hosts given, the training script, and the documented example, without the repo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sfcluster.cli.init import EXAMPLE, template_names, template_path
from sfcluster.inventory import load_inventory


def sfc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sfcluster.cli.main", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, SFCLUSTER_STATE_DIR=str(cwd / "state")), timeout=60)


def test_the_templates_ship_inside_the_package():
    root = Path(__import__("sfcluster").__file__).parent
    assert "train_lr" in template_names() and template_path("train_lr") == root / "templates" / "train_lr.py"
    assert template_path("train_lr.py") == template_path("train_lr") and template_path("nosuch") is None
    assert EXAMPLE.parent == root / "templates" and "cluster:" in EXAMPLE.read_text()
    # the repository's own paths are links to them (one copy)
    repo = Path(__file__).resolve().parents[2]
    assert (repo / "templates" / "train_lr.py").resolve() == template_path("train_lr").resolve()
    assert (repo / "inventory.example.yaml").resolve() == EXAMPLE.resolve()


def test_init_writes_an_inventory_that_loads_for_the_hosts_given(tmp_path):
    p = sfc(tmp_path, "init", "alice=10.0.0.1", "bob=ops@10.0.0.2:2222", "--cluster", "lab", "--template", "train_lr")
    assert p.returncode == 0, p.stderr
    c = load_inventory(str(tmp_path / "inventory.yaml"))
    assert c.name == "lab" and c.head_name == "alice" and list(c.party_names) == ["alice", "bob"]
    bob = c.node("bob")
    assert (bob.host, bob.ssh.user, bob.ssh.port, bob.ray_user) == ("10.0.0.2", "ops", 2222, "sfray")
    assert c.tls.value == "on" and c.firewall.value == "open"
    assert (tmp_path / "train_lr.py").read_text() == template_path("train_lr").read_text()
    assert "next: sfcluster check -i inventory.yaml" in p.stdout


def test_init_changes_nothing_on_a_mistake(tmp_path):
    (tmp_path / "inventory.yaml").write_text("mine\n")
    p = sfc(tmp_path, "init", "alice=10.0.0.1", "bob=10.0.0.2")
    assert p.returncode == 1 and "exists: nothing was written" in p.stderr and "--force" in p.stderr
    assert (tmp_path / "inventory.yaml").read_text() == "mine\n"
    for args, says in ((["Alice=10.0.0.1", "bob=10.0.0.2", "-o", "x.yaml"], "not a safe identifier"),
                       (["alice=10.0.0.1"], "two or more parties"),
                       (["alice=10.0.0.1", "bob:10.0.0.2", "-o", "x.yaml"], "PARTY=[USER@]HOST[:PORT]"),
                       (["alice=10.0.0.1", "bob=10.0.0.2:99999", "-o", "x.yaml"], "not 1-65535"),
                       (["--template", "nosuch"], "no template 'nosuch'")):
        p = sfc(tmp_path, "init", *args)
        assert p.returncode == 2 and says in p.stderr, (args, p.stderr)
    assert not (tmp_path / "x.yaml").exists() and not (tmp_path / "nosuch.py").exists()
    p = sfc(tmp_path, "init", "--force", "alice=10.0.0.1", "bob=10.0.0.2")
    assert p.returncode == 0 and "ray_user: sfray" in (tmp_path / "inventory.yaml").read_text()


def test_init_example_prints_the_documented_inventory(tmp_path):
    p = sfc(tmp_path, "init", "--example")
    assert p.returncode == 0 and p.stdout == EXAMPLE.read_text()


@pytest.mark.parametrize("script, ok", [("train_lr", True), ("train_lr.py", True), ("nosuch", False)])
def test_run_takes_a_packaged_template_by_name(tmp_path, script, ok):
    from sfcluster.cli.run import ScriptOrTemplate
    import click
    if ok:
        assert ScriptOrTemplate().convert(script, None, None) == str(template_path("train_lr"))
    else:
        with pytest.raises(click.BadParameter, match="not one of sfcluster's templates"):
            ScriptOrTemplate().convert(script, None, None)


def test_init_sample_data_writes_one_share_per_party_named_in_the_inventory(tmp_path):
    """--sample-data: the packaged CSVs (the label share to the head's party), each party's data
    path in the inventory, and the data push that takes it there."""
    p = sfc(tmp_path, "init", "lab=10.0.0.1", "bank=10.0.0.2", "--sample-data")
    assert p.returncode == 0, p.stderr
    c = load_inventory(str(tmp_path / "inventory.yaml"))
    assert {n: c.node(n).data_paths for n in c.party_names} == {
        "lab": {"breast_cancer": "/home/sfray/data/breast_cancer.csv"},
        "bank": {"breast_cancer": "/home/sfray/data/breast_cancer.csv"}}
    shipped = Path(__import__("sfcluster").__file__).parent / "templates" / "data" / "breast_cancer"
    lab, bank = (tmp_path / "data" / "breast_cancer" / f"{n}.csv" for n in ("lab", "bank"))
    assert lab.read_bytes() == (shipped / "alice.csv").read_bytes() and bank.read_bytes() == (shipped / "bob.csv").read_bytes()
    assert lab.read_text().splitlines()[0].endswith(",target") and "target" not in bank.read_text().splitlines()[0]
    assert "sfcluster data push -i inventory.yaml bank breast_cancer data/breast_cancer/bank.csv" in p.stdout
    # four parties: the sample has three shares; nothing written
    (tmp_path / "state").mkdir()
    p = sfc(tmp_path / "state", "init", *(f"p{i}=10.0.0.{i}" for i in range(1, 5)), "--sample-data")
    assert p.returncode == 2 and "3 shares" in p.stderr and not (tmp_path / "state" / "inventory.yaml").exists()
