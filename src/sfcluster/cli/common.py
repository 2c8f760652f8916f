"""What every command shares: the inventory option, JSON output, one place that turns domain
errors into user messages, JSON and exit codes (sfcluster.exitcodes)."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterator, List, Sequence

import click
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from sfcluster import api
from sfcluster.clusterlock import WAIT_TIMEOUT
from sfcluster.errors import InventoryError, SfclusterError
from sfcluster.exitcodes import Exit
from sfcluster.inventory import Cluster
from sfcluster.termsafe import visible

# Output that is not going to a terminal (a pipe, a log file, CI) is never wrapped, cut or padded
# at a guessed width: rich would guess 80 columns (or trust $COLUMNS) and break one message over
# two lines or cut IPs in tables to "172.30.…". One message is one line there, and a table row is
# one line with every cell whole. A terminal keeps its own width.
UNBOUNDED = 1_000_000


class SafeConsole(Console):
    """A rich Console that renders every string (a message, a table cell, a title) with its
    control characters written out (termsafe.visible): text from a node never steers the
    terminal. Markup is ours alone: node text goes in through `escape`; emoji codes stay text."""

    def render_str(self, text: str, **kw: Any) -> Text:
        return super().render_str(visible(text), **kw)


def _console(stream: Any, stderr: bool) -> Console:
    tty = stream.isatty()
    return SafeConsole(stderr=stderr, highlight=False, emoji=False, width=None if tty else UNBOUNDED,
                       soft_wrap=not tty)


console = _console(sys.stdout, stderr=False)
err_console = _console(sys.stderr, stderr=True)

inventory_option = click.option(
    "-i", "--inventory", "inventory_path", default="inventory.yaml", show_default=True,
    envvar="SFCLUSTER_INVENTORY", show_envvar=True, type=click.Path(dir_okay=False),
    help="Inventory YAML describing the cluster (`sfcluster init` writes one; `sfcluster init --example`: every key).")
json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Print one JSON object on stdout, on every outcome: at least `ok` and `exit_code`, and on "
         "failure `problems` ([{path, line, message}]) and `fix`.")



def wait_options(fn: Callable) -> Callable:
    """--wait/--wait-timeout of the commands that take the cluster lock (up, down, run)."""
    fn = click.option("--wait-timeout", type=click.FloatRange(min=0), default=WAIT_TIMEOUT, show_default=True,
                      metavar="SECONDS", help="With --wait: give up (exit 75) after this long.")(fn)
    return click.option("--wait", is_flag=True,
                        help="If another operation (a run, an up, a down) holds the cluster lock, wait for it "
                             "instead of failing at once (exit 75, naming the holder).")(fn)


def lock_wait(wait: bool, wait_timeout: float) -> float:
    return wait_timeout if wait else 0


party_option = click.option(
    "--party", "parties", multiple=True, metavar="NAME",
    help="Production mode, a federation: touch only this party's node (repeatable). Each organisation's "
         "operator reaches only its own; the other parties' entries give their addresses, ports and, with "
         "tls: on, their CA certificate (nodes.<party>.ca_cert, from their `sfcluster ca`).")


def load(path: str, parties: Sequence[str] = ()) -> Cluster:
    """The inventory's model, as the API loads it (the commands the API does not cover)."""
    return api.Cluster.load(path, parties).inventory


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def emit_result(data: Dict[str, Any], code: int) -> None:
    """The JSON of an outcome: `ok` and `exit_code` first, then the command's own fields."""
    emit_json({"ok": code == 0, "exit_code": int(code), **data})


def problems_of(e: SfclusterError) -> List[Dict[str, Any]]:
    if isinstance(e, InventoryError):
        return [p.to_json() for p in e.problems]
    return [{"path": getattr(e, "host", None), "line": None, "message": e.message}]


def error_json(e: SfclusterError) -> Dict[str, Any]:
    return {"ok": False, "exit_code": int(e.exit_code), "error": e.message, "fix": e.hint,
            "problems": problems_of(e), **e.details()}


LOG = logging.getLogger("sfcluster")


def _enable_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value and not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("debug %(relativeCreated)8.0f ms  %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.DEBUG)
    return value


def debug_option(short: bool) -> click.Option:
    """`--debug` (and `-v` where the command has no -v of its own) of every command: each SSH
    connection and remote command on stderr with its exit code and time, and an error's traceback.
    Never a secret: they travel on stdin, never on a command line."""
    return click.Option(["-v", "--debug"] if short else ["--debug"], is_flag=True, expose_value=False, is_eager=True,
                        callback=_enable_debug,
                        help="Debug output on stderr: every SSH connection and remote command (exit code, seconds), "
                             "and the traceback of an error.")


def debugging() -> bool:
    return LOG.isEnabledFor(logging.DEBUG)


def node_line(node: str, msg: str) -> None:
    err_console.print(f"  [bold]{escape(node):>8}[/] {escape(msg)}")


@contextlib.contextmanager
def activity(title: str, quiet: bool = False) -> Iterator[Callable[[str, str], None]]:
    """The progress callback of a step that takes seconds (node, message). Each message is one line
    on stderr, as off a terminal; on a terminal a spinner below them also shows the step, its
    elapsed time and the latest message. quiet (--json): nothing at all."""
    if quiet:
        yield lambda n, m: None
        return
    if not err_console.is_terminal or debugging():
        yield node_line
        return
    start, latest = time.monotonic(), [""]
    stop = threading.Event()
    with err_console.status(escape(title)) as spinner:
        def tick() -> None:
            while not stop.wait(0.5):
                spinner.update(f"{escape(title)} [dim]{time.monotonic() - start:.0f} s{latest[0]}[/]")
        ticker = threading.Thread(target=tick, daemon=True, name="sfcluster-spinner")
        ticker.start()

        def show(node: str, msg: str) -> None:
            node_line(node, msg)
            latest[0] = escape(f"  {node}: {msg}")
        try:
            yield show
        finally:
            stop.set()
            ticker.join()


def handle_errors(fn: Callable) -> Callable:
    """Domain errors become a message on stderr and their exit code (with `--json`, also one JSON
    object on stdout); nothing else is swallowed."""
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except SfclusterError as e:
            if debugging():
                LOG.debug("".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip())
            if kw.get("as_json"):
                emit_json(error_json(e))
            err_console.print(f"[bold red]error:[/] {escape(e.message)}")
            if e.hint:
                err_console.print(f"  [bold]fix:[/] {escape(e.hint)}")
            sys.exit(int(e.exit_code))
        except KeyboardInterrupt:
            if kw.get("as_json"):
                emit_json({"ok": False, "exit_code": int(Exit.CANCELLED), "error": "interrupted", "problems": []})
            err_console.print("interrupted")
            sys.exit(int(Exit.CANCELLED))
    return wrapper
