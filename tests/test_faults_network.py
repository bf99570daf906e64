"""`depnet fault` on four validator processes on 127.0.0.1: each fault acts where it should.

One network serves the module (starting four processes is most of the cost); each test
ends its faults and waits for the four to commit together again before the next one.
The frame counters of each node's fault layer (``GET /admin/faults``) show what crossed
which link. Waits poll a condition until a deadline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from cli.devnet import faults
from cli.devnet.errors import ApiError
from cli.devnet.faults import Frames
from cli.devnet.load import interleave, load_payers, sign_transfers
from cli.devnet.localnet import LocalNet
from cli.main import main
from consensus.evidence import decode_evidence, verify_equivocation
from consensus.messages import Proposal
from consensus.validators import ValidatorSet
from tests.netfixture import start_localnet

pytestmark = pytest.mark.network

TIMEOUT = 60.0
LEFT, RIGHT = ["JPM", "HSBC"], ["DBS", "BNP"]


@pytest.fixture(scope="module")
def ln(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNet]:
    net = start_localnet(tmp_path_factory.mktemp("faults") / "net", accounts_per_bank=10)
    try:
        yield net
    finally:
        net.close()
        assert not [p.pid for p in net.started if p.poll() is None]


@pytest.fixture(autouse=True)
def healthy_after(ln: LocalNet) -> Iterator[None]:
    yield
    faults.clear(ln.net)
    ln.wait_progress(2, timeout=TIMEOUT)


def frames(ln: LocalNet, bank: str) -> dict[str, dict[str, dict[str, int]]]:
    with faults.admin_client(ln.net, bank) as client:
        return client.get(faults.ADMIN_PATH)["frames"]


def received_from(ln: LocalNet, bank: str, peers: list[str]) -> int:
    counts = frames(ln, bank)
    return sum(sum(counts.get(p, {}).get("received", {}).values()) for p in peers)


def dropped_to(ln: LocalNet, bank: str, peers: list[str]) -> int:
    counts = frames(ln, bank)
    return sum(sum(counts.get(p, {}).get("dropped_out", {}).values()) for p in peers)


def test_under_partition_the_sides_see_no_frames_from_each_other(ln: LocalNet) -> None:
    home = str(ln.net.path)
    args = ["fault", "partition", "JPM,HSBC", "/", "DBS,BNP", "--home", home]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    seen = {bank: received_from(ln, bank, RIGHT if bank in LEFT else LEFT) for bank in ln.banks}
    dropped = {bank: dropped_to(ln, bank, RIGHT if bank in LEFT else LEFT) for bank in ln.banks}
    height = max(ln.heights().values())

    def both_keep_sending() -> bool:  # each side still sends, and its own layer drops it
        return all(
            dropped_to(ln, bank, RIGHT if bank in LEFT else LEFT) >= dropped[bank] + 20
            for bank in ln.banks
        )

    ln.wait_for(both_keep_sending, TIMEOUT, "frames dropped across the partition")
    for bank in ln.banks:
        assert received_from(ln, bank, RIGHT if bank in LEFT else LEFT) == seen[bank], bank
    assert received_from(ln, "JPM", ["HSBC"]) > 0  # within a side, frames still flow
    assert max(ln.heights().values()) <= height + 1  # 2 of 4: no quorum, at most one in flight
    listed = CliRunner().invoke(main, ["fault", "list", "--home", home])
    assert "partition JPM,HSBC | DBS,BNP" in listed.output

    faults.heal(ln.net)
    ln.wait_progress(2, timeout=TIMEOUT)


def test_oneway_cut_loses_one_direction_only(ln: LocalNet) -> None:
    faults.partition_oneway(ln.net, "JPM", "DBS")
    at_dbs = received_from(ln, "DBS", ["JPM"])
    at_jpm = received_from(ln, "JPM", ["DBS"])
    ln.wait_for(
        lambda: received_from(ln, "JPM", ["DBS"]) >= at_jpm + 20, TIMEOUT, "DBS's frames at JPM"
    )
    assert received_from(ln, "DBS", ["JPM"]) == at_dbs
    ln.wait_progress(2, timeout=TIMEOUT)  # 3 of 4 links both ways: still a quorum


def test_admin_api_refuses_requests_without_the_token_and_changes_nothing(ln: LocalNet) -> None:
    client = ln.client("HSBC")
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        client.headers = headers
        with pytest.raises(ApiError) as refused:
            client.post(faults.ADMIN_PATH, {"fault": "partition", "groups": [LEFT, RIGHT]})
        assert refused.value.status == 401 and refused.value.code == "unauthorized"
    client.headers = {}
    (state,) = [r.state for r in faults.list_faults(ln.net) if r.bank == "HSBC"]
    assert state is not None and state["faults"] == [] and state["cut_to"] == []


def test_drop_delay_and_duplicate_slow_the_network_but_it_commits(ln: LocalNet) -> None:
    faults.drop(ln.net, 0.3, Frames(kind="consensus"), seed=1)
    faults.delay(ln.net, 50, 25, seed=1)
    faults.duplicate(ln.net, 0.2, Frames(dst="DBS"), seed=1)
    ln.wait_progress(3, timeout=TIMEOUT)

    def applied() -> dict | None:
        """JPM's counts once every fault has touched a frame (an idle network sends few,
        and each fault hits a frame only at its rate)."""
        counts = frames(ln, "JPM")
        hsbc, dbs = counts["HSBC"], counts["DBS"]
        touched = (hsbc["dropped_out"], hsbc["delayed"], dbs["duplicated"])
        return counts if all(sum(c.values()) > 0 for c in touched) else None

    counts = ln.wait_for(applied, TIMEOUT, "a dropped, a delayed and a duplicated frame")
    assert not counts["HSBC"]["duplicated"]  # duplication was set for frames to DBS only


def test_equivocating_proposer_is_caught_and_its_evidence_committed(ln: LocalNet) -> None:
    """Two signed proposals of BNP for one height and round reach the chain as a proof
    every node lists, and anyone holding genesis can check it."""
    faults.byzantine(ln.net, "BNP", "equivocate", seed=2)
    honest = [b for b in ln.banks if b != "BNP"]

    def evidence() -> dict[str, int] | None:
        counts = {bank: ln.status(bank)["evidence"] for bank in honest}
        return counts if any(counts.values()) else None

    ln.wait_for(evidence, TIMEOUT, "evidence of BNP's two proposals at an honest node")
    out = CliRunner().invoke(main, ["status", "--json", "--home", str(ln.net.path)]).output
    shown = {n["bank"]: n["evidence"] for n in json.loads(out)["nodes"]}
    assert any(shown[bank] for bank in honest)

    def committed() -> list[dict] | None:
        lists = [ln.get(bank, "/evidence")["evidence"] for bank in ln.banks]
        firsts = [next((e for e in found if e["kind"] == "proposal"), None) for found in lists]
        return firsts if all(firsts) else None

    firsts = ln.wait_for(committed, TIMEOUT, "BNP's double proposal committed as evidence")
    first = firsts[0]
    assert all(f == first for f in firsts) and first["bank"] == "BNP"
    proof = decode_evidence(bytes.fromhex(first["proof"]))
    verify_equivocation(proof, ValidatorSet(ln.genesis.validators), ln.genesis.chain_id)
    one, two = proof.first, proof.second
    assert isinstance(one, Proposal) and isinstance(two, Proposal)
    assert (one.height, one.round) == (two.height, two.round) == (first["height"], first["round"])
    assert one.block.hash != two.block.hash
    assert first["proof"] in ln.block("JPM", first["committed_at"])["evidence"]
    home = ["--home", str(ln.net.path)]
    listed = json.loads(CliRunner().invoke(main, ["chain", "evidence", "--json", *home]).output)
    assert first in listed
    table = CliRunner().invoke(main, ["chain", "evidence", *home]).output
    assert "BNP" in table and "proposal" in table


def test_a_restarted_node_behind_its_peers_answers_503_syncing_until_caught_up(
    ln: LocalNet,
) -> None:
    victim = "BNP"
    payers = [p for p in load_payers(ln.net) if p.wallet.bank == "JPM"]
    txs = interleave(sign_transfers(ln.genesis.chain_id, payers, 3, seed=9))
    ln.kill(victim)
    for start in range(0, len(txs), 10):  # load while it is down: the chain moves on
        ln.submit("JPM", [tx.raw for tx in txs[start : start + 10]])
    ln.wait_progress(5, [b for b in ln.banks if b != victim], timeout=TIMEOUT)
    # Its peers withhold blocks from it, so it stays behind while it hears their votes.
    faults.drop(ln.net, 1.0, Frames(dst=victim, kind="sync"))
    ln.start(victim)

    def syncing() -> dict | None:
        status = ln.try_get(victim, "/status")
        return status if status is not None and status["syncing"] else None

    status = ln.wait_for(syncing, TIMEOUT, f"{victim} to say it is catching up", [victim])
    assert status["network_height"] >= status["height"] + 2
    with pytest.raises(ApiError) as refused:
        ln.submit(victim, [txs[0].raw])
    assert refused.value.status == 503 and refused.value.code == "syncing"
    assert "catching up: height" in str(refused.value)
    out = CliRunner().invoke(main, ["status", "--home", str(ln.net.path)]).output
    assert "catching up: height" in out

    faults.clear(ln.net)
    faults.wait_caught_up(ln.net, victim, timeout=TIMEOUT)
    # "Caught up" means within a block of its peers; the height it saw them at is reached.
    ln.wait_height(status["network_height"], [victim], timeout=TIMEOUT)
    answer = ln.submit(victim, [txs[0].raw])  # taken or refused as used, but not with 503
    assert len(answer["results"]) == 1


def test_wipe_restarts_the_node_from_an_empty_store_and_it_resyncs(ln: LocalNet) -> None:
    victim = "DBS"
    target = max(ln.heights().values())
    process = faults.wipe(ln.net, victim)
    ln.processes[victim] = process  # so that the harness stops it by its pid
    ln.started.append(process)
    assert ln.home(victim).signer_file.exists()
    faults.wait_caught_up(ln.net, victim, timeout=TIMEOUT)
    ln.wait_height(target, [victim], timeout=TIMEOUT)
