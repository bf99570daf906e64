"""The `depnet` command: one click group; each subcommand lives in cli/commands/.

Subcommand modules import their heavy dependencies (libp2p, trio, the store) inside the
command functions, so `depnet --help` and the wallet commands start quickly.
"""

from __future__ import annotations

import click

from cli.commands.bench import bench
from cli.commands.chain import chain
from cli.commands.check import check
from cli.commands.contract import contract
from cli.commands.demo import demo
from cli.commands.fault import fault
from cli.commands.network import down, init, logs, status, up
from cli.commands.node import node
from cli.commands.scenario import scenario
from cli.commands.sim import sim
from cli.commands.swap import swap
from cli.commands.wallet import wallet


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="depnet")
def main() -> None:
    """depnet: a local network of bank validators settling tokenized deposits.

    Start with `depnet up`, pay with `depnet wallet transfer`, watch with `depnet status`,
    test consensus under faults with `depnet sim`, or on real processes with
    `depnet scenario run` and `depnet check`.
    """


main.add_command(node)
for command in (init, up, down, status, logs, wallet, contract, swap, chain, check, demo):
    main.add_command(command)
main.add_command(bench)
main.add_command(sim)
main.add_command(fault)
main.add_command(scenario)
