"""The witness of https://c2sp.org/tlog-witness as pure logic: parse an ``add-checkpoint``
request, decide it against the latest checkpoint cosigned for that log, and cosign.

A witness is run by another agency so that whoever holds the log's signing key cannot show two
different histories (a fork) or rewrite one unseen: it cosigns a checkpoint only when an RFC 9162
consistency proof links it to the last one it cosigned for that log. Storage, locking and
HTTP belong to the caller, which must persist the returned record before it answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from audit.checkpoint import NoteSignature, SignedCheckpoint, SignedNote, VerifierKey
from audit.cosignature import Cosigner, signature_lines
from audit.errors import (
    CheckpointRefused,
    CheckpointSignatureInvalid,
    InvalidProof,
    MalformedCheckpoint,
    MalformedWitnessState,
    WitnessRefusal,
)
from audit.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency

# tlog-witness: a client sends at most 63 consistency proof lines.
MAX_PROOF_LINES = 63
OLD_PREFIX = "old "


def origin_hash(origin: str) -> str:
    """tlog-witness names a log in monitoring URLs by the lowercase hex SHA-256 of its origin."""
    return hashlib.sha256(origin.encode()).hexdigest()


def _decimal(text: str) -> int | None:
    # ASCII decimal without sign or leading zeros ('0' alone is zero).
    if not text.isascii() or not text.isdigit() or (text != "0" and text[0] == "0"):
        return None
    return int(text)


def _malformed(message: str) -> CheckpointRefused:
    return CheckpointRefused(WitnessRefusal.MALFORMED, message)


@dataclass(frozen=True)
class AddCheckpoint:
    """An ``add-checkpoint`` request: the old size, the consistency proof, the signed checkpoint."""

    old_size: int
    proof: tuple[bytes, ...]
    signed: SignedCheckpoint

    @classmethod
    def from_body(cls, body: bytes) -> AddCheckpoint:
        """Parse a request body; anything malformed is refused as MALFORMED (HTTP 400)."""
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise _malformed("the request is not UTF-8") from None
        # The header lines are never empty, so the first blank line ends them.
        header, blank, note = text.partition("\n\n")
        if not blank:
            raise _malformed("the request needs an empty line between the old size and proof and the checkpoint")
        old_line, *proof_lines = header.split("\n")
        old_size = _decimal(old_line[len(OLD_PREFIX) :]) if old_line.startswith(OLD_PREFIX) else None
        if old_size is None:
            raise _malformed("the first line must be 'old <size>' in decimal")
        if len(proof_lines) > MAX_PROOF_LINES:
            raise _malformed(f"a consistency proof has at most {MAX_PROOF_LINES} lines")
        proof = []
        for line in proof_lines:
            try:
                node = base64.b64decode(line, validate=True)
            except binascii.Error:
                raise _malformed("a consistency proof line is not base64") from None
            if len(node) != HASH_SIZE:
                raise _malformed("a consistency proof line is not a 32-byte hash")
            proof.append(node)
        try:
            signed = SignedCheckpoint.from_text(note)
        except MalformedCheckpoint as exc:
            raise _malformed(f"the checkpoint does not parse: {exc}") from None
        return cls(old_size, tuple(proof), signed)

    def to_body(self) -> bytes:
        lines = [f"{OLD_PREFIX}{self.old_size}", *(base64.b64encode(node).decode() for node in self.proof)]
        return ("\n".join(lines) + "\n\n" + self.signed.to_text()).encode()


@dataclass(frozen=True)
class LogRecord:
    """What a witness keeps of one log: the latest checkpoint it cosigned, with the log's
    signatures it verified and its own cosignatures (what it serves to monitors)."""

    signed: SignedCheckpoint

    @property
    def origin(self) -> str:
        return self.signed.checkpoint.origin

    @property
    def size(self) -> int:
        return self.signed.size

    @property
    def root_hash(self) -> bytes:
        return self.signed.root_hash

    def to_text(self) -> str:
        return self.signed.to_text()

    @classmethod
    def from_text(cls, text: str) -> LogRecord:
        try:
            return cls(SignedCheckpoint.from_text(text))
        except MalformedCheckpoint as exc:
            raise MalformedWitnessState(f"the stored checkpoint does not parse: {exc}") from None


@dataclass(frozen=True)
class WitnessedLog:
    """A log the witness follows: its origin line and the keys trusted to sign its checkpoints."""

    origin: str
    keys: tuple[VerifierKey, ...]


@dataclass(frozen=True)
class Cosigned:
    """An accepted checkpoint: the record to persist (before answering) and the answer's lines."""

    record: LogRecord
    cosignatures: tuple[NoteSignature, ...]

    @property
    def body(self) -> str:
        return signature_lines(self.cosignatures)


