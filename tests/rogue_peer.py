"""Measure what one byzantine validator costs an honest network (a measurement, not a test).

    python -m tests.rogue_peer --home H [--seconds 60] [--baseline 15] [--json]

Creates a 4-bank network in H (which must not exist) on free 127.0.0.1 ports, starts the
validators of three banks, and runs the fourth bank's validator in this process as a rogue
that holds that bank's real key. After ``--baseline`` seconds of honest operation (the
idle cost of consensus), the rogue sends every honest node, for ``--seconds`` and as fast
as its streams take frames:

- consensus frames: random bytes; 4 MiB arrays of empty arrays (a frame msgpack would
  inflate ~60x); declared-huge array headers; votes signed with its real key for
  far-future heights and for random rounds and values of the current height; distinct
  proposals for every round of the current height that it proposes (equivocation);
- tx batches: random bytes, 4 MiB arrays of empty arrays, and 2,000 junk txs;
- sync requests for 64 blocks from height 1, two at a time per node (each answer is up to
  16 MiB read from the store), and garbage sync answers whenever a node asks the rogue.

It then prints, per honest node: peak RSS (VmHWM) and RSS before the flood, CPU seconds
during the flood beyond the baseline rate, MB of garbage the rogue delivered to it, the
CPU per MB, and the heights committed during the baseline and the flood; with the load
average of the machine (``/proc/loadavg``) before and after. The network is stopped and
its processes reaped on exit, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio
from nacl.signing import SigningKey

from chain.block import EMPTY_HASH, Block, CommitCertificate, Header, cert_hash
from cli.devnet.health import cpu_seconds, rss_kb
from cli.devnet.localnet import LocalNet
from consensus.messages import (
    Proposal,
    Vote,
    VoteKind,
    encode_message,
    proposal_sign_bytes,
    vote_sign_bytes,
)
from consensus.validators import ValidatorSet
from node.p2p import Kind, P2PNetwork, RequestFailed
from node.wire import encode_sync_request, encode_tx_batch

NESTED = 4 * 1024 * 1024
NESTED_FRAME = b"\xdd" + NESTED.to_bytes(4, "big") + b"\x90" * NESTED
MAX_QUEUED = 4 * 1024 * 1024  # bytes waiting per peer before the rogue waits for its streams
START_TIMEOUT = 120.0

Payloads = Iterator[tuple[str, bytes]]  # (what it is, the frame payload)


@dataclass
class Flood:
    """What the rogue delivered, in bytes per honest node, and what it was served."""

    sent: dict[str, float] = field(default_factory=dict)  # payload -> bytes, to each node
    served: int = 0  # bytes of sync answers the honest nodes sent the rogue
    requests: int = 0
    asked_by_nodes: int = 0  # sync requests the honest nodes sent the rogue

    def add(self, kind: str, size: float) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + size


class Rogue:
    def __init__(self, ln: LocalNet, bank: str, only: tuple[str, ...] = ()) -> None:
        self.ln = ln
        self.only = only  # send only the payloads whose name contains one of these
        entry = ln.entries[bank]
        self.key = SigningKey(ln.home(bank).load_key())
        self.pub = bytes(self.key.verify_key)
        self.chain_id = ln.genesis.chain_id
        self.validators = ValidatorSet(ln.genesis.validators)
        self.honest = {
            bytes.fromhex(e.validator): e.p2p_address for b, e in ln.entries.items() if b != bank
        }
        self.net = P2PNetwork(ln.home(bank).load_key(), entry.p2p_address, self.honest)
        self.any_bank = next(b for b in ln.banks if b != bank)
        self.height = 1
        self.rng = random.Random(1)
        self.flood = Flood()

    async def run(self, seconds: float) -> Flood:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.net.run)
            with trio.fail_after(30):
                while self.net.connected_peers() != set(self.honest):
                    await trio.sleep(0.1)
            nursery.start_soon(self._follow_height)
            nursery.start_soon(self._answer_requests)
            nursery.start_soon(self._broadcast_loop, Kind.CONSENSUS, self._consensus_payloads)
            nursery.start_soon(self._broadcast_loop, Kind.TXS, self._tx_payloads)
            for peer in self.honest:
                for _ in range(2 if self._sends("sync requests") else 0):
                    nursery.start_soon(self._ask_sync, peer)
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()
        return self.flood

    async def _follow_height(self) -> None:
        while True:
            status = await trio.to_thread.run_sync(self.ln.try_get, self.any_bank, "/status")
            if status is not None:
                self.height = status["height"] + 1
            await trio.sleep(1.0)

    async def _answer_requests(self) -> None:
        async for frame in self.net.inbound:
            if frame.kind is Kind.SYNC_REQUEST and self._sends("sync answers"):
                self.flood.asked_by_nodes += 1
                answer = NESTED_FRAME if self.rng.random() < 0.5 else os.urandom(3_000)
                self.net.respond(frame, answer)
                self.flood.add("sync answers", len(answer) / len(self.honest))  # one node's

    async def _broadcast_loop(self, kind: Kind, payloads: Callable[[], Payloads]) -> None:
        while True:
            sent = False
            for name, payload in payloads():
                if not self._sends(name):
                    continue
                sent = True
                while max(map(self.net.queued_bytes, self.honest)) > MAX_QUEUED:
                    await trio.sleep(0.001)
                self.net.broadcast(kind, payload)
                self.flood.add(name, len(payload))
                await trio.lowlevel.checkpoint()
            if not sent:
                return

    def _sends(self, name: str) -> bool:
        return not self.only or any(part in name for part in self.only)

    async def _ask_sync(self, peer: bytes) -> None:
        while True:
            try:
                answer = await self.net.request(
                    peer, Kind.SYNC_REQUEST, encode_sync_request(1, 64), 30.0
                )
                self.flood.served += len(answer)
            except RequestFailed:
                await trio.sleep(0.1)
            self.flood.requests += 1
            self.flood.add("sync requests", 5)

    # --- what it sends ----------------------------------------------------------------------

    def _consensus_payloads(self) -> Payloads:
        yield "consensus: random", os.urandom(3_000)
        yield "consensus: nested 4 MiB", NESTED_FRAME
        yield "consensus: huge header", b"\xdd\xff\xff\xff\xff" + os.urandom(64)
        far = self.height + self.rng.randrange(2, 2**62)
        yield "consensus: far votes", encode_message(self._vote(far, 0, None))
        for _ in range(20):
            round_ = self.rng.randrange(0, 1_000)
            yield (
                "consensus: votes",
                encode_message(self._vote(self.height, round_, os.urandom(32))),
            )
        for round_ in self._own_rounds(8):
            for _ in range(5):
                yield "consensus: proposals", encode_message(self._proposal(round_))

    def _tx_payloads(self) -> Payloads:
        yield "txs: random", os.urandom(3_000)
        yield "txs: nested 4 MiB", NESTED_FRAME
        yield "txs: junk txs", encode_tx_batch([os.urandom(200) for _ in range(2_000)])

    def _own_rounds(self, count: int) -> list[int]:
        n, me = self.validators.n, self.validators.index(self.pub)
        first = (me - self.height) % n
        return [first + k * n for k in range(count)]

    def _vote(self, height: int, round_: int, block_hash: bytes | None) -> Vote:
        kind = self.rng.choice(list(VoteKind))
        body = vote_sign_bytes(self.chain_id, kind, height, round_, block_hash)
        return Vote(kind, height, round_, block_hash, self.pub, self.key.sign(body).signature)

    def _proposal(self, round_: int) -> Proposal:
        """A well-formed block of the current height that no state executes to."""
        height = self.height
        prev = EMPTY_HASH if height == 1 else os.urandom(32)
        cert = None if height == 1 else CommitCertificate(height - 1, 0, prev, ((0, bytes(64)),))
        header = Header(
            self.chain_id, height, round_, prev, self.pub, time.time_ns() // 1_000_000,
            EMPTY_HASH, os.urandom(32), cert_hash(cert),
        )  # fmt: skip
        block = Block(header, (), cert)
        body = proposal_sign_bytes(self.chain_id, height, round_, block.hash, -1)
        return Proposal(height, round_, block, -1, self.pub, self.key.sign(body).signature)


def _peak_rss_kb(pid: int) -> int:
    """The highest resident set size the process ever had (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def _snapshot(ln: LocalNet, banks: list[str]) -> dict[str, dict]:
    heights = ln.heights(banks)
    return {
        b: {"cpu": cpu_seconds(ln.pid(b)), "height": heights[b], "rss_kb": rss_kb(ln.pid(b))}
        for b in banks
    }


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def measure(home: Path, seconds: float, baseline: float, only: tuple[str, ...] = ()) -> dict:
    with LocalNet.create(home) as ln:
        rogue_bank = ln.banks[-1]
        honest = [b for b in ln.banks if b != rogue_bank]
        for bank in honest:
            ln.start(bank)
        ln.wait_healthy(honest, timeout=START_TIMEOUT)
        load_before = _loadavg()
        start = _snapshot(ln, honest)
        time.sleep(baseline)
        mid = _snapshot(ln, honest)
        flood = trio.run(Rogue(ln, rogue_bank, only).run, seconds)
        end = _snapshot(ln, honest)
        alive = {b: ln.alive(b) for b in honest}
        peak = {b: _peak_rss_kb(ln.pid(b)) for b in honest if alive[b]}
        load_after = _loadavg()
    garbage_mb = sum(flood.sent.values()) / 1e6
    nodes = {}
    for b in honest:
        idle_rate = (mid[b]["cpu"] - start[b]["cpu"]) / baseline
        extra_cpu = end[b]["cpu"] - mid[b]["cpu"] - idle_rate * seconds
        nodes[b] = {
            "alive": alive[b],
            "rss_before_mb": round(mid[b]["rss_kb"] / 1024, 1),
            "peak_rss_mb": round(peak.get(b, 0) / 1024, 1),
            "baseline_cpu_s_per_s": round(idle_rate, 3),
            "flood_cpu_s": round(end[b]["cpu"] - mid[b]["cpu"], 2),
            "extra_cpu_s": round(extra_cpu, 2),
            "cpu_ms_per_mb": round(1000 * extra_cpu / garbage_mb, 1) if garbage_mb else None,
            "heights_in_baseline": mid[b]["height"] - start[b]["height"],
            "heights_in_flood": end[b]["height"] - mid[b]["height"],
        }
    return {
        "seconds": seconds,
        "baseline_seconds": baseline,
        "garbage_mb_per_node": round(garbage_mb, 1),
        "garbage_mb_by_kind": {k: round(v / 1e6, 2) for k, v in sorted(flood.sent.items())},
        "sync_requests_sent": flood.requests,
        "sync_answers_served_mb": round(flood.served / 1e6, 1),
        "sync_requests_from_nodes": flood.asked_by_nodes,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "nodes": nodes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a new folder for the network")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the flood")
    parser.add_argument("--baseline", type=float, default=15.0, help="honest seconds first")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="send only payloads whose name contains this (e.g. 'votes', 'txs: junk'); repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report = measure(args.home, args.seconds, args.baseline, tuple(args.only))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"rogue flood of {args.seconds:.0f} s: {report['garbage_mb_per_node']} MB to each honest"
        f" node; load {report['loadavg_before']} -> {report['loadavg_after']}"
    )
    for kind, mb in report["garbage_mb_by_kind"].items():
        print(f"  {kind:28} {mb:>9.2f} MB")
    print(
        f"  sync: {report['sync_requests_sent']} requests, "
        f"{report['sync_answers_served_mb']} MB served to the rogue; "
        f"{report['sync_requests_from_nodes']} requests from the nodes to the rogue"
    )
    for bank, n in report["nodes"].items():
        print(
            f"{bank:6} alive={n['alive']} rss {n['rss_before_mb']} MB -> peak "
            f"{n['peak_rss_mb']} MB; cpu {n['flood_cpu_s']} s in the flood "
            f"({n['extra_cpu_s']} s over baseline, {n['cpu_ms_per_mb']} ms/MB); heights "
            f"{n['heights_in_baseline']} in baseline, {n['heights_in_flood']} in flood"
        )


if __name__ == "__main__":
    main()
