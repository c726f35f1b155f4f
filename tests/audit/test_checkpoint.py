"""C2SP signed-note and tlog-checkpoint: the published Go sumdb/note vector, round trips,
rotation and cosigning, and every malformed or forged input refused with the domain error."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.checkpoint import (
    Checkpoint,
    NoteSigner,
    SignedCheckpoint,
    SignedNote,
    VerifierKey,
    key_id,
    origin_for,
)
from audit.errors import CheckpointSignatureInvalid, MalformedCheckpoint, MalformedVerifierKey

# golang.org/x/mod/sumdb/note's documented example (also in the C2SP signed-note spec).
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# The example of the Elixir/C2SP documentation quoted by the signed_note package.
FOO_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
FOO_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def _signer(name: str = "bhxh-integrity/audit/test") -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


def _checkpoint(size: int = 7) -> Checkpoint:
    return Checkpoint(origin_for("test"), size, hashlib.sha256(b"root").digest())


@pytest.mark.parametrize(("vkey", "note"), [(GO_VKEY, GO_NOTE), (FOO_VKEY, FOO_NOTE)])
def test_published_signed_note_vector_verifies(vkey: str, note: str) -> None:
    key = VerifierKey.from_text(vkey)
    parsed = SignedNote.from_text(note)
    assert parsed.verify([key]) == (key,)
    assert parsed.to_text() == note
    assert key.to_text() == vkey


def test_published_vector_with_one_changed_character_is_refused() -> None:
    key = VerifierKey.from_text(GO_VKEY)
    with pytest.raises(CheckpointSignatureInvalid):
        SignedNote.from_text(GO_NOTE.replace("answer", "Answer")).verify([key])


def test_key_id_is_first_four_bytes_of_sha256_name_newline_type_key() -> None:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    expected = hashlib.sha256(b"bhxh-integrity/audit/x\n\x01" + raw).digest()[:4]
    assert key_id("bhxh-integrity/audit/x", private.public_key()) == expected
    vkey = NoteSigner("bhxh-integrity/audit/x", private).verifier.to_text()
    material = base64.b64encode(b"\x01" + raw).decode()
    assert vkey == f"bhxh-integrity/audit/x+{expected.hex()}+{material}"


def test_signed_checkpoint_round_trips_through_text() -> None:
    signer = _signer()
    signed = SignedCheckpoint.sign(_checkpoint(), [signer])
    text = signed.to_text()
    lines = text.split("\n")
    assert lines[:3] == [origin_for("test"), "7", base64.b64encode(hashlib.sha256(b"root").digest()).decode()]
    assert lines[3] == "" and lines[4].startswith("\u2014 bhxh-integrity/audit/test ")
    again = SignedCheckpoint.from_text(text)
    assert again == signed
    assert again.verify([signer.verifier]) == (signer.verifier,)


def test_checkpoint_with_extension_lines_round_trips() -> None:
    body = Checkpoint("example.com/log", 0, bytes(32), ("Timestamp: 1700000000",))
    assert Checkpoint.from_text(body.to_text()) == body


def test_rotated_key_signs_new_checkpoints_and_old_ones_stay_verifiable() -> None:
    old, new = _signer(), _signer()
    first = SignedCheckpoint.sign(_checkpoint(5), [old])
    second = SignedCheckpoint.sign(_checkpoint(9), [new])
    trusted = [old.verifier, new.verifier]
    assert first.verify(trusted) == (old.verifier,)
    assert second.verify(trusted) == (new.verifier,)
    with pytest.raises(CheckpointSignatureInvalid):
        first.verify([new.verifier])


def test_cosigned_checkpoint_names_both_signers() -> None:
    log, witness = _signer(), _signer("witness.example/w1")
    signed = SignedCheckpoint.sign(_checkpoint(), [log, witness])
    parsed = SignedCheckpoint.from_text(signed.to_text())
    assert parsed.verify([log.verifier, witness.verifier]) == (log.verifier, witness.verifier)
    assert parsed.verify([witness.verifier]) == (witness.verifier,)


def test_unknown_signer_alone_is_not_trusted() -> None:
    signed = SignedCheckpoint.sign(_checkpoint(), [_signer()])
    with pytest.raises(CheckpointSignatureInvalid):
        signed.verify([_signer().verifier])


def test_empty_trust_list_verifies_nothing() -> None:
    with pytest.raises(CheckpointSignatureInvalid):
        SignedCheckpoint.sign(_checkpoint(), [_signer()]).verify([])


def test_forged_signature_by_known_key_name_and_id_is_refused() -> None:
    signer = _signer()
    signed = SignedCheckpoint.sign(_checkpoint(7), [signer])
    forged_text = signed.to_text().replace("\n7\n", "\n8\n")
    with pytest.raises(CheckpointSignatureInvalid):
        SignedCheckpoint.from_text(forged_text).verify([signer.verifier])


@pytest.mark.parametrize(
    "note",
    [
        "",
        "no blank line\n\u2014 a AAAA\n",
        "origin\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n- a " + base64.b64encode(bytes(68)).decode() + "\n",
        "origin\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 a not-base64!\n",
        "origin\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 a AAAA\n",
        "origin\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 a " + base64.b64encode(bytes(68)).decode(),
        "origin\n1\n"
        + base64.b64encode(bytes(32)).decode()
        + "\n\n\u2014 a+b "
        + base64.b64encode(bytes(68)).decode()
        + "\n",
        "origin\x01\n1\n"
        + base64.b64encode(bytes(32)).decode()
        + "\n\n\u2014 a "
        + base64.b64encode(bytes(68)).decode()
        + "\n",
    ],
    ids=[
        "empty",
        "no-blank-line",
        "ascii-dash",
        "bad-base64",
        "short-signature",
        "no-final-newline",
        "plus-in-name",
        "control-char",
    ],
)
def test_malformed_signed_note_is_refused(note: str) -> None:
    with pytest.raises(MalformedCheckpoint):
        SignedNote.from_text(note)


ROOT_B64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "body",
    [
        "origin\n1\n",
        f"\n1\n{ROOT_B64}\n",
        f"origin\n+1\n{ROOT_B64}\n",
        f"origin\n01\n{ROOT_B64}\n",
        f"origin\n1_0\n{ROOT_B64}\n",
        f"origin\n-1\n{ROOT_B64}\n",
        f"origin\n\u0661\n{ROOT_B64}\n",
        "origin\n1\nnot base64!\n",
        f"origin\n1\n{base64.b64encode(bytes(31)).decode()}\n",
        f"origin\n1\n{ROOT_B64}",
    ],
    ids=[
        "too-few-lines",
        "empty-origin",
        "plus-size",
        "leading-zero",
        "underscore",
        "negative",
        "arabic-digit",
        "bad-root",
        "short-root",
        "no-newline",
    ],
)
def test_malformed_checkpoint_body_is_refused(body: str) -> None:
    with pytest.raises(MalformedCheckpoint):
        Checkpoint.from_text(body)


@pytest.mark.parametrize(
    "vkey",
    [
        "name+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpjZHFBQ0NGTUxRZWd3eGJ6aEtxaUJmc1ZrbXFxL0xE",
        "PeterNeumann+zz4f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+!!!",
        "PeterNeumann+c74f20a3+ARpc",
    ],
    ids=["two-parts", "wrong-key-id", "not-ed25519", "bad-hex", "bad-base64", "short-key"],
)
def test_malformed_verifier_key_is_refused(vkey: str) -> None:
    with pytest.raises(MalformedVerifierKey):
        VerifierKey.from_text(vkey)


def test_demo_verifier_key_file_parses_and_matches_the_demo_private_key() -> None:
    from pathlib import Path

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    demo = Path(__file__).resolve().parents[2] / "keys.example"  # committed: never missing
    vkey = VerifierKey.from_text((demo / "audit-log.vkey").read_text())
    private = load_pem_private_key(
        (demo / "audit-log.key.pem").read_bytes(), (demo / "passphrase.txt").read_bytes().strip()
    )
    assert isinstance(private, Ed25519PrivateKey)
    assert NoteSigner(vkey.name, private).verifier == vkey
