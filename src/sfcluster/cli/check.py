"""`sfcluster check`: the preflight."""
from __future__ import annotations

import sys
from typing import Optional, Tuple

import click
from rich.markup import escape
from rich.table import Table

from sfcluster import api
from sfcluster.cli.common import activity, console, emit_result, handle_errors, inventory_option, json_option, party_option
from sfcluster.cli.run import ScriptOrTemplate
from sfcluster.doctor import Report, Status

STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def render(report: Report) -> None:
    table = Table(title="sfcluster check", show_lines=False)
    for col in ("node", "check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    order = {Status.FAIL: 0, Status.WARN: 1, Status.OK: 2}
    for c in sorted(report.checks, key=lambda c: (c.node, order[c.status], c.name)):
        table.add_row(escape(c.node), c.name, f"[{STYLE[c.status]}]{c.status.value}[/]", escape(c.detail), escape(c.fix or ""))
    console.print(table)
    n = len(report.failed)
    console.print("[green]all checks passed[/]" if not n else f"[bold red]{n} problem(s) must be fixed[/]")


@click.command("check", context_settings={"allow_interspersed_args": False})
@inventory_option
@party_option
@json_option
@click.option("--no-reach", is_flag=True, help="Skip the reachability matrix (listeners + connects between peers).")
@click.option("--for", "for_script", metavar="SCRIPT", type=ScriptOrTemplate(),
              help="Also check what SCRIPT (a file, or a packaged template) says it needs of every party "
                   "(its SFCLUSTER_NEEDS), with the script's own arguments after `--`: "
                   "`check --for train_lr -- --model xgb`.")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def check_cmd(inventory_path: str, parties: tuple, as_json: bool, no_reach: bool, for_script: Optional[str],
              script_args: Tuple[str, ...]) -> None:
    """Preflight: find every known SecretFlow cluster mistake before training starts.

    \b
    Checks, per node and in parallel: SSH and host key; Python/Ray/SecretFlow versions identical
    everywhere; every planned port free (naming the process that holds it); SPU address bindable
    (else use listen_address); Ray already running (this cluster's or a foreign one); sudo and
    firewall backend; memory and disk; and a reachability matrix of every port a peer must reach.
    Exit 0 only when nothing FAILs, 65 when something does, 77 when all that fails is sudo asking
    for a password (as `up` exits then; see `sfcluster --help` for every code). A running cluster of the same inventory passes.
    With --party (production mode, a federation): only that party's node, and no reachability matrix
    (the peers' nodes are their operators'). With --for SCRIPT: also the CPUs the script (with its
    arguments after `--`) says it needs of every party: `check --for train_lr -- --model xgb`.
    """
    if script_args and for_script is None:
        raise click.UsageError(f"got arguments ({' '.join(script_args)}) but no --for SCRIPT they are for")
    target = api.Cluster.load(inventory_path, parties)
    with activity(f"check: probing {len(target.inventory.operated_names)} node(s)", quiet=as_json):
        report = target.check(reach=not no_reach, script=for_script,
                              script_args=script_args[1:] if script_args[:1] == ("--",) else script_args)
    code = report.exit_code
    if as_json:
        emit_result(report.to_json(), code)
    else:
        render(report)
    sys.exit(int(code))
