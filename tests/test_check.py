"""`depnet check` is not vacuous: stores of stopped nodes, built in-process with real
blocks and real validator signatures, pass when they are right and fail, naming node and
height, when one holds a different block, an edited balance, a thin certificate, when
f+1 double voters certified two blocks at one height (a fork), or when the evidence
committed is garbled, committed twice, or missing for a bank made to equivocate."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import plyvel
import pytest
from click.testing import CliRunner
from nacl.signing import SigningKey

from chain.block import Block, CommitCertificate, check_structure
from chain.codec import MAX_BLOCK_TXS
from chain.errors import InvalidBlock
from chain.state import State, build_block, execute_block
from chain.store import Store
from chain.tx import ContractTerms, Milestone, Ref, SwapTerms, Tx, TxKind, sign_tx
from cli.devnet.check import EVIDENCE_CHECK, _block_of, check_chains, read_acks, read_network
from cli.devnet.start import free_ports
from cli.main import main
from consensus.evidence import detect, encode_evidence
from consensus.messages import Vote, VoteKind, vote_sign_bytes
from node.api import BlockOut, as_json
from node.config import load_template
from node.layout import create_network
from node.service import CommittedBlock

BANKS = ("JPM", "HSBC", "DBS", "BNP")
ALL = (0, 1, 2, 3)


class ChainMaker:
    """Blocks for a 4-bank network home, signed by its real validator keys."""

    def __init__(self, home: Path) -> None:
        ports = free_ports(8)  # nothing listens: check finds every node stopped
        self.net = create_network(
            home,
            load_template(),
            ports=[(ports[2 * i], ports[2 * i + 1]) for i in range(4)],
            genesis_time_ms=1_764_000_000_000,
        )
        self.genesis = self.net.genesis()
        self.keys = [SigningKey(self.net.node_home(b).load_key()) for b in BANKS]
        self.nonces: dict[str, int] = {}

    def tx(self, kind: TxKind, sender: str, to: str | None, token: str, amount: int) -> Tx:
        wallet = self.net.wallet(sender)
        nonce = self.nonces.get(sender, 0)
        self.nonces[sender] = nonce + 1
        recipient = bytes.fromhex(self.net.wallet(to).account) if to else b""
        return sign_tx(
            wallet.signing_key,
            kind,
            self.genesis.chain_id,
            nonce,
            to=recipient,
            token=token,
            amount=amount,
            memo=f"INV-{nonce}",
        )

    def certify(self, block: Block, signers: Sequence[int]) -> CommitCertificate:
        sign_bytes = vote_sign_bytes(
            self.genesis.chain_id, VoteKind.PRECOMMIT, block.height, 0, block.hash
        )
        return CommitCertificate(
            block.height,
            0,
            block.hash,
            tuple((i, self.keys[i].sign(sign_bytes).signature) for i in sorted(signers)),
        )

    def double_prevote(self, who: int, height: int, round: int = 0) -> bytes:
        """A proof that validator ``who`` prevoted a block and nil in one round."""

        def prevote(value: bytes | None) -> Vote:
            sign_bytes = vote_sign_bytes(
                self.genesis.chain_id, VoteKind.PREVOTE, height, round, value
            )
            signature = self.keys[who].sign(sign_bytes).signature
            return Vote(
                VoteKind.PREVOTE, height, round, value, self.genesis.validators[who], signature
            )

        ev = detect(prevote(bytes(32)), prevote(None))
        assert ev is not None
        return encode_evidence(ev)

    def extend(
        self,
        chain: list[tuple[Block, CommitCertificate]],
        txs: Sequence[Tx] = (),
        signers: Sequence[int] = ALL,
        shift_ms: int = 0,
        evidence: Sequence[bytes] = (),
    ) -> list[tuple[Block, CommitCertificate]]:
        """``chain`` plus one block holding ``txs`` (each must apply) and ``evidence``."""
        state = State(self.genesis)
        for block, _ in chain:
            state.commit(execute_block(state, block), block.header)
        built = build_block(
            state,
            txs,
            round=0,
            proposer=self.genesis.validators[state.height % 4],
            time_ms=state.last_time_ms + 1_000 + shift_ms,
            last_cert=chain[-1][1] if chain else None,
            max_txs=MAX_BLOCK_TXS,
            evidence=evidence,
        )
        assert not built.rejected, built.rejected
        return [*chain, (built.block, self.certify(built.block, signers))]

    def store(self, bank: str, chain: Sequence[tuple[Block, CommitCertificate]]) -> None:
        with Store.open(self.net.node_home(bank).data_dir, self.genesis) as store:
            for block, cert in chain:
                store.commit_block(block, cert, execute_block(store.state, block))
            store.checkpoint()  # as a node stopping does

    def payments(self, blocks: int) -> list[tuple[Block, CommitCertificate]]:
        """``blocks`` blocks of transfers, a mint and a burn."""
        chain: list[tuple[Block, CommitCertificate]] = []
        for n in range(blocks):
            txs = [self.tx(TxKind.TRANSFER, "acme-buyer", "lyon-textiles", "USD.JPM", 100 + n)]
            if n == 1:
                txs.append(self.tx(TxKind.MINT, "HSBC", "acme-buyer", "HKD.HSBC", 5_000))
            if n == 2:
                txs.append(self.tx(TxKind.BURN, "lyon-textiles", None, "EUR.BNP", 700))
            chain = self.extend(chain, txs)
        return chain


def run_check(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check", "--home", str(home), *args])
    return result.exit_code, result.output


@pytest.fixture
def maker(tmp_path: Path) -> ChainMaker:
    return ChainMaker(tmp_path / "net")


def test_stores_of_a_healthy_network_pass_every_check(maker: ChainMaker) -> None:
    chain = maker.payments(5)
    for bank in BANKS:
        maker.store(bank, chain[:4] if bank == "BNP" else chain)  # BNP is one block behind
    report = check_chains(read_network(maker.net), maker.genesis)
    assert report.ok, report.violations
    assert [n.source for n in report.nodes] == ["store"] * 4
    assert [n.height for n in report.nodes] == [5, 5, 5, 4]
    outcomes = {o.name: o for o in report.outcomes}
    assert outcomes["replay from genesis (execute_block)"].status == "ok"
    evidence = outcomes[EVIDENCE_CHECK]
    assert evidence.status == "ok" and "no proof committed" in evidence.detail
    code, out = run_check(maker.net.path)
    assert code == 0 and "no proof committed" in out, out


def test_a_different_block_in_one_stopped_store_is_named_with_node_and_height(
    maker: ChainMaker,
) -> None:
    chain = maker.payments(5)
    for bank in BANKS:
        maker.store(bank, chain)
    other = maker.extend(chain[:2], shift_ms=1)[2][0]  # a valid block 3 on the same parent
    db = plyvel.DB(str(maker.net.node_home("DBS").data_dir))
    db.put(b"b" + (3).to_bytes(8, "big"), other.encode())
    db.close()

    report = check_chains(read_network(maker.net), maker.genesis)
    found = {(v.check, v.node, v.height) for v in report.violations}
    assert ("agreement", "DBS", 3) in found
    assert ("certificate", "DBS", 3) in found  # its certificate is for the original block
    assert ("replay", "DBS", 4) in found  # block 4 does not extend the substitute
    assert all(v.node == "DBS" for v in report.violations)
    code, out = run_check(maker.net.path)
    assert code == 1 and "DBS" in out and "fork" in out, out


def test_an_edited_balance_in_a_stopped_store_is_named_with_node_and_height(
    maker: ChainMaker,
) -> None:
    chain = maker.payments(4)
    for bank in BANKS:
        maker.store(bank, chain)
    buyer = bytes.fromhex(maker.net.wallet("acme-buyer").account)
    db = plyvel.DB(str(maker.net.node_home("HSBC").data_dir))
    db.put(b"B" + buyer + b"USD.JPM", b"\xcd\x03\xe8")  # 1000
    db.close()

    report = check_chains(read_network(maker.net), maker.genesis)
    (violation,) = report.violations
    assert (violation.check, violation.node) == ("store", "HSBC")
    assert "height 4" in violation.detail
    code, out = run_check(maker.net.path, "--json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False and data["violations"][0]["node"] == "HSBC"


def test_a_certificate_below_quorum_is_a_violation(maker: ChainMaker) -> None:
    chain = maker.payments(3)
    thin = maker.extend(chain, signers=(0, 2))  # 2 of 4: the quorum is 3
    for bank in BANKS:
        maker.store(bank, thin if bank == "JPM" else chain)
    report = check_chains(read_network(maker.net), maker.genesis)
    (violation,) = report.violations
    assert (violation.check, violation.node, violation.height) == ("certificate", "JPM", 4)
    assert "3 of 4 needed" in violation.detail


def test_f_plus_1_double_voters_certify_a_fork_and_check_reports_it(maker: ChainMaker) -> None:
    """DBS and BNP (f + 1 = 2 of 4) precommit both blocks at height 3: with JPM's vote
    one block gets a quorum, with HSBC's the other. Both certificates are valid; the
    fork is what check must report."""
    common = maker.payments(2)
    pay = maker.tx(TxKind.TRANSFER, "acme-buyer", "lyon-textiles", "USD.JPM", 1)
    left = maker.extend(common, [pay], signers=(0, 2, 3))
    right = maker.extend(common, [], signers=(1, 2, 3), shift_ms=5)
    left, right = maker.extend(left, signers=(0, 2, 3)), maker.extend(right, signers=(1, 2, 3))
    for bank, chain in (("JPM", left), ("DBS", left), ("HSBC", right), ("BNP", right)):
        maker.store(bank, chain)

    report = check_chains(read_network(maker.net), maker.genesis)
    forks = [v for v in report.violations if v.check == "agreement"]
    assert len(forks) == 1 and forks[0].height == 3, report.violations
    assert {"JPM", "DBS", "HSBC", "BNP"} <= set(forks[0].detail.replace(",", " ").split())
    assert not [v for v in report.violations if v.check in ("certificate", "replay")]
    code, out = run_check(maker.net.path)
    assert code == 1 and "fork" in out and "3" in out


def test_every_acknowledged_tx_must_be_in_the_chain_exactly_once(
    maker: ChainMaker, tmp_path: Path
) -> None:
    chain = maker.payments(3)
    for bank in BANKS:
        maker.store(bank, chain)
    committed = [tx.tx_id.hex() for block, _ in chain for tx in block.txs]
    lost = maker.tx(TxKind.TRANSFER, "acme-buyer", "lyon-textiles", "USD.JPM", 9).tx_id.hex()
    log = tmp_path / "acks.log"
    log.write_text("".join(f"{t} JPM\n" for t in committed))
    assert check_chains(read_network(maker.net), maker.genesis, read_acks(log)).ok

    log.write_text("".join(f"{t} JPM\n" for t in committed) + f"{lost} DBS 7\n")
    report = check_chains(read_network(maker.net), maker.genesis, read_acks(log))
    (violation,) = report.violations
    assert (violation.check, violation.node) == ("acks", "DBS")
    assert "not in the chain" in violation.detail
    code, out = run_check(maker.net.path, "--acks", str(log))
    assert code == 1 and lost[:16] in out


def test_a_malformed_ack_log_is_one_line_naming_the_line(maker: ChainMaker, tmp_path: Path) -> None:
    log = tmp_path / "acks.log"
    log.write_text("abc JPM\n")
    code, out = run_check(maker.net.path, "--acks", str(log))
    assert code == 1 and "line 1" in out and len(out.strip().splitlines()) == 1


def test_an_injected_equivocation_committed_as_a_proof_passes_and_one_without_fails(
    maker: ChainMaker,
) -> None:
    chain = maker.payments(2)
    chain = maker.extend(chain, evidence=[maker.double_prevote(2, height=2)])  # DBS
    for bank in BANKS:
        maker.store(bank, chain)
    report = check_chains(read_network(maker.net), maker.genesis, injected={"DBS"})
    assert report.ok, report.violations
    (evidence,) = [o for o in report.outcomes if o.name == EVIDENCE_CHECK]
    assert evidence.status == "ok" and "DBS 1" in evidence.detail
    assert run_check(maker.net.path, "--equivocated", "dbs")[0] == 0

    report = check_chains(read_network(maker.net), maker.genesis, injected={"DBS", "JPM"})
    (violation,) = report.violations
    assert (violation.check, violation.node, violation.height) == ("evidence", "JPM", None)
    assert "no proof committed up to height 3" in violation.detail
    code, out = run_check(maker.net.path, "--equivocated", "DBS", "--equivocated", "JPM")
    assert code == 1 and "JPM" in out and "made to equivocate" in out, out


def test_an_injected_bank_with_no_evidence_on_chain_is_named(maker: ChainMaker) -> None:
    chain = maker.payments(2)
    for bank in BANKS:
        maker.store(bank, chain)
    report = check_chains(read_network(maker.net), maker.genesis, injected=["HSBC"])
    (violation,) = report.violations
    assert (violation.check, violation.node) == ("evidence", "HSBC")
    assert check_chains(read_network(maker.net), maker.genesis, injected=[]).ok
    code, out = run_check(maker.net.path, "--equivocated", "CITI")
    assert code == 1 and "unknown bank 'CITI'" in out and len(out.strip().splitlines()) == 1


@pytest.mark.parametrize("same_bytes", [True, False], ids=["same-proof", "other-proof"])
def test_a_fault_committed_twice_is_named_with_its_height(
    maker: ChainMaker, same_bytes: bool
) -> None:
    """The second proof is the first again, or another proof of the same fault (DBS's
    prevotes at height 1, in another round): one fault is committed once."""
    again = maker.double_prevote(2, height=1, round=0 if same_bytes else 1)
    chain = maker.extend([], evidence=[maker.double_prevote(2, height=1)])
    chain = maker.extend(maker.extend(chain), evidence=[again])
    for bank in BANKS:
        maker.store(bank, chain)
    report = check_chains(read_network(maker.net), maker.genesis, injected=["DBS"])
    (violation,) = report.violations
    assert (violation.check, violation.height) == ("evidence", 3)
    assert "DBS's two prevotes at height 1" in violation.detail
    assert "committed at height 1 already" in violation.detail


@pytest.mark.parametrize(
    "garble",
    [
        lambda proof: proof[:-1] + bytes([proof[-1] ^ 1]),  # the second signature is wrong
        lambda proof: b"\x92\x01\x02",  # an array of 2 that holds no messages
    ],
    ids=["bad-signature", "no-messages"],
)
def test_a_garbled_proof_on_chain_is_a_violation(
    maker: ChainMaker, garble: Callable[[bytes], bytes]
) -> None:
    chain = maker.extend([], evidence=[garble(maker.double_prevote(1, height=1))])
    for bank in BANKS:
        maker.store(bank, chain)
    report = check_chains(read_network(maker.net), maker.genesis)
    (violation,) = report.violations
    assert (violation.check, violation.height) == ("evidence", 1)
    assert "proof 0 proves nothing" in violation.detail
    code, out = run_check(maker.net.path, "--json")
    assert code == 1 and json.loads(out)["violations"][0]["check"] == "evidence"


def test_a_block_read_through_the_api_rebuilds_to_the_same_hash(maker: ChainMaker) -> None:
    chain = maker.payments(3)
    block, cert = chain[2]
    data = as_json(BlockOut.of(CommittedBlock(block, cert)))
    assert _block_of(data) == (block, cert)
    data["txs"][0]["amount"] += 1  # the tx root no longer covers the txs: replay says so
    with pytest.raises(InvalidBlock, match="tx root"):
        check_structure(_block_of(data)[0])
    data["header"]["time_ms"] += 1
    with pytest.raises(InvalidBlock, match="does not hash"):
        _block_of(data)


def test_programmable_payments_read_through_the_api_rebuild_to_the_same_bytes(
    maker: ChainMaker,
) -> None:
    buyer = maker.net.wallet("acme-buyer").signing_key
    approver = bytes.fromhex(maker.net.wallet("JPM").account)
    supplier = bytes.fromhex(maker.net.wallet("lyon-textiles").account)
    chain_id = maker.genesis.chain_id
    terms = ContractTerms(
        approver, 1_900_000_000_000, bytes(32), (Milestone("ship", 600, 5), Milestone("pay", 400))
    )
    txs = (
        sign_tx(buyer, TxKind.CONTRACT_OPEN, chain_id, 0, to=supplier, token="USD.JPM",
                amount=1_000, args=terms),
        sign_tx(buyer, TxKind.SWAP_OFFER, chain_id, 1, token="USD.JPM", amount=5,
                args=SwapTerms("HKD.HSBC", 40, 1_900_000_000_000)),
        sign_tx(buyer, TxKind.CONTRACT_RELEASE, chain_id, 2, args=Ref(bytes(range(32)), "ship")),
        sign_tx(buyer, TxKind.SWAP_CANCEL, chain_id, 3, args=Ref(bytes(32))),
    )  # fmt: skip
    block = Block(maker.payments(1)[0][0].header, txs, None)
    rebuilt, cert = _block_of(as_json(BlockOut.of(CommittedBlock(block, None))))
    assert [tx.raw for tx in rebuilt.txs] == [tx.raw for tx in txs] and cert is None


def test_check_of_a_missing_network_is_one_line(tmp_path: Path) -> None:
    code, out = run_check(tmp_path / "none")
    assert code == 1 and "not initialised" in out
