"""Trust policy: anchors, path constraints and revocation data, each failure with its
sub-indication; an empty anchor list trusts nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from signing.errors import (
    ChainConstraintsFailure,
    CryptoConstraintsFailure,
    KeyImportFailed,
    NoCertificateChain,
    SignerRevoked,
)
from signing.trust import TrustPolicy
from tests.signing._pki import ENCIPHER_ONLY_USAGE, TestCa, now, pem, rsa_key, run_openssl


def _cert(ca: TestCa, **kw: object):
    return ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), **kw)


def test_certificate_from_the_anchor_is_trusted(ca: TestCa) -> None:
    TrustPolicy([ca.cert]).validate(_cert(ca), moment=now())


def test_empty_anchor_list_trusts_nothing(ca: TestCa) -> None:
    with pytest.raises(NoCertificateChain):
        TrustPolicy([]).validate(_cert(ca), moment=now())


def test_certificate_that_may_not_sign_gives_chain_constraints_failure(ca: TestCa) -> None:
    with pytest.raises(ChainConstraintsFailure):
        TrustPolicy([ca.cert]).validate(_cert(ca, usage=ENCIPHER_ONLY_USAGE), moment=now())


def test_sha1_signed_certificate_gives_crypto_constraints_failure(tmp_path: Path, ca: TestCa) -> None:
    # cryptography refuses to make SHA-1 signatures; a legacy CA made with openssl still can.
    (tmp_path / "ca.key").write_bytes(pem(ca.key))
    (tmp_path / "ca.crt").write_bytes(pem(ca.cert))
    (tmp_path / "leaf.key").write_bytes(pem(rsa_key()))
    (tmp_path / "ext").write_text("keyUsage=critical,digitalSignature\n")
    steps = [
        ("req", "-new", "-key", "leaf.key", "-subj", "/CN=SHA1 leaf", "-out", "leaf.csr"),
        (
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-sha1",
            "-days",
            "30",
            "-extfile",
            "ext",
            "-out",
            "leaf.crt",
        ),
    ]
    for step in steps:
        out = run_openssl(*step, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    weak = x509.load_pem_x509_certificate((tmp_path / "leaf.crt").read_bytes())
    assert weak.signature_hash_algorithm.name == "sha1"
    with pytest.raises(CryptoConstraintsFailure):
        TrustPolicy([ca.cert]).validate(weak, moment=now())


def test_crl_files_are_read_and_applied(tmp_path: Path, ca: TestCa) -> None:
    cert = _cert(ca)
    (tmp_path / "ca.pem").write_bytes(pem(ca.cert))
    (tmp_path / "ca.crl").write_bytes(ca.crl([(cert.serial_number, now() - timedelta(hours=1))]))
    policy = TrustPolicy.from_files([tmp_path / "ca.pem"], [tmp_path / "ca.crl"])
    with pytest.raises(SignerRevoked):
        policy.validate(cert, moment=now())
    policy.validate(_cert(ca), moment=now())


def test_crl_signed_by_another_issuer_is_ignored(ca: TestCa) -> None:
    cert = _cert(ca)
    impostor = TestCa.create(ca.cert.subject.rfc4514_string())
    forged_crl = impostor.crl([(cert.serial_number, now() - timedelta(hours=1))])
    TrustPolicy([ca.cert], [forged_crl]).validate(cert, moment=now())


def test_unreadable_crl_or_anchor_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"not a crl")
    with pytest.raises(KeyImportFailed):
        TrustPolicy([], [b"not a crl"])
    with pytest.raises(KeyImportFailed):
        TrustPolicy.from_files([tmp_path / "bad"])
