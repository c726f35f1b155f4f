"""Who may sign as whom: every key has one purpose. Systems with ``sign`` sign data messages as the
institution with its data-message key; the receipt key is never reachable from
``POST /v1/signatures`` nor ``bhxh-integrity sign``; a person's session never signs as the
institution. Listings, the JWKS and the audit log show each key's purpose, and certificates say
it too, so that a receipt assembled from a data-message signature is told apart (both back ends).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from api.cli import app as cli_app
from tests.api.operator_support import demo_cli_env
from tests.api.test_receipts_api import body
from tests.auth.support import STRONG, rfc6238, secret_from_uri, step_of, wire_accounts
from tests.conftest import DEMO_KEYS, Service
from tests.tools import require_tool

PAYLOAD = "Hồ sơ 000.00.31.H29-251123-0001".encode()
RECEIPT_CERT = x509.load_pem_x509_certificate((DEMO_KEYS / "one-stop-signing.crt.pem").read_bytes())
DATA_CERT = x509.load_pem_x509_certificate((DEMO_KEYS / "institution-data-message.crt.pem").read_bytes())
runner = CliRunner()


@pytest.fixture
def svc(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    # The CLI commands below open the same database and demo keys as the running app.
    demo_cli_env(monkeypatch, db_url)
    service = Service(db_url)
    yield service
    service.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _entries(svc: Service, action: str) -> list[Any]:
    audit = svc.state.audit
    return [e for e in audit.entries(0, audit.size()) if e.action == action]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _cms_certificates(signature: bytes) -> tuple[bytes, set[bytes]]:
    """The signer's certificate (the one the signer info names) and every certificate carried."""
    signed_data = asn1_cms.ContentInfo.load(signature)["content"]
    carried = [c.chosen for c in signed_data["certificates"]]
    sid = signed_data["signer_infos"][0]["sid"].chosen
    named = {c.dump() for c in carried if c.issuer == sid["issuer"] and c.serial_number == sid["serial_number"].native}
    assert len(named) == 1
    return named.pop(), {c.dump() for c in carried}


def _jwks_by_purpose(svc: Service) -> dict[str, dict[str, Any]]:
    keys = svc.client.get("/.well-known/jwks.json").json()["keys"]
    return {k["bhxh_purpose"]: k for k in keys}


def _receipt_kid(svc: Service) -> str:
    return str(_jwks_by_purpose(svc)["receipt"]["kid"])


def test_a_sign_api_key_gets_the_data_message_certificate_never_the_receipt_one(svc: Service) -> None:
    auth = svc.auth("sign", "verify")
    response = svc.client.post("/v1/signatures", json={"format": "cms", "payload_b64": _b64(PAYLOAD)}, headers=auth)
    assert response.status_code == 200, response.text
    signature = base64.b64decode(response.json()["signature"])
    signer, carried = _cms_certificates(signature)
    assert signer == _der(DATA_CERT)
    assert _der(RECEIPT_CERT) not in carried
    assert _entries(svc, "signature.created")[-1].data["purpose"] == "data-message"
    verdict = svc.client.post(
        "/v1/signatures/verify",
        json={"format": "cms", "signature": response.json()["signature"], "payload_b64": _b64(PAYLOAD)},
        headers=auth,
    ).json()
    assert verdict["valid"] is True
    assert verdict["signer"]["subject"].startswith("CN=BHXH Data Message Signing")
    assert verdict["signer"]["purpose"] == "data-message"
    assert _entries(svc, "signature.verified")[-1].data["signer_purpose"] == "data-message"
    # JWS, the default format, is made with the data-message key too.
    jws = svc.client.post("/v1/signatures", json={"format": "jws", "payload_b64": _b64(PAYLOAD)}, headers=auth)
    assert jws.json()["key_id"] == _jwks_by_purpose(svc)["data-message"]["kid"]


