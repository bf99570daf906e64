"""The `depnet` CLI against a fake network (tests/cli_fakes.py): parsing, flows, and every
user error as one line with a non-zero exit and no traceback."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from chain.genesis import Token
from chain.tx import TxKind
from cli.commands.common import CliError, format_amount, parse_amount
from cli.devnet import start
from cli.devnet.client import NodeClient
from cli.main import main
from node.config import load_template
from node.layout import NetworkHome, NodeHome, create_network, new_wallet
from tests.cli_fakes import FakeNetwork, free_port_range

BUYER = "acme-buyer"
SUPPLIER = "pearl-river-electronics"


@pytest.fixture(scope="session")
def template_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One initialised 4-bank network home; each test gets a copy. Nothing listens on its
    ports, so a test without the fake sees unreachable nodes."""
    home = tmp_path_factory.mktemp("template") / "net"
    create_network(
        home,
        load_template(),
        base_port=free_port_range(8),
        genesis_time_ms=1_764_000_000_000,
    )
    return home


@pytest.fixture
def home(template_home: Path, tmp_path: Path) -> Path:
    target = tmp_path / "net"
    shutil.copytree(template_home, target)
    return target


@pytest.fixture
def fake(home: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNetwork:
    network = FakeNetwork(NetworkHome(home))
    monkeypatch.setattr(NodeClient, "transport", network.transport)  # no sockets
    return network


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--home", str(home)], catch_exceptions=False)


def fails(result: Result, *expected: str) -> str:
    """The command failed with one line on stderr holding every ``expected`` text."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def account_of(home: Path, name: str) -> str:
    return NetworkHome(home).wallet(name).account


# --- help and parsing --------------------------------------------------------------------


def _commands(group, prefix=()):  # type: ignore[no-untyped-def]
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", list(_commands(main)), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_home_defaults_to_depnet_home_env(home: Path, fake: FakeNetwork) -> None:
    result = CliRunner().invoke(main, ["wallet", "list"], env={"DEPNET_HOME": str(home)})
    assert BUYER in ok(result)


def test_amounts_are_exact_decimal_strings() -> None:
    usd = Token("USD.JPM", 2, "JPM", bytes(32))
    assert parse_amount("1250.00", usd) == 125000
    assert parse_amount("1,250.5", usd) == 125050
    assert parse_amount("0.010", usd) == 1
    assert parse_amount("92233720368547758.07", usd) == 2**63 - 1
    for bad in ("1e3", "-5", "0", "0.00", "1.2.3", "", "abc", "92233720368547758.08", "0.001"):
        with pytest.raises(CliError):
            parse_amount(bad, usd)
    assert format_amount(125000, 2) == "1,250.00"
    assert format_amount(7, 0) == "7"
    assert format_amount(5, 3) == "0.005"


# --- init ---------------------------------------------------------------------------------


def test_init_creates_a_network_and_refuses_to_overwrite(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    base = free_port_range(8)
    out = ok(run(home, "init", "--base-port", str(base)))
    assert "4 banks" in out and BUYER in out
    assert {e.bank for e in NetworkHome(home).nodes()} == {"JPM", "HSBC", "DBS", "BNP"}
    fails(run(home, "init", "--base-port", str(base)), "already exists", "--force")
    before = NetworkHome(home).wallet(BUYER).account
    ok(run(home, "init", "--base-port", str(base), "--force", "--banks", "3"))
    assert len(NetworkHome(home).nodes()) == 3
    assert NetworkHome(home).wallet(BUYER).account != before


def test_init_json_and_banks_file(tmp_path: Path) -> None:
    template = tmp_path / "two.json"
    template.write_text(
        json.dumps(
            {
                "banks": [
                    {"name": "ALPHA", "tokens": [{"symbol": "USD.ALPHA", "decimals": 2}]},
                    {"name": "BETA", "tokens": [{"symbol": "JPY.BETA", "decimals": 0}]},
                ],
                "accounts": [{"name": "shop", "bank": "BETA", "balances": {"JPY.BETA": 500}}],
            }
        )
    )
    result = run(
        tmp_path / "n", "init", "--banks-file", str(template),
        "--base-port", str(free_port_range(4)), "--json",
    )  # fmt: skip
    data = json.loads(ok(result))
    assert [n["bank"] for n in data["nodes"]] == ["ALPHA", "BETA"]


def test_init_reports_a_port_in_use(tmp_path: Path) -> None:
    base = free_port_range(8)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 3))
        busy.listen()
        fails(run(tmp_path / "n", "init", "--base-port", str(base)), f"port {base + 3} in use")
    assert not NetworkHome(tmp_path / "n").exists()


def test_init_with_more_banks_than_the_template(tmp_path: Path) -> None:
    fails(
        run(tmp_path / "n", "init", "--banks", "9", "--base-port", str(free_port_range(18))),
        "7 banks",
    )


def test_init_banks_7_adds_three_jurisdictions_to_the_default_four(tmp_path: Path) -> None:
    home = tmp_path / "seven"
    ok(run(home, "init", "--banks", "7", "--base-port", str(free_port_range(14))))
    genesis = NetworkHome(home).genesis()
    assert [b.name for b in genesis.banks][:4] == ["JPM", "HSBC", "DBS", "BNP"]
    assert {b.country for b in genesis.banks[4:]} == {"JP", "GB", "AU"}
    assert {t.split(".")[0] for t in genesis.tokens} == {
        "USD", "HKD", "SGD", "EUR", "JPY", "GBP", "AUD"
    }  # fmt: skip
    assert len(load_template()["banks"]) == 4  # what `up` starts without --banks


# --- errors every command shares ----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("down",),
        ("logs", "JPM"),
        ("wallet", "list"),
        ("wallet", "balance", BUYER),
        ("wallet", "transfer", "--from", BUYER, "--to", SUPPLIER, "--amount", "1",
         "--token", "USD.JPM"),
        ("chain", "head"),
    ],
    ids=lambda a: " ".join(a[:2]),
)  # fmt: skip
def test_network_not_initialised(tmp_path: Path, args: tuple[str, ...]) -> None:
    fails(run(tmp_path / "nothing", *args), "network not initialised", "depnet up")


def test_node_not_reachable(home: Path) -> None:
    line = fails(run(home, "wallet", "balance", BUYER), "not reachable")
    assert "depnet up" in line
    fails(run(home, "chain", "head", "--node", "DBS"), "node DBS not reachable", "refused")


def test_a_live_node_is_found_when_others_are_down(home: Path, fake: FakeNetwork) -> None:
    fake.down = {"JPM", "HSBC"}
    assert "2,500,000.00 USD.JPM" in ok(run(home, "wallet", "balance", BUYER))
    fake.down = {"JPM", "HSBC", "DBS", "BNP"}
    fails(run(home, "wallet", "balance", BUYER), "not reachable", "JPM, HSBC, DBS, BNP")


def test_unexpected_errors_are_one_line(
    home: Path, fake: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(NodeClient, "account", boom)
    fails(run(home, "wallet", "balance", BUYER), "unexpected RuntimeError: disk on fire")


# --- wallet: transfers and their errors ---------------------------------------------------


def transfer(home: Path, *extra: str, amount: str = "1250.00", token: str = "USD.JPM") -> Result:
    return run(
        home, "wallet", "transfer", "--from", BUYER, "--to", SUPPLIER,
        "--amount", amount, "--token", token, *extra,
    )  # fmt: skip


def test_transfer_waits_for_commit_and_moves_the_money(home: Path, fake: FakeNetwork) -> None:
    out = ok(transfer(home, "--memo", "INV-1"))
    assert f"paid 1,250.00 USD.JPM from {BUYER} to {SUPPLIER} (memo INV-1)" in out
    assert "committed at height 1, settled in" in out
    assert fake.balance_of(account_of(home, SUPPLIER), "USD.JPM") == 125000
    assert fake.requests[0] == "JPM GET /status"  # the payer's bank's node first
    data = json.loads(ok(transfer(home, "--json", amount="0.5")))
    assert data["committed"] and data["height"] == 2 and data["amount"] == "0.50"
    assert data["to"] == account_of(home, SUPPLIER)
    assert fake.balance_of(account_of(home, BUYER), "USD.JPM") == 250_000_000 - 125_050


def test_transfer_to_an_account_by_hex_and_through_a_chosen_node(
    home: Path, fake: FakeNetwork
) -> None:
    supplier = account_of(home, SUPPLIER)
    out = ok(run(home, "wallet", "transfer", "--from", BUYER, "--to", supplier, "--amount",
                 "3", "--token", "usd.jpm", "--node", "BNP", "--no-wait"))  # fmt: skip
    assert "not waiting for commit" in out and "accepted by BNP" in out
    assert all(r.startswith("BNP") for r in fake.requests)
    fake.down = {"BNP"}
    fails(transfer(home, "--node", "BNP"), "node BNP not reachable")


def test_transfer_errors(home: Path, fake: FakeNetwork) -> None:
    fails(transfer(home, amount="9999999.00"), "insufficient funds", "holds 2,500,000.00 USD.JPM",
          "needs 9,999,999.00 USD.JPM")  # fmt: skip
    fails(transfer(home, amount="1.001"), "too many decimals", "USD.JPM has 2 decimal places")
    fails(transfer(home, amount="1e3"), "not a decimal number")
    fails(transfer(home, token="XYZ.NOPE"), "unknown token 'XYZ.NOPE'", "USD.JPM")
    fails(run(home, "wallet", "transfer", "--from", "nobody", "--to", SUPPLIER, "--amount", "1",
              "--token", "USD.JPM"), "unknown wallet 'nobody'")  # fmt: skip
    fails(run(home, "wallet", "transfer", "--from", BUYER, "--to", "nobody", "--amount", "1",
              "--token", "USD.JPM"), "unknown wallet or account 'nobody'")  # fmt: skip
    stranger = "ab" * 32
    fails(run(home, "wallet", "transfer", "--from", BUYER, "--to", stranger, "--amount", "1",
              "--token", "USD.JPM"), "unknown account", "not registered")  # fmt: skip
    fake.mempool_full = True
    fails(transfer(home), "mempool full", "retry")
    assert fake.blocks == []


def test_missing_options_are_usage_errors(home: Path) -> None:
    result = run(home, "wallet", "transfer", "--from", BUYER)
    assert result.exit_code == 2 and "Missing option" in result.output
    assert "Traceback" not in result.output


# --- wallet: new, register, mint, burn ----------------------------------------------------


def test_new_wallet_is_registered_then_funded_and_redeems(home: Path, fake: FakeNetwork) -> None:
    out = ok(run(home, "wallet", "new", "kowloon-parts", "--bank", "hsbc"))
    assert "HSBC registered kowloon-parts" in out and "committed at height 1" in out
    wallet = NetworkHome(home).wallet("kowloon-parts")
    assert wallet.bank == "HSBC" and wallet.seed
    fails(run(home, "wallet", "new", "kowloon-parts", "--bank", "HSBC"), "already exists")
    fails(run(home, "wallet", "new", "../etc", "--bank", "HSBC"), "wallet name")
    fails(run(home, "wallet", "new", "x", "--bank", "NOPE"), "unknown bank 'NOPE'")

    out = ok(run(home, "wallet", "mint", "--bank", "HSBC", "--to", "kowloon-parts",
                 "--amount", "500", "--token", "HKD.HSBC"))  # fmt: skip
    assert "HSBC minted 500.00 HKD.HSBC to kowloon-parts" in out
    fails(run(home, "wallet", "mint", "--bank", "JPM", "--to", "kowloon-parts",
              "--amount", "5", "--token", "HKD.HSBC"), "only the issuing bank")  # fmt: skip

    out = ok(run(home, "wallet", "burn", "--from", "kowloon-parts", "--amount", "200",
                 "--token", "HKD.HSBC", "--memo", "R-1"))  # fmt: skip
    assert "kowloon-parts redeemed 200.00 HKD.HSBC with HSBC (memo R-1)" in out
    fails(run(home, "wallet", "burn", "--from", "kowloon-parts", "--amount", "301",
              "--token", "HKD.HSBC"), "insufficient funds", "holds 300.00 HKD.HSBC")  # fmt: skip
    data = json.loads(ok(run(home, "wallet", "balance", "kowloon-parts", "--json")))
    assert data["balances"] == {"HKD.HSBC": "300.00"} and data["nonce"] == 1


def test_a_refused_registration_leaves_no_wallet(home: Path, fake: FakeNetwork) -> None:
    fake.mempool_full = True
    fails(run(home, "wallet", "new", "late", "--bank", "DBS"), "mempool full")
    assert "late" not in [w.name for w in NetworkHome(home).wallets()]


def test_register_an_outside_account_as_watch_only(home: Path, fake: FakeNetwork) -> None:
    outside = new_wallet("outside", "DBS")
    out = ok(run(home, "wallet", "register", outside.account, "--bank", "DBS", "--name", "ext"))
    assert "DBS registered ext" in out
    listed = json.loads(ok(run(home, "wallet", "list", "--json")))
    assert {"name": "ext", "bank": "DBS", "account": outside.account,
            "role": "watch-only"} in listed  # fmt: skip
    ok(transfer(home, "--no-wait"))
    ok(run(home, "wallet", "transfer", "--from", BUYER, "--to", "ext", "--amount", "1",
           "--token", "USD.JPM"))  # fmt: skip
    fails(run(home, "wallet", "transfer", "--from", "ext", "--to", BUYER, "--amount", "1",
              "--token", "USD.JPM"), "watch-only")  # fmt: skip
    fails(run(home, "wallet", "register", outside.account, "--bank", "DBS"),
          "already registered")  # fmt: skip
    fails(run(home, "wallet", "register", "12ab", "--bank", "DBS"), "64 hex")


# --- wallet: reading ----------------------------------------------------------------------


def test_balance_list_and_history(home: Path, fake: FakeNetwork) -> None:
    out = ok(run(home, "wallet", "balance", BUYER))
    assert "2,500,000.00 USD.JPM" in out and "nonce 0" in out
    by_hex = json.loads(ok(run(home, "wallet", "balance", account_of(home, BUYER), "--json")))
    assert by_hex["name"] == BUYER and by_hex["units"] == {"USD.JPM": 250_000_000}
    listed = ok(run(home, "wallet", "list"))
    assert "issuer" in listed and account_of(home, BUYER) in listed

    ok(transfer(home, "--memo", "INV-7", amount="10"))
    ok(run(home, "wallet", "transfer", "--from", SUPPLIER, "--to", BUYER, "--amount", "2",
           "--token", "HKD.HSBC"))  # fmt: skip
    history = json.loads(ok(run(home, "wallet", "history", BUYER, "--json")))
    assert history["account"] == account_of(home, BUYER) and history["next_before"] is None
    assert [(t["height"], t["kind"], t["direction"], t["amount"], t["counterparty"], t["memo"])
            for t in history["txs"]] == [
        (2, "transfer", "in", "2.00", SUPPLIER, ""),
        (1, "transfer", "out", "10.00", SUPPLIER, "INV-7"),
    ]  # fmt: skip
    assert history["txs"][0]["signed_amount"] == "+2.00 HKD.HSBC"
    assert history["txs"][0]["time_ms"] == fake.genesis.genesis_time_ms + 2_000
    out = ok(run(home, "wallet", "history", BUYER, "--limit", "1"))
    assert "1 txs, newest first" in out and "+2.00 HKD.HSBC" in out
    assert "older txs not shown; --before 2 lists the next ones" in out
    out = ok(run(home, "wallet", "history", BUYER, "--before", "2"))
    assert "1 txs in blocks below 2" in out and "-10.00 USD.JPM" in out and "INV-7" in out
    assert "older txs not shown" not in out
    # the history comes from the account index, not from reading blocks
    assert not [r for r in fake.requests if "/blocks/" in r]
    fails(run(home, "wallet", "balance", "ghost"), "unknown wallet or account 'ghost'")


def test_history_reads_page_after_page_up_to_the_limit(home: Path, fake: FakeNetwork) -> None:
    for n in range(5):
        ok(transfer(home, "--no-wait", "--memo", f"P-{n}", amount="1"))
    fake.history_page = 2  # the node answers at most 2 txs a page
    fake.requests.clear()
    history = json.loads(ok(run(home, "wallet", "history", BUYER, "--limit", "4", "--json")))
    assert [t["memo"] for t in history["txs"]] == ["P-4", "P-3", "P-2", "P-1"]
    assert history["next_before"] == 2
    buyer = account_of(home, BUYER)
    assert [r for r in fake.requests if "/txs" in r] == [
        f"JPM GET /accounts/{buyer}/txs?limit=4",
        f"JPM GET /accounts/{buyer}/txs?limit=2&before=4",
    ]
    rest = json.loads(ok(run(home, "wallet", "history", BUYER, "--before", "2", "--json")))
    assert [t["memo"] for t in rest["txs"]] == ["P-0"] and rest["next_before"] is None


def test_history_of_an_unregistered_account_is_one_line(home: Path, fake: FakeNetwork) -> None:
    outside = new_wallet("outside", "DBS")
    fails(run(home, "wallet", "history", outside.account), "unknown account", "not registered")
    refused = run(home, "wallet", "history", BUYER, "--limit", "0")
    assert refused.exit_code == 2 and "Invalid value for '--limit'" in refused.stderr


class _Pages:
    """A node client that answers history pages from a list, recording each request."""

    bank = "JPM"

    def __init__(self, pages: list[tuple[list[int], int | None]]) -> None:
        self.pages = pages
        self.asked: list[tuple[int, int | None]] = []

    def account_txs(self, account: bytes, *, limit: int, before: int | None = None) -> dict:
        self.asked.append((limit, before))
        heights, next_before = self.pages.pop(0)
        return {"txs": [{"height": h} for h in heights], "next_before": next_before}


def test_history_never_splits_a_block_across_pages() -> None:
    from cli.commands.common import Party
    from cli.commands.wallet import _read_history

    party = Party("acme", b"\x01" * 32, "JPM")
    # The second page is one block holding more txs than are left to show: it is left
    # whole for the next listing, which starts at the first page's cursor.
    client = _Pages([([9, 8], 8), ([7, 7, 7], 7)])
    txs, next_before = _read_history(client, party, 4, None)  # type: ignore[arg-type]
    assert [t["height"] for t in txs] == [9, 8] and next_before == 8
    assert client.asked == [(4, None), (2, 8)]
    # Alone, such a block is shown whole rather than never.
    client = _Pages([([7, 7, 7], 7)])
    txs, next_before = _read_history(client, party, 2, 8)  # type: ignore[arg-type]
    assert [t["height"] for t in txs] == [7, 7, 7] and next_before == 7
    # A node whose cursor does not move back cannot make the CLI loop forever.
    client = _Pages([([5], 5), ([4], 5)])
    with pytest.raises(CliError, match="does not move back"):
        _read_history(client, party, 9, None)  # type: ignore[arg-type]


# --- chain --------------------------------------------------------------------------------


def test_chain_head_block_and_tx(home: Path, fake: FakeNetwork) -> None:
    data = json.loads(ok(transfer(home, "--json", "--memo", "INV-9")))
    head = json.loads(ok(run(home, "chain", "head", "--json")))
    assert head["height"] == 1
    assert "height     1" in ok(run(home, "chain", "head"))
    block = json.loads(ok(run(home, "chain", "block", "1", "--json")))
    assert block["txs"][0]["tx_id"] == data["tx_id"]
    out = ok(run(home, "chain", "block", "1"))
    assert "committed by 3 precommits" in out and BUYER in out and "INV-9" in out
    out = ok(run(home, "chain", "tx", data["tx_id"]))
    assert "committed at height 1" in out and f"from {BUYER} to {SUPPLIER}" in out
    fails(run(home, "chain", "block", "7"), "no block at height 7")
    fails(run(home, "chain", "tx", "00" * 32), "no tx")
    assert run(home, "chain", "block", "0").exit_code == 2


def test_chain_evidence_lists_who_signed_twice_and_where(home: Path, fake: FakeNetwork) -> None:
    assert "no evidence committed" in ok(run(home, "chain", "evidence"))
    for _ in range(3):
        ok(transfer(home))
    bnp = next(b for b in fake.genesis.banks if b.name == "BNP")
    fake.evidence = [
        {"validator": bnp.validator.hex(), "bank": "BNP", "height": 1, "round": r, "kind": kind,
         "committed_at": 2 + r, "proof": "ab" * 8}
        for r, kind in ((0, "proposal"), (1, "prevote"))
    ]  # fmt: skip
    out = ok(run(home, "chain", "evidence"))
    assert "BNP" in out and "proposal" in out and "prevote" in out
    assert json.loads(ok(run(home, "chain", "evidence", "--json"))) == fake.evidence
    one = json.loads(ok(run(home, "chain", "evidence", "--height", "3", "--json")))
    assert [e["kind"] for e in one] == ["prevote"]
    none = ok(run(home, "chain", "evidence", "--height", "9"))
    assert "no evidence committed at height 9" in none
    assert "1 evidence" in ok(run(home, "chain", "block", "2"))


# --- status -------------------------------------------------------------------------------


def test_status_shows_nodes_and_agreement(home: Path, fake: FakeNetwork) -> None:
    ok(transfer(home))
    report = json.loads(ok(run(home, "status", "--json")))
    assert [n["up"] for n in report["nodes"]] == [True] * 4
    assert report["agreement"]["agree"] is True and report["stall"] is None
    assert len({n["head_hash"] for n in report["nodes"]}) == 1
    out = ok(run(home, "status"))
    assert "4 live nodes agree on block 1" in out


def test_status_compares_nodes_at_different_heights(home: Path, fake: FakeNetwork) -> None:
    ok(transfer(home))
    ok(transfer(home))
    fake.status["BNP"] = {"height": 1, "head_hash": fake.block_json(1)["hash"]}
    report = json.loads(ok(run(home, "status", "--json")))
    assert report["agreement"]["agree"] is True and report["agreement"]["height"] == 1
    fake.status["BNP"]["head_hash"] = "ff" * 32
    out = ok(run(home, "status"))
    assert "NODES DISAGREE at height 1" in out


def test_status_explains_a_stall_with_two_of_four_down(home: Path, fake: FakeNetwork) -> None:
    genesis = NetworkHome(home).genesis()
    key = {b.name: b.validator.hex() for b in genesis.banks}
    fake.down = {"DBS", "BNP"}
    for bank, round_ in (("JPM", 5), ("HSBC", 6)):
        fake.status[bank] = {
            "seconds_since_commit": 42.0,
            "consensus": {"height": 812, "round": round_,
                          "prevotes": [key["JPM"], key["HSBC"]], "precommits": []},
        }  # fmt: skip
    out = ok(run(home, "status"))
    expected = "stalled at height 812 round 5: prevotes from 2 of 4 banks (DBS, BNP silent); "
    assert expected + "3 needed" in out
    assert "not answering: DBS, BNP" in out
    stall = json.loads(ok(run(home, "status", "--json")))["stall"]
    assert (stall["height"], stall["round"], stall["quorum"]) == (812, 5, 3)
    assert stall["silent"] == ["DBS", "BNP"] and stall["prevotes"] == ["JPM", "HSBC"]


def test_status_when_everything_is_down(home: Path) -> None:
    out = ok(run(home, "status"))
    assert "no node answers" in out


# --- processes: up, down, logs ------------------------------------------------------------


def _sleeper(home: Path, bank: str) -> subprocess.Popen:
    """A process that `depnet down` takes for bank's node: its command line names the node
    home, as a real node's does."""
    node_home = (home / "nodes" / bank).resolve()
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(node_home)]
    )
    (node_home / "node.pid").write_text(f"{process.pid}\n")
    return process


