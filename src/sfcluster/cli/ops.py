"""`sfcluster ssh`, `exec`, `dashboard`: what an operator reaches for on a running cluster."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from typing import List, Sequence, Tuple

import click
from rich.markup import escape

from sfcluster.cli.common import console, emit_result, err_console, handle_errors, inventory_option, json_option, load
from sfcluster.connect import Nodes, target_for
from sfcluster.errors import NotConfigured, NotInInventory, SfclusterError
from sfcluster.inventory.model import Cluster
from sfcluster.raycluster.argv import DASHBOARD_HOST
from sfcluster.remote.adhoc import DEFAULT_TIMEOUT, LockedWriter, run_adhoc
from sfcluster.remote.ssh import SshRunner, configured_jump
from sfcluster.remote.ssh_argv import SSH, as_user_command, ssh_argv
from sfcluster.remote.tunnel import LOOPBACK, LocalTunnel


def known_parties(cluster: Cluster, names: Sequence[str]) -> List[str]:
    """`names`, each once, in the order given; every one the inventory lacks named in one error (78)."""
    unknown = [n for n in names if n not in cluster.party_names]
    if unknown:
        raise NotInInventory(f"no party {', '.join(map(repr, unknown))} in the inventory "
                             f"(parties: {', '.join(cluster.party_names)})")
    return list(dict.fromkeys(names))


# -- ssh ------------------------------------------------------------------------------------------

@click.command("ssh", context_settings={"allow_interspersed_args": False})
@inventory_option
@click.option("--as-ray", is_flag=True,
              help="Be the inventory's ray_user there (`sudo -u RAY_USER -i`): needs the SSH user's sudo "
                   "(it asks for a password where sudo does).")
@click.argument("party")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD...]")
@handle_errors
def ssh_cmd(inventory_path: str, as_ray: bool, party: str, command: Tuple[str, ...]) -> None:
    """A shell on PARTY's node, or one COMMAND there, with the system `ssh`.

    \b
    The inventory's way in: its SSH user, port, identity_file and jump host, and its known_hosts
    with StrictHostKeyChecking=yes on every hop (an unknown or changed key is refused, never
    added). Exits with ssh's code: the command's own, 255 when ssh itself failed.
      sfcluster ssh -i inventory.yaml alice
      sfcluster ssh alice -- df -h /tmp
      sfcluster ssh --as-ray alice -- tail -n 50 /tmp/sfc-demo/r/session_latest/logs/raylet.out
    """
    cluster = load(inventory_path)
    [party] = known_parties(cluster, [party])
    remote = list(command[1:] if command[:1] == ("--",) else command)
    node = cluster.node(party)
    tty = False
    if as_ray:
        if node.ray_user and node.ray_user != node.ssh.user:
            tty = not remote or sys.stdin.isatty()  # sudo -i's shell, and sudo's password prompt, want one
            remote = as_user_command(node.ray_user, remote)
        else:
            err_console.print(f"note: {escape(party)} has no ray_user of its own: Ray runs as the SSH user there")
    binary = shutil.which(SSH)
    if binary is None:
        raise SfclusterError("no `ssh` on this machine's PATH: `sfcluster ssh` runs the system OpenSSH client",
                             "install it (Debian/Ubuntu: apt-get install openssh-client; RHEL/Fedora: dnf install "
                             "openssh-clients; macOS has it), or use `sfcluster exec PARTY -- CMD`, which needs none")
    target = target_for(cluster, node)
    argv = ssh_argv(target, jump=configured_jump(target), remote=remote, tty=tty)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(binary, argv)


# -- exec -----------------------------------------------------------------------------------------

def _usage(message: str) -> click.UsageError:
    return click.UsageError(message, ctx=click.get_current_context(silent=True))


def split_parties(words: Sequence[str], all_nodes: bool) -> Tuple[List[str], List[str]]:
    """(parties, command) of `exec`'s words. With --all every word is the command; else the parties
    come first and `--` ends them (click keeps that `--` when a party came before it)."""
    words = list(words)
    if all_nodes:
        return [], words[1:] if words[:1] == ["--"] else words
    if "--" not in words:
        raise _usage("separate the parties from the command with `--`: sfcluster exec alice bob -- CMD "
                               "(or --all -- CMD)")
    at = words.index("--")
    parties, command = words[:at], words[at + 1:]
    if not parties:
        raise _usage("name the parties before `--`, or give --all")
    options = [p for p in parties if p.startswith("-")]
    if options:
        raise _usage(f"{options[0]}: options go before the parties: sfcluster exec {options[0]} alice -- CMD")
    return parties, command


@click.command("exec", context_settings={"allow_interspersed_args": False})
@inventory_option
@click.option("--all", "all_nodes", is_flag=True, help="Every party's node.")
@click.option("--timeout", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT, show_default=True, metavar="SECONDS",
              help="Give up on a node whose command has not finished by then: that node fails, and its channel is "
                   "closed (which ends most commands there).")
@json_option
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="PARTY... -- CMD...")
@handle_errors
def exec_cmd(inventory_path: str, all_nodes: bool, timeout: float, as_json: bool, words: Tuple[str, ...]) -> None:
    """Run CMD on the named parties' nodes (or --all) at once, as the SSH user.

    \b
    Each word of CMD stays one word on the node (quoted with shlex.join): a shell pipeline needs
    `sh -c '...'`. Each output line comes prefixed `[party] ` (stdout to stdout, stderr to stderr,
    control characters written out), then one summary line per node on stderr. Exit 0 when CMD
    exited 0 everywhere, 1 when it failed (or timed out) on some node, 69 when a node could not be
    reached (named). `--json`: {ok, exit_code, nodes: {party: {exit_code, stdout, stderr} or {error}}}.
      sfcluster exec --all -- uptime
      sfcluster exec alice bob -- df -h /tmp
      sfcluster exec --all --json -- sh -c 'ss -ltn | grep 6379'
    """
    parties, command = split_parties(words, all_nodes)
    if not command:
        raise _usage("no command after `--`: sfcluster exec --all -- CMD")
    cluster = load(inventory_path)
    if all_nodes and "--" in command and 0 < command.index("--") and all(
            w in cluster.party_names for w in command[:command.index("--")]):
        raise _usage("--all or parties, not both: sfcluster exec --all -- CMD, or sfcluster exec alice bob -- CMD")
    parties = list(cluster.operated_names) if all_nodes else known_parties(cluster, parties)
    with Nodes(cluster, parties) as nodes:
        result = run_adhoc(nodes.runners, parties, command, timeout=timeout, keep_output=as_json,
                           on_line=None if as_json else LockedWriter(sys.stdout, sys.stderr))
    code = result.exit_code
    if as_json:
        extra = {}
        if code:
            where = result.unreachable or result.failed
            fixes = [o.fix for o in result.nodes.values() if o.fix]
            extra = {"error": f"{'unreachable' if result.unreachable else 'failed'}: {', '.join(where)}",
                     "fix": fixes[0] if fixes else "see each node's stderr in `nodes`", "problems": result.problems()}
        emit_result({**result.to_json(), **extra}, code)
        sys.exit(int(code))
    for outcome in result.nodes.values():
        style = "green" if outcome.ok else "bold red"
        err_console.print(f"[{style}]{escape(outcome.summary)}[/]")
        if outcome.fix:
            err_console.print(f"  [bold]fix:[/] {escape(outcome.fix)}")
    if result.unreachable:
        err_console.print(f"[bold red]not reached: {escape(', '.join(result.unreachable))}[/] (the command did not run there)")
    sys.exit(int(code))


# -- dashboard ------------------------------------------------------------------------------------

@click.command("dashboard")
@inventory_option
@click.option("--port", "local_port", type=click.IntRange(0, 65535), default=None, metavar="LOCAL",
              help="The local port on 127.0.0.1 (default: the dashboard's own port; 0: any free one).")
@handle_errors
def dashboard_cmd(inventory_path: str, local_port: int) -> None:
    """The head's Ray dashboard on this machine, through an SSH tunnel.

    \b
    Ray binds its dashboard to 127.0.0.1 on the head (never opened to the peers); this forwards
    127.0.0.1:LOCAL here to it over the head's SSH connection (the inventory's user, key, jump
    host and known_hosts). It listens on 127.0.0.1 only: the dashboard has no login of its own.
    The dashboard is on when the inventory sets `ports: {dashboard: 8265}` (before `up`).
      sfcluster dashboard -i inventory.yaml              # then open http://127.0.0.1:8265
      sfcluster dashboard --port 18265
    """
    cluster = load(inventory_path)
    if not cluster.mode.runs_ray:
        raise NotConfigured("production mode runs no Ray: there is no dashboard to tunnel to",
                          "each party's driver logs to its run (`sfcluster logs`)")
    remote_port = cluster.ray.dashboard
    if remote_port is None:
        raise NotConfigured(f"the Ray dashboard is off in {inventory_path} (ports.dashboard is not set)",
                          "set `ports: {dashboard: 8265}` in the inventory, then `sfcluster down` and `sfcluster up` "
                          "(Ray starts its dashboard with the head)")
    head = cluster.head_name
    with Nodes(cluster, [head]) as nodes:
        runner = nodes[head]
        assert isinstance(runner, SshRunner)
        tunnel = LocalTunnel(runner.transport, head, (DASHBOARD_HOST, remote_port),
                             remote_port if local_port is None else local_port,
                             on_problem=lambda msg: err_console.print(f"[yellow]{escape(msg)}[/]"))
        # Ctrl-C (and SIGTERM) only sets `stop`: the accept loop sees it within ACCEPT_WAIT and the
        # tunnel closes in order. A KeyboardInterrupt raised wherever the main thread happened to be
        # (inside paramiko's channel open, holding its lock) could leave close() waiting for ever.
        stop = threading.Event()
        old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            tunnel.probe()
            bound = tunnel.listen()
            console.print(f"dashboard: http://{LOOPBACK}:{bound} (Ctrl-C ends the tunnel)")
            sys.stdout.flush()
            tunnel.serve(stop)
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            tunnel.close()
    err_console.print("tunnel closed")
