"""The witness's decision (C2SP tlog-witness add-checkpoint), one test per answer of the spec:
cosign (200), malformed (400), untrusted signature (403), unknown log (404), old size not the
stored one (409, with the stored size), inconsistent (422)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint
from audit.cosignature import Cosigner, with_cosignatures
from audit.errors import CheckpointRefused, MalformedWitnessState, WitnessRefusal
from audit.merkle import EMPTY_ROOT
from audit.witness import AddCheckpoint, LogRecord, Witness, WitnessedLog, origin_hash
from tests.audit.witness_support import MemoryLog, new_log

NOW = 1_760_000_000
ML, ED = (
    Cosigner("witness.test/w1", MLDSA44PrivateKey.generate()),
    Cosigner("witness.test/w1", Ed25519PrivateKey.generate()),
)


@pytest.fixture
def log() -> MemoryLog:
    return new_log()


@pytest.fixture
def witness(log: MemoryLog) -> Witness:
    return Witness([ML, ED], [WitnessedLog(log.origin, (log.signer.verifier,))])


def _refused(
    witness: Witness, request: AddCheckpoint, stored: LogRecord | None, reason: WitnessRefusal
) -> CheckpointRefused:
    with pytest.raises(CheckpointRefused) as info:
        witness.add_checkpoint(request, stored, NOW)
    assert info.value.reason is reason
    return info.value


def _accept(witness: Witness, request: AddCheckpoint, stored: LogRecord | None) -> LogRecord:
    return witness.add_checkpoint(request, stored, NOW).record


def test_first_checkpoint_is_cosigned_by_both_keys(witness: Witness, log: MemoryLog) -> None:
    result = witness.add_checkpoint(log.request(0, 10), None, NOW)
    assert result.record.size == 10 and result.record.root_hash == log.root(10)
    assert len(result.cosignatures) == 2 and result.body.count("\n") == 2
    # The client appends the answer to its checkpoint and verifies with the witness's keys.
    cosigned = with_cosignatures(log.checkpoint(10), result.body)
    assert ML.key.verify(cosigned) == NOW and ED.key.verify(cosigned) == NOW
    # The record keeps the log's verified signature and the cosignatures (served to monitors).
    stored = LogRecord.from_text(result.record.to_text())
    assert stored.signed.verify([log.signer.verifier]) == (log.signer.verifier,)
    assert ML.key.verify(stored.signed) == NOW


def test_checkpoints_advance_with_consistency_proofs(witness: Witness, log: MemoryLog) -> None:
    stored = None
    for old, new in [(0, 1), (1, 2), (2, 7), (7, 8), (8, 8), (8, 33), (33, 40)]:
        stored = _accept(witness, log.request(old, new), stored)
        assert (stored.size, stored.root_hash) == (new, log.root(new))


def test_signatures_by_unknown_keys_are_ignored_and_dropped(witness: Witness, log: MemoryLog) -> None:
    stranger = NoteSigner("someone.else/key", Ed25519PrivateKey.generate())
    signed = SignedCheckpoint.sign(Checkpoint(log.origin, 3, log.root(3)), [stranger, log.signer])
    record = _accept(witness, AddCheckpoint(0, log.proof(0, 3), signed), None)
    assert "someone.else/key" not in record.to_text()


def test_unknown_origin_is_404(witness: Witness) -> None:
    other = new_log(origin="example.test/other")
    _refused(witness, other.request(0, 3), None, WitnessRefusal.UNKNOWN_LOG)


def test_checkpoint_not_signed_by_a_trusted_key_is_403(witness: Witness, log: MemoryLog) -> None:
    impostor = MemoryLog(NoteSigner(log.origin, Ed25519PrivateKey.generate()), log.origin)
    _refused(witness, impostor.request(0, 3), None, WitnessRefusal.UNTRUSTED)


def test_checkpoint_with_a_failing_trusted_signature_is_403(witness: Witness, log: MemoryLog) -> None:
    # The log's key name and id, but the signature of another body: a malformed note.
    signed = log.checkpoint(3)
    forged = signed.to_text().replace(base64.b64encode(log.root(3)).decode(), base64.b64encode(log.root(4)).decode())
    _refused(witness, AddCheckpoint(0, (), SignedCheckpoint.from_text(forged)), None, WitnessRefusal.UNTRUSTED)


def test_old_size_above_checkpoint_size_is_400(witness: Witness, log: MemoryLog) -> None:
    stored = _accept(witness, log.request(0, 8), None)
    _refused(witness, AddCheckpoint(8, (), log.checkpoint(5)), stored, WitnessRefusal.MALFORMED)


def test_old_size_not_the_stored_size_is_409_with_the_stored_size(witness: Witness, log: MemoryLog) -> None:
    refusal = _refused(witness, log.request(3, 10), None, WitnessRefusal.OLD_SIZE_MISMATCH)
    assert refusal.stored_size == 0
    stored = _accept(witness, log.request(0, 10), None)
    for old in (0, 7):
        refusal = _refused(witness, log.request(old, 20), stored, WitnessRefusal.OLD_SIZE_MISMATCH)
        assert refusal.stored_size == 10


def test_a_fork_at_the_same_size_is_422(witness: Witness, log: MemoryLog) -> None:
    stored = _accept(witness, log.request(0, 10), None)
    fork = MemoryLog(log.signer, log.origin, salt="rewritten")
    _refused(witness, AddCheckpoint(10, (), fork.checkpoint(10)), stored, WitnessRefusal.INCONSISTENT)


def test_a_fork_that_grows_is_422(witness: Witness, log: MemoryLog) -> None:
    stored = _accept(witness, log.request(0, 10), None)
    fork = MemoryLog(log.signer, log.origin, salt="rewritten")
    # The fork's own proof leads to the fork's old root, not the one the witness cosigned.
    _refused(witness, AddCheckpoint(10, fork.proof(10, 20), fork.checkpoint(20)), stored, WitnessRefusal.INCONSISTENT)


@pytest.mark.parametrize("damage", ["flip", "drop", "extra"])
def test_a_damaged_consistency_proof_is_422(witness: Witness, log: MemoryLog, damage: str) -> None:
    stored = _accept(witness, log.request(0, 6), None)
    proof = list(log.proof(6, 21))
    if damage == "flip":
        proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
    elif damage == "drop":
        proof.pop()
    else:
        proof.append(bytes(32))
    _refused(witness, AddCheckpoint(6, tuple(proof), log.checkpoint(21)), stored, WitnessRefusal.INCONSISTENT)


def test_a_proof_from_size_zero_must_be_empty(witness: Witness, log: MemoryLog) -> None:
    _refused(witness, AddCheckpoint(0, (bytes(32),), log.checkpoint(4)), None, WitnessRefusal.INCONSISTENT)


def test_a_size_zero_checkpoint_needs_the_empty_root(witness: Witness, log: MemoryLog) -> None:
    bad = SignedCheckpoint.sign(Checkpoint(log.origin, 0, bytes(32)), [log.signer])
    _refused(witness, AddCheckpoint(0, (), bad), None, WitnessRefusal.INCONSISTENT)
    empty = SignedCheckpoint.sign(Checkpoint(log.origin, 0, EMPTY_ROOT), [log.signer])
    assert _accept(witness, AddCheckpoint(0, (), empty), None).size == 0


def test_request_body_round_trip(log: MemoryLog) -> None:
    request = log.request(5, 21)
    body = request.to_body()
    assert body.startswith(b"old 5\n") and b"\n\nexample.test/log\n21\n" in body
    parsed = AddCheckpoint.from_body(body)
    assert (parsed.old_size, parsed.proof, parsed.signed.to_text()) == (5, request.proof, request.signed.to_text())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\xff" + b, "not UTF-8"),
        (lambda b: b.split(b"\n\n")[0] + b"\n", "empty line"),
        (lambda b: b.replace(b"old 5", b"old 05"), "'old <size>'"),
        (lambda b: b.replace(b"old 5", b"old -5"), "'old <size>'"),
        (lambda b: b.replace(b"old 5", b"new 5"), "'old <size>'"),
        (lambda b: b.replace(b"old 5\n", b"old 5\n!!!!\n"), "not base64"),
        (lambda b: b.replace(b"old 5\n", b"old 5\nAAAA\n"), "not a 32-byte hash"),
        (lambda b: b.replace(b"old 5\n", b"old 5\n" + (b"A" * 43 + b"=\n") * 64), "at most"),
        (lambda b: b.replace(b"\n21\n", b"\ntwenty\n"), "checkpoint does not parse"),
        (lambda b: b[: b.rindex(b"\n\n") + 2], "checkpoint does not parse"),
    ],
)
def test_malformed_requests_are_400(log: MemoryLog, mutate: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(CheckpointRefused, match=message) as info:
        AddCheckpoint.from_body(mutate(log.request(5, 21).to_body()))
    assert info.value.reason is WitnessRefusal.MALFORMED


def test_a_stored_record_that_does_not_parse_is_reported() -> None:
    with pytest.raises(MalformedWitnessState):
        LogRecord.from_text("not a checkpoint\n")


def test_origin_hash_is_lowercase_hex_sha256() -> None:
    digest = origin_hash("example.test/log")
    assert digest == hashlib.sha256(b"example.test/log").hexdigest() and digest == digest.lower()
