"""The README followed literally on the harness (issue 19). Its install block runs in a copy of
the repository with a fresh venv's pip (not editable: the package as a wheel holds its templates,
sample data and example inventory, or the steps below fail), on the oldest CPython this machine has
(3.9 where pyenv has it, else 3.10). Then the "Two real machines" section's shell blocks, in order,
with the example's hosts replaced by two harness nodes (alice as root, bob as sfops), run by bash
with that venv's `sfcluster` in an empty directory and a fresh $HOME (its own known_hosts, SSH key
and controller state, as a newcomer's machine has); the node block on each node, as root."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli import ROOT

SECTION = "## Two real machines"
# the example's hosts -> the harness's (the README's `ops` is the harness's `sfops`)
HOSTS = [("ops@10.0.0.2", "sfops@172.30.77.12"), ("10.0.0.1", "172.30.77.11"), ("10.0.0.2", "172.30.77.12")]
NODES = ("alice", "bob")


def blocks(kind: str) -> list:
    """The ```sh blocks of the section that a `<!-- two-machines: KIND -->` line announces, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    found = re.findall(r"<!-- two-machines: (\w+) -->\n```sh\n(.*?)```", section, re.S)
    return [body for k, body in found if k == kind]


def install_block() -> str:
    [body] = re.findall(r"<!-- install -->\n```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return body


def oldest_python() -> str:
    """The oldest CPython >= 3.9 here: pyenv's 3.9 where it has one, else its 3.10 (the nodes' one,
    always there), else this one."""
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() if shutil.which("pyenv") \
        else os.path.expanduser("~/.pyenv")
    for minor in ("3.9", "3.10"):
        found = sorted(glob.glob(f"{root}/versions/{minor}.*/bin/python{minor}"))
        if found:
            return found[-1]
    return sys.executable


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The README's install block, in a clean copy of the repository, with a fresh venv's pip:
    that venv's bin dir."""
    top = tmp_path_factory.mktemp("install")
    src = top / "sfcluster"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "__pycache__", "*.egg-info", ".pytest_cache", "bench"))
    venv = top / "venv"
    subprocess.run([oldest_python(), "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", install_block()], cwd=src, env=env, text=True,
                       capture_output=True, timeout=900, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "sfcluster init" in p.stdout  # `sfcluster --help` of the installed command
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import sfcluster; print(sfcluster.__file__)"],
                           cwd=top, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(venv)) and "site-packages" in where, where  # installed, not the checkout
    shutil.rmtree(src)  # nothing below may read the repository: the package must hold it all
    return venv / "bin"


def literal(body: str) -> str:
    for old, new in HOSTS:
        body = body.replace(old, new)
    return body


def test_the_readme_section_names_what_it_runs():
    """Parsing the README is part of the test: the blocks are there, in the order a user reads them."""
    controller = blocks("controller")
    assert len(blocks("node")) == 1 and len(controller) == 2
    assert controller[0].startswith("sfcluster init ") and controller[1].rstrip().endswith("sfcluster down")


def test_two_real_machines_as_the_readme_says(harness, installed, tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    work.mkdir()
    shutil.copy(harness.BUILD / "id_ed25519", home / ".ssh" / "id_ed25519")  # "your SSH key"
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    env = {k: v for k, v in os.environ.items()
           if k not in ("SSH_AUTH_SOCK", "SFCLUSTER_STATE_DIR", "SFCLUSTER_INVENTORY", "COLUMNS")}
    env.pop("PYTHONPATH", None)
    env.update(HOME=str(home), PATH=f"{installed}:{env.get('PATH', '/usr/bin:/bin')}")

    for node in NODES:
        # a newcomer's nodes: no state of a cluster 'demo' that an earlier test's controller left
        harness.docker_exec(node, f"rm -rf {harness.state_dir('demo')}")
        for body in blocks("node"):
            harness.docker_exec(node, body)
    try:
        outputs = []
        for body in blocks("controller"):
            p = subprocess.run(["bash", "-euo", "pipefail", "-c", literal(body)], cwd=work, env=env, text=True,
                               capture_output=True, timeout=900, stdin=subprocess.DEVNULL)
            outputs.append(p.stdout + p.stderr)
            assert p.returncode == 0, f"README block failed ({p.returncode}):\n{literal(body)}\n{outputs[-1][-6000:]}"
        # the fingerprints a user compares: what the scan got is what each node's console shows
        for node in NODES:
            console = harness.docker_exec(node, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
            assert console in outputs[0], (node, console)
        run_out = outputs[1]
        assert "cluster 'demo' is up" in run_out and "RESULT auc=" in run_out, run_out[-4000:]
        assert "outputs of run" in run_out and "down" in run_out
        # the terminal shows the driver's own lines: SPU's and Ray's INFO logging stays in the run's log
        assert "[info]" not in run_out and "INFO:jax" not in run_out, run_out[-4000:]
        inv = (work / "inventory.yaml").read_text()
        assert len(inv.splitlines()) <= 25, inv  # the README says "20 lines"
    finally:
        subprocess.run([str(installed / "sfcluster"), "down", "--force", "--purge"], cwd=work, env=env,
                       capture_output=True, timeout=300)
    for node in NODES:  # down left nothing running
        assert harness.docker_exec(node, "pgrep -x 'raylet|gcs_server' || true").stdout.strip() == ""
