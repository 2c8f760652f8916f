"""`sfcluster provision`: every node's SecretFlow venv, as the inventory pins it."""
from __future__ import annotations

from typing import Tuple

import click
from rich.markup import escape

from sfcluster import provision as provisioning
from sfcluster.cli.common import console, emit_result, err_console, handle_errors, inventory_option, json_option, load
from sfcluster.connect import Nodes
from sfcluster.exitcodes import Exit


def progress(node: str, msg: str) -> None:
    err_console.print(f"  [bold]{escape(node):>8}[/] {escape(msg)}")


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
    runs as; packages from the nodes' index (provision.index_url, credentials from a 0600 file)
    or from provision.wheelhouse, a directory on this controller sent once to each node.
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
        got = provisioning.provision(cluster, nodes, list(parties) or None, force=force,
                                     progress=(lambda n, m: None) if as_json else progress)
    if as_json:
        emit_result({"cluster": cluster.name, "changed": any(o.changed for o in got.values()),
                     "nodes": {n: o.to_json() for n, o in got.items()}}, Exit.OK)
        return
    for n, o in got.items():
        what = (f"built in {o.seconds:.0f} s" if o.changed else "unchanged") + (
            f", {o.wheels_sent} wheel(s) sent ({o.bytes_sent / 2**20:.0f} MiB)" if o.wheels_sent else "")
        versions = ", ".join(f"{k} {v}" for k, v in o.versions.items())
        console.print(escape(f"{n}: {o.venv} ({versions}): {what}"))
