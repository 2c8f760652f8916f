"""Entry point: `sfcluster <command>`."""
from __future__ import annotations

import click

from sfcluster import __version__
from sfcluster.cli.ca import ca_cmd
from sfcluster.cli.check import check_cmd
from sfcluster.cli.data import data_cmd
from sfcluster.cli.lifecycle import config_cmd, down_cmd, status_cmd, up_cmd
from sfcluster.cli.provision import provision_cmd, wheelhouse_cmd
from sfcluster.cli.run import cancel_cmd, fetch_cmd, logs_cmd, run_cmd, runs_cmd
from sfcluster.exitcodes import help_table

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
      sfcluster provision -i inventory.yaml  each node's SecretFlow venv, as the inventory pins it
      sfcluster wheelhouse -i inventory.yaml DIR   its wheels and hash lock, for the nodes' Python
      sfcluster check  -i inventory.yaml     preflight, with a fix for each problem
      sfcluster up     -i inventory.yaml     Ray head + workers over SSH, firewall scoped to peers
      sfcluster run    -i inventory.yaml train_lr.py   the single driver, on the head
      sfcluster status / logs / cancel / down
      sfcluster runs / fetch RUN_ID [DEST] / logs RUN_ID   past runs, their outputs and logs
      sfcluster data push PARTY NAME FILE    a party's data file, to that party's node only
    
    Production mode (`mode: production`): one driver per party, no shared Ray; in a federation each
    organisation's operator adds `--party THEIRS` (and `sfcluster ca` prints its CA for the peers).
    """


for _cmd in (provision_cmd, wheelhouse_cmd, check_cmd, up_cmd, status_cmd, down_cmd, config_cmd, run_cmd, logs_cmd, cancel_cmd,
             runs_cmd, fetch_cmd, data_cmd, ca_cmd):
    _cmd.epilog = help_table()
    cli.add_command(_cmd)


def main() -> None:
    cli(prog_name="sfcluster")


if __name__ == "__main__":
    main()
