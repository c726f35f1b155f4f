"""CMS / CAdES-B detached: `openssl cms -verify` accepts what we sign and rejects tampering; our
verifier names every failure with its ETSI sub-indication."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from signing import cms
from signing.algorithms import SignatureAlgorithm
from signing.errors import KeyNotUsable
from signing.keystore import KeyState, Keystore, SigningKey
from signing.results import Indication, SubIndication
from signing.trust import TrustPolicy
from tests.signing._pki import TestCa, bare_key, certified_key, now, openssl_cms_verify, pem, rsa_key, run_openssl

PAYLOAD = "Tờ khai tham gia BHXH — mẫu TK1-TS".encode() * 50


def _openssl_sign(tmp_path: Path, key: object, cert: object, payload: bytes, *extra: str) -> bytes:
    (tmp_path / "signer.key").write_bytes(pem(key))
    (tmp_path / "signer.crt").write_bytes(pem(cert))
    (tmp_path / "payload").write_bytes(payload)
    out = run_openssl(
        "cms",
        "-sign",
        "-binary",
        "-in",
        "payload",
        "-signer",
        "signer.crt",
        "-inkey",
        "signer.key",
        "-outform",
        "DER",
        "-out",
        "sig.der",
        *extra,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    return (tmp_path / "sig.der").read_bytes()


@pytest.mark.parametrize("kind", ["PS256", "ES256"])
def test_openssl_accepts_our_signature_and_rejects_a_changed_payload(tmp_path: Path, ca: TestCa, kind: str) -> None:
    private = rsa_key() if kind == "PS256" else ec.generate_private_key(ec.SECP256R1())
    key = certified_key(ca, private)
    sig = cms.sign(key, PAYLOAD, signed_at=now())
    accepted = openssl_cms_verify(tmp_path, sig.der, PAYLOAD, ca.cert, any_purpose=True)
    assert accepted.returncode == 0, accepted.stderr
    assert openssl_cms_verify(tmp_path, sig.der, PAYLOAD + b"!", ca.cert, any_purpose=True).returncode != 0
    store, trust = Keystore([key]), TrustPolicy([ca.cert])
    good = cms.verify(sig.der, PAYLOAD, store, trust, now=now())
    assert good.valid, good.reasons
    assert good.key_id == key.kid and good.signed_at == sig.signed_at
    assert good.algorithm is SignatureAlgorithm(kind)
    assert good.algorithm_identifier == {"PS256": "1.2.840.113549.1.1.10", "ES256": "1.2.840.10045.4.3.2"}[kind]
    bad = cms.verify(sig.der, PAYLOAD + b"!", store, trust, now=now())
    assert bad.sub_indication is SubIndication.HASH_FAILURE and bad.indication is Indication.TOTAL_FAILED
    assert bad.valid is False and bad.algorithm is SignatureAlgorithm(kind)


def _certificates(der: bytes) -> list[bytes]:
    return [c.chosen.dump() for c in asn1_cms.ContentInfo.load(der)["content"]["certificates"]]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _intermediate(root: TestCa) -> TestCa:
    key = ec.generate_private_key(ec.SECP256R1())
    t = now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Issuing CA")]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(t - timedelta(days=1))
        .not_valid_after(t + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False)
        .sign(root.key, hashes.SHA256())
    )
    return TestCa(key, cert)


@pytest.mark.parametrize("kind", ["PS256", "ES256"])
def test_the_signer_certificate_is_carried_once(tmp_path: Path, ca: TestCa, kind: str) -> None:
    # The keystore's chain starts with the signer's own certificate and ends with the root.
    key = certified_key(ca, rsa_key() if kind == "PS256" else ec.generate_private_key(ec.SECP256R1()))
    assert key.certificate is not None and key.chain[0] == key.certificate
    sig = cms.sign(key, PAYLOAD, signed_at=now())
    # Exactly the signer's certificate: once, and no root (the verifier has its own anchors).
    assert _certificates(sig.der) == [_der(key.certificate)]
    accepted = openssl_cms_verify(tmp_path, sig.der, PAYLOAD, ca.cert, any_purpose=True)
    assert accepted.returncode == 0, accepted.stderr
    assert cms.verify(sig.der, PAYLOAD, Keystore([key]), TrustPolicy([ca.cert]), now=now()).valid


def test_a_chain_through_an_issuing_ca_is_carried_one_certificate_each(tmp_path: Path, ca: TestCa) -> None:
    issuing = _intermediate(ca)
    private = ec.generate_private_key(ec.SECP256R1())
    leaf = issuing.issue(private.public_key(), "Signer under an issuing CA")
    key = SigningKey.create(private, (leaf, issuing.cert, ca.cert), created_at=now() - timedelta(days=1))
    sig = cms.sign(key, PAYLOAD, signed_at=now())
    certificates = _certificates(sig.der)
    assert len(certificates) == len(set(certificates)) == 2
    assert set(certificates) == {_der(leaf), _der(issuing.cert)}
    # Only the root is given to openssl: the issuing CA has to come from the signature itself.
    accepted = openssl_cms_verify(tmp_path, sig.der, PAYLOAD, ca.cert, any_purpose=True)
    assert accepted.returncode == 0, accepted.stderr
    result = cms.verify(sig.der, PAYLOAD, Keystore([key]), TrustPolicy([ca.cert]), now=now())
    assert result.valid, result.reasons


def test_rsa_signatures_use_pss_and_carry_cades_signed_attributes(ca: TestCa) -> None:
    sig = cms.sign(certified_key(ca, rsa_key()), PAYLOAD, signed_at=now())
    signer_info = asn1_cms.ContentInfo.load(sig.der)["content"]["signer_infos"][0]
    assert signer_info["signature_algorithm"]["algorithm"].native == "rsassa_pss"
    attrs = {a["type"].native for a in signer_info["signed_attrs"]}
    assert {"content_type", "message_digest", "signing_time", "signing_certificate_v2"} <= attrs


def test_demo_one_stop_certificate_signature_is_accepted_by_openssl(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "keys.example"  # committed: never missing
    from signing.keystore import SigningKey, parse_certificates, parse_pkcs8

    private = parse_pkcs8(
        (demo / "one-stop-signing.key.pem").read_bytes(), (demo / "passphrase.txt").read_bytes().strip()
    )
    chain = parse_certificates((demo / "one-stop-signing.crt.pem").read_bytes() + (demo / "ca.crt.pem").read_bytes())
    key = SigningKey.create(private, chain, created_at=now())
    sig = cms.sign(key, PAYLOAD, signed_at=now())
    # The exact command of the acceptance criteria (default purpose: S/MIME signing).
    out = openssl_cms_verify(tmp_path, sig.der, PAYLOAD, demo / "ca.crt.pem")
    assert out.returncode == 0, out.stderr


def test_changed_signature_value_gives_sig_crypto_failure(ca: TestCa) -> None:
    key = certified_key(ca, rsa_key())
    content = asn1_cms.ContentInfo.load(cms.sign(key, PAYLOAD, signed_at=now()).der)
    signer_info = content["content"]["signer_infos"][0]
    value = bytearray(signer_info["signature"].native)
    value[10] ^= 0x01
    signer_info["signature"] = bytes(value)
    result = cms.verify(content.dump(force=True), PAYLOAD, Keystore([key]), TrustPolicy([ca.cert]), now=now())
    assert result.sub_indication is SubIndication.SIG_CRYPTO_FAILURE


def test_sha1_signature_gives_crypto_constraints_failure(tmp_path: Path, ca: TestCa) -> None:
    private = rsa_key()
    cert = ca.issue(private.public_key())
    der = _openssl_sign(tmp_path, private, cert, PAYLOAD, "-md", "sha1")
    result = cms.verify(der, PAYLOAD, Keystore(), TrustPolicy([ca.cert]), now=now())
    assert result.sub_indication is SubIndication.CRYPTO_CONSTRAINTS_FAILURE
    assert "sha1" in result.reasons[0]


def test_rsa_1024_signer_gives_crypto_constraints_failure(tmp_path: Path, ca: TestCa) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    der = _openssl_sign(tmp_path, private, ca.issue(private.public_key()), PAYLOAD)
    result = cms.verify(der, PAYLOAD, Keystore(), TrustPolicy([ca.cert]), now=now())
    assert result.sub_indication is SubIndication.CRYPTO_CONSTRAINTS_FAILURE
    assert "1024" in result.reasons[0]


# DSA keys are what this test refuses; cryptography's own deprecation notice about them is expected.
@pytest.mark.filterwarnings("ignore:DSA is deprecated")
@pytest.mark.parametrize(
    "make", [lambda: ec.generate_private_key(ec.SECP256K1()), lambda: dsa.generate_private_key(2048)]
)
def test_unsupported_signer_key_type_gives_crypto_constraints_failure(tmp_path: Path, ca: TestCa, make) -> None:
    private = make()
    der = _openssl_sign(tmp_path, private, ca.issue(private.public_key()), PAYLOAD)
    result = cms.verify(der, PAYLOAD, Keystore(), TrustPolicy([ca.cert]), now=now())
    assert result.sub_indication is SubIndication.CRYPTO_CONSTRAINTS_FAILURE


def test_signer_from_an_unknown_ca_gives_no_certificate_chain_found(ca: TestCa) -> None:
    key = certified_key(ca, rsa_key())
    der = cms.sign(key, PAYLOAD, signed_at=now()).der
    other = TestCa.create("Another CA")
    result = cms.verify(der, PAYLOAD, Keystore(), TrustPolicy([other.cert]), now=now())
    assert result.sub_indication is SubIndication.NO_CERTIFICATE_CHAIN_FOUND
    assert result.indication is Indication.INDETERMINATE
    assert result.signer is not None and result.signer.kid is None


def test_empty_trust_list_trusts_nothing(ca: TestCa) -> None:
    key = certified_key(ca, rsa_key())
    der = cms.sign(key, PAYLOAD, signed_at=now()).der
    result = cms.verify(der, PAYLOAD, Keystore([key]), TrustPolicy([]), now=now())
    assert result.sub_indication is SubIndication.NO_CERTIFICATE_CHAIN_FOUND


def test_expired_signer_certificate_gives_expired(ca: TestCa) -> None:
    t = now()
    key = certified_key(ca, rsa_key(), not_before=t - timedelta(days=30), not_after=t - timedelta(days=1))
    der = cms.sign(key, PAYLOAD, signed_at=t - timedelta(days=2)).der
    result = cms.verify(der, PAYLOAD, Keystore([key]), TrustPolicy([ca.cert]), now=t)
    assert result.sub_indication is SubIndication.EXPIRED


def test_signature_claiming_a_time_before_the_certificate_gives_not_yet_valid(ca: TestCa) -> None:
    t = now()
    key = certified_key(ca, rsa_key(), not_before=t - timedelta(hours=1))
    der = cms.sign(key, PAYLOAD, signed_at=t - timedelta(days=3)).der
    result = cms.verify(der, PAYLOAD, Keystore([key]), TrustPolicy([ca.cert]), now=t)
    assert result.sub_indication is SubIndication.NOT_YET_VALID
    assert result.indication is Indication.TOTAL_FAILED


def test_certificate_not_yet_valid_at_validation_time_gives_not_yet_valid(ca: TestCa) -> None:
    t = now()
    key = certified_key(ca, rsa_key(), not_before=t + timedelta(days=1), not_after=t + timedelta(days=30))
    der = cms.sign(key, PAYLOAD, signed_at=t + timedelta(days=2)).der
    result = cms.verify(der, PAYLOAD, Keystore([key]), TrustPolicy([ca.cert]), now=t)
    assert result.sub_indication is SubIndication.NOT_YET_VALID


def test_certificate_revoked_in_a_local_crl_gives_revoked(ca: TestCa) -> None:
    t = now()
    key = certified_key(ca, rsa_key())
    der = cms.sign(key, PAYLOAD, signed_at=t).der
    crl = ca.crl([(key.certificate.serial_number, t - timedelta(hours=2))])  # type: ignore[union-attr]
    result = cms.verify(der, PAYLOAD, Keystore([key]), TrustPolicy([ca.cert], [crl]), now=t)
    assert result.sub_indication is SubIndication.REVOKED
    assert result.indication is Indication.TOTAL_FAILED


def test_revocation_after_the_claimed_signing_time_gives_revoked_no_poe(ca: TestCa) -> None:
    t = now()
    key = certified_key(ca, rsa_key())
    der = cms.sign(key, PAYLOAD, signed_at=t - timedelta(hours=5)).der
    crl = ca.crl([(key.certificate.serial_number, t - timedelta(hours=1))])  # type: ignore[union-attr]
    result = cms.verify(der, PAYLOAD, Keystore([key]), TrustPolicy([ca.cert], [crl]), now=t)
    assert result.sub_indication is SubIndication.REVOKED_NO_POE
    assert result.indication is Indication.INDETERMINATE


def test_keystore_revocation_before_the_signing_time_gives_revoked(ca: TestCa) -> None:
    t = now()
    key = certified_key(ca, rsa_key())
    der = cms.sign(key, PAYLOAD, signed_at=t).der
    revoked = replace(key, state=KeyState.REVOKED, revoked_at=t - timedelta(minutes=1), private_key=None)
    result = cms.verify(der, PAYLOAD, Keystore([revoked]), TrustPolicy([ca.cert]), now=t)
    assert result.sub_indication is SubIndication.REVOKED
    assert result.key_id == key.kid


@pytest.mark.parametrize("blob", [b"", b"garbage", b"\x30\x03\x02\x01\x01", bytes(200)])
def test_garbage_gives_format_failure(ca: TestCa, blob: bytes) -> None:
    result = cms.verify(blob, PAYLOAD, Keystore(), TrustPolicy([ca.cert]), now=now())
    assert result.sub_indication is SubIndication.FORMAT_FAILURE


def test_attached_signature_gives_format_failure(tmp_path: Path, ca: TestCa) -> None:
    private = rsa_key()
    der = _openssl_sign(tmp_path, private, ca.issue(private.public_key()), PAYLOAD, "-nodetach")
    result = cms.verify(der, PAYLOAD, Keystore(), TrustPolicy([ca.cert]), now=now())
    assert result.sub_indication is SubIndication.FORMAT_FAILURE


def test_signature_without_certificate_gives_no_signing_certificate_found(tmp_path: Path, ca: TestCa) -> None:
    private = rsa_key()
    der = _openssl_sign(tmp_path, private, ca.issue(private.public_key()), PAYLOAD, "-nocerts")
    result = cms.verify(der, PAYLOAD, Keystore(), TrustPolicy([ca.cert]), now=now())
    assert result.sub_indication is SubIndication.NO_SIGNING_CERTIFICATE_FOUND


def test_key_without_certificate_cannot_sign_cms() -> None:
    with pytest.raises(KeyNotUsable):
        cms.sign(bare_key("ES256"), PAYLOAD, signed_at=now())


def test_ed25519_key_cannot_sign_cms(ca: TestCa) -> None:
    # OpenSSL 3.0 cannot verify RFC 8419 Ed25519 signer infos with signed attributes.
    with pytest.raises(KeyNotUsable):
        cms.sign(certified_key(ca, ed25519.Ed25519PrivateKey.generate()), PAYLOAD, signed_at=now())


def test_foreign_rsa_pkcs1_signature_from_a_trusted_ca_is_accepted(tmp_path: Path, ca: TestCa) -> None:
    private = rsa_key()
    der = _openssl_sign(tmp_path, private, ca.issue(private.public_key(), "Portal"), PAYLOAD)
    result = cms.verify(der, PAYLOAD, Keystore(), TrustPolicy([ca.cert]), now=now())
    assert result.valid, result.reasons
    assert result.key_id is None and result.signer is not None and result.signer.subject == "CN=Portal,C=VN"
    assert result.algorithm is SignatureAlgorithm.RS256


@pytest.mark.parametrize(
    ("kind", "extra", "name"),
    [
        ("rsa", ("-md", "sha384"), SignatureAlgorithm.RS384),
        ("rsa", ("-keyopt", "rsa_padding_mode:pss", "-md", "sha512"), SignatureAlgorithm.PS512),
        ("ec", ("-md", "sha384"), SignatureAlgorithm.ES384),
    ],
    ids=["rsa-pkcs1-sha384", "rsa-pss-sha512", "ecdsa-sha384"],
)
def test_a_cms_made_elsewhere_is_named_as_the_other_formats_name_its_algorithm(
    tmp_path: Path, ca: TestCa, kind: str, extra: tuple[str, ...], name: SignatureAlgorithm
) -> None:
    private = rsa_key() if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    der = _openssl_sign(tmp_path, private, ca.issue(private.public_key(), "Portal"), PAYLOAD, *extra)
    result = cms.verify(der, PAYLOAD, Keystore(), TrustPolicy([ca.cert]), now=now())
    assert result.valid, result.reasons
    assert result.algorithm is name and result.to_dict()["algorithm"] == name.value
    oid = asn1_cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signature_algorithm"]["algorithm"].dotted
    assert result.algorithm_identifier == oid