def _issue_receipt(svc: Service) -> bytes:
    issued = svc.client.post("/v1/receipts", json=body(), headers=svc.auth("receipts:issue"))
    assert issued.status_code == 201, issued.text
    pdf = svc.client.get(f"/v1/receipts/{issued.json()['code']}/pdf", headers=svc.auth("receipts:read"))
    assert pdf.status_code == 200
    return pdf.content


def _with_signature(pdf: bytes, make_cms: Any) -> bytes:
    """``pdf`` with its signature's /Contents replaced by ``make_cms(signed bytes)``, over the
    very same byte range (manual byte patching: the placeholder keeps its length)."""
    found = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf)
    assert found is not None
    start, first, second, rest = (int(n) for n in found.groups())
    signed = pdf[start : start + first] + pdf[second : second + rest]
    der: bytes = make_cms(signed)
    hole = pdf[start + first : second]
    assert hole[:1] == b"<" and hole[-1:] == b">"
    room = len(hole) - 2
    contents = der.hex().encode()
    assert len(contents) <= room
    return pdf[: start + first] + b"<" + contents.ljust(room, b"0") + b">" + pdf[second:]


def test_a_receipt_assembled_from_a_data_message_signature_is_not_issued_by_the_system(
    svc: Service, tmp_path: Path
) -> None:
    receipt = _issue_receipt(svc)
    auth = svc.auth("sign")

    def data_message_cms(signed: bytes) -> bytes:
        response = svc.client.post("/v1/signatures", json={"format": "cms", "payload_b64": _b64(signed)}, headers=auth)
        assert response.status_code == 200, response.text
        return base64.b64decode(response.json()["signature"])

    forged = tmp_path / "forged.pdf"
    forged.write_bytes(_with_signature(receipt, data_message_cms))

    result = runner.invoke(cli_app, ["receipts", "verify", str(forged), "--demo", "--json"])
    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)
    assert verdict["issued_by_system"] is False
    # A genuine signature over the receipt's bytes, by the wrong signer.
    assert verdict["signature"]["intact"] is True and verdict["signature"]["one_stop_signer"] is False
    assert verdict["signature"]["signer_purpose"] == "data-message"
    assert "not_one_stop_signer" in [r["code"] for r in verdict["reasons"]]
    human = runner.invoke(cli_app, ["receipts", "verify", str(forged), "--demo"])
    assert human.exit_code == 1 and "certificate purpose: data-message" in " ".join(human.stdout.split())

    pdfsig = require_tool("pdfsig", "poppler-utils")
    report = subprocess.run([pdfsig, str(forged)], capture_output=True, text=True, timeout=60, check=False).stdout
    assert "BHXH Data Message Signing (DEMO)" in report
    assert "One-Stop System Signing" not in report
    original = tmp_path / "receipt.pdf"
    original.write_bytes(receipt)
    genuine = subprocess.run([pdfsig, str(original)], capture_output=True, text=True, timeout=60, check=False).stdout
    assert "BHXH One-Stop System Signing (DEMO)" in genuine  # the check above can tell the two apart


def test_the_receipt_key_never_signs_through_the_api_nor_the_cli(svc: Service, tmp_path: Path) -> None:
    kid = _receipt_kid(svc)
    auth = svc.auth("sign")
    for fmt in ("jws", "cms"):
        response = svc.client.post(
            "/v1/signatures", json={"format": fmt, "payload_b64": _b64(PAYLOAD), "key_id": kid}, headers=auth
        )
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["type"].endswith("key-purpose-mismatch")
        assert "receipt key" in problem["detail"]
    batch = svc.client.post(
        "/v1/signatures/batch",
        json={"items": [{"format": "jws", "payload_b64": _b64(PAYLOAD), "key_id": kid}]},
        headers=auth,
    )
    assert batch.status_code == 409 and batch.json()["type"].endswith("key-purpose-mismatch")
    (tmp_path / "payload").write_bytes(PAYLOAD)
    result = runner.invoke(cli_app, ["sign", str(tmp_path / "payload"), "--format", "cms", "--key-id", kid, "--demo"])
    assert result.exit_code == 2 and "receipt key" in result.output
    assert _entries(svc, "signature.created") == []