def test_down_stops_running_nodes_and_removes_pid_files(home: Path) -> None:
    sleepers = [_sleeper(home, "JPM"), _sleeper(home, "DBS")]
    try:
        out = ok(run(home, "down", "DBS"))
        assert f"stopped DBS (pid {sleepers[1].pid})" in out and "still running: JPM" in out
        assert sleepers[1].wait(timeout=5) != 0
        out = ok(run(home, "down"))
        assert "stopped JPM" in out and "network is down" in out
        assert not list(home.glob("nodes/*/node.pid"))
        assert "no node was running" in ok(run(home, "down"))
    finally:
        for process in sleepers:
            process.kill()
            process.wait()


def test_a_paused_process_stops_on_sigterm_without_sigkill() -> None:
    from cli.devnet.stop import stop_pids

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sleeper.send_signal(signal.SIGSTOP)
        assert stop_pids({"sleeper": sleeper.pid}, timeout=5.0) == {"sleeper": False}
        assert sleeper.wait(timeout=5.0) == -signal.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_pid_file_is_not_a_running_node(home: Path) -> None:
    (home / "nodes" / "JPM" / "node.pid").write_text("999999\n")
    assert "no node was running" in ok(run(home, "down"))


def test_up_names_a_node_that_dies_at_start(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(node_home):  # type: ignore[no-untyped-def]
        code = "import sys; print('boom: bad config'); sys.exit(3)"
        return [sys.executable, "-c", code, str(node_home.path.resolve())]

    monkeypatch.setattr(start, "node_command", failing)
    result = run(home, "up", "--timeout", "20")
    lines = result.stderr.strip().splitlines()
    # The tail of its output, then one error line; every node dies, so whichever is
    # noticed first is named.
    first = re.search(r"(\w+) \| boom: bad config", lines[0])
    assert first is not None, lines
    assert f"node {first.group(1)} exited during start (status 3)" in lines[-1]
    assert result.exit_code == 1 and "Traceback" not in result.output
    ok(run(home, "down"))


def test_up_reports_a_port_in_use(home: Path) -> None:
    port = int(NetworkHome(home).node("HSBC").api_url.rsplit(":", 1)[1])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        fails(run(home, "up"), f"port {port} in use", "HSBC")
    assert not list(home.glob("nodes/*/node.pid"))


def test_up_times_out_with_the_nodes_still_waiting(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def silent(node_home):  # type: ignore[no-untyped-def]
        return [sys.executable, "-c", "import time; time.sleep(60)", str(node_home.path.resolve())]

    monkeypatch.setattr(start, "node_command", silent)
    started = time.monotonic()
    try:
        fails(run(home, "up", "--timeout", "1"), "no committed block after 1 s",
              "JPM, HSBC, DBS, BNP")  # fmt: skip
        assert time.monotonic() - started < 10
    finally:
        assert "stopped" in ok(run(home, "down"))


def test_logs_prints_readable_lines_and_json(home: Path) -> None:
    log = home / "nodes" / "JPM" / "node.log"
    lines = [
        {"ts": 1, "time": "2025-11-25T12:00:00", "level": "info", "bank": "JPM",
         "logger": "depnet.node", "msg": "node starting", "height": 0},
        {"ts": 2, "time": "2025-11-25T12:00:01", "level": "info", "bank": "JPM",
         "logger": "depnet.node", "msg": "committed", "height": 1, "hash": "ab" * 32},
    ]  # fmt: skip
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = ok(run(home, "logs", "JPM", "-n", "1"))
    assert out.startswith("2025-11-25T12:00:01 info    committed  height=1 hash=abababab")
    assert "node starting" not in out
    assert json.loads(ok(run(home, "logs", "jpm", "--json")).splitlines()[0])["height"] == 0
    fails(run(home, "logs", "DBS"), "no log yet")
    fails(run(home, "logs", "NOPE"), "no bank 'NOPE'")


def test_the_node_receives_a_signed_tx_and_never_the_key(home: Path, fake: FakeNetwork) -> None:
    ok(transfer(home))
    (tx,) = fake.blocks[0]  # decoded and signature-checked by chain/, as a node does
    assert tx.kind is TxKind.TRANSFER and tx.sender.hex() == account_of(home, BUYER)
    seed = NetworkHome(home).wallet(BUYER).seed
    assert all(seed not in r for r in fake.requests)


def test_demo_story_settles_each_step_and_prints_balances_that_match(
    home: Path, fake: FakeNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.commands import demo

    monkeypatch.setattr(demo, "bring_up", lambda net, timeout, as_json: None)  # fake is "up"

    def wait_for_block_time(net: NetworkHome, time_ms: int) -> float:
        fake.advance(max(0, time_ms - fake.time_of(len(fake.blocks) + 1)))
        return 0.0

    monkeypatch.setattr(demo, "wait_for_block_time", wait_for_block_time)
    out = ok(run(home, "demo"))
    assert out.count("settled in") == 9 and "PO-2025-0042" in out
    assert "tradeflow-platform released shipment (37,500.00 USD.JPM) to pearl-river" in out
    assert "pearl-river-electronics paid 37,500.00 USD.JPM to hsbc-treasury" in out
    assert "acme-buyer took back 18,400.00 USD.JPM (refund)" in out
    assert "refused: account frozen (compliance hold)" in out
    assert "Stop it with `depnet down`" in out
    table = out[out.index("Final balances") :].split("\n\n")[0].splitlines()[2:]
    rows = {(r[0], r[3]): r for r in (line.split() for line in table) if len(r) == 6}
    assert rows[("hsbc-treasury", "HKD.HSBC")][4] == "778,000.00"  # the standing quote
    assert rows[("pearl-river-electronics", "USD.JPM")][2] == "87,500.00"
    for (name, token), (_, _, available, _, locked, _) in rows.items():
        shown = json.loads(ok(run(home, "wallet", "balance", name, "--json")))
        assert shown["balances"].get(token, "0.00") == available.replace(",", "")
        assert shown["locked"].get(token, "0.00") == locked.replace(",", "")
    assert "orient-sourcing JPM frozen (AML hold)" in " ".join(out.split())


# --- contracts, swaps and holds -------------------------------------------------------

TERMS = """\
buyer = "acme-buyer"
supplier = "pearl-river-electronics"
approver = "tradeflow-platform"
token = "USD.JPM"
expires = "30d"
invoices = ["INV-1", "INV-2"]

[[milestones]]
name = "shipment"
amount = "300.00"

[[milestones]]
name = "delivery"
amount = "700.00"
due = "10d"
"""


def opened(home: Path, terms: str = TERMS, name: str = "terms.toml") -> dict:
    path = home / name
    path.write_text(terms)
    return json.loads(ok(run(home, "contract", "open", "--terms", str(path), "--json")))


def test_a_contract_locks_then_pays_the_supplier_milestone_by_milestone(
    home: Path, fake: FakeNetwork
) -> None:
    opening = opened(home)
    contract_id = opening["contract_id"]
    assert opening["committed"] and opening["amount"] == "1000.00"
    assert opening["memo"] == "INV-1, INV-2"
    buyer = json.loads(ok(run(home, "wallet", "balance", BUYER, "--json")))
    assert buyer["balances"]["USD.JPM"] == "2499000.00" and buyer["locked"] == {
        "USD.JPM": "1000.00"
    }
    out = ok(run(home, "contract", "release", contract_id, "--milestone", "shipment"))
    assert "tradeflow-platform released shipment (300.00 USD.JPM) to pearl-river" in out
    shown = json.loads(ok(run(home, "contract", "show", contract_id, "--json")))
    assert (shown["locked"], shown["released"]) == (70_000, 30_000)
    assert [m["state"] for m in shown["milestones"]] == ["released", "locked"]
    text = ok(run(home, "contract", "show", contract_id))
    assert "approver tradeflow-platform" in text and "700.00 USD.JPM" in text
    listed = json.loads(ok(run(home, "contract", "list", "--party", SUPPLIER, "--open", "--json")))
    assert [c["id"] for c in listed] == [contract_id]
    ok(run(home, "contract", "release", contract_id, "--milestone", "delivery"))
    assert fake.balance_of(account_of(home, SUPPLIER), "USD.JPM") == 100_000
    assert json.loads(ok(run(home, "contract", "list", "--open", "--json"))) == []
    fails(
        run(home, "contract", "release", contract_id, "--milestone", "delivery"),
        "rejected (milestone_released)",
    )


def test_a_refund_waits_for_the_expiry_in_block_time(home: Path, fake: FakeNetwork) -> None:
    contract_id = opened(home, TERMS.replace('"30d"', '"5s"').replace('due = "10d"\n', ""))[
        "contract_id"
    ]
    fails(run(home, "contract", "refund", contract_id), "the contract has not expired yet")
    fake.advance(5_000)
    assert "acme-buyer took back 1,000.00 USD.JPM (refund)" in ok(
        run(home, "contract", "refund", contract_id)
    )
    assert json.loads(ok(run(home, "wallet", "balance", BUYER, "--json")))["locked"] == {}


def test_the_supplier_cancels_and_the_buyer_is_refunded(home: Path, fake: FakeNetwork) -> None:
    contract_id = opened(home)["contract_id"]
    out = ok(run(home, "contract", "cancel", contract_id))
    assert "pearl-river-electronics cancelled: 1,000.00 USD.JPM back to acme-buyer" in out
    assert fake.balance_of(account_of(home, BUYER), "USD.JPM") == 250_000_000


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace('buyer = "acme-buyer"\n', ""), "buyer: is required"),
        (lambda t: t.replace('"300.00"', '"3e2"'), "milestones.0.amount: must be a decimal"),
        (lambda t: t.replace('"300.00"', "300"), "milestones.0.amount: Input should be a valid"),
        (lambda t: t.replace('"300.00"', '"300.001"'), "milestones.0.amount: too many decimals"),
        (lambda t: t.replace('"30d"', '"soon"'), "expires: must be a duration"),
        (lambda t: t.replace('"10d"', '"60d"'), "milestones.1.due: must lie after"),
        (lambda t: t.replace('"tradeflow-platform"', '"nobody"'), "approver: unknown wallet"),
        (lambda t: t.replace('"USD.JPM"', '"XYZ.JPM"'), "token: unknown token"),
        (lambda t: t + 'colour = "red"\n', "colour: is not a field of a terms file"),
        (lambda t: t.replace('"delivery"', '"shipment"'), "milestones: names must differ"),
        (lambda t: t.replace("buyer =", "buyer"), "not valid TOML"),
        (lambda t: t.replace('"acme-buyer"', '"tradeflow-platform"'), "insufficient funds"),
    ],
    ids=["missing", "exponent", "number", "decimals", "expiry", "due", "approver", "token",
         "extra", "names", "toml", "funds"],
)  # fmt: skip
def test_a_bad_terms_file_is_one_line_naming_the_field(
    home: Path, fake: FakeNetwork, change, expected: str
) -> None:
    path = home / "terms.toml"
    path.write_text(change(TERMS))
    fails(run(home, "contract", "open", "--terms", str(path)), expected)
    assert not fake.blocks


