"""The validator set: who votes, how many votes decide, who proposes, and who signed what
(a message, a commit certificate).

Every bank validator has equal power. With n = 3f + 1 validators, any two sets of
``quorum`` = 2n/3 + 1 validators share at least f + 1 members, hence one honest one:
that is why two conflicting blocks can never both gather a quorum of precommits while at
most f validators are faulty.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from chain.block import Block, CommitCertificate
from consensus.messages import BadMessage, Message, VoteKind, signer_of, vote_sign_bytes


class InvalidCertificate(Exception):
    """A commit certificate that does not prove its block was decided."""


class ValidatorSet:
    """Validators in genesis order; the order defines indexes and the proposer rotation."""

    def __init__(self, pubkeys: Sequence[bytes]) -> None:
        if not pubkeys:
            raise ValueError("a validator set needs at least one validator")
        if len(set(pubkeys)) != len(pubkeys):
            raise ValueError("validator keys must be distinct")
        self.pubkeys: tuple[bytes, ...] = tuple(pubkeys)
        self._index = {key: i for i, key in enumerate(self.pubkeys)}
        self.n = len(self.pubkeys)
        self.f = (self.n - 1) // 3
        self.quorum = 2 * self.n // 3 + 1

    def __contains__(self, pubkey: object) -> bool:
        return pubkey in self._index

    def __len__(self) -> int:
        return self.n

    def index(self, pubkey: bytes) -> int:
        """Position in genesis order; KeyError for a key outside the set."""
        return self._index[pubkey]

    def proposer(self, height: int, round: int) -> bytes:
        """Round-robin over (height + round): each height starts with the next validator,
        and each new round of a height moves to the next one, so a silent proposer costs
        one round, never a whole height."""
        return self.pubkeys[(height + round) % self.n]


def verify_certificate(cert: CommitCertificate, validators: ValidatorSet, chain_id: str) -> None:
    """Check that >= quorum distinct validators precommitted ``cert.block_hash`` at
    (cert.height, cert.round). Raises InvalidCertificate; anyone holding genesis can run it."""
    seen: set[int] = set()
    sign_bytes = vote_sign_bytes(
        chain_id, VoteKind.PRECOMMIT, cert.height, cert.round, cert.block_hash
    )
    for index, signature in cert.signatures:
        if not 0 <= index < validators.n:
            raise InvalidCertificate(f"certificate names validator index {index} out of range")
        if index in seen:
            raise InvalidCertificate(f"certificate holds validator {index} twice")
        seen.add(index)
        if not signature_ok(validators.pubkeys[index], sign_bytes, signature):
            raise InvalidCertificate(f"certificate signature of validator {index} does not verify")
    if len(seen) < validators.quorum:
        raise InvalidCertificate(
            f"certificate has {len(seen)} precommits; {validators.quorum} of {validators.n} needed"
        )


def certify(block: Block, keys: Sequence[SigningKey], chain_id: str) -> CommitCertificate:
    """The certificate the validators holding ``keys`` (the first ``len(keys)`` of the set,
    in genesis order) give ``block`` by precommitting it in its round, signed as the signer
    signs a precommit. For tests and benchmarks that decide blocks without an engine; it
    verifies as a real one does when ``keys`` are a quorum."""
    header = block.header
    sign_bytes = vote_sign_bytes(
        chain_id, VoteKind.PRECOMMIT, header.height, header.round, block.hash
    )
    signatures = tuple((i, key.sign(sign_bytes).signature) for i, key in enumerate(keys))
    return CommitCertificate(header.height, header.round, block.hash, signatures)


def verify_message(msg: Message, validators: ValidatorSet, chain_id: str) -> None:
    """Check that a genesis validator signed ``msg`` for this chain. Raises BadMessage.

    Whether the signer was the right proposer for the round is the engine's concern.
    """
    signer = signer_of(msg)
    if signer not in validators:
        raise BadMessage(f"{signer.hex()[:16]}… is not a validator")
    if not signature_ok(signer, msg.sign_bytes(chain_id), msg.signature):
        raise BadMessage("bad signature")


@lru_cache(maxsize=16_384)
def signature_ok(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification, memoised: a precommit is checked when it arrives and again
    inside the certificate the next block carries, and verification (~40 us) dominates
    the engine's cost. The result is a pure function of the arguments."""
    try:
        crypto_sign_open(signature + message, pubkey)
    except (BadSignatureError, ValueError):
        return False
    return True
