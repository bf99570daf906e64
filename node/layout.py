"""A local network's home folder: genesis, one folder per validator, and wallets.

```
<home>/network.json        which banks run where (p2p address, API URL, peer id)
<home>/genesis.json        the chain's genesis (chain/genesis.py)
<home>/nodes/<BANK>/       a validator's home (node/config.py: config, key, data, logs)
<home>/wallets/<name>.json a wallet: name, bank, account (public key), seed
```
Each bank's issuer account is a wallet named after the bank, so `depnet wallet mint`
signs as the bank. `create_network` writes all of it from a template (``configs/``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from nacl.signing import SigningKey

from chain.genesis import Genesis, genesis_from_template
from node.config import NodeConfig, NodeHome, Peer, load_genesis

DEFAULT_BASE_PORT = 26600
DEFAULT_CHAIN_ID = "depnet-local"


class NetworkError(Exception):
    """The network home is missing, already exists, or its template is wrong."""


@dataclass(frozen=True)
class NodeEntry:
    bank: str
    validator: str  # hex public key
    peer_id: str
    p2p_address: str
    api_url: str


@dataclass(frozen=True)
class Wallet:
    name: str
    bank: str
    account: str  # hex public key
    seed: str  # hex Ed25519 seed

    @property
    def signing_key(self) -> SigningKey:
        return SigningKey(bytes.fromhex(self.seed))


@dataclass(frozen=True)
class NetworkHome:
    path: Path

    @property
    def network_file(self) -> Path:
        return self.path / "network.json"

    @property
    def genesis_file(self) -> Path:
        return self.path / "genesis.json"

    @property
    def wallets_dir(self) -> Path:
        return self.path / "wallets"

    def exists(self) -> bool:
        return self.network_file.exists()

    def node_home(self, bank: str) -> NodeHome:
        return NodeHome(self.path / "nodes" / bank)

    def nodes(self) -> list[NodeEntry]:
        if not self.exists():
            raise NetworkError(f"no network at {self.path} (run `depnet init` or `depnet up`)")
        try:
            data = json.loads(self.network_file.read_text())
            return [NodeEntry(**entry) for entry in data["nodes"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NetworkError(f"{self.network_file} is unreadable: {exc}") from None

    def node(self, bank: str) -> NodeEntry:
        for entry in self.nodes():
            if entry.bank.lower() == bank.lower():
                return entry
        names = ", ".join(e.bank for e in self.nodes())
        raise NetworkError(f"no bank {bank!r} in this network (banks: {names})")

    def genesis(self) -> Genesis:
        return load_genesis(self.genesis_file)

    def wallets(self) -> list[Wallet]:
        if not self.wallets_dir.is_dir():
            return []
        return sorted(
            (self._read_wallet(p) for p in self.wallets_dir.glob("*.json")), key=lambda w: w.name
        )

    def wallet(self, name: str) -> Wallet:
        path = self.wallets_dir / f"{name.lower()}.json"
        if not path.exists():
            raise NetworkError(f"no wallet named {name!r} (see `depnet wallet list`)")
        return self._read_wallet(path)

    def save_wallet(self, wallet: Wallet) -> None:
        self.wallets_dir.mkdir(parents=True, exist_ok=True)
        path = self.wallets_dir / f"{wallet.name.lower()}.json"
        if path.exists():
            raise NetworkError(f"a wallet named {wallet.name!r} already exists")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(wallet), f, indent=2)

    def _read_wallet(self, path: Path) -> Wallet:
        try:
            return Wallet(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise NetworkError(f"wallet file {path} is unreadable: {exc}") from None


def default_ports(count: int, base_port: int = DEFAULT_BASE_PORT) -> list[tuple[int, int]]:
    """(p2p, api) ports of ``count`` nodes counting up from ``base_port``: what init uses."""
    return [(base_port + 2 * i, base_port + 2 * i + 1) for i in range(count)]


def create_network(
    home: Path,
    template: dict,
    *,
    banks: int | None = None,
    ports: list[tuple[int, int]] | None = None,
    base_port: int = DEFAULT_BASE_PORT,
    genesis_time_ms: int,
    force: bool = False,
) -> NetworkHome:
    """Generate keys, genesis, node configs and demo wallets for a local network.

    ``banks`` keeps the first N banks of the template (and the wallets at those banks);
    ``ports`` gives each node its (p2p, api) ports, else they count up from ``base_port``.
    """
    net = NetworkHome(Path(home))
    if net.exists() and not force:
        raise NetworkError(f"a network already exists at {net.path} (use --force to replace it)")
    if banks is not None and not 1 <= banks <= len(template["banks"]):
        raise NetworkError(f"the template has {len(template['banks'])} banks; asked for {banks}")
    bank_specs = template["banks"][: banks or len(template["banks"])]
    names = {b["name"] for b in bank_specs}
    template = {
        **template,
        "chain_id": template.get("chain_id", DEFAULT_CHAIN_ID),
        "banks": bank_specs,
        "accounts": [a for a in template.get("accounts", []) if a.get("bank") in names],
    }
    if ports is None:
        ports = default_ports(len(bank_specs), base_port)
    if len(ports) != len(bank_specs):
        raise NetworkError("one (p2p, api) port pair is needed per bank")

    seeds: dict[tuple[str, str], bytes] = {}

    def key_for(role: str, name: str) -> bytes:
        seeds[(role, name)] = seed = os.urandom(32)
        return _public(seed)

    genesis = genesis_from_template(template, key_for, genesis_time_ms=genesis_time_ms)
    validator_seeds = [seeds[("validator", bank.name)] for bank in genesis.banks]
    wallets = [
        _wallet(bank.name, bank.name, seeds[("issuer", bank.name)]) for bank in genesis.banks
    ]
    wallets += [_wallet(a.name, a.bank, seeds[("account", a.name)]) for a in genesis.accounts]
    if force and net.path.exists():
        for sub in ("nodes", "wallets"):
            shutil.rmtree(net.path / sub, ignore_errors=True)

    entries = [
        NodeEntry(
            bank=bank.name,
            validator=bank.validator.hex(),
            peer_id=peer_id_text(bank.validator),
            p2p_address=f"/ip4/127.0.0.1/tcp/{p2p}",
            api_url=f"http://127.0.0.1:{api}",
        )
        for bank, (p2p, api) in zip(genesis.banks, ports, strict=True)
    ]
    net.path.mkdir(parents=True, exist_ok=True)
    net.genesis_file.write_text(json.dumps(genesis.to_json(), indent=2) + "\n")
    for entry, seed, (_, api) in zip(entries, validator_seeds, ports, strict=True):
        node_home = net.node_home(entry.bank)
        node_home.save_key(seed)
        node_home.save_config(
            NodeConfig(
                bank=entry.bank,
                genesis="../../genesis.json",
                p2p_listen=entry.p2p_address,
                api_host="127.0.0.1",
                api_port=api,
                peers=tuple(
                    Peer(other.bank, other.validator, other.p2p_address)
                    for other in entries
                    if other is not entry
                ),
            )
        )
    for wallet in wallets:
        net.save_wallet(wallet)
    net.network_file.write_text(
        json.dumps({"nodes": [asdict(e) for e in entries]}, indent=2) + "\n"
    )
    return net


def _public(seed: bytes) -> bytes:
    return bytes(SigningKey(seed).verify_key)


def new_wallet(name: str, bank: str) -> Wallet:
    """A fresh key pair for a wallet; registering it on the ledger is a separate tx."""
    return _wallet(name, bank, os.urandom(32))


def _wallet(name: str, bank: str, seed: bytes) -> Wallet:
    return Wallet(name, bank, _public(seed).hex(), seed.hex())


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def peer_id_text(validator: bytes) -> str:
    """The libp2p peer id of an Ed25519 key, as ``node.p2p.peer_id_from_pubkey`` prints it.

    Computed here because importing libp2p costs seconds, and `depnet up` on a fresh home
    must reach its first block quickly: an Ed25519 key is short enough to be inlined in
    its peer id (identity multihash of the protobuf ``PublicKey{type: Ed25519, data}``),
    in base58btc.
    """
    key = b"\x08\x01\x12\x20" + validator  # protobuf: field 1 = 1 (Ed25519), field 2 = 32 bytes
    digest = bytes([0x00, len(key)]) + key  # multihash: identity code, length
    number = int.from_bytes(digest, "big")
    text = ""
    while number:
        number, digit = divmod(number, 58)
        text = _BASE58[digit] + text
    return "1" * (len(digest) - len(digest.lstrip(b"\0"))) + text
