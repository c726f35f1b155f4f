"""Witness cosignatures on checkpoints (https://c2sp.org/tlog-cosignature): Ed25519
``cosignature/v1`` (signed-note type 0x04) and ML-DSA-44 ``subtree/v1`` (type 0x06).

A cosignature is a signed-note signature line whose key id binds the cosigner's name, the
signature type and its public key, and whose value is an 8-byte big-endian POSIX timestamp
followed by the signature. Hand-written for the reason ``audit.checkpoint`` is: the formats are
small and no maintained Python package implements them; the cryptography is pyca's.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

from audit.checkpoint import (
    KEY_ID_BYTES,
    SIGNATURE_PREFIX,
    NoteSignature,
    SignedCheckpoint,
    VerifierKeyFields,
    valid_key_name,
)
from audit.errors import CosignatureInvalid, MalformedCheckpoint, MalformedVerifierKey

TIMESTAMP_BYTES = 8
# tlog-cosignature: the timestamp is a u64 that must not exceed 2^63 - 1.
MAX_TIMESTAMP = (1 << 63) - 1
# tlog-cosignature "ML-DSA-44 signed message": the 12-byte label of cosigned_message.
SUBTREE_LABEL = b"subtree/v1\n\x00"
# The opaque<1..2^8-1> fields of cosigned_message (cosigner name, log origin).
MAX_SHORT_FIELD = 255

CosignerPrivateKey = Ed25519PrivateKey | MLDSA44PrivateKey
CosignerPublicKey = Ed25519PublicKey | MLDSA44PublicKey


class CosignatureType(IntEnum):
    """signed-note signature type bytes of the two cosignature kinds."""

    ED25519 = 0x04
    MLDSA44 = 0x06

    @property
    def public_bytes(self) -> int:
        return 32 if self is CosignatureType.ED25519 else 1312

    @property
    def signature_bytes(self) -> int:
        return 64 if self is CosignatureType.ED25519 else 2420


def cosigner_key_id(name: str, kind: CosignatureType, public_bytes: bytes) -> bytes:
    """tlog-cosignature key id: SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public_bytes).digest()[:KEY_ID_BYTES]


