"""`depnet node run`: one validator in the foreground (what `depnet up` starts per bank)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import click

from cli.commands.common import CliError, SafeGroup


@click.group(cls=SafeGroup)
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
    from node.runner import run_node

    try:
        run_node(node_home)
    except BaseExceptionGroup as group:  # trio wraps what its tasks raise
        if group.subgroup(KeyboardInterrupt) is not None:
            raise click.Abort() from None
        raise CliError(stop_message(group)) from None
    except Exception as exc:
        raise CliError(stop_message(exc)) from None


def stop_message(exc: BaseException) -> str:
    """One line for why the node stopped: the first error of a known kind among the
    leaves of ``exc`` in its own words, else the first error by type. (The runner logs
    the traceback to the node log.)"""
    from chain.errors import LedgerError
    from consensus.signer import SignerStateError
    from node.config import ConfigError

    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE:
            # The runner names the API port; an address elsewhere may come unnamed.
            named = "port" in (leaf.strerror or "")
            return leaf.strerror if named else f"port in use (is another node running?): {leaf}"
        if isinstance(leaf, (ConfigError, LedgerError, SignerStateError, OSError)):
            return str(leaf) or type(leaf).__name__
    first = leaves[0] if leaves else exc
    detail = f": {first}" if str(first) else ""
    return f"node stopped: {type(first).__name__}{detail}"


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
