"""`sfcluster provision`: every node's SecretFlow venv, as the inventory pins it; `sfcluster
wheelhouse`: the wheels and hash lock it installs from, made for the nodes' Python and platform."""
from __future__ import annotations

import re
import sys
from typing import Tuple

import click
from rich.markup import escape

from sfcluster import provision as provisioning
from sfcluster.cli.common import activity, console, emit_result, err_console, handle_errors, inventory_option, json_option, load
from sfcluster.connect import Nodes
from sfcluster.errors import SfclusterError
from sfcluster.exitcodes import Exit
from sfcluster.nodescripts.contract import PROVISION_PYTHON
from sfcluster.wheels.make import Target, make_wheelhouse, pip_download


@click.command("provision")
@inventory_option
@click.option("--party", "parties", multiple=True, metavar="PARTY",
              help="Only this party's node (repeat for several). Default: every node.")
@click.option("--force", is_flag=True, help="Rebuild the venv even where its digest says it holds the pins.")
@json_option
@handle_errors
def provision_cmd(inventory_path: str, parties: Tuple[str, ...], force: bool, as_json: bool) -> None:
    """Make each node's `python` a venv with exactly the SecretFlow and Ray the inventory pins.

    \b
    From the node's own CPython 3.10 (`base_python`, default python3.10), owned by the user Ray
    runs as; packages from the nodes' https index (provision.index_url, credentials from a 0600
    file) or from provision.wheelhouse, a directory on this controller sent once to each node.
    pip installs exactly a hash lock: wheels only, each checked by sha256, no pip.conf applies
    (the wheelhouse's own sfcluster-lock.txt, made from its files; with an index, provision.lock;
    `sfcluster wheelhouse` makes both).
    Idempotent: a venv whose recorded digest matches the pins is left alone (seconds); a changed
    pin rebuilds it, in place, the old one kept aside until the new one imports its pins.
    Nodes in parallel; a failure names the node and the package.
      sfcluster provision -i inventory.yaml
      sfcluster up --provision -i inventory.yaml      provision, then up
    """
    cluster = load(inventory_path)
    for p in parties:
        if p not in cluster.party_names:
            raise click.BadParameter(f"no party {p!r} (parties: {', '.join(cluster.party_names)})", param_hint="--party")
    with Nodes(cluster, list(parties) or None) as nodes:
        with activity(f"provision: {len(parties) or len(cluster.party_names)} node(s)", quiet=as_json) as progress:
            got = provisioning.provision(cluster, nodes, list(parties) or None, force=force, progress=progress)
    if as_json:
        emit_result({"cluster": cluster.name, "changed": any(o.changed for o in got.values()),
                     "nodes": {n: o.to_json() for n, o in got.items()}}, Exit.OK)
        return
    for n, o in got.items():
        what = (f"built in {o.seconds:.0f} s" if o.changed else "unchanged") + (
            f", {o.wheels_sent} wheel(s) sent ({o.bytes_sent / 2**20:.0f} MiB)" if o.wheels_sent else "")
        versions = ", ".join(f"{k} {v}" for k, v in o.versions.items())
        console.print(escape(f"{n}: {o.venv} ({versions}): {what}"))


@click.command("wheelhouse")
@inventory_option
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--glibc", default="2.28", show_default=True, metavar="X.Y",
              help="The oldest glibc among the nodes (`ldd --version`): manylinux wheels up to it.")
@click.option("--arch", default="x86_64", show_default=True, type=click.Choice(["x86_64", "aarch64"]),
              help="The nodes' CPU architecture.")
@json_option
@handle_errors
def wheelhouse_cmd(inventory_path: str, directory: str, glibc: str, arch: str, as_json: bool) -> None:
    """Download the inventory's pins and all they need into DIRECTORY, for the nodes' CPython 3.10
    and platform (wheels only), and write its hash lock DIRECTORY/sfcluster-lock.txt.

    \b
    Dependency markers are evaluated for Python 3.10, not this controller's Python (pip alone
    leaves out e.g. async-timeout when it runs on 3.11). From provision.index_url (else PyPI);
    no pip.conf applies. Then: provision.wheelhouse: DIRECTORY (nodes without internet), or keep
    index_url and set provision.lock: DIRECTORY/sfcluster-lock.txt.
      sfcluster wheelhouse -i inventory.yaml ./wheelhouse
    """
    if not re.match(r"^2\.[0-9]{1,2}$", glibc) or int(glibc.split(".")[1]) < 17:
        raise click.BadParameter(f"{glibc!r}: expected 2.17 or later, like 2.28", param_hint="--glibc")
    cluster = load(inventory_path)
    prov = cluster.provision
    if prov is None:
        raise SfclusterError(f"{cluster.source}: no `provision:` section: nothing says which pins to download",
                             "add provision: {package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3}")
    target = Target(PROVISION_PYTHON, arch, glibc)
    download = pip_download(sys.executable, target, directory, prov.index_url, provisioning.read_credentials(prov))
    made = make_wheelhouse(directory, list(prov.requirements), target, download,
                           progress=(lambda m: None) if as_json else (lambda m: err_console.print(f"  {escape(m)}")))
    if as_json:
        emit_result(made.to_json(), Exit.OK)
        return
    console.print(escape(f"{made.dir}: {len(made.lock.entries)} package(s), {made.bytes / 2**20:.0f} MiB; lock "
                         f"{made.lock_path}" + (f"; added for Python {target.python}: {', '.join(made.added)}"
                                                 if made.added else "")))
