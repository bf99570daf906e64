"""Fixtures for multi-process network tests: real validator processes on 127.0.0.1.

``localnet`` creates a 4-bank network home in tmp_path on free ports, with
``ACCOUNTS_PER_BANK`` funded ``load-*`` accounts per bank, starts one validator process per
bank, and waits (polling /status) until all of them see each other and commit. Whatever
happens in the test, teardown stops every process the fixture started (by pid, SIGKILL
after a short grace period, frozen ones included) and checks that none is left running.
The process code is cli/devnet/, shared with `depnet up` and `depnet bench network`.

Import the fixture into a test module with ``from tests.netfixture import localnet_fixture``
(it registers as ``localnet``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.devnet.load import funded_template
from cli.devnet.localnet import LocalNet

ACCOUNTS_PER_BANK = 50
START_TIMEOUT = 90.0  # the machine is shared: four processes importing libp2p take a while


def start_localnet(home: Path, accounts_per_bank: int = ACCOUNTS_PER_BANK) -> LocalNet:
    """Create and start a network; on any failure, stop what was started and re-raise."""
    net = LocalNet.create(home, funded_template(accounts_per_bank))
    try:
        net.start_all()
        net.wait_healthy(timeout=START_TIMEOUT)
    except BaseException:
        net.close(timeout=1.0)
        raise
    return net


@pytest.fixture(name="localnet")
def localnet_fixture(tmp_path: Path) -> Iterator[LocalNet]:
    net = start_localnet(tmp_path / "net")
    try:
        yield net
    finally:
        net.close()
        left = [p.pid for p in net.started if p.poll() is None]
        assert not left, f"validator processes still running: {left}"
