"""``/v1/me/signatures``: a person signs with their own key on the token, under sole control. An
activation is bound to one document's digest, single use, five minutes, and needs a fresh TOTP
code; nobody else (another person, an admin, an API key) signs with the key, and a person's
session never signs as the institution. CMS verifies with openssl and PAdES with pyHanko, both
naming the person. Both back ends, real routes."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from auth import lockout
from auth.tables import login_throttle
from integrity.personal_signing import ACTION_REFUSED, ACTION_REQUESTED, ACTION_SIGNED
from tests.api.personal_support import (
    DEMO_CA,
    LETTER,
    SigningPerson,
    enrol,
    entries,
    give_key,
    pyhanko_validate,
)
from tests.auth.support import wire_accounts
from tests.conftest import Service
from tests.signing._pki import run_openssl
from tests.signing.test_pdf_signing import unsigned_pdf
from tests.token_support import SoftToken

PROBLEM = "application/problem+json"
LAN = "Nguyễn Thị Lan"
MINH = "Trần Văn Minh"


@pytest.fixture
def svc(db_url: str, soft_token: SoftToken) -> Iterator[Service]:
    service = Service(db_url, **soft_token.settings())
    wire_accounts(service)
    yield service
    service.close()


@pytest.fixture
def lan(svc: Service, soft_token: SoftToken) -> SigningPerson:
    return give_key(svc, soft_token, enrol(svc, "lan"), LAN)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _request(svc: Service, person: SigningPerson, fmt: str, document: bytes = LETTER, **extra: Any) -> Any:
    return svc.client.post(
        "/v1/me/signatures",
        json={"format": fmt, "document_b64": _b64(document), "name": "thu-xac-nhan.txt", **extra},
        headers=person.bearer,
    )


def _activate(
    svc: Service, person: SigningPerson, activation_id: str, document: bytes = LETTER, code: str | None = None
) -> Any:
    return svc.client.post(
        f"/v1/me/signatures/{activation_id}/activate",
        json={"document_b64": _b64(document), "code": code or person.code(svc.clock)},
        headers=person.bearer,
    )


def _sign(svc: Service, person: SigningPerson, fmt: str, document: bytes = LETTER) -> Any:
    asked = _request(svc, person, fmt, document)
    assert asked.status_code == 201, asked.text
    signed = _activate(svc, person, asked.json()["id"], document)
    assert signed.status_code == 200, signed.text
    svc.clock.advance(30)  # the next code is a new one
    return signed.json()


def _refusals(svc: Service) -> list[str]:
    return [e.data["reason"] for e in entries(svc, ACTION_REFUSED)]


def test_the_activation_shows_what_is_signed_and_the_signature_names_the_person(
    svc: Service, lan: SigningPerson, tmp_path: Path
) -> None:
    asked = _request(svc, lan, "cms")
    assert asked.status_code == 201, asked.text
    activation = asked.json()
    digest = "sha256:" + __import__("hashlib").sha256(LETTER).hexdigest()
    assert activation["digest"] == digest and activation["key_id"] == lan.kid
    display = activation["display"]
    assert display["name"] == "thu-xac-nhan.txt" and display["bytes"] == len(LETTER)
    assert display["signer"] == LAN and digest.removeprefix("sha256:") in display["text"]["en"]
    assert LAN in display["text"]["vi"] and "Ký" in display["text"]["vi"]
    assert entries(svc, ACTION_REQUESTED)[-1].data["digest"] == digest
    assert entries(svc, ACTION_SIGNED) == []  # nothing signed before the code

    signed = _activate(svc, lan, activation["id"])
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["format"] == "cms" and body["key_id"] == lan.kid and body["digest"] == digest
    # The audit entry names the person, the key and the digest.
    [entry] = entries(svc, ACTION_SIGNED)
    assert entry.actor == "user:lan" and entry.seq == body["audit_seq"]
    assert entry.data["person"] == "lan" and entry.data["key_id"] == lan.kid and entry.data["digest"] == digest
    assert entry.data["method"] == "totp" and entry.data["channel"] == "api"
    # An outside verifier: openssl, against the demo CA, with its default S/MIME purpose check.
    (tmp_path / "sig.der").write_bytes(base64.b64decode(body["signature"]))
    (tmp_path / "letter.txt").write_bytes(LETTER)
    checked = run_openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", "sig.der", "-content", "letter.txt",
        "-CAfile", str(DEMO_CA), "-signer", "signer.pem", "-out", "/dev/null", cwd=tmp_path,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    subject = run_openssl("x509", "-in", "signer.pem", "-noout", "-subject", "-nameopt", "utf8", cwd=tmp_path)
    assert LAN in subject.stdout
    # A changed document fails.
    (tmp_path / "letter.txt").write_bytes(LETTER + b"!")
    assert run_openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", "sig.der", "-content", "letter.txt",
        "-CAfile", str(DEMO_CA), "-out", "/dev/null", cwd=tmp_path,
    ).returncode != 0  # fmt: skip


def test_a_pdf_uploaded_as_multipart_is_signed_in_pades_and_pyhanko_names_the_person(
    svc: Service, lan: SigningPerson, tmp_path: Path
) -> None:
    pdf = unsigned_pdf()
    asked = svc.client.post(
        "/v1/me/signatures",
        data={"format": "pdf"},
        files={"document": ("don-de-nghi.pdf", pdf, "application/pdf")},
        headers=lan.bearer,
    )
    assert asked.status_code == 201, asked.text
    assert asked.json()["display"]["name"] == "don-de-nghi.pdf"
    signed = svc.client.post(
        f"/v1/me/signatures/{asked.json()['id']}/activate",
        data={"code": lan.code(svc.clock)},
        files={"document": ("don-de-nghi.pdf", pdf, "application/pdf")},
        headers=lan.bearer,
    )
    assert signed.status_code == 200, signed.text
    path = tmp_path / "signed.pdf"
    path.write_bytes(base64.b64decode(signed.json()["signature"]))
    report = pyhanko_validate(path)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "The signer's certificate is trusted." in report.stdout
    assert "The signature is judged VALID." in report.stdout
    assert f'Certificate subject: "Common Name: {LAN}' in report.stdout


def test_jws_is_signed_with_the_persons_key_and_verifies(svc: Service, lan: SigningPerson) -> None:
    body = _sign(svc, lan, "jws")
    verified = svc.client.post(
        "/v1/signatures/verify", json={"format": "jws", "signature": body["signature"]}, headers=svc.auth("verify")
    )
    assert verified.json()["valid"] is True and verified.json()["signer"]["purpose"] == "personal"
    assert verified.json()["key_id"] == lan.kid


def test_without_an_activation_nothing_is_signed(svc: Service, lan: SigningPerson) -> None:
    missing = _activate(svc, lan, "no-such-activation")
    assert missing.status_code == 404 and missing.json()["type"].endswith(":unknown-signature-activation")
    assert entries(svc, ACTION_SIGNED) == [] and _refusals(svc) == ["unknown_activation"]


def test_an_activation_for_document_a_cannot_sign_document_b(svc: Service, lan: SigningPerson) -> None:
    activation = _request(svc, lan, "cms").json()
    other = _activate(svc, lan, activation["id"], document=LETTER.replace(b"0001", b"0002"))
    assert other.status_code == 409 and other.json()["reason"] == "digest_mismatch"
    assert entries(svc, ACTION_SIGNED) == [] and _refusals(svc) == ["digest_mismatch"]
    # The activation was not spent by the wrong document: its own still signs.
    assert _activate(svc, lan, activation["id"]).status_code == 200


def test_an_activation_is_used_once(svc: Service, lan: SigningPerson) -> None:
    activation = _request(svc, lan, "jws").json()
    assert _activate(svc, lan, activation["id"]).status_code == 200
    svc.clock.advance(30)
    again = _activate(svc, lan, activation["id"])
    assert again.status_code == 409 and again.json()["reason"] == "already_used"
    assert len(entries(svc, ACTION_SIGNED)) == 1


def test_an_expired_activation_is_refused(svc: Service, lan: SigningPerson) -> None:
    activation = _request(svc, lan, "jws").json()
    svc.clock.advance(301)
    late = _activate(svc, lan, activation["id"])
    assert late.status_code == 409 and late.json()["reason"] == "expired"
    assert entries(svc, ACTION_SIGNED) == []


def test_a_concurrent_double_activation_signs_once(svc: Service, lan: SigningPerson) -> None:
    activation = _request(svc, lan, "jws").json()
    codes = [lan.code(svc.clock)]
    svc.clock.advance(30)
    codes.append(lan.code(svc.clock))  # two codes the account accepts (the previous step is in the drift window)
    answers: list[int] = []
    barrier = threading.Barrier(2)

    def go(code: str) -> None:
        barrier.wait()
        answers.append(_activate(svc, lan, activation["id"], code=code).status_code)

    threads = [threading.Thread(target=go, args=(code,)) for code in codes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answers)[0] == 200 and answers.count(200) == 1, answers
    assert len(entries(svc, ACTION_SIGNED)) == 1


def test_a_person_cannot_use_anothers_key_or_activation(
    svc: Service, lan: SigningPerson, soft_token: SoftToken
) -> None:
    minh = give_key(svc, soft_token, enrol(svc, "minh"), MINH)
    theirs = _request(svc, minh, "cms", key_id=lan.kid)
    assert theirs.status_code == 409 and theirs.json()["type"].endswith(":personal-key-unavailable")
    lans = _request(svc, lan, "cms").json()
    stolen = _activate(svc, minh, lans["id"])
    unknown = _activate(svc, minh, "no-such-activation")
    # The same answer as for an id that does not exist: nothing tells that it is someone's.
    assert stolen.status_code == unknown.status_code == 404
    assert stolen.json()["reason"] == unknown.json()["reason"] == "unknown_activation"
    assert _refusals(svc) == ["no_personal_key", "not_owner", "unknown_activation"]
    # Their own key signs for each of them, and only as themselves.
    assert _sign(svc, minh, "cms")["key_id"] == minh.kid
    assert entries(svc, ACTION_SIGNED)[-1].actor == "user:minh"


def test_an_admin_cannot_sign_with_a_persons_key(svc: Service, lan: SigningPerson) -> None:
    admin = enrol(svc, "quantri", role="admin")
    as_admin = _request(svc, admin, "cms", key_id=lan.kid)
    assert as_admin.status_code == 409 and as_admin.json()["reason"] == "no_personal_key"
    activation = _request(svc, lan, "cms").json()
    assert _activate(svc, admin, activation["id"]).status_code == 404
    # Nor as the institution: an API key with every scope, naming the person's key.
    everything = svc.auth("admin", "sign", "verify", "audit:read")
    institutional = svc.client.post(
        "/v1/signatures", json={"format": "cms", "payload_b64": _b64(LETTER), "key_id": lan.kid}, headers=everything
    )
    assert institutional.status_code == 409 and institutional.json()["type"].endswith(":key-not-usable")
    assert entries(svc, ACTION_SIGNED) == [] and entries(svc, "signature.created") == []


def test_a_persons_session_never_signs_as_the_institution(svc: Service, lan: SigningPerson) -> None:
    refused = svc.client.post("/v1/signatures", json={"format": "jws", "payload_b64": _b64(LETTER)}, headers=lan.bearer)
    assert refused.status_code == 403 and refused.json()["type"].endswith(":forbidden")
    assert entries(svc, "signature.created") == []


def test_an_api_key_never_reaches_a_persons_signatures(svc: Service, lan: SigningPerson) -> None:
    key = svc.auth("admin", "sign", "verify")
    asked = svc.client.post("/v1/me/signatures", json={"format": "jws", "document_b64": _b64(LETTER)}, headers=key)
    assert asked.status_code == 401 and asked.headers["content-type"].startswith(PROBLEM)
    activation = _request(svc, lan, "jws").json()
    used = svc.client.post(
        f"/v1/me/signatures/{activation['id']}/activate",
        json={"document_b64": _b64(LETTER), "code": lan.code(svc.clock)},
        headers=key,
    )
    assert used.status_code == 401 and entries(svc, ACTION_SIGNED) == []


def test_wrong_codes_count_toward_the_lockout_and_nothing_is_signed(svc: Service, lan: SigningPerson) -> None:
    activation = _request(svc, lan, "jws").json()
    right = lan.code(svc.clock)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    statuses = [_activate(svc, lan, activation["id"], code=wrong).status_code for _ in range(lockout.FREE_FAILURES)]
    assert statuses == [401] * lockout.FREE_FAILURES
    with svc.state.engine.connect() as conn:
        counted = conn.execute(
            select(login_throttle.c.failures).where(login_throttle.c.key == lockout.account_key("lan"))
        ).scalar()
    assert counted == lockout.FREE_FAILURES
    # The next attempt, even with the right code, waits out the delay the failures earned.
    throttled = _activate(svc, lan, activation["id"], code=wrong)
    assert throttled.status_code in (401, 429)
    blocked = _activate(svc, lan, activation["id"], code=right)
    assert blocked.status_code == 429 and "retry-after" in blocked.headers
    assert entries(svc, ACTION_SIGNED) == []
    assert set(_refusals(svc)) == {"second_factor_failed"}
    failed = entries(svc, "auth.mfa.confirm.failed")
    assert failed and all(e.data["purpose"] == "signature-activation" for e in failed)


def test_bad_requests_are_refused_before_anything_is_logged(svc: Service, lan: SigningPerson) -> None:
    wrong_format = _request(svc, lan, "xml")
    assert wrong_format.status_code == 422
    not_base64 = svc.client.post("/v1/me/signatures", json={"format": "jws", "document_b64": "***"}, headers=lan.bearer)
    assert not_base64.status_code == 400
    not_pdf = _request(svc, lan, "pdf", document=b"%PDF-1.7 not really")
    assert not_pdf.status_code == 422 and not_pdf.json()["type"].endswith(":unreadable-pdf")
    as_text = svc.client.post("/v1/me/signatures", content=b"x", headers={**lan.bearer, "content-type": "text/plain"})
    assert as_text.status_code == 415
    too_big = svc.state.signatures.max_payload_bytes + 1
    huge = svc.client.post(
        "/v1/me/signatures",
        data={"format": "cms"},
        files={"document": ("big.bin", b"\0" * too_big, "application/octet-stream")},
        headers=lan.bearer,
    )
    assert huge.status_code == 413
    assert entries(svc, ACTION_REQUESTED) == [] and entries(svc, ACTION_SIGNED) == []


def test_a_key_without_a_certificate_signs_jws_only(svc: Service, soft_token: SoftToken) -> None:
    from signing.algorithms import Algorithm

    hoa = enrol(svc, "hoa")
    record = svc.state.personal_signing.generate_key(
        "hoa", Algorithm.ES256, actor="operator:root", on_token=True, rsa_bits=2048
    )
    assert record.owner == "user:hoa" and record.purpose.value == "personal" and record.token_object_id
    assert _sign(svc, hoa, "jws")["key_id"] == record.kid
    cms = _request(svc, hoa, "cms")
    assert cms.status_code == 409 and cms.json()["reason"] == "no_personal_key"
