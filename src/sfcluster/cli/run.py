"""`sfcluster run`, `logs`, `cancel`, and a run's history: `runs`, `fetch`."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional, Tuple

import click
from rich.markup import escape
from rich.table import Table

from sfcluster import api
from sfcluster.cli.common import (console, emit_result, err_console, handle_errors, inventory_option, json_option,
                                  load, lock_wait, party_option, wait_options)
from sfcluster.connect import Nodes
from sfcluster.errors import SfclusterError
from sfcluster.nodescripts import contract as C
from sfcluster.run import notebooks
from sfcluster.run import driver
from sfcluster.run import fetch as fetching
from sfcluster.run import history
from sfcluster.run.noise import QuietLines
from sfcluster.termsafe import SafeStream


def _run_id(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """A run id is checked before it becomes part of any path (here and on the head)."""
    if value is None:
        return None
    try:
        return history.check_run_id(value)
    except SfclusterError as e:
        raise click.BadParameter(f"{e.message}; {e.hint}") from None


run_id_argument = click.argument("run_id", metavar="RUN_ID", callback=_run_id)
max_output_option = click.option(
    "--max-output-mb", type=click.FloatRange(min=0), default=fetching.MAX_OUTPUT_MB, show_default=True, metavar="MB",
    help="Outputs above this size are not fetched at all (refused whole, never cut; the log still is), "
         "and stay on the head for a later `sfcluster fetch RUN_ID --max-output-mb N`.")


def _write(stream) -> SafeStream:  # noqa: ANN001
    """Where a driver's output (or a past run's log) goes: through termsafe's filter, so that the
    head's bytes never steer the operator's terminal. The bytes as the driver wrote them are in
    the run's driver.log."""
    return SafeStream(stream)


class ScriptOrTemplate(click.ParamType):
    """SCRIPT: a file here, or the name of a packaged template (`sfcluster run train_lr`)."""

    name = "script"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> str:
        from sfcluster.cli.init import template_names, template_path
        p = Path(value)
        if p.is_file():
            return str(value)
        if p.is_dir():
            self.fail(f"{value!r} is a directory, not a script", param, ctx)
        packaged = template_path(value) if "/" not in str(value) else None
        if packaged is not None:
            return str(packaged)
        self.fail(f"file {value!r} does not exist, and it is not one of sfcluster's templates "
                  f"({', '.join(template_names())}: `sfcluster run train_lr`, or `sfcluster init --template train_lr` "
                  "copies it here)", param, ctx)

