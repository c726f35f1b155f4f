"""Test helper: a small in-memory log (leaves, signed checkpoints, consistency proofs) and the
``add-checkpoint`` request bodies a log sends to its witnesses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint, origin_for
from audit.merkle import consistency_proof, leaf_hash, leaves_resolver, root
from audit.witness import AddCheckpoint

REPO = Path(__file__).resolve().parents[2]
DEMO_KEYS = REPO / "keys.example"
DEMO_ORIGIN = origin_for("bhxh-vss-main")


def demo_log_signer() -> NoteSigner:
    """The demonstration audit-log key of keys.example/, named as the service names it."""
    passphrase = (DEMO_KEYS / "passphrase.txt").read_bytes().strip()
    key = serialization.load_pem_private_key((DEMO_KEYS / "audit-log.key.pem").read_bytes(), passphrase)
    assert isinstance(key, Ed25519PrivateKey)
    return NoteSigner(DEMO_ORIGIN, key)


@dataclass
class MemoryLog:
    """A log of ``size`` leaves whose checkpoints are signed by ``signer`` for ``origin``."""

    signer: NoteSigner
    origin: str
    size: int = 40
    salt: str = "entry"

    def __post_init__(self) -> None:
        self.leaves = [leaf_hash(f"{self.salt} {i}".encode()) for i in range(self.size)]

    def root(self, size: int) -> bytes:
        return root(size, leaves_resolver(self.leaves))

    def checkpoint(self, size: int, extensions: tuple[str, ...] = ()) -> SignedCheckpoint:
        return SignedCheckpoint.sign(Checkpoint(self.origin, size, self.root(size), extensions), [self.signer])

    def proof(self, old: int, new: int) -> tuple[bytes, ...]:
        return tuple(consistency_proof(old, new, leaves_resolver(self.leaves)))

    def request(self, old: int, new: int) -> AddCheckpoint:
        return AddCheckpoint(old, self.proof(old, new), self.checkpoint(new))

    def body(self, old: int, new: int) -> bytes:
        return self.request(old, new).to_body()


def new_log(origin: str = "example.test/log", size: int = 40, salt: str = "entry") -> MemoryLog:
    return MemoryLog(NoteSigner(origin, Ed25519PrivateKey.generate()), origin, size, salt)
