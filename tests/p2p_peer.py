"""A validator in its own process for tests/test_p2p.py (so it can be SIGSTOPped).

Usage: python -m tests.p2p_peer SEED_HEX LISTEN_ADDR PUBKEY_HEX=ADDR...
Echoes every consensus frame back to its sender.
"""

import sys

import trio

from node.p2p import Kind, P2PNetwork


async def main(seed_hex: str, listen_addr: str, *validators: str) -> None:
    peers = {bytes.fromhex(pub): addr for pub, addr in (v.split("=", 1) for v in validators)}
    net = P2PNetwork(bytes.fromhex(seed_hex), listen_addr, peers)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        async for msg in net.inbound:
            if msg.kind is Kind.CONSENSUS:
                net.send(msg.sender, Kind.CONSENSUS, msg.payload)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:])