# Options before SCRIPT are sfcluster's (an unknown one is a usage error: `run --detatch s.py` used
# to take "--detatch" for the script); everything after SCRIPT is the script's, with or without `--`.
@click.command("run", context_settings={"allow_interspersed_args": False})
@inventory_option
@click.option("--files", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Supporting module/file, importable in party functions on every node (repeatable).")
@wait_options
@click.option("--detach", is_flag=True, help="Leave the driver running; follow with `logs -f`, stop with `cancel`.")
@click.option("--starve-timeout", "starve_seconds", type=click.FloatRange(min=0), default=driver.STARVE_SECONDS,
              show_default=True, metavar="SECONDS",
              help="Stop the run (exit 70) when a resource demand of it has waited this long while no task of it "
                   "made progress (a party's CPUs all taken); 0 turns the watch off.")
@max_output_option
@click.option("--start-timeout", type=click.FloatRange(min=1), default=120, show_default=True, metavar="SECONDS",
              help="Production mode: when some party's driver has not started this long after `run` began, every "
                   "driver is stopped, naming the parties that did not come.")
@party_option
@click.option("--run-id", "run_id", metavar="RUN_ID", callback=_run_id,
              help="Production mode: the run's id (YYYYMMDD-HHMMSS-xxxxxx), SecretFlow's job name on every party. With "
                   "--party each operator starts its own party's driver with the same id, and the drivers meet.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show the INFO logging of SecretFlow, SPU, brpc and Ray on the terminal too (it is always in the "
                   "run's log; by default the terminal shows the driver's own output, warnings and errors).")
@click.option("--cell-timeout", type=click.FloatRange(min=1), default=notebooks.CELL_TIMEOUT, show_default=True,
              metavar="SECONDS", help="A notebook: stop when one cell runs longer than this (the run fails, naming it).")
@click.option("--party-map", "party_map", multiple=True, metavar="NAME=PARTY",
              help="A notebook: the party it calls NAME is the inventory's PARTY (e.g. charlie=carol; repeatable).")
@click.argument("script", type=ScriptOrTemplate())
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def run_cmd(inventory_path: str, files: Tuple[str, ...], wait: bool, wait_timeout: float, detach: bool,
            starve_seconds: float, max_output_mb: float, start_timeout: float, parties: Tuple[str, ...],
            run_id: Optional[str], verbose: bool, cell_timeout: float, party_map: Tuple[str, ...], script: str,
            args: Tuple[str, ...]) -> None:
    """Run SCRIPT as the cluster's one driver, on the head only (production mode: one driver per party).

    \b
    Takes the cluster lock for the run's whole life (a second run, an up or a down fails at once
    naming the holder, exit 75, or waits with --wait),
    refuses while another driver is connected to Ray, hands the script $SFCLUSTER_CONFIG (use
    `from sfcluster import runtime; runtime.guard(); cfg = runtime.load()`), streams its output
    and exits with its exit code. Ctrl-C stops the driver and its SPU actors and frees the lock.
    When sfcluster stops the run itself (a party's node lost, another driver connected, a starved
    party, cancel), it exits with its own code (74, 76, 70, 130) and its last line says why.
    sfcluster's options go before SCRIPT; what follows SCRIPT is the script's own (`--` optional):
      sfcluster run -i inv.yaml --wait train.py -- --epochs 3

    \b
    Results: what the script writes into the directory $SFCLUSTER_OUTPUT (on the head) is fetched
    when the driver ends, with the log, into <state dir>/<cluster>/runs/<run id>/ on this machine
    (`run` prints where; `sfcluster runs` lists past runs; a detached run: `sfcluster fetch RUN_ID`).
    A failed fetch is said, but never changes the exit code: the run is done either way.

    \b
    Production mode (`mode: production` in the inventory): the same SCRIPT runs as one driver per
    party, each on its own party's node under that party's lock, all started together; their
    output is shown prefixed [party]. When one party's driver fails, never starts or goes silent,
    the others are stopped and `run` exits with the failing party's code; 0 only when every party
    exited 0. Each party's outputs come home into output/<party>/ (not a party with keep_outputs).

    
    A federation (each organisation operates its own node): every operator starts its own party's
    driver with the same run id, within the start timeout of each other:
      sfcluster run -i inv.yaml --party alice --run-id 20261203-170000-a1b2c3 train.py

    \b
    A notebook (simulation mode): its code cells run in order as the one driver, unchanged from one
    machine: sf.init(..., address='local') joins this cluster, sf.utils.testing.cluster_def(parties)
    is this cluster's SPU (TLS included); `cell 3/12` and each cell's output on the terminal; the
    executed notebook (outputs, the failing cell's traceback) comes home in output/.
      sfcluster run -i inv.yaml --party-map charlie=carol tutorial.ipynb
    """
    target = api.Cluster.load(inventory_path, parties)
    options = dict(files=files, detach=detach, lock_wait=lock_wait(wait, wait_timeout), starve_seconds=starve_seconds,
                   max_output_mb=max_output_mb, start_timeout=start_timeout, run_id=run_id, cell_timeout=cell_timeout,
                   party_map=notebooks.parse_party_map(party_map))
    sys.exit(_run(target, script, args[1:] if args[:1] == ("--",) else args, verbose, options))


def _run(target: "api.Cluster", script: str, args: Tuple[str, ...], verbose: bool, options: dict) -> int:
    """The run through the API, its output on this terminal (SecretFlow's noise held back unless
    verbose); its exit code."""
    out, err = _write(sys.stdout), _write(sys.stderr)
    quiet = [] if verbose else [QuietLines(out), QuietLines(err)]
    note = lambda m: err_console.print(f"[bold]sfcluster:[/] {escape(m)}")  # noqa: E731
    try:
        code = target.run(script, args, stdout=quiet[0] if quiet else out, stderr=quiet[1] if quiet else err,
                          note=note, **options).exit_code
    finally:
        for q in quiet:
            q.flush()
        out.close()
        err.close()
    dropped = sum(q.dropped for q in quiet)
    if dropped and code == 0:  # after a failure, why it ended stays the last line
        note(f"{dropped} line(s) of SecretFlow/SPU/brpc/Ray logging not shown (info, and warnings known to "
             "be harmless; all in the run's log: "
             "`sfcluster logs RUN_ID`; `run -v` shows them)")
    return code


@click.command("logs")
@inventory_option
@click.option("-f", "--follow", is_flag=True, help="Keep following until the run ends (the active run).")
@click.argument("run_id", metavar="[RUN_ID]", required=False, callback=_run_id)
@handle_errors
def logs_cmd(inventory_path: str, follow: bool, run_id: Optional[str]) -> None:
    """Output of the active (e.g. detached) run, or of any past run by its RUN_ID.

    \b
    A past run's log comes from this controller's history (<state dir>/<cluster>/runs/<id>/driver.log);
    a detached run that has ended is fetched from the head first (as `sfcluster fetch RUN_ID`).
      sfcluster logs -f                       follow the active run
      sfcluster logs 20261201-061500-a1b2c3   a past run (`sfcluster runs` lists them)
    """
    cluster = load(inventory_path)
    rec = history.load(cluster.name, run_id) if run_id else None
    if rec is not None and rec.exit_code is not None and rec.fetched:
        return _print_file(history.run_home(cluster.name, run_id) / C.LOG_NAME)
    with Nodes(cluster, [cluster.head_name]) as nodes:
        if run_id is None or driver.active_run_id(cluster, nodes) == run_id:
            out = _write(sys.stdout)
            code = driver.follow_logs(cluster, nodes, follow, out)
            out.close()
            sys.exit(code)
        got = fetching.fetch(cluster, nodes, run_id, exit_code_of=driver.exit_code_of,
                             note=lambda m: err_console.print(f"[bold]sfcluster:[/] {escape(m)}"))
    _print_file(got.home / C.LOG_NAME)


def _print_file(path: Path) -> None:
    if not path.is_file():
        raise SfclusterError(f"no log at {path}", "`sfcluster runs` lists the runs of this controller")
    out = _write(sys.stdout)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            out(block)
    out.close()


@click.command("fetch")
@inventory_option
@party_option
@max_output_option
@json_option
@run_id_argument
@click.argument("dest", required=False, type=click.Path(file_okay=False))
@handle_errors
def fetch_cmd(inventory_path: str, parties: Tuple[str, ...], max_output_mb: float, as_json: bool, run_id: str,
              dest: Optional[str]) -> None:
    """Bring a run's outputs and log home (a detached run, once it has ended), copy them to DEST.

    \b
    Into this controller's history, <state dir>/<cluster>/runs/RUN_ID/ (output/, driver.log, run.json),
    with the run's exit code; then the outputs (the files the script wrote into $SFCLUSTER_OUTPUT)
    are copied into DEST (made when missing; files of the same name are replaced). Again is harmless:
    the outputs are fetched anew, or, once the head has cleaned the run up, copied from the history.
    Afterwards the head removes its old run dirs and Ray's old session dirs (see the runbook).
      sfcluster fetch 20261201-061500-a1b2c3 ./results
    Production mode: every party's outputs again (a federation, --party THEIRS: that party's).
    """
    note = (lambda m: err_console.print(f"[bold]sfcluster:[/] {escape(m)}"))
    got = api.Cluster.load(inventory_path, parties).fetch(run_id, dest, max_output_mb=max_output_mb, note=note)
    if as_json:
        emit_result(got.to_json(), got.exit_code)
    elif got.cleaned is None:  # production mode: each party's outputs were said as they came
        if got.dest:
            note(f"copied to {got.dest}")
    else:
        note(fetching.describe(got.fetched) + (f"; copied to {got.dest}" if got.dest else ""))


@click.command("runs")
@inventory_option
@json_option
@click.option("-n", "--last", type=click.IntRange(min=1), default=None, metavar="N", help="Only the newest N runs.")
@handle_errors
def runs_cmd(inventory_path: str, as_json: bool, last: Optional[int]) -> None:
    """Past runs of the cluster started or fetched from this controller, newest first.

    \b
    From <state dir>/<cluster>/runs/ (no connection to the cluster): run id, start, script, who,
    duration, exit code (`?` while a detached run is not fetched) and the outputs fetched.
    `sfcluster logs RUN_ID` shows one's log, `sfcluster fetch RUN_ID [DEST]` its outputs.
    """
    cluster = api.Cluster.load(inventory_path)
    runs = cluster.runs(last)
    if as_json:
        emit_result({"cluster": cluster.name, "history": str(cluster.history_dir),
                     "runs": [r.to_json() for r in runs]}, 0)
        return
    if not runs:
        console.print(f"no runs of cluster {escape(cluster.name)} yet on this controller "
                      f"({escape(str(cluster.history_dir))}); start one with `sfcluster run -i "
                      f"{escape(inventory_path)} SCRIPT`")
        return
    t = Table(title=f"runs of cluster {cluster.name} ({cluster.history_dir})")
    for col in ("run id", "started", "script", "by", "duration", "exit", "outputs"):
        t.add_column(col)
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started)) if r.started else "?"
        outputs = (f"{r.outputs.get('files', 0)} file(s)" if r.fetched else "not fetched") + \
            (" (refused: too large)" if r.outputs.get("refused") else "")
        t.add_row(r.run_id, started, escape(r.script + (" " + " ".join(r.args) if r.args else "")),
                  escape(f"{r.user}@{r.controller}"), f"{r.duration:.0f} s" if r.duration is not None else "-",
                  "?" if r.exit_code is None else str(r.exit_code) + (f" ({r.stopped_by})" if r.stopped_by else ""),
                  outputs)
    console.print(t)


@click.command("cancel")
@inventory_option
@party_option
@handle_errors
def cancel_cmd(inventory_path: str, parties: Tuple[str, ...]) -> None:
    """Stop the active run (driver and its SPU actors) and free the lock.

    
    Production mode: the run's driver on the head party, and with it every party's (their
    controller stops them); a federation (--party THEIRS): that party's driver; the peers' drivers
    stop by themselves within about 15 s (their wrappers watch this party's port)."""
    cluster = load(inventory_path, parties)
    with Nodes(cluster, [cluster.lock_party]) as nodes:
        info = driver.cancel(cluster, nodes)
    err_console.print(escape(f"cancelled run {info.run_id} ({info.script}, started {info.since} by {info.user})"))
