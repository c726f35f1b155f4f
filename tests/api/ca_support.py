"""A certification authority made in the test, standing in for the licensed Vietnamese CA that
answers the CSR of ``bhxh-integrity keys init``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signing.purposes import KeyPurpose, policy_for

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Licensed CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class TestCA:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    __test__ = False  # not a pytest class

    @classmethod
    def root(cls, common_name: str = "Test Licensed Root CA") -> TestCA:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = _name(common_name)
        return cls(key, cls._ca_cert(name, key, name, key))

    def subordinate(self, common_name: str = "Test Licensed Issuing CA") -> TestCA:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return TestCA(key, self._ca_cert(_name(common_name), key, self.cert.subject, self.key))

    @staticmethod
    def _ca_cert(
        subject: x509.Name, key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey
    ) -> x509.Certificate:
        now = datetime.now(UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=30))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256(), rsa_padding=PSS)
        )

    def issue(
        self,
        csr_pem: bytes,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        purpose: KeyPurpose | None = None,
    ) -> x509.Certificate:
        """A document-signing certificate for the CSR, as a CA issues it: the CSR's own
        signature checked first, the subject and key copied, the CA's extensions added (with
        ``purpose``, the certificate policy that marks it for that purpose)."""
        csr = x509.load_pem_x509_csr(csr_pem)
        assert csr.is_signature_valid
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(hours=1))
            .not_valid_after(not_after or now + timedelta(days=730))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CODE_SIGNING]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if purpose is not None:
            builder = builder.add_extension(policy_for(purpose), critical=False)
        return builder.sign(self.key, hashes.SHA256(), rsa_padding=PSS)