def ed25519_message(note_text: str, timestamp: int) -> bytes:
    """The Ed25519 signed message: the ``cosignature/v1`` header, the time line, then the whole
    checkpoint body (extension lines included)."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + note_text.encode()


def mldsa44_message(cosigner: str, timestamp: int, origin: str, size: int, root_hash: bytes) -> bytes:
    """The ML-DSA-44 signed message: ``cosigned_message`` in TLS presentation encoding, for the
    whole tree (start 0, end = size). Extension lines are not covered by this kind."""
    name_bytes, origin_bytes = cosigner.encode(), origin.encode()
    if not 1 <= len(name_bytes) <= MAX_SHORT_FIELD:
        raise MalformedVerifierKey("an ML-DSA-44 cosigner name must be 1 to 255 bytes")
    if not 1 <= len(origin_bytes) <= MAX_SHORT_FIELD:
        raise MalformedCheckpoint("an ML-DSA-44 cosignature needs an origin of 1 to 255 bytes")
    return b"".join(
        (
            SUBTREE_LABEL,
            bytes([len(name_bytes)]),
            name_bytes,
            struct.pack(">Q", timestamp),
            bytes([len(origin_bytes)]),
            origin_bytes,
            struct.pack(">QQ", 0, size),
            root_hash,
        )
    )


def _message(kind: CosignatureType, name: str, signed: SignedCheckpoint, timestamp: int) -> bytes:
    if kind is CosignatureType.ED25519:
        # The note text exactly as signed by the log, not a re-serialised checkpoint.
        return ed25519_message(signed.note.text, timestamp)
    cp = signed.checkpoint
    return mldsa44_message(name, timestamp, cp.origin, cp.size, cp.root_hash)


def _check_name(name: str) -> None:
    if not valid_key_name(name):
        raise MalformedVerifierKey(f"invalid cosigner name {name!r}")


def _kind_of(public_key: CosignerPublicKey) -> CosignatureType:
    return CosignatureType.ED25519 if isinstance(public_key, Ed25519PublicKey) else CosignatureType.MLDSA44


@dataclass(frozen=True)
class CosignerKey:
    """A cosigner's verifier key, as a vkey: ``<name>+<hex key id>+<base64(type ‖ public key)>``."""

    name: str
    kind: CosignatureType
    key_id: bytes
    public_key: CosignerPublicKey = field(compare=False, repr=False)

    @classmethod
    def from_public_key(cls, name: str, public_key: CosignerPublicKey) -> CosignerKey:
        _check_name(name)
        kind = _kind_of(public_key)
        return cls(name, kind, cosigner_key_id(name, kind, public_key.public_bytes_raw()), public_key)

    @classmethod
    def from_text(cls, text: str) -> CosignerKey:
        fields = VerifierKeyFields.from_text(text)
        try:
            kind = CosignatureType(fields.kind)
        except ValueError:
            raise MalformedVerifierKey("only cosigner keys of type 0x04 (Ed25519) or 0x06 (ML-DSA-44)") from None
        raw = fields.public_bytes
        if len(raw) != kind.public_bytes:
            raise MalformedVerifierKey("verifier key has the wrong length")
        public_key: CosignerPublicKey
        try:
            if kind is CosignatureType.ED25519:
                public_key = Ed25519PublicKey.from_public_bytes(raw)
            else:
                public_key = MLDSA44PublicKey.from_public_bytes(raw)
        except ValueError:
            raise MalformedVerifierKey("verifier key material is not a public key") from None
        key = cls.from_public_key(fields.name, public_key)
        if key.key_id != fields.key_id:
            raise MalformedVerifierKey("verifier key id does not match its name, type and key")
        return key

    def to_text(self) -> str:
        material = bytes([self.kind]) + self.public_key.public_bytes_raw()
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(material).decode()}"

    def verify(self, signed: SignedCheckpoint, *, require_timestamp: bool = True) -> int:
        """The timestamp of this cosigner's cosignature on ``signed``. Raises CosignatureInvalid
        when there is none, when one with this name and key id fails (signed-note rejects the
        whole note then), or when the timestamp is out of range (zero too, unless
        ``require_timestamp`` is off: a witness's checkpoint cosignature always carries one)."""
        mine = [s for s in signed.note.signatures if s.name == self.name and s.key_id == self.key_id]
        if not mine:
            raise CosignatureInvalid(f"no cosignature by {self.name}")
        timestamps = [self._verify_one(sig.signature, signed, require_timestamp) for sig in mine]
        return timestamps[0]

    def _verify_one(self, value: bytes, signed: SignedCheckpoint, require_timestamp: bool) -> int:
        if len(value) != TIMESTAMP_BYTES + self.kind.signature_bytes:
            raise CosignatureInvalid(f"cosignature by {self.name} has the wrong length")
        timestamp = int.from_bytes(value[:TIMESTAMP_BYTES], "big")
        if timestamp > MAX_TIMESTAMP or (require_timestamp and timestamp == 0):
            raise CosignatureInvalid(f"cosignature by {self.name} has no valid timestamp")
        try:
            message = _message(self.kind, self.name, signed, timestamp)
        except MalformedCheckpoint as exc:
            raise CosignatureInvalid(str(exc)) from None
        try:
            # ML-DSA-44 in FIPS 204 pure mode with the empty context string.
            self.public_key.verify(value[TIMESTAMP_BYTES:], message)
        except InvalidSignature:
            raise CosignatureInvalid(f"cosignature by {self.name} does not verify") from None
        return timestamp


@dataclass(frozen=True)
class Cosigner:
    """A witness's private key with its name (the key name of its cosignature lines)."""

    name: str
    private_key: CosignerPrivateKey = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if isinstance(self.private_key, MLDSA44PrivateKey) and len(self.name.encode()) > MAX_SHORT_FIELD:
            raise MalformedVerifierKey("an ML-DSA-44 cosigner name must be 1 to 255 bytes")

    @property
    def key(self) -> CosignerKey:
        return CosignerKey.from_public_key(self.name, self.private_key.public_key())

    def cosign(self, signed: SignedCheckpoint, timestamp: int) -> NoteSignature:
        """The cosignature line of ``signed`` at ``timestamp`` (POSIX seconds, 1 … 2^63 - 1).
        Raises MalformedCheckpoint when the origin is too long for an ML-DSA-44 cosignature."""
        if not 0 < timestamp <= MAX_TIMESTAMP:
            raise ValueError("a cosignature timestamp is 1 … 2^63 - 1")
        key = self.key
        signature = self.private_key.sign(_message(key.kind, self.name, signed, timestamp))
        return NoteSignature(self.name, key.key_id, timestamp.to_bytes(TIMESTAMP_BYTES, "big") + signature)


def signature_lines(signatures: tuple[NoteSignature, ...]) -> str:
    """The body of an ``add-checkpoint`` answer: one signature line each, newline-terminated."""
    return "".join(sig.to_line() for sig in signatures)


def with_cosignatures(signed: SignedCheckpoint, lines: str) -> SignedCheckpoint:
    """``signed`` with the signature lines a witness answered appended (tlog-witness lets a
    client concatenate them to the checkpoint). Raises MalformedCheckpoint on anything but
    non-empty signature lines, each ending in a newline."""
    if not lines.endswith("\n") or any(not line.startswith(SIGNATURE_PREFIX) for line in lines[:-1].split("\n")):
        raise MalformedCheckpoint("a witness answer is one or more signature lines, each ending in a newline")
    return SignedCheckpoint.from_text(signed.to_text() + lines)
