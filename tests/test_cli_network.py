"""The CLI against a real 4-bank network: `depnet up` starts four validator processes on
free ports, the flows run through real `depnet` processes, and the teardown stops every
process that was started, whatever happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_fakes import free_port_range

pytestmark = pytest.mark.network

BANKS = ["JPM", "HSBC", "DBS", "BNP"]
BUYER = "acme-buyer"
SUPPLIER = "lion-city-logistics"


def depnet(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """One `depnet` process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def ok_json(home: Path, *args: str) -> Any:
    return json.loads(ok(depnet(home, *args, "--json")))


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def node_pids(home: Path) -> set[int]:
    pids = set()
    for pid_file in home.glob("nodes/*/node.pid"):
        try:
            pids.add(int(pid_file.read_text()))
        except (OSError, ValueError):
            continue
    return pids


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    home = tmp_path_factory.mktemp("cli-network") / "net"
    started: set[int] = set()
    try:
        up = depnet(home, "up", "--base-port", str(free_port_range(8)), "--json", timeout=90)
        started |= node_pids(home)
        assert up.returncode == 0, up.stdout + up.stderr
        yield home, json.loads(up.stdout)
    finally:
        started |= node_pids(home)
        depnet(home, "down", "--timeout", "5", timeout=30)
        for pid in started:  # whatever `down` missed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


def test_up_starts_four_validators_and_commits_a_block(network: tuple[Path, dict]) -> None:
    home, up = network
    assert [n["bank"] for n in up["nodes"]] == BANKS
    assert all(n["height"] >= 1 for n in up["nodes"])
    assert sorted(up["started"]) == sorted(BANKS)
    assert "network already up (4 validators)" in ok(depnet(home, "up"))
    assert up["seconds"] > 0  # timings are reported, not asserted: `depnet up --json`


def test_status_shows_four_nodes_with_one_head(network: tuple[Path, dict]) -> None:
    home, _ = network

    def agreed() -> dict | None:
        report = ok_json(home, "status")
        return report if report["agreement"]["agree"] else None

    report = wait_for(agreed, 10, "the nodes to agree on a head")
    assert [n["bank"] for n in report["nodes"] if n["up"]] == BANKS
    assert len(set(report["agreement"]["hashes"].values())) == 1
    assert report["stall"] is None


def test_transfer_waits_for_commit_and_every_node_shows_the_balances(
    network: tuple[Path, dict],
) -> None:
    home, _ = network
    before = {who: ok_json(home, "wallet", "balance", who)["units"] for who in (BUYER, SUPPLIER)}
    paid = ok_json(
        home, "wallet", "transfer", "--from", BUYER, "--to", SUPPLIER,
        "--amount", "1250.00", "--token", "USD.JPM", "--memo", "INV-42",
    )  # fmt: skip
    assert paid["committed"] and paid["height"] >= 1
    status = ok_json(home, "chain", "tx", paid["tx_id"])
    assert status["status"] == "committed" and status["tx"]["memo"] == "INV-42"
    for bank in BANKS:  # committed means every node applies it; wait for slower ones
        wait_for(
            lambda bank=bank: (
                ok_json(home, "chain", "head", "--node", bank)["height"] >= paid["height"]
            ),
            10,
            f"{bank} to reach height {paid['height']}",
        )
        after = {
            who: ok_json(home, "wallet", "balance", who, "--node", bank)["units"]
            for who in (BUYER, SUPPLIER)
        }
        assert after[BUYER]["USD.JPM"] == before[BUYER]["USD.JPM"] - 125000
        assert after[SUPPLIER].get("USD.JPM", 0) == before[SUPPLIER].get("USD.JPM", 0) + 125000


def test_rejections_come_back_as_one_line(network: tuple[Path, dict]) -> None:
    home, _ = network
    result = depnet(
        home, "wallet", "transfer", "--from", SUPPLIER, "--to", BUYER,
        "--amount", "99999999", "--token", "SGD.DBS",
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: insufficient funds: lion-city-logistics holds")


def test_new_wallet_mint_burn_history(network: tuple[Path, dict]) -> None:
    home, _ = network
    ok(depnet(home, "wallet", "new", "harbour-freight", "--bank", "HSBC"))
    ok(depnet(home, "wallet", "mint", "--bank", "HSBC", "--to", "harbour-freight",
              "--amount", "800.00", "--token", "HKD.HSBC"))  # fmt: skip
    ok(depnet(home, "wallet", "burn", "--from", "harbour-freight", "--amount", "300.00",
              "--token", "HKD.HSBC"))  # fmt: skip
    assert ok_json(home, "wallet", "balance", "harbour-freight")["balances"] == {
        "HKD.HSBC": "500.00"
    }
    history = ok_json(home, "wallet", "history", "harbour-freight")
    assert [(t["kind"], t["amount"]) for t in history["txs"]] == [
        ("burn", "300.00"),
        ("mint", "800.00"),
        ("register", ""),
    ]


def test_demo_balances_match_wallet_balance(network: tuple[Path, dict]) -> None:
    home, _ = network
    out = ok(depnet(home, "demo", timeout=180))
    assert "network already up" in out and "Stop it with `depnet down`" in out
    assert out.count("settled in") == 9 and "refused: account frozen" in out
    table = out[out.index("Final balances") :].split("\n\n")[0].splitlines()[2:]
    rows = [line.split() for line in table if "frozen" not in line]
    assert len(rows) >= 5 and all(len(row) == 6 for row in rows)
    for name, _bank, available, token, locked, _ in rows:
        shown = ok_json(home, "wallet", "balance", name)
        assert shown["balances"].get(token, "0.00") == available.replace(",", "")
        assert shown["locked"].get(token, "0.00") == locked.replace(",", "")


def test_status_explains_a_stall_when_two_of_four_stop(network: tuple[Path, dict]) -> None:
    home, _ = network
    assert "stopped DBS" in ok(depnet(home, "down", "DBS", "BNP"))

    def stalled() -> dict | None:
        stall = ok_json(home, "status")["stall"]
        return stall if stall and stall["silent"] == ["DBS", "BNP"] else None

    stall = wait_for(stalled, 30, "status to explain the stall")
    assert stall["quorum"] == 3 and stall["validators"] == 4
    text = ok(depnet(home, "status"))
    assert f"stalled at height {stall['height']} round" in text
    assert "from 2 of 4 banks (DBS, BNP silent); 3 needed" in text

    ok(depnet(home, "up"))  # restart the two: the chain must move on
    wait_for(
        lambda: ok_json(home, "chain", "head")["height"] >= stall["height"],
        30,
        "the chain to commit again after the restart",
    )
