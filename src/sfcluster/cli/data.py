"""`sfcluster data`: each party's data files, on that party's node only."""
from __future__ import annotations

import click
from rich.markup import escape

from sfcluster import data as party_data
from sfcluster.cli.common import activity, console, emit_result, handle_errors, inventory_option, json_option, load
from sfcluster.connect import Nodes
from sfcluster.sizes import human_size


@click.group("data")
def data_cmd() -> None:
    """Each party's data, on its own node (the inventory's `data:` names it there).

    \b
    A party's file goes from this controller to that party's node only, never through or to
    another party's node. `sfcluster check` shows every data file (size, sha256) and fails on a
    missing one, naming party, name and path.
      nodes: {alice: {data: {breast_cancer: /srv/data/breast_cancer.csv}}}
      sfcluster data push alice breast_cancer ./alice.csv
    """


@data_cmd.command("push")
@inventory_option
@json_option
@click.argument("party")
@click.argument("name")
@click.argument("local_file", type=click.Path(exists=True, dir_okay=False, readable=True))
@handle_errors
def push_cmd(inventory_path: str, as_json: bool, party: str, name: str, local_file: str) -> None:
    """Copy LOCAL_FILE to PARTY's node, to the path its `data: {NAME: path}` entry names.

    \b
    Written as the user Ray runs as there (mode 0600, parent dirs 0700 when made), into a fresh
    file that replaces the old one only once its size and sha256 match this controller's copy.
    Idempotent: a file already there with the same sha256 (read through there, never taken from a
    cache) is not sent again. Only PARTY's node is
    contacted.
      sfcluster data push bob breast_cancer data/breast_cancer/bob.csv
    """
    cluster = load(inventory_path)
    party_data.target(cluster, party, name)          # bad party/name: an error before any connection
    with Nodes(cluster, [party]) as nodes, activity(f"data push: {name} to {party}", quiet=as_json):
        got = party_data.push(cluster, nodes, party, name, local_file)
    if as_json:
        emit_result(dict(got, ok=True), 0)
        return
    what = "already there (same sha256), nothing sent" if got["unchanged"] else "copied"
    console.print(escape(f"{party}: {name} -> {got['path']} ({human_size(got['size'])}, "
                         f"sha256 {got['sha256'][:16]}): {what}"))
