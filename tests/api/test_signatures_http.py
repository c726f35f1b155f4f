"""HTTP: /v1/signatures, /v1/signatures/batch, /v1/signatures/verify and the JWKS. Independent
verifiers (openssl, jwcrypto, xmlsec1) accept what the API signs; bad input is a clear 4xx
problem+json with nothing logged as signed."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws

from integrity.signatures import build_signature_service
from tests.conftest import DEMO_KEYS, Service
from tests.signing._pki import openssl_cms_verify
from tests.tools import require_tool

PAYLOAD = "Hồ sơ 000.00.31.H29-251123-0001".encode()
MAX_TEST_PAYLOAD = 64 * 1024


@pytest.fixture
def api(db_url: str) -> Iterator[Service]:
    svc = Service(db_url)
    st = svc.state
    # A smaller payload limit than the default, so the 413 test stays cheap.
    st.signatures = build_signature_service(  # type: ignore[attr-defined]
        st.keys, st.engine, st.clock, st.audit, max_payload_bytes=MAX_TEST_PAYLOAD
    )
    yield svc
    svc.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _entries(svc: Service, action: str) -> list[Any]:
    audit = svc.state.audit
    return [e for e in audit.entries(0, audit.size()) if e.action == action]


def _sign(svc: Service, headers: dict[str, str], **body: Any) -> Any:
    return svc.client.post("/v1/signatures", json={"payload_b64": _b64(PAYLOAD), **body}, headers=headers)


def test_cms_from_the_api_passes_openssl_and_tamper_fails_both(api: Service, tmp_path: Path) -> None:
    auth = api.auth("sign", "verify")
    response = _sign(api, auth, format="cms")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "cms" and body["alg"] == "PS256"
    assert _entries(api, "signature.created")[-1].seq == body["audit_seq"]
    der = base64.b64decode(body["signature"])
    # The data-message key's chain starts with its own certificate: it travels once all the same.
    carried = [c.chosen.dump() for c in asn1_cms.ContentInfo.load(der)["content"]["certificates"]]
    leaf = x509.load_pem_x509_certificate((DEMO_KEYS / "institution-data-message.crt.pem").read_bytes())
    assert carried == [leaf.public_bytes(serialization.Encoding.DER)]
    accepted = openssl_cms_verify(tmp_path, der, PAYLOAD, DEMO_KEYS / "ca.crt.pem")
    assert accepted.returncode == 0, accepted.stderr
    assert openssl_cms_verify(tmp_path, der, PAYLOAD + b".", DEMO_KEYS / "ca.crt.pem").returncode != 0

    good = api.client.post(
        "/v1/signatures/verify",
        json={"format": "cms", "signature": body["signature"], "payload_b64": _b64(PAYLOAD)},
        headers=auth,
    )
    assert good.status_code == 200 and good.json()["valid"] is True
    assert good.json()["signer"]["subject"].startswith("CN=BHXH Data Message Signing")
    assert good.json()["signer"]["purpose"] == "data-message"
    bad = api.client.post(
        "/v1/signatures/verify",
        json={"format": "cms", "signature": body["signature"], "payload_b64": _b64(PAYLOAD + b".")},
        headers=auth,
    )
    assert bad.status_code == 200
    verdict = bad.json()
    assert (verdict["valid"], verdict["indication"], verdict["sub_indication"]) == (
        False,
        "TOTAL_FAILED",
        "HASH_FAILURE",
    )
    assert verdict["message"]["vi"] and verdict["message"]["en"]
    assert _entries(api, "signature.verified")[-1].seq == verdict["audit_seq"]


@pytest.mark.parametrize("detached", [False, True])
def test_jws_from_the_api_verifies_with_jwcrypto_and_the_published_jwks(api: Service, detached: bool) -> None:
    auth = api.auth("sign", "verify")
    body = _sign(api, auth, format="jws", detached=detached).json()
    jwks = api.client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200 and jwks.headers["content-type"].startswith("application/jwk-set+json")
    keyset = jc_jwk.JWKSet.from_json(jwks.text)
    key = keyset.get_key(body["key_id"])
    token = body["signature"]
    checker = jc_jws.JWS()
    if detached:
        header, _, signature = token.split(".")
        import json

        checker.deserialize(json.dumps({"protected": header, "signature": signature, "payload": PAYLOAD.decode()}))
    else:
        checker.deserialize(token)
    checker.verify(key, alg="PS256")
    payload_b64 = _b64(PAYLOAD) if detached else None
    ok = api.client.post(
        "/v1/signatures/verify", json={"format": "jws", "signature": token, "payload_b64": payload_b64}, headers=auth
    )
    assert ok.json()["valid"] is True and ok.json()["key_id"] == body["key_id"]
    if detached:
        tampered = api.client.post(
            "/v1/signatures/verify",
            json={"format": "jws", "signature": token, "payload_b64": _b64(b"x" + PAYLOAD)},
            headers=auth,
        )
        assert tampered.json()["sub_indication"] == "SIG_CRYPTO_FAILURE"


def _import_ec_signer(api: Service) -> str:
    passphrase = (DEMO_KEYS / "passphrase.txt").read_bytes().strip()
    ca_key = serialization.load_pem_private_key((DEMO_KEYS / "ca.key.pem").read_bytes(), passphrase)
    ca_cert = x509.load_pem_x509_certificate((DEMO_KEYS / "ca.crt.pem").read_bytes())
    private = ec.generate_private_key(ec.SECP256R1())
    now = api.clock()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "XML dossier signer (test)")]))
        .issuer_name(ca_cert.subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    service = api.state.signatures  # type: ignore[attr-defined]
    return service.import_key(private, [cert, ca_cert], actor="user:admin").kid  # type: ignore[no-any-return]


def test_xml_from_the_api_passes_xmlsec1_and_returns_the_signed_element(api: Service, tmp_path: Path) -> None:
    xmlsec1 = require_tool("xmlsec1", "xmlsec1")
    auth = api.auth("sign", "verify")
    kid = _import_ec_signer(api)
    doc = "<HoSo><NguoiNop>Lê Văn C</NguoiNop></HoSo>".encode()
    signed = api.client.post(
        "/v1/signatures", json={"format": "xml", "payload_b64": _b64(doc), "key_id": kid}, headers=auth
    ).json()
    document = base64.b64decode(signed["signature"])
    (tmp_path / "signed.xml").write_bytes(document)
    (tmp_path / "ca.pem").write_bytes((DEMO_KEYS / "ca.crt.pem").read_bytes())
    command = [
        xmlsec1,
        "--verify",
        "--trusted-pem",
        "ca.pem",
        "--id-attr:Id",
        "HoSo",
        "--id-attr:Id",
        "http://uri.etsi.org/01903/v1.3.2#:SignedProperties",
        "--id-attr:Id",
        "http://www.w3.org/2000/09/xmldsig#:KeyInfo",
        "signed.xml",
    ]
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60, check=False).returncode == 0
    verdict = api.client.post(
        "/v1/signatures/verify", json={"format": "xml", "signature": signed["signature"]}, headers=auth
    ).json()
    assert verdict["valid"] is True
    assert "Lê Văn C".encode() in base64.b64decode(verdict["signed_xml_b64"])
    tampered = document.replace("Lê".encode(), "Lý".encode())
    (tmp_path / "signed.xml").write_bytes(tampered)
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60, check=False).returncode != 0
    bad = api.client.post(
        "/v1/signatures/verify", json={"format": "xml", "signature": _b64(tampered)}, headers=auth
    ).json()
    assert bad["sub_indication"] == "HASH_FAILURE" and bad.get("signed_xml_b64") is None
    assert bad["valid"] is False and bad["algorithm"] == verdict["algorithm"] == "ES256"


# What each format calls the two algorithms the service signs with.
_IDENTIFIERS = {
    "PS256": {
        "jws": "PS256",
        "cms": "1.2.840.113549.1.1.10",
        "xml": "http://www.w3.org/2007/05/xmldsig-more#sha256-rsa-MGF1",
    },
    "ES256": {
        "jws": "ES256",
        "cms": "1.2.840.10045.4.3.2",
        "xml": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    },
}


@pytest.mark.parametrize("algorithm", ["PS256", "ES256"])
def test_one_key_gets_one_algorithm_name_in_jws_cms_and_xml_results(api: Service, algorithm: str) -> None:
    auth = api.auth("sign", "verify")
    key_id = _import_ec_signer(api) if algorithm == "ES256" else None
    document = "<HoSo><NguoiNop>Lê Văn C</NguoiNop></HoSo>".encode()
    for fmt in ("jws", "cms", "xml"):
        payload = document if fmt == "xml" else PAYLOAD
        signed = api.client.post(
            "/v1/signatures", json={"format": fmt, "payload_b64": _b64(payload), "key_id": key_id}, headers=auth
        )
        assert signed.status_code == 200, signed.text
        assert signed.json()["alg"] == algorithm
        verdict = api.client.post(
            "/v1/signatures/verify",
            json={
                "format": fmt,
                "signature": signed.json()["signature"],
                "payload_b64": _b64(payload) if fmt == "cms" else None,
            },
            headers=auth,
        ).json()
        assert verdict["valid"] is True, verdict
        assert verdict["algorithm"] == algorithm
        assert verdict["algorithm_identifier"] == _IDENTIFIERS[algorithm][fmt]


def test_a_cms_over_changed_content_and_an_xml_with_a_changed_element_are_not_valid(api: Service) -> None:
    auth = api.auth("sign", "verify")
    cms_signed = _sign(api, auth, format="cms").json()["signature"]
    document = b"<HoSo><SoTien>1500000</SoTien></HoSo>"
    xml_signed = _sign(api, auth, format="xml", payload_b64=_b64(document)).json()["signature"]
    changed_xml = base64.b64decode(xml_signed).replace(b"1500000", b"9500000")
    for body in (
        {"format": "cms", "signature": cms_signed, "payload_b64": _b64(PAYLOAD.replace(b"0001", b"0002"))},
        {"format": "xml", "signature": _b64(changed_xml)},
    ):
        response = api.client.post("/v1/signatures/verify", json=body, headers=auth)
        assert response.status_code == 200, response.text
        verdict = response.json()
        # The signer is ours and trusted, and nothing is expired or revoked; the content is not intact.
        assert verdict["signer"]["purpose"] == "data-message"
        assert (verdict["valid"], verdict["indication"], verdict["sub_indication"]) == (
            False,
            "TOTAL_FAILED",
            "HASH_FAILURE",
        )
        assert verdict.get("signed_xml_b64") is None
        logged = _entries(api, "signature.verified")[-1]
        assert logged.seq == verdict["audit_seq"] and logged.data["valid"] is False


def test_batch_signs_every_item_with_one_audit_entry_each(api: Service) -> None:
    auth = api.auth("sign")
    items = [{"format": "jws", "payload_b64": _b64(f"item {i}".encode())} for i in range(4)]
    response = api.client.post("/v1/signatures/batch", json={"items": items}, headers=auth)
    assert response.status_code == 200, response.text
    seqs = [item["audit_seq"] for item in response.json()["items"]]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    assert {e.seq for e in _entries(api, "signature.created")} >= set(seqs)


def test_batch_over_the_limit_or_with_a_bad_item_signs_nothing(api: Service) -> None:
    auth = api.auth("sign")
    item = {"format": "jws", "payload_b64": _b64(b"x")}
    too_many = api.client.post("/v1/signatures/batch", json={"items": [item] * 1001}, headers=auth)
    assert too_many.status_code == 422
    bad = api.client.post("/v1/signatures/batch", json={"items": [item, {**item, "payload_b64": "%%%"}]}, headers=auth)
    assert bad.status_code == 400 and "items.1.payload_b64" in bad.json()["detail"]
    assert _entries(api, "signature.created") == []


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        ({"format": "jws", "payload_b64": "not base64!"}, 400, "invalid-base64"),
        ({"format": "pgp", "payload_b64": _b64(PAYLOAD)}, 422, "unknown-signature-format"),
        ({"format": "jws", "payload_b64": _b64(PAYLOAD), "key_id": "no-such-key"}, 404, "unknown-key"),
        ({"format": "jws", "payload_b64": _b64(b"x" * (MAX_TEST_PAYLOAD + 1))}, 413, "payload-too-large"),
        (
            {"format": "xml", "payload_b64": _b64(b"<!DOCTYPE a [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><a>&e;</a>")},
            422,
            "invalid-xml",
        ),
        ({"format": "jws", "payload_b64": _b64(PAYLOAD), "extra": 1}, 422, "validation-error"),
    ],
)
def test_bad_sign_requests_are_problems_and_nothing_is_logged_as_signed(
    api: Service, body: dict[str, Any], status: int, slug: str
) -> None:
    response = _sign(api, api.auth("sign"), **body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith(slug)
    assert _entries(api, "signature.created") == []


def test_malformed_signature_is_422_with_the_logged_verdict(api: Service) -> None:
    auth = api.auth("verify")
    for body in (
        {"format": "jws", "signature": "not-a-jws"},
        {"format": "cms", "signature": _b64(b"not DER"), "payload_b64": _b64(PAYLOAD)},
        {"format": "xml", "signature": _b64(b"<unclosed")},
    ):
        response = api.client.post("/v1/signatures/verify", json=body, headers=auth)
        assert response.status_code == 422, response.text
        assert response.json()["verification"]["sub_indication"] == "FORMAT_FAILURE"
    assert len(_entries(api, "signature.verified")) == 3
    assert _entries(api, "signature.created") == []


def test_verify_refuses_unusable_requests(api: Service) -> None:
    auth = api.auth("verify")
    cases = [
        ({"format": "cms", "signature": "***", "payload_b64": _b64(PAYLOAD)}, 400),
        ({"format": "cms", "signature": _b64(b"x")}, 400),
        ({"format": "zip", "signature": "x"}, 422),
    ]
    for body, status in cases:
        assert api.client.post("/v1/signatures/verify", json=body, headers=auth).status_code == status
    assert _entries(api, "signature.verified") == []


def test_scopes_are_enforced(api: Service) -> None:
    assert _sign(api, {}, format="jws").status_code == 401
    assert _sign(api, api.auth("verify"), format="jws").status_code == 403
    body = {"format": "jws", "signature": "a.b.c"}
    assert api.client.post("/v1/signatures/verify", json=body, headers=api.auth("sign")).status_code == 403
    assert _entries(api, "signature.created") == []


def test_jwks_is_public_and_lists_the_certificates_with_their_purposes(api: Service) -> None:
    response = api.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    keys = {key["bhxh_purpose"]: key for key in response.json()["keys"]}
    assert set(keys) == {"receipt", "data-message"}
    for purpose, stem in (("receipt", "one-stop-signing"), ("data-message", "institution-data-message")):
        key = keys[purpose]
        assert key["alg"] == "PS256" and key["kty"] == "RSA" and "d" not in key
        leaf = x509.load_der_x509_certificate(base64.b64decode(key["x5c"][0]))
        assert leaf == x509.load_pem_x509_certificate((DEMO_KEYS / f"{stem}.crt.pem").read_bytes())