def test_the_keystore_listing_jwks_and_audit_log_show_each_purpose(svc: Service) -> None:
    jwks = _jwks_by_purpose(svc)
    assert set(jwks) == {"receipt", "data-message"}
    for purpose, cert in (("receipt", RECEIPT_CERT), ("data-message", DATA_CERT)):
        assert jwks[purpose]["use"] == "sig" and jwks[purpose]["alg"] == "PS256"
        assert base64.b64decode(jwks[purpose]["x5c"][0]) == _der(cert)
    listed = runner.invoke(cli_app, ["keys", "list", "--demo", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["kid"]: row for row in json.loads(listed.stdout)}
    assert {kid: row["purpose"] for kid, row in rows.items()} == {k["kid"]: p for p, k in jwks.items()}
    imported = {e.subject: e.data["purpose"] for e in _entries(svc, "key.imported")}
    assert imported == {f"key:{k['kid']}": p for p, k in jwks.items()}
    generated = runner.invoke(cli_app, ["keys", "generate", "--alg", "Ed25519", "--demo", "--json"])
    assert generated.exit_code == 0, generated.output
    assert json.loads(generated.stdout)["purpose"] == "data-message"
    assert _entries(svc, "key.generated")[-1].data["purpose"] == "data-message"


def test_a_personal_purpose_needs_a_person_so_the_cli_refuses_it(svc: Service) -> None:
    before = svc.state.audit.size()
    refused = runner.invoke(cli_app, ["keys", "generate", "--purpose", "personal", "--demo"])
    assert refused.exit_code == 2 and "personal key must belong to a person" in refused.output
    listed = json.loads(runner.invoke(cli_app, ["keys", "list", "--demo", "--json"]).stdout)
    assert len(listed) == 2 and svc.state.audit.size() == before


def _officer_session(svc: Service) -> str:
    created = svc.client.post(
        "/v1/admin/users",
        json={"username": "lan", "password": STRONG, "role": "officer", "reason": "new staff member"},
        headers=svc.auth("admin"),
    )
    assert created.status_code == 201, created.text
    first = svc.client.post("/v1/auth/login", json={"username": "lan", "password": STRONG}).json()
    bearer = {"Authorization": f"Bearer {first['token']}"}
    secret = secret_from_uri(svc.client.post("/v1/auth/totp/enroll", headers=bearer).json()["otpauth_uri"])
    done = svc.client.post("/v1/auth/totp/confirm", json={"code": rfc6238(secret, step_of(svc.clock))}, headers=bearer)
    assert done.status_code == 200, done.text
    return str(done.json()["token"])


def test_an_officer_session_never_signs_as_the_institution(svc: Service) -> None:
    wire_accounts(svc)
    bearer = {"Authorization": f"Bearer {_officer_session(svc)}"}
    single = svc.client.post("/v1/signatures", json={"format": "cms", "payload_b64": _b64(PAYLOAD)}, headers=bearer)
    assert single.status_code == 403, single.text
    assert single.headers["content-type"].startswith("application/problem+json")
    batch = svc.client.post(
        "/v1/signatures/batch", json={"items": [{"format": "jws", "payload_b64": _b64(PAYLOAD)}]}, headers=bearer
    )
    assert batch.status_code == 403
    # The session itself is valid: the officer still verifies.
    signed = svc.client.post(
        "/v1/signatures", json={"format": "jws", "payload_b64": _b64(PAYLOAD)}, headers=svc.auth("sign")
    ).json()
    checked = svc.client.post(
        "/v1/signatures/verify", json={"format": "jws", "signature": signed["signature"]}, headers=bearer
    )
    assert checked.status_code == 200 and checked.json()["valid"] is True
    created = _entries(svc, "signature.created")
    assert len(created) == 1 and created[0].actor.startswith("client:")  # only the API key's signature