class Witness:
    """The decision of tlog-witness ``add-checkpoint``; holds no state of its own."""

    def __init__(self, cosigners: Sequence[Cosigner], logs: Sequence[WitnessedLog]) -> None:
        if not cosigners:
            raise ValueError("a witness needs at least one cosigning key")
        self.cosigners = tuple(cosigners)
        self._logs: dict[str, WitnessedLog] = {}
        for log in logs:
            if log.origin in self._logs:
                raise ValueError(f"the log {log.origin} is listed twice")
            if not log.keys:
                raise ValueError(f"the log {log.origin} has no trusted key")
            self._logs[log.origin] = log

    @property
    def logs(self) -> tuple[WitnessedLog, ...]:
        return tuple(self._logs.values())

    def log_for(self, origin: str) -> WitnessedLog:
        log = self._logs.get(origin)
        if log is None:
            raise CheckpointRefused(WitnessRefusal.UNKNOWN_LOG, f"this witness does not follow the log {origin!r}")
        return log

    def add_checkpoint(self, request: AddCheckpoint, stored: LogRecord | None, now: int) -> Cosigned:
        """Decide ``request`` against ``stored`` (None: never cosigned for that log), in the order
        of tlog-witness; ``now`` is the cosignatures' POSIX timestamp. Raises CheckpointRefused."""
        signed = request.signed
        log = self.log_for(signed.checkpoint.origin)
        try:
            verified = signed.verify(log.keys)
        except CheckpointSignatureInvalid as exc:
            raise CheckpointRefused(WitnessRefusal.UNTRUSTED, str(exc)) from None
        if request.old_size > signed.size:
            raise _malformed(f"the old size {request.old_size} is above the checkpoint size {signed.size}")
        stored_size = stored.size if stored is not None else 0
        if request.old_size != stored_size:
            raise CheckpointRefused(
                WitnessRefusal.OLD_SIZE_MISMATCH,
                f"the old size {request.old_size} is not the size last cosigned, {stored_size}",
                stored_size=stored_size,
            )
        if signed.size == 0 and signed.root_hash != EMPTY_ROOT:
            raise CheckpointRefused(WitnessRefusal.INCONSISTENT, "a checkpoint of size 0 must have the empty root")
        old_root = stored.root_hash if stored is not None else EMPTY_ROOT
        try:
            # Also refuses a proof from size 0 that is not empty, and another root at the same size.
            verify_consistency(request.old_size, signed.size, old_root, signed.root_hash, request.proof)
        except InvalidProof as exc:
            raise CheckpointRefused(WitnessRefusal.INCONSISTENT, f"the consistency proof fails: {exc}") from None
        try:
            cosignatures = tuple(cosigner.cosign(signed, now) for cosigner in self.cosigners)
        except MalformedCheckpoint as exc:
            raise _malformed(str(exc)) from None
        trusted = {(key.name, key.key_id) for key in verified}
        kept = tuple(sig for sig in signed.note.signatures if (sig.name, sig.key_id) in trusted)
        note = SignedNote(signed.note.text, kept + cosignatures)
        return Cosigned(LogRecord(SignedCheckpoint(signed.checkpoint, note)), cosignatures)
