"""The shipped network template, the example genesis, and building a genesis from a
template plus generated keys (what `depnet init` does)."""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from chain.codec import MAX_VALIDATORS
from chain.errors import GenesisError
from chain.genesis import genesis_from_template, parse_genesis
from chain.state import State
from chain.store import Store
from chain.tx import MAX_AMOUNT
from node.config import load_genesis, load_template

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXAMPLE_TIME_MS = 1_764_000_000_000


def example_key(role: str, name: str) -> bytes:
    """How configs/example-genesis.json's keys were made (public seeds: demo use only)."""
    return bytes(SigningKey(sha256(f"depnet-example/{role}/{name}".encode()).digest()).verify_key)


def test_the_default_template_is_four_banks_in_four_jurisdictions() -> None:
    template = load_template()
    banks = {b["name"]: b for b in template["banks"]}
    assert {b["country"] for b in banks.values()} == {"US", "HK", "SG", "FR"}
    for name, bank in banks.items():
        (token,) = bank["tokens"]
        assert token["symbol"].endswith(f".{name}") and token["decimals"] == 2
        assert "validator" not in bank and "issuer" not in bank  # init generates keys
    currencies = {b["tokens"][0]["symbol"].split(".")[0] for b in banks.values()}
    assert currencies == {"USD", "HKD", "SGD", "EUR"}
    accounts = template["accounts"]
    assert any("buyer" in a["name"] for a in accounts) and len(accounts) >= 4
    assert all("account" not in a and a["bank"] in banks for a in accounts)


def test_a_genesis_from_the_template_asks_for_each_key_once() -> None:
    asked: list[tuple[str, str]] = []

    def key_for(role: str, name: str) -> bytes:
        asked.append((role, name))
        return sha256(f"{role}/{name}".encode()).digest()

    genesis = genesis_from_template(load_template(), key_for, genesis_time_ms=7)
    template = load_template()
    assert sorted(asked) == sorted(
        [(role, b["name"]) for b in template["banks"] for role in ("validator", "issuer")]
        + [("account", a["name"]) for a in template["accounts"]]
    )
    assert genesis.genesis_time_ms == 7 and genesis.chain_id == template["chain_id"]
    jpm = genesis.bank("jpm")
    assert jpm.issuer == key_for("issuer", "JPM") and jpm.validator == key_for("validator", "JPM")
    buyer = next(a for a in genesis.accounts if a.name == "acme-buyer")
    assert buyer.account == key_for("account", "acme-buyer")
    assert dict(buyer.balances) == {"USD.JPM": 250_000_000}  # USD 2,500,000.00


def test_the_example_genesis_is_the_template_with_the_example_keys(tmp_path: Path) -> None:
    example = load_genesis(CONFIGS / "example-genesis.json")
    assert example == genesis_from_template(
        load_template(), example_key, genesis_time_ms=EXAMPLE_TIME_MS
    )
    with Store.open(tmp_path / "db", example) as store:
        assert store.state.state_root == State(example).state_root
        assert store.supply("HKD.HSBC") == 80_000_000 + 5_000_000_000  # pearl-river + treasury


def test_template_names_are_checked_before_any_key_is_made() -> None:
    template = load_template()
    template["accounts"] = [{"name": "../../etc/passwd", "bank": "JPM"}]

    def key_for(role: str, name: str) -> bytes:
        raise AssertionError(f"asked for a key for {name!r}")

    with pytest.raises(GenesisError, match="template name"):
        genesis_from_template(template, key_for, genesis_time_ms=0)


def test_opening_balances_above_the_issuance_cap_are_refused() -> None:
    doc = json.loads((CONFIGS / "example-genesis.json").read_text())
    for account in doc["accounts"][:2]:
        account["balances"] = {"USD.JPM": MAX_AMOUNT}
    with pytest.raises(GenesisError, match=r"USD\.JPM add up to more than"):
        parse_genesis(doc)


@pytest.mark.parametrize("decimals", [7, 18, -1, 2.0, True])
def test_token_decimals_beyond_what_64_bit_amounts_hold_are_refused(decimals: object) -> None:
    doc = json.loads((CONFIGS / "example-genesis.json").read_text())
    doc["banks"][0]["tokens"][0]["decimals"] = decimals
    with pytest.raises(GenesisError, match=r"decimals must be an integer 0-6, so that .* hold at"):
        parse_genesis(doc)
    doc["banks"][0]["tokens"][0]["decimals"] = 6
    assert parse_genesis(doc).tokens["USD.JPM"].decimals == 6


def test_more_banks_than_a_certificate_holds_are_refused() -> None:
    doc = json.loads((CONFIGS / "example-genesis.json").read_text())
    bank = doc["banks"][0]
    doc["banks"] = [
        dict(bank, name=f"B{i}", validator=f"{i:064x}", issuer=f"{i + 10**6:064x}", tokens=[])
        for i in range(MAX_VALIDATORS + 1)
    ]
    doc["accounts"] = []
    with pytest.raises(GenesisError, match="genesis needs 1-1000 banks, not 1001"):
        parse_genesis(doc)
    doc["banks"] = []
    with pytest.raises(GenesisError, match="genesis needs 1-1000 banks, not 0"):
        parse_genesis(doc)


def test_the_genesis_hash_names_the_whole_document() -> None:
    doc = json.loads((CONFIGS / "example-genesis.json").read_text())
    assert parse_genesis(doc).hash == load_genesis(CONFIGS / "example-genesis.json").hash
    doc["accounts"][0]["balances"]["USD.JPM"] += 1
    assert parse_genesis(doc).hash != load_genesis(CONFIGS / "example-genesis.json").hash


@pytest.mark.parametrize(
    ("content", "message"), [(None, "cannot read"), ("{not json", "not valid JSON")]
)
def test_unreadable_templates_and_genesis_files_are_genesis_errors(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "file.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(GenesisError, match=message):
        load_template(path)
    with pytest.raises(GenesisError, match=message):
        load_genesis(path)


@pytest.mark.parametrize("content", ['{"chain_id": "x"}', '{"banks": {}}', "[]"])
def test_a_template_without_a_banks_list_is_a_genesis_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "banks.json"
    path.write_text(content)
    with pytest.raises(GenesisError, match="network template"):
        load_template(path)


def test_one_name_rule_for_template_and_genesis_banks() -> None:
    template = load_template()
    template["banks"][0]["name"] = "B" * 32
    for account in template["accounts"]:
        if account["bank"] == "JPM":
            account["bank"] = "B" * 32
    genesis = genesis_from_template(template, example_key, genesis_time_ms=7)
    assert genesis.banks[0].name == "B" * 32


def test_two_banks_sharing_an_issuer_key_are_refused() -> None:
    doc = genesis_from_template(load_template(), example_key, genesis_time_ms=7).to_json()
    doc["banks"][1]["issuer"] = doc["banks"][0]["issuer"]
    with pytest.raises(GenesisError, match="duplicate account key"):
        parse_genesis(doc)
