"""C2SP tlog-cosignature: Ed25519 (type 0x04) and ML-DSA-44 (type 0x06) cosignatures made,
verified, and every forged, altered or malformed one refused with CosignatureInvalid. The signed
messages and key ids are rebuilt here from the spec's formulas, independently of the module."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

from audit.checkpoint import NoteSignature, SignedCheckpoint, SignedNote
from audit.cosignature import (
    CosignatureType,
    Cosigner,
    CosignerKey,
    CosignerPrivateKey,
    signature_lines,
    with_cosignatures,
)
from audit.errors import CosignatureInvalid, MalformedCheckpoint, MalformedVerifierKey
from tests.audit.witness_support import new_log

NAME = "witness.test/w1"
NOW = 1_760_000_000
KINDS = [Ed25519PrivateKey, MLDSA44PrivateKey]


def _cosigner(kind: type[CosignerPrivateKey], name: str = NAME) -> Cosigner:
    return Cosigner(name, kind.generate())


def _cosigned(cosigner: Cosigner, signed: SignedCheckpoint, timestamp: int = NOW) -> SignedCheckpoint:
    return with_cosignatures(signed, signature_lines((cosigner.cosign(signed, timestamp),)))


def _replace_signature(signed: SignedCheckpoint, index: int, value: bytes) -> SignedCheckpoint:
    sigs = list(signed.note.signatures)
    sigs[index] = NoteSignature(sigs[index].name, sigs[index].key_id, value)
    return SignedCheckpoint(signed.checkpoint, SignedNote(signed.note.text, tuple(sigs)))


@pytest.mark.parametrize("kind", KINDS)
def test_cosignature_verifies_and_gives_its_timestamp(kind: type[CosignerPrivateKey]) -> None:
    log = new_log()
    cosigner = _cosigner(kind)
    cosigned = SignedCheckpoint.from_text(_cosigned(cosigner, log.checkpoint(7)).to_text())
    assert cosigner.key.verify(cosigned) == NOW
    # The log's own signature still verifies: a note verifier ignores the cosigner's line.
    assert cosigned.verify([log.signer.verifier]) == (log.signer.verifier,)


def test_ed25519_cosignature_is_over_the_cosignature_v1_message() -> None:
    log = new_log()
    private = Ed25519PrivateKey.generate()
    signed = log.checkpoint(5, extensions=("ext line",))
    line = Cosigner(NAME, private).cosign(signed, NOW)
    raw = private.public_key().public_bytes_raw()
    assert line.key_id == hashlib.sha256(NAME.encode() + b"\n\x04" + raw).digest()[:4]
    assert line.signature[:8] == struct.pack(">Q", NOW)
    message = f"cosignature/v1\ntime {NOW}\n".encode() + signed.checkpoint.to_text().encode()
    private.public_key().verify(line.signature[8:], message)


def test_mldsa44_cosignature_is_over_the_cosigned_message() -> None:
    log = new_log(origin="example.test/pq")
    private = MLDSA44PrivateKey.generate()
    signed = log.checkpoint(9)
    line = Cosigner(NAME, private).cosign(signed, NOW)
    raw = private.public_key().public_bytes_raw()
    assert len(raw) == 1312 and len(line.signature) == 8 + 2420
    assert line.key_id == hashlib.sha256(NAME.encode() + b"\n\x06" + raw).digest()[:4]
    message = (
        b"subtree/v1\n\x00"
        + bytes([len(NAME)])
        + NAME.encode()
        + struct.pack(">Q", NOW)
        + bytes([len("example.test/pq")])
        + b"example.test/pq"
        + struct.pack(">QQ", 0, 9)
        + log.root(9)
    )
    private.public_key().verify(line.signature[8:], message)


@pytest.mark.parametrize("kind", KINDS)
def test_a_cosignature_by_another_key_is_refused(kind: type[CosignerPrivateKey]) -> None:
    log = new_log()
    cosigned = _cosigned(_cosigner(kind), log.checkpoint(7))
    impostor = _cosigner(kind).key  # same name, another key: another key id
    with pytest.raises(CosignatureInvalid, match="no cosignature by"):
        impostor.verify(cosigned)
    # Even with the genuine key id, another public key does not verify the signature.
    forged_id = CosignerKey(NAME, impostor.kind, cosigned.note.signatures[-1].key_id, impostor.public_key)
    with pytest.raises(CosignatureInvalid, match="does not verify"):
        forged_id.verify(cosigned)


@pytest.mark.parametrize("kind", KINDS)
def test_a_cosignature_moved_to_another_checkpoint_is_refused(kind: type[CosignerPrivateKey]) -> None:
    log, fork = new_log(), new_log(salt="forked")
    cosigner = _cosigner(kind)
    line = cosigner.cosign(log.checkpoint(7), NOW)
    other = fork.checkpoint(7)  # same origin and size, another root
    moved = with_cosignatures(other, signature_lines((line,)))
    with pytest.raises(CosignatureInvalid, match="does not verify"):
        cosigner.key.verify(moved)
    bigger = with_cosignatures(log.checkpoint(8), signature_lines((line,)))
    with pytest.raises(CosignatureInvalid, match="does not verify"):
        cosigner.key.verify(bigger)


@pytest.mark.parametrize("kind", KINDS)
def test_a_changed_timestamp_is_refused(kind: type[CosignerPrivateKey]) -> None:
    cosigner = _cosigner(kind)
    cosigned = _cosigned(cosigner, new_log().checkpoint(7))
    value = cosigned.note.signatures[-1].signature
    later = _replace_signature(cosigned, -1, struct.pack(">Q", NOW + 1) + value[8:])
    with pytest.raises(CosignatureInvalid, match="does not verify"):
        cosigner.key.verify(later)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("stamp", "message"), [(0, "no valid timestamp"), (1 << 63, "no valid timestamp")])
def test_a_timestamp_out_of_range_is_refused(kind: type[CosignerPrivateKey], stamp: int, message: str) -> None:
    cosigner = _cosigner(kind)
    cosigned = _cosigned(cosigner, new_log().checkpoint(7))
    value = cosigned.note.signatures[-1].signature
    with pytest.raises(CosignatureInvalid, match=message):
        cosigner.key.verify(_replace_signature(cosigned, -1, struct.pack(">Q", stamp) + value[8:]))
    with pytest.raises(ValueError):
        cosigner.cosign(cosigned, stamp)


@pytest.mark.parametrize("kind", KINDS)
def test_a_truncated_cosignature_is_refused(kind: type[CosignerPrivateKey]) -> None:
    cosigner = _cosigner(kind)
    cosigned = _cosigned(cosigner, new_log().checkpoint(7))
    value = cosigned.note.signatures[-1].signature
    with pytest.raises(CosignatureInvalid, match="wrong length"):
        cosigner.key.verify(_replace_signature(cosigned, -1, value[:-1]))


def test_ed25519_covers_extension_lines_and_mldsa44_does_not() -> None:
    # tlog-cosignature: the Ed25519 message holds the whole body, the ML-DSA-44 one only
    # origin, size and root hash.
    log = new_log()
    ed, pq = _cosigner(Ed25519PrivateKey), _cosigner(MLDSA44PrivateKey, "witness.test/pq")
    signed = log.checkpoint(7, extensions=("one",))
    lines = signature_lines((ed.cosign(signed, NOW), pq.cosign(signed, NOW)))
    changed = with_cosignatures(log.checkpoint(7, extensions=("two",)), lines)
    with pytest.raises(CosignatureInvalid):
        ed.key.verify(changed)
    assert pq.key.verify(changed) == NOW


@pytest.mark.parametrize("kind", KINDS)
def test_vkey_round_trip(kind: type[CosignerPrivateKey]) -> None:
    key = _cosigner(kind).key
    text = key.to_text()
    name, hex_id, b64 = text.split("+", 2)
    material = base64.b64decode(b64)
    assert (name, bytes.fromhex(hex_id)) == (NAME, key.key_id)
    assert material[0] == key.kind == (0x04 if kind is Ed25519PrivateKey else 0x06)
    parsed = CosignerKey.from_text(text)
    assert parsed == key
    assert parsed.public_key.public_bytes_raw() == material[1:]
    assert isinstance(parsed.public_key, Ed25519PublicKey if kind is Ed25519PrivateKey else MLDSA44PublicKey)


def _vkey(name: str, kind: int, raw: bytes, key_id: bytes | None = None) -> str:
    kid = key_id if key_id is not None else hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + raw).digest()[:4]
    return f"{name}+{kid.hex()}+{base64.b64encode(bytes([kind]) + raw).decode()}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-plus-signs", "a verifier key is"),
        ("w+zz+AAAA", "not hex/base64"),
        ("w+00000000+!!!", "not hex/base64"),
        ("w+0000+BA==", "wrong length"),
        (_vkey("w", 0x01, bytes(32)), "only cosigner keys of type"),  # a log's plain Ed25519 note key
        (_vkey("w", 0x04, bytes(31)), "wrong length"),
        (_vkey("w", 0x06, bytes(32)), "wrong length"),
        (_vkey("w", 0x04, Ed25519PrivateKey.generate().public_key().public_bytes_raw(), bytes(4)), "does not match"),
        (_vkey("bad name", 0x04, Ed25519PrivateKey.generate().public_key().public_bytes_raw()), "invalid cosigner"),
    ],
)
def test_malformed_vkeys_are_refused(text: str, message: str) -> None:
    with pytest.raises(MalformedVerifierKey, match=message):
        CosignerKey.from_text(text)


def test_key_type_matters_for_the_key_id() -> None:
    # The same Ed25519 key as a note signer (0x01) and as a cosigner (0x04) has two key ids.
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes_raw()
    assert Cosigner(NAME, private).key.kind is CosignatureType.ED25519
    assert Cosigner(NAME, private).key.key_id != hashlib.sha256(NAME.encode() + b"\n\x01" + raw).digest()[:4]


@pytest.mark.parametrize("name", ["", "has space", "a+b", "x" * 256])
def test_invalid_cosigner_names_are_refused(name: str) -> None:
    with pytest.raises(MalformedVerifierKey):
        Cosigner(name, MLDSA44PrivateKey.generate())


def test_mldsa44_cannot_cosign_an_origin_over_255_bytes() -> None:
    log = new_log(origin="o" * 256)
    with pytest.raises(MalformedCheckpoint, match="origin of 1 to 255 bytes"):
        _cosigner(MLDSA44PrivateKey).cosign(log.checkpoint(3), NOW)


@pytest.mark.parametrize("lines", ["", "\u2014 w AAAA", "not a signature\n", "\u2014 w AAAAAAAA\n\n"])
def test_with_cosignatures_refuses_anything_but_signature_lines(lines: str) -> None:
    with pytest.raises(MalformedCheckpoint):
        with_cosignatures(new_log().checkpoint(2), lines)
