"""Entry point: `sfcluster <command>`."""
from __future__ import annotations

import sys
from typing import List, Optional, Tuple

import click

from sfcluster import __version__
from sfcluster.cli.ca import ca_cmd
from sfcluster.cli.check import check_cmd
from sfcluster.cli.data import data_cmd
from sfcluster.cli.init import init_cmd
from sfcluster.cli.lifecycle import config_cmd, down_cmd, status_cmd, up_cmd
from sfcluster.cli.ops import dashboard_cmd, exec_cmd, ssh_cmd
from sfcluster.cli.provision import provision_cmd, wheelhouse_cmd
from sfcluster.cli.run import cancel_cmd, fetch_cmd, logs_cmd, run_cmd, runs_cmd
from sfcluster.cli.common import debug_option, emit_json
from sfcluster.exitcodes import Exit, help_table

ENVIRONMENT = """\b
Environment:
  SFCLUSTER_INVENTORY   the inventory file when -i is not given (default: inventory.yaml)
  SFCLUSTER_STATE_DIR   where the controller keeps its state (default: ~/.local/state/sfcluster)
\b
Shell completion (bash; zsh and fish alike with zsh_source / fish_source):
  eval "$(_SFCLUSTER_COMPLETE=bash_source sfcluster)"     # e.g. in ~/.bashrc"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=help_table() + "\n\n" + ENVIRONMENT)
@click.version_option(__version__, prog_name="sfcluster")
def cli() -> None:
    """Launch SecretFlow clusters the right way: simulation mode (one Ray cluster) or production mode.

    \b
    Simulation mode: one Ray cluster over several machines, one per party; exactly one driver, on the head.
      sfcluster init alice=HOST bob=USER@HOST   a short inventory to start from (--template train_lr: the script)
      sfcluster provision -i inventory.yaml  each node's SecretFlow venv, as the inventory pins it
      sfcluster wheelhouse -i inventory.yaml DIR   its wheels and hash lock, for the nodes' Python
      sfcluster check  -i inventory.yaml     preflight, with a fix for each problem
      sfcluster up     -i inventory.yaml     Ray head + workers over SSH, firewall scoped to peers
      sfcluster run    -i inventory.yaml train_lr.py   the single driver, on the head
      sfcluster status / logs / cancel / down
      sfcluster runs / fetch RUN_ID [DEST] / logs RUN_ID   past runs, their outputs and logs
      sfcluster data push PARTY NAME FILE    a party's data file, to that party's node only
      sfcluster ssh PARTY [-- CMD]           a shell (or CMD) there: the inventory's user, key, jump host, known_hosts
      sfcluster exec PARTY... | --all -- CMD   CMD on those nodes at once, each line prefixed [party]
      sfcluster dashboard [--port LOCAL]     the head's Ray dashboard on 127.0.0.1, through SSH
    
    Production mode (`mode: production`): one driver per party, no shared Ray; in a federation each
    organisation's operator adds `--party THEIRS` (and `sfcluster ca` prints its CA for the peers).
    """


# The exit-code table is shown once, in `sfcluster --help` (and the README); each command points there.
EXIT_POINTER = "Exit codes: `sfcluster --help` (one table for every command)."
for _cmd in (init_cmd, provision_cmd, wheelhouse_cmd, check_cmd, up_cmd, status_cmd, down_cmd, config_cmd, run_cmd, logs_cmd, cancel_cmd,
             runs_cmd, fetch_cmd, data_cmd, ca_cmd, ssh_cmd, exec_cmd, dashboard_cmd):
    for _c in [_cmd, *getattr(_cmd, "commands", {}).values()]:  # a group's subcommands too (data push)
        _c.epilog = EXIT_POINTER
        if not isinstance(_c, click.Group):  # --debug on every command (-v too, where it has no -v of its own)
            _c.params.append(debug_option(short=not any("-v" in p.opts for p in _c.params)))
    cli.add_command(_cmd)


def _wants_json(args: List[str]) -> bool:
    """--json among the options (before a `--`, which hands the rest to a script)."""
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _command_of(args: List[str]) -> Tuple[Optional[click.Command], str]:
    """The (sub)command `args` name, for an error click raised before it made that command's
    context (an option's missing value)."""
    cmd: click.Command = cli
    path = "sfcluster"
    for a in args:
        if a == "--":
            break
        sub = cmd.get_command(click.Context(cmd), a) if isinstance(cmd, click.Group) and not a.startswith("-") else None
        if sub is not None:
            cmd, path = sub, f"{path} {a}"
    return (None if cmd is cli else cmd), path


def main(args: Optional[List[str]] = None) -> None:
    """click's own run, except that a usage error (exit 2) of a command that has `--json`, asked
    for with it, also prints its one JSON object on stdout, as every other outcome does."""
    args = list(sys.argv[1:] if args is None else args)
    try:
        code = cli.main(args=args, prog_name="sfcluster", standalone_mode=False)
    except click.UsageError as e:
        cmd, path = (e.ctx.command, e.ctx.command_path) if e.ctx is not None else _command_of(args)
        if _wants_json(args) and cmd is not None and any("--json" in p.opts for p in cmd.params):
            emit_json({"ok": False, "exit_code": int(Exit.USAGE), "error": e.format_message(),
                       "fix": f"see `{path} --help`", "problems": []})
        e.show()
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