def test_a_json_terms_file_and_the_schema_it_follows(home: Path, fake: FakeNetwork) -> None:
    schema = json.loads(ok(CliRunner().invoke(main, ["contract", "schema"])))
    assert set(schema["required"]) == {"buyer", "supplier", "token", "expires", "milestones"}
    assert schema["additionalProperties"] is False
    document = {
        "buyer": BUYER, "supplier": SUPPLIER, "token": "USD.JPM", "expires": "2030-01-01T00:00:00Z",
        "milestones": [{"name": "all", "amount": "12.50"}],
    }  # fmt: skip
    opening = opened(home, json.dumps(document), "terms.json")
    shown = json.loads(ok(run(home, "contract", "show", opening["contract_id"], "--json")))
    assert shown["approver"] == account_of(home, BUYER)  # the buyer approves by default
    assert shown["expiry_ms"] == 1_893_456_000_000
    fails(run(home, "contract", "show", "ab" * 32), "no contract")
    fails(run(home, "contract", "show", "xyz"), "is not 64 hex characters")


def test_a_swap_settles_both_legs_once(home: Path, fake: FakeNetwork) -> None:
    offer = json.loads(ok(run(
        home, "swap", "offer", "--from", "hsbc-treasury", "--give", "7780.00", "HKD.HSBC",
        "--want", "1000.00", "USD.JPM", "--expires", "10m", "--json",
    )))  # fmt: skip
    offer_id = offer["offer_id"]
    listed = ok(run(home, "swap", "list"))
    assert offer_id in listed and "anyone" in listed
    fails(run(home, "swap", "accept", offer_id), "name the accepting wallet with --from")
    out = ok(run(home, "swap", "accept", offer_id, "--from", BUYER))
    assert "acme-buyer paid 1,000.00 USD.JPM to hsbc-treasury and received 7,780.00" in out
    assert fake.balance_of(account_of(home, BUYER), "HKD.HSBC") == 778_000
    assert fake.balance_of(account_of(home, "hsbc-treasury"), "USD.JPM") == 100_000
    fails(run(home, "swap", "accept", offer_id, "--from", BUYER), "the offer was already taken")
    fails(run(home, "swap", "cancel", offer_id), "the offer was already taken")
    assert json.loads(ok(run(home, "swap", "list", "--json"))) == []
    everything = json.loads(ok(run(home, "swap", "list", "--all", "--json")))
    assert everything[0]["status"] == "taken"


