"""The receipt (PAdES) key on a PKCS#11 token (SoftHSM2): receipts are signed there, verify as
issued by the system, and the key file is not read; a key that does not match the certificate
stops start-up (a key of the wrong type, a label that names nothing, no token:
tests/api/test_token_keys.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.reader import PdfFileReader

from integrity.errors import ConfigurationError
from signing.algorithms import Algorithm
from signing.keystore import key_id_for
from tests.api.test_receipts_api import body
from tests.conftest import DEMO_KEYS, Service, demo_keys_without
from tests.signing._pki import TestCa
from tests.token_support import SoftToken


def _demo_ca() -> TestCa:
    passphrase = (DEMO_KEYS / "passphrase.txt").read_bytes().strip()
    key = serialization.load_pem_private_key((DEMO_KEYS / "ca.key.pem").read_bytes(), passphrase)
    return TestCa(key, x509.load_pem_x509_certificate((DEMO_KEYS / "ca.crt.pem").read_bytes()))  # type: ignore[arg-type]


def _keys_for(tmp_path: Path, certificate: x509.Certificate) -> Path:
    """The demo keys without ``one-stop-signing.key.pem`` (the token holds the key), with the
    certificate the CA issued for the token key in its place."""
    keys = demo_keys_without(tmp_path, "one-stop-signing.key.pem")
    (keys / "one-stop-signing.crt.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return keys


@pytest.mark.parametrize("algorithm", [Algorithm.PS256, Algorithm.ES256], ids=["rsa-pss", "p256"])
def test_receipts_are_signed_by_the_key_on_the_token(
    db_url: str, soft_token: SoftToken, tmp_path: Path, algorithm: Algorithm
) -> None:
    label, public = soft_token.officer_key(algorithm, "receipt")
    certificate = _demo_ca().issue(public, "BHXH một cửa (token)")
    svc = Service(db_url, keys_dir=_keys_for(tmp_path, certificate), receipt_key_label=label, **soft_token.settings())
    try:
        issued = svc.client.post("/v1/receipts", json=body(), headers=svc.auth("receipts:issue"))
        assert issued.status_code == 201, issued.text
        code = issued.json()["code"]
        pdf = svc.client.get(f"/v1/receipts/{code}/pdf", headers=svc.auth("receipts:read")).content
        # The signature in the PDF is the token key's: its signer certificate is the new one.
        (embedded,) = PdfFileReader(io.BytesIO(pdf)).embedded_signatures
        assert embedded.signer_cert.dump() == certificate.public_bytes(serialization.Encoding.DER)
        verdict = svc.client.post(
            "/v1/receipts/verify", content=pdf, headers={**svc.auth("verify"), "Content-Type": "application/pdf"}
        ).json()
        assert verdict["issued_by_system"] is True and verdict["reasons"] == []
        assert verdict["signature"]["intact"] is True and verdict["signature"]["trusted_signer"] is True
        # The receipt key is not seeded into the data-message keystore, whose retiring would
        # erase it from the token.
        assert key_id_for(public) not in {record.kid for record in svc.state.signatures.list_keys()}
        # Readiness watches the token key's certificate although the keystore does not hold it.
        ready = svc.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"][f"certificate:receipt:{key_id_for(public)}"]["status"] == "ok"
    finally:
        svc.close()


def test_a_token_receipt_key_that_is_not_the_certificates_stops_start_up(
    db_url: str, soft_token: SoftToken, tmp_path: Path
) -> None:
    _, public = soft_token.officer_key(Algorithm.ES256, "receipt")
    other_label, _ = soft_token.officer_key(Algorithm.ES256, "receipt")
    keys = _keys_for(tmp_path, _demo_ca().issue(public, "BHXH một cửa (token)"))
    with pytest.raises(ConfigurationError, match="cannot set up receipt signing: the private key does not match"):
        Service(db_url, keys_dir=keys, receipt_key_label=other_label, **soft_token.settings())
