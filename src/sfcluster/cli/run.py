"""`sfcluster run`, `logs`, `cancel`."""
from __future__ import annotations

import sys
from typing import Tuple

import click
from rich.markup import escape

from sfcluster.cli.common import err_console, handle_errors, inventory_option, load, wait_options
from sfcluster.connect import Nodes
from sfcluster.run import driver


def _write(stream):  # noqa: ANN001
    def w(data: bytes) -> None:
        stream.buffer.write(data)
        stream.buffer.flush()
    return w


@click.command("run", context_settings={"ignore_unknown_options": True})
@inventory_option
@click.option("--files", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Supporting module/file, importable in party functions on every node (repeatable).")
@wait_options
@click.option("--detach", is_flag=True, help="Leave the driver running; follow with `logs -f`, stop with `cancel`.")
@click.option("--starve-timeout", "starve_seconds", type=click.FloatRange(min=0), default=driver.STARVE_SECONDS,
              show_default=True, metavar="SECONDS",
              help="Stop the run (exit 70) when a resource demand of it has waited this long while no task of it "
                   "made progress (a party's CPUs all taken); 0 turns the watch off.")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def run_cmd(inventory_path: str, files: Tuple[str, ...], wait: bool, wait_timeout: float, detach: bool,
            starve_seconds: float, script: str, args: Tuple[str, ...]) -> None:
    """Run SCRIPT as the cluster's one driver, on the head only.

    \b
    Takes the cluster lock for the run's whole life (a second run, an up or a down fails at once
    naming the holder, exit 75, or waits with --wait),
    refuses while another driver is connected to Ray, hands the script $SFCLUSTER_CONFIG (use
    `from sfcluster import runtime; runtime.guard(); cfg = runtime.load()`), streams its output
    and exits with its exit code. Ctrl-C stops the driver and its SPU actors and frees the lock.
    When sfcluster stops the run itself (a party's node lost, another driver connected, a starved
    party, cancel), it exits with its own code (74, 76, 70, 130) and its last line says why.
    Script arguments go after `--`:  sfcluster run -i inv.yaml train.py -- --epochs 3
    """
    cluster = load(inventory_path)
    names = list(cluster.party_names) if files else [cluster.head_name]
    with Nodes(cluster, names) as nodes:
        code = driver.run(cluster, nodes, driver.RunOptions(script=script, args=list(args), files=list(files),
                                                           wait=wait, wait_seconds=wait_timeout, detach=detach,
                                                           starve_seconds=starve_seconds),
                          out=_write(sys.stdout), err=_write(sys.stderr),
                          note=lambda m: err_console.print(f"[bold]sfcluster:[/] {escape(m)}"))
    sys.exit(code)


@click.command("logs")
@inventory_option
@click.option("-f", "--follow", is_flag=True, help="Keep following until the run ends.")
@handle_errors
def logs_cmd(inventory_path: str, follow: bool) -> None:
    """Output of the active (e.g. detached) run on the head."""
    cluster = load(inventory_path)
    with Nodes(cluster, [cluster.head_name]) as nodes:
        sys.exit(driver.follow_logs(cluster, nodes, follow, _write(sys.stdout)))


@click.command("cancel")
@inventory_option
@handle_errors
def cancel_cmd(inventory_path: str) -> None:
    """Stop the active run (driver and its SPU actors) and free the lock."""
    cluster = load(inventory_path)
    with Nodes(cluster, [cluster.head_name]) as nodes:
        info = driver.cancel(cluster, nodes)
    err_console.print(escape(f"cancelled run {info['run_id']} ({info['script']}, started {info['since']} by {info['user']})"))