def test_the_maker_cancels_an_offer(home: Path, fake: FakeNetwork) -> None:
    offer_id = json.loads(ok(run(
        home, "swap", "offer", "--from", BUYER, "--give", "10.00", "USD.JPM", "--want",
        "78.00", "HKD.HSBC", "--to", SUPPLIER, "--json",
    )))["offer_id"]  # fmt: skip
    assert "offer: 10.00 USD.JPM back to acme-buyer" in ok(run(home, "swap", "cancel", offer_id))
    fails(
        run(home, "swap", "offer", "--from", BUYER, "--give", "1", "USD.JPM", "--want", "1",
            "USD.JPM"),
        "gives one token and wants another",
    )  # fmt: skip


def test_a_frozen_account_is_refused_until_its_bank_unfreezes_it(
    home: Path, fake: FakeNetwork
) -> None:
    assert "JPM froze orient-sourcing (compliance hold)" in ok(
        run(home, "wallet", "freeze", "orient-sourcing")
    )
    pay = ("wallet", "transfer", "--from", BUYER, "--to", "orient-sourcing", "--amount", "5",
           "--token", "USD.JPM")  # fmt: skip
    fails(run(home, *pay), "account frozen (compliance hold)")
    assert json.loads(ok(run(home, "wallet", "balance", "orient-sourcing", "--json")))
    fails(run(home, "wallet", "freeze", "orient-sourcing", "--bank", "HSBC"), "only the bank")
    ok(run(home, "wallet", "unfreeze", "orient-sourcing"))
    ok(run(home, *pay))
    assert fake.balance_of(account_of(home, "orient-sourcing"), "USD.JPM") == 500


