"""A throwaway PKI for the signing tests: a root CA that issues certificates on demand (any
key, validity window, key usage or hash) and CRLs. Nothing here is used outside tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from signing.keystore import SigningKey
from tests.tools import require_tool

SIGNING_USAGE = x509.KeyUsage(True, True, False, False, False, False, False, False, False)
ENCIPHER_ONLY_USAGE = x509.KeyUsage(False, False, True, False, False, False, False, False, False)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class TestCa:
    __test__ = False  # not a test class, despite the name
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, cn: str = "Test Root CA") -> TestCa:
        key = ec.generate_private_key(ec.SECP256R1())
        t = now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(t - timedelta(days=3650))
            .not_valid_after(t + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        public_key: object,
        cn: str = "Test Signer",
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        usage: x509.KeyUsage = SIGNING_USAGE,
        hash_algorithm: hashes.HashAlgorithm | None = None,
    ) -> x509.Certificate:
        t = now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or t - timedelta(days=1))
            .not_valid_after(not_after or t + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        return builder.sign(self.key, hash_algorithm or hashes.SHA256())

    def crl(self, revoked: list[tuple[int, datetime]]) -> bytes:
        t = now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(t - timedelta(hours=1))
            .next_update(t + timedelta(days=7))
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


_RSA_CACHE: dict[int, rsa.RSAPrivateKey] = {}


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """RSA generation is slow; the tests share one key per size."""
    if bits not in _RSA_CACHE:
        _RSA_CACHE[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _RSA_CACHE[bits]


def certified_key(ca: TestCa, private_key: object, cn: str = "Test Signer", **issue: object) -> SigningKey:
    cert = ca.issue(private_key.public_key(), cn, **issue)  # type: ignore[attr-defined]
    return SigningKey.create(private_key, (cert, ca.cert), created_at=now() - timedelta(days=1))  # type: ignore[arg-type]


def bare_key(kind: str) -> SigningKey:
    private = {
        "Ed25519": ed25519.Ed25519PrivateKey.generate,
        "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "PS256": lambda: rsa_key(2048),
    }[kind]()
    return SigningKey.create(private, (), created_at=now() - timedelta(days=1))  # type: ignore[arg-type]


def pem(obj: object) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def run_openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the openssl command line (skips, or fails in CI, when it is not installed)."""
    openssl = require_tool("openssl", "openssl")
    return subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def openssl_cms_verify(
    workdir: Path, der: bytes, payload: bytes, ca: x509.Certificate | Path, *, any_purpose: bool = False
) -> subprocess.CompletedProcess[str]:
    """`openssl cms -verify` of a detached CMS signature over ``payload`` against one trust anchor.

    ``ca`` is a certificate (written beside the signature) or the path of a PEM file. By default
    openssl checks the S/MIME signing purpose, as an outside verifier would; ``any_purpose`` drops
    that check for test certificates that carry no extended key usage.
    """
    (workdir / "sig.der").write_bytes(der)
    (workdir / "payload").write_bytes(payload)
    if isinstance(ca, x509.Certificate):
        (workdir / "ca.pem").write_bytes(pem(ca))
        ca = workdir / "ca.pem"
    purpose = ("-purpose", "any") if any_purpose else ()
    return run_openssl(
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        "sig.der",
        "-content",
        "payload",
        "-CAfile",
        str(ca),
        *purpose,
        "-out",
        "/dev/null",
        cwd=workdir,
    )
