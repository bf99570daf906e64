"""`depnet node run`: one validator in the foreground (what `depnet up` starts per bank)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def node() -> None:
    """Run a single validator node."""


@node.command("run")
@click.option(
    "--home",
    "node_home",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The node's home folder (holds config.json, validator.key, data/).",
)
def run(node_home: Path) -> None:
    """Run one bank's validator until SIGTERM or Ctrl-C; logs go to NODE_HOME/node.log."""
    from chain.errors import LedgerError
    from node.config import ConfigError
    from node.runner import run_node

    try:
        run_node(node_home)
    except (ConfigError, LedgerError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