def test_init_writes_the_peer_ids_libp2p_derives(home: Path) -> None:
    """init computes peer ids without importing libp2p (seconds of start-up); they must be
    the ids the nodes will have."""
    from node.p2p import peer_id_from_pubkey

    for entry in NetworkHome(home).nodes():
        assert entry.peer_id == str(peer_id_from_pubkey(bytes.fromhex(entry.validator)))


# --- `depnet node run`: a node that cannot start says why in one line ------------------


@pytest.fixture
def node_home(home: Path) -> Iterator[NodeHome]:
    """The first bank's node home; the root logger the node sets up is restored after."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield NetworkHome(home).node_home(NetworkHome(home).nodes()[0].bank)
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def test_node_run_with_a_garbage_signer_state_is_one_line(node_home: NodeHome) -> None:
    node_home.signer_file.write_bytes(b"\xc1 not msgpack")
    fails(run(node_home.path, "node", "run"), "signer state")


def test_node_run_with_a_key_outside_genesis_is_one_line(node_home: NodeHome) -> None:
    node_home.save_key(bytes(32))
    fails(run(node_home.path, "node", "run"), "validator key is not in genesis")


def test_node_run_with_a_bad_observer_is_one_line(node_home: NodeHome) -> None:
    config = dataclasses.replace(node_home.load_config(), observers=("QmNotAPeerId",))
    node_home.save_config(config)
    fails(run(node_home.path, "node", "run"), "observer 'QmNotAPeerId' is not a libp2p peer id")


def test_node_run_on_a_port_in_use_is_one_line(node_home: NodeHome) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node_home.save_config(dataclasses.replace(node_home.load_config(), api_port=port))
        fails(run(node_home.path, "node", "run"), f"API port {port} in use")
    assert "Traceback" in node_home.log_file.read_text()  # the node log keeps the details


def test_node_stop_message_finds_the_known_error_in_trio_groups() -> None:
    from cli.commands.node import stop_message
    from consensus.signer import SignerStateError

    nested = ExceptionGroup(
        "nursery",
        [
            ValueError("x"),
            ExceptionGroup("inner", [SignerStateError("signer state is unreadable")]),
        ],
    )
    assert stop_message(nested) == "signer state is unreadable"
    assert stop_message(ExceptionGroup("nursery", [KeyError("k")])) == "node stopped: KeyError: 'k'"


# --- fault: what each command posts to the nodes' admin API; wallet fail-over ----------

BANKS = ["JPM", "HSBC", "DBS", "BNP"]


@pytest.fixture
def tokens(home: Path) -> Path:
    """Admin tokens as the nodes write them at their first start."""
    for bank in BANKS:
        NetworkHome(home).node_home(bank).admin_token()
    return home


def test_partition_posts_the_groups_to_every_node(
    tokens: Path, home: Path, fake: FakeNetwork
) -> None:
    out = ok(run(home, "fault", "partition", "jpm,HSBC", "/", "DBS,BNP", "--seed", "3"))
    assert "partition jpm,HSBC | DBS,BNP: set on JPM, HSBC, DBS, BNP" in out
    spec = {"fault": "partition", "groups": [["JPM", "HSBC"], ["DBS", "BNP"]], "seed": 3}
    assert all(fake.faults[bank] == [spec] for bank in BANKS)
    assert "POST /admin/faults" in fake.requests[-1]


@pytest.mark.parametrize("words", [["JPM", "DBS"], ["JPM", "->", "DBS"], ["JPM->DBS"]])
def test_oneway_partition_syntaxes(
    tokens: Path, home: Path, fake: FakeNetwork, words: list[str]
) -> None:
    ok(run(home, "fault", "partition", "--oneway", *words))
    assert fake.faults["BNP"] == [{"fault": "oneway", "from": "JPM", "to": "DBS"}]


def test_link_faults_skew_byzantine_list_and_clear(
    tokens: Path, home: Path, fake: FakeNetwork
) -> None:
    ok(run(home, "fault", "drop", "--rate", "0.3", "--to", "DBS", "--kind", "consensus"))
    ok(run(home, "fault", "delay", "--ms", "200", "--jitter", "100", "--from", "JPM"))
    ok(run(home, "fault", "duplicate", "--rate", "0.2", "--seed", "5"))
    assert "HSBC's clock now runs -1500 ms off" in ok(
        run(home, "fault", "skew", "HSBC", "--ms", "-1500")
    )
    assert "BNP is now byzantine: equivocate" in ok(
        run(home, "fault", "byzantine", "BNP", "equivocate")
    )
    assert fake.faults["JPM"] == [
        {"fault": "drop", "rate": 0.3, "to": "DBS", "kind": "consensus"},
        {"fault": "delay", "ms": 200, "jitter": 100, "from": "JPM"},
        {"fault": "duplicate", "rate": 0.2, "seed": 5},
    ]
    assert fake.faults["HSBC"][-1] == {"fault": "skew", "ms": -1500}
    assert fake.faults["BNP"][-1] == {"fault": "byzantine", "mode": "equivocate"}
    out = ok(run(home, "fault", "list"))
    assert "drop 0.3 (to DBS consensus); delay 200+-100 ms (from JPM)" in out
    assert "byzantine equivocate" in out and "clock -1500 ms" in out
    listed = json.loads(ok(run(home, "fault", "list", "--json")))
    assert [n["bank"] for n in listed] == BANKS and listed[0]["state"]["faults"]
    ok(run(home, "fault", "clear"))
    assert all(specs == [] for specs in fake.faults.values())


def test_a_node_that_is_down_is_named_and_the_others_take_the_fault(
    tokens: Path, home: Path, fake: FakeNetwork
) -> None:
    fake.down = {"DBS"}
    result = run(home, "fault", "heal")
    assert result.exit_code == 0
    assert "healed: set on JPM, HSBC, BNP" in result.stdout
    assert "warning: DBS not reached" in result.stderr
    fake.down = set(BANKS)
    fails(run(home, "fault", "heal"), "no node took the fault")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["partition", "JPM"], "two or more groups"),
        (["partition", "--oneway", "JPM"], "two banks"),
        (["partition", "JPM,NOPE", "DBS"], "no bank 'NOPE'"),
        (["skew", "NOPE", "--ms", "5"], "no bank 'NOPE'"),
        (["drop", "--rate", "0.1", "--to", "NOPE"], "no bank"),
        (["delay", "--ms", "10", "--jitter", "20"], "--jitter 20 is larger than --ms 10"),
        (["kill", "JPM"], "JPM is not running"),
        (["wipe", "NOPE"], "no bank 'NOPE'"),
    ],
)
def test_fault_errors_are_one_line(
    tokens: Path, home: Path, fake: FakeNetwork, args: list[str], expected: str
) -> None:
    fails(run(home, "fault", *args), expected)


def test_without_an_admin_token_the_command_says_where_it_comes_from(
    home: Path, fake: FakeNetwork
) -> None:
    fails(run(home, "fault", "clear"), "no admin token for JPM", "created when the node first")


def test_bad_option_values_are_usage_errors(home: Path) -> None:
    result = run(home, "fault", "drop", "--rate", "1.5")
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = run(home, "fault", "byzantine", "JPM", "evil")
    assert result.exit_code == 2


def test_the_wallet_falls_over_from_a_node_that_is_catching_up(
    home: Path, fake: FakeNetwork
) -> None:
    fake.status["JPM"] = {"syncing": True, "network_height": 40}
    ok(transfer(home))
    assert "HSBC POST /txs" in fake.requests
    assert not any(r.startswith("JPM POST") for r in fake.requests)
    out = ok(run(home, "status"))
    assert "catching up: height 1 of 40" in out
    for bank in BANKS:
        fake.status[bank] = {"syncing": True, "network_height": 40}
    fails(transfer(home), "every live node is catching up", "JPM at 1 of 40")
