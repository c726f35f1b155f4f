"""People with a TOTP second factor and a personal key on the SoftHSM2 token, certified by the
demo CA of keys.example/ in the person's own name, for the personal signing tests."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from integrity.devpki import DEMO_PASSPHRASE
from signing.algorithms import Algorithm
from signing.purposes import KeyPurpose, policy_for
from tests.auth.support import STRONG, rfc6238, secret_from_uri, step_of
from tests.conftest import DEMO_KEYS
from tests.token_support import SoftToken
from tests.tools import require_tool

DEMO_CA = DEMO_KEYS / "ca.crt.pem"
# Something a person signs: text with Vietnamese letters, and a small PDF (tests/signing).
LETTER = "Tôi, Nguyễn Thị Lan, xác nhận đã nhận hồ sơ 000.00.31.H29-251206-0001.".encode()


def demo_ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((DEMO_KEYS / "ca.key.pem").read_bytes(), DEMO_PASSPHRASE.encode())
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, x509.load_pem_x509_certificate(DEMO_CA.read_bytes())


def personal_certificate(
    public_key: Any, full_name: str, purpose: KeyPurpose = KeyPurpose.PERSONAL
) -> x509.Certificate:
    """A certificate the demo CA issues to a person, as a licensed CA would: their name as the
    subject, signing key usages, emailProtection (what `openssl cms -verify` expects)."""
    ca_key, ca_cert = demo_ca()
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"), x509.NameAttribute(NameOID.COMMON_NAME, full_name)]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(policy_for(purpose), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


@dataclass
class SigningPerson:
    name: str
    secret: bytes
    token: str  # a full session
    kid: str | None = None

    def code(self, clock: Any) -> str:
        return rfc6238(self.secret, step_of(clock))

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def enrol(service: Any, name: str, role: str = "officer") -> SigningPerson:
    """An account with TOTP enrolled and a full session; the clock moves past the code used."""
    accounts = service.state.accounts
    accounts.create_user(name, STRONG, role, actor="user:root", reason="new staff member")
    first = accounts.login(name, STRONG, address="192.0.2.10")
    assert first.token is not None
    enrolment = accounts.begin_totp_enrolment(first.token)
    secret = secret_from_uri(enrolment.otpauth_uri)
    done = accounts.confirm_totp_enrolment(first.token, rfc6238(secret, step_of(service.clock)))
    service.clock.advance(30)
    return SigningPerson(name, secret, done.token)


def token_key(soft_token: SoftToken, full_name: str, algorithm: Algorithm = Algorithm.ES256) -> tuple[str, Path, Any]:
    """A key pair made on the token by the HSM officer (label), and the chain a CA issued for it
    in ``full_name``, written to a PEM file."""
    label, public_key = soft_token.officer_key(algorithm, "person")
    cert = personal_certificate(public_key, full_name)
    _, ca_cert = demo_ca()
    chain = soft_token.pin_file.parent / f"{label}.chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, ca_cert)))
    return label, chain, cert


def give_key(service: Any, soft_token: SoftToken, person: SigningPerson, full_name: str) -> SigningPerson:
    """``person``'s personal key, imported with its certificate as ``keys import-token --owner`` does."""
    from signing.keystore import parse_certificates

    label, chain, _ = token_key(soft_token, full_name)
    record = service.state.personal_signing.import_token_key(
        person.name, label, parse_certificates(chain.read_bytes()), actor="operator:root"
    )
    person.kid = record.kid
    return person


def entries(service: Any, action: str) -> list[Any]:
    audit = service.state.audit
    return [e for e in audit.entries(0, audit.size()) if e.action == action]


def pyhanko_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """pyHanko's own command line, against the demo CA only."""
    local = Path(sys.executable).parent / "pyhanko"
    cli = str(local) if local.exists() else require_tool("pyhanko", "pip package pyhanko-cli")
    return subprocess.run(
        [cli, "sign", "validate", "--pretty-print", "--trust", str(DEMO_CA), "--trust-replace", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
