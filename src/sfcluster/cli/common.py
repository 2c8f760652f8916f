"""What every command shares: the inventory option, JSON output, one place that turns domain
errors into user messages and exit codes."""
from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape

from sfcluster.errors import SfclusterError
from sfcluster.inventory import Cluster, load_inventory

# Piped into a file or a CI log, rich would assume 80 columns and cut IPs in tables to "172.30.…";
# a terminal keeps its own width.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "160"))
console = Console(stderr=False, highlight=False, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else _WIDTH or 160)

inventory_option = click.option(
    "-i", "--inventory", "inventory_path", default="inventory.yaml", show_default=True,
    envvar="SFCLUSTER_INVENTORY", type=click.Path(dir_okay=False),
    help="Inventory YAML describing the cluster (see inventory.example.yaml).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def load(path: str) -> Cluster:
    return load_inventory(path)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def handle_errors(fn: Callable) -> Callable:
    """Domain errors become a message on stderr and their exit code; nothing else is swallowed."""
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except SfclusterError as e:
            err_console.print(f"[bold red]error:[/] {escape(e.message)}", markup=True, soft_wrap=True)
            if e.hint:
                err_console.print(f"  [bold]fix:[/] {escape(e.hint)}", markup=True, soft_wrap=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)
    return wrapper
