"""RFC 3161 time-stamps of checkpoints (audit.timestamps) against tokens made by a real TSA
(``openssl ts -reply``): the service's check of an answer and the auditor's check of a token."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint
from audit.errors import TimestampInvalid
from audit.timestamps import accept_response, check_timestamps, request_for, timestamped_texts, verify_token
from audit.verify_report import Fault, TimestampStatus
from tests.tsa_support import DEMO_CA_CERT, OpensslTsa

ROOT = x509.load_pem_x509_certificate(DEMO_CA_CERT.read_bytes())
LOG = NoteSigner("example.test/log", Ed25519PrivateKey.generate())
WITNESS = NoteSigner("witness.test/w", Ed25519PrivateKey.generate())


def _note(size: int = 3) -> str:
    return SignedCheckpoint.sign(Checkpoint("example.test/log", size, bytes(32)), [LOG]).to_text()


def _cosigned(note: str) -> str:
    """The note with a witness's signature line appended, as an export carries it."""
    parsed = SignedCheckpoint.from_text(note)
    return parsed.note.signed_by(WITNESS).to_text()


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> OpensslTsa:
    return OpensslTsa(tmp_path_factory.mktemp("tsa"))


def test_a_token_covers_the_note_as_signed_even_with_cosignatures_appended(tsa: OpensslTsa) -> None:
    note = _note()
    request = request_for(note)
    stamp = accept_response(request, tsa.reply(request.der))
    assert stamp.tsa == "CN=BHXH Test TSA"
    assert verify_token(stamp.der, note, [ROOT]).gen_time == stamp.gen_time
    assert verify_token(stamp.der, _cosigned(note), [ROOT]).gen_time == stamp.gen_time
    assert timestamped_texts(_cosigned(note))[-1] == note


def test_a_token_never_covers_another_checkpoint(tsa: OpensslTsa) -> None:
    request = request_for(_note(3))
    der = tsa.reply(request.der)
    with pytest.raises(TimestampInvalid, match="another text"):
        verify_token(der, _note(4), [ROOT])
    # Cutting the log's own signature line off is no way around it.
    body_only = _note(3).split("\n\n")[0] + "\n\n"
    with pytest.raises(TimestampInvalid, match="another text"):
        verify_token(der, body_only, [ROOT])


def test_the_service_refuses_an_answer_to_another_request(tsa: OpensslTsa) -> None:
    request = request_for(_note())
    other = tsa.reply(request_for(_note()).der)  # same note, another nonce
    with pytest.raises(TimestampInvalid, match="another nonce"):
        accept_response(request, other)
    for garbage in (b"", b"\x30\x03\x02\x01\x00", b"\x30\x05\x30\x03\x02\x01\x02"):
        with pytest.raises(TimestampInvalid):
            accept_response(request, garbage)


def test_check_timestamps_judges_each_checkpoint(tsa: OpensslTsa) -> None:
    good, missing, bad = _note(1), _note(2), _note(3)
    token = base64.b64encode(tsa.reply(request_for(good).der)).decode()
    wrong = base64.b64encode(tsa.reply(request_for(good).der)).decode()
    checks, faults = check_timestamps([(good, token), (missing, None), (bad, wrong)], [ROOT])
    assert [c.status for c in checks] == [TimestampStatus.TRUSTED, TimestampStatus.MISSING, TimestampStatus.INVALID]
    assert [(f.kind, f.tree_size) for f in faults] == [(Fault.TIMESTAMP_INVALID, 3)]
    _, required = check_timestamps([(good, token), (missing, None)], [ROOT], require=True)
    assert [(f.kind, f.tree_size) for f in required] == [(Fault.UNTIMESTAMPED, 2)]
    unchecked, none = check_timestamps([(good, token)], None)
    assert unchecked[0].status is TimestampStatus.UNCHECKED and none == ()
