"""The contract terms file that `depnet contract open --terms FILE` reads (TOML or JSON).

One pydantic model is both the validator and the JSON Schema that `depnet contract
schema` prints, so a tool or an agent that drafts contracts from a negotiation emits
exactly what this command accepts. A file that does not fit is refused in one line that
names the field (``milestones.1.amount: ...``) and what is wrong with it.

Amounts are decimal strings in the token's units ("37500.00"); times are either a
duration from the chain's current block time ("30d", "5s") or a UTC time
("2026-03-31T00:00:00Z"): contract deadlines are block times, the same on every
validator. The chain commits to the document itself through ``terms_hash``, the sha256 of
the file's bytes.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from chain.codec import MAX_MILESTONES
from chain.tx import MAX_MEMO_BYTES, MAX_MILESTONE_NAME_CHARS
from cli.commands.common import TIME_HELP, CliError, to_time_ms

_DECIMAL = r"\d[\d,_]*(\.\d+)?"


def _decimal(text: str) -> str:
    if not re.fullmatch(_DECIMAL, text.strip()):
        raise ValueError('must be a decimal amount in a string, such as "37500.00"')
    return text


def _time(text: str) -> str:
    try:
        to_time_ms(text, now_ms=0)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return text


Amount = Annotated[
    str,
    AfterValidator(_decimal),
    Field(
        description='Decimal amount in the token\'s units, e.g. "37500.00".',
        json_schema_extra={"pattern": f"^{_DECIMAL}$"},
    ),
]
Time = Annotated[
    str,
    AfterValidator(_time),
    Field(
        description=f"Either {TIME_HELP}.",
        json_schema_extra={"anyOf": [{"pattern": r"^\d+(ms|s|m|h|d)$"}, {"format": "date-time"}]},
    ),
]
Account = Annotated[
    str,
    Field(min_length=1, description="A wallet name or an account (64 hex characters)."),
]


class MilestoneTerms(BaseModel):
    """One milestone: paid to the supplier when the approver releases it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_MILESTONE_NAME_CHARS, examples=["shipment"])
    amount: Amount
    due: Time | None = Field(
        None, description="Optional: release it before this time, or it goes back at expiry."
    )


class Terms(BaseModel):
    """A contract in escrow between a buyer and a supplier (depnet contract terms)."""

    model_config = ConfigDict(extra="forbid", title="depnet contract terms")

    buyer: Account = Field(description="The paying wallet; it signs and its funds are locked.")
    supplier: Account
    approver: Account | None = Field(
        None, description="Who releases milestones: the platform, an inspector; default buyer."
    )
    token: str = Field(min_length=1, examples=["USD.JPM"])
    expires: Time = Field(
        description=f"From then on the buyer takes back what was never released: {TIME_HELP}."
    )
    milestones: list[MilestoneTerms] = Field(min_length=1, max_length=MAX_MILESTONES)
    invoices: list[str] = Field(default_factory=list, description="Invoice ids, in the memo.")
    memo: str = Field("", description="Reference on the ledger (default: the invoice ids).")

    @property
    def reference(self) -> str:
        return self.memo or ", ".join(self.invoices)


@dataclass(frozen=True)
class TermsFile:
    """A parsed terms file and the sha256 of its exact bytes."""

    terms: Terms
    sha256: bytes
    path: Path


def schema() -> dict:
    """The JSON Schema of a terms file."""
    return Terms.model_json_schema()


def load_terms(path: Path) -> TermsFile:
    """Read and check a terms file (TOML, or JSON if it ends in .json). Raises CliError
    with one line that names the file and the field."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read terms file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            document = json.loads(data)
        else:
            document = tomllib.loads(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError, JSONDecodeError
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise CliError(f"{path}: not valid {kind}: {exc}") from None
    try:
        terms = Terms.model_validate(document)
    except ValidationError as exc:
        raise CliError(f"{path}: {_first_error(exc)}") from None
    names = [m.name for m in terms.milestones]
    if len(set(names)) != len(names):
        raise CliError(f"{path}: milestones: names must differ")
    if len(terms.reference.encode()) > MAX_MEMO_BYTES:
        raise CliError(f"{path}: memo: the reference is over {MAX_MEMO_BYTES} bytes")
    return TermsFile(terms, sha256(data).digest(), path)


def _first_error(exc: ValidationError) -> str:
    """The first problem as ``field.path: what is wrong``."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "terms"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "is not a field of a terms file (see `depnet contract schema`)"
    elif error["type"] == "missing":
        message = "is required"
    return f"{where}: {message}"
