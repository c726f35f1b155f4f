"""The demonstration PKI (``bhxh-integrity keys dev-pki``): NOT FOR PRODUCTION.

Writes the files that keys.example/README.md lists, so a fresh clone can run, test and
demonstrate every flow. The root CA and every certificate here are made up; a production
deployment uses certificates from a licensed Vietnamese CA and keys held in a token.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signing.purposes import ID_KP_DOCUMENT_SIGNING, POLICY_OIDS, KeyPurpose, policy_for

DEMO_PASSPHRASE = "bhxh-demo-passphrase-NOT-FOR-PRODUCTION"
CA_NAME = "BHXH Demo Root CA"
AUDIT_KEY_NAME = "bhxh-integrity/audit/bhxh-vss-main"
_CA_YEARS = 10
_LEAF_YEARS = 5
DEMO_MARKER = "NOT-FOR-PRODUCTION"
_MARKER_TEXT = "This directory holds the demonstration PKI of bhxh-integrity. Never use it in production.\n"
# C2SP signed-note: the signature type byte of an Ed25519 verifier key.
_ED25519_NOTE_ALG = b"\x01"


@dataclass(frozen=True)
class _Leaf:
    stem: str
    common_name: str
    kind: str  # "rsa3072" or "ed25519"
    use: str
    # Document-signing certificates say what they sign (docs/keys.md): a certificate policy per
    # purpose, and id-kp-documentSigning for receipts, so that validators elsewhere can tell a
    # receipt's signer from a data message's.
    purpose: KeyPurpose | None = None


LEAVES = (
    _Leaf(
        "one-stop-signing",
        "BHXH One-Stop System Signing (DEMO)",
        "rsa3072",
        "receipts (PAdES) only",
        KeyPurpose.RECEIPT,
    ),
    _Leaf(
        "institution-data-message",
        "BHXH Data Message Signing (DEMO)",
        "rsa3072",
        "the institution's data messages: JWS PS256, CMS, XML",
        KeyPurpose.DATA_MESSAGE,
    ),
    _Leaf("portal-exchange", "portal", "ed25519", "RFC 9421 keyid portal"),
    _Leaf("one-stop-exchange", "one-stop", "ed25519", "RFC 9421 keyid one-stop"),
    _Leaf("gateway-exchange", "gateway", "ed25519", "RFC 9421 keyid gateway"),
)


def note_verifier_key(name: str, public_key: ed25519.Ed25519PublicKey) -> str:
    """C2SP signed-note verifier key: ``<name>+<hex key id>+<base64(0x01 ‖ key)>``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(name.encode() + b"\n" + _ED25519_NOTE_ALG + raw).digest()[:4]
    return f"{name}+{key_id.hex()}+{base64.b64encode(_ED25519_NOTE_ALG + raw).decode()}"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bảo hiểm xã hội Việt Nam (DEMO)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _encrypted_pem(key: object, passphrase: bytes) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def generate(out: Path, *, now: datetime, passphrase: str = DEMO_PASSPHRASE) -> list[Path]:
    """Write a complete demo PKI into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    pw = passphrase.encode()
    written: list[Path] = []

    def write(name: str, data: bytes) -> None:
        path = out / name
        path.write_bytes(data)
        written.append(path)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca_subject = _name(CA_NAME)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365 * _CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca.crt.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    write("ca.key.pem", _encrypted_pem(ca_key, pw))

    for leaf in LEAVES:
        key = _new_key(leaf)
        cert = _leaf_certificate(leaf, key.public_key(), ca_key, ca_cert, now)
        write(f"{leaf.stem}.crt.pem", cert.public_bytes(serialization.Encoding.PEM))
        write(f"{leaf.stem}.key.pem", _encrypted_pem(key, pw))

    audit_key = ed25519.Ed25519PrivateKey.generate()
    write("audit-log.key.pem", _encrypted_pem(audit_key, pw))
    write(
        "audit-log.pub.pem",
        audit_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    write("audit-log.vkey", (note_verifier_key(AUDIT_KEY_NAME, audit_key.public_key()) + "\n").encode())
    # A 256-bit AES-GCM key for secrets at rest (TOTP secrets), base64 on one line.
    write("secrets.key", base64.b64encode(secrets.token_bytes(32)) + b"\n")
    write("passphrase.txt", (passphrase + "\n").encode())
    write(DEMO_MARKER, _MARKER_TEXT.encode())
    write("README.md", _readme().encode())
    return written


def _new_key(leaf: _Leaf) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    if leaf.kind == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ed25519.Ed25519PrivateKey.generate()


def _leaf_certificate(
    leaf: _Leaf,
    public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    now: datetime,
) -> x509.Certificate:
    if leaf.kind == "rsa3072":
        # Document signing: non-repudiation (content commitment) and digitalSignature;
        # emailProtection so `openssl cms -verify` (and NSS, under pdfsig) accept it under
        # their default purpose; receipts add id-kp-documentSigning (RFC 9336).
        usage = [ExtendedKeyUsageOID.EMAIL_PROTECTION]
        if leaf.purpose is KeyPurpose.RECEIPT:
            usage.insert(0, ID_KP_DOCUMENT_SIGNING)
    else:
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(leaf.common_name))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365 * _LEAF_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if leaf.purpose is not None:
        builder = builder.add_extension(policy_for(leaf.purpose), critical=False)
    return builder.sign(ca_key, _hash_for(ca_key))


def issue_leaf(out: Path, stem: str, *, now: datetime, passphrase: str = DEMO_PASSPHRASE) -> list[Path]:
    """Issue one leaf certificate of ``LEAVES`` into the existing demo PKI ``out``, under its CA:
    for the key already there (``{stem}.key.pem``: a re-issued certificate, same key), or for a
    new key written beside it. Nothing else in ``out`` changes but the README's table, so the
    committed demo keys stay as they are. Returns the files written."""
    leaf = next((candidate for candidate in LEAVES if candidate.stem == stem), None)
    if leaf is None:
        raise ValueError(f"no demo leaf {stem!r}; known: {', '.join(candidate.stem for candidate in LEAVES)}")
    if not (out / DEMO_MARKER).exists():
        raise ValueError(f"{out} is not a demo PKI directory (no {DEMO_MARKER})")
    pw = passphrase.encode()
    ca_key = serialization.load_pem_private_key((out / "ca.key.pem").read_bytes(), pw)
    if not isinstance(ca_key, rsa.RSAPrivateKey):
        raise ValueError("the demo CA key must be RSA")
    ca_cert = x509.load_pem_x509_certificate((out / "ca.crt.pem").read_bytes())
    key_path, cert_path = out / f"{stem}.key.pem", out / f"{stem}.crt.pem"
    written: list[Path] = []
    if key_path.exists():
        public_key = serialization.load_pem_private_key(key_path.read_bytes(), pw).public_key()
        if not isinstance(public_key, (rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
            raise ValueError(f"{key_path} is neither RSA nor Ed25519")
    else:
        key = _new_key(leaf)
        key_path.write_bytes(_encrypted_pem(key, pw))
        written.append(key_path)
        public_key = key.public_key()
    cert_path.write_bytes(
        _leaf_certificate(leaf, public_key, ca_key, ca_cert, now).public_bytes(serialization.Encoding.PEM)
    )
    (out / "README.md").write_text(_readme())
    return [*written, cert_path, out / "README.md"]


def _readme() -> str:
    rows = "\n".join(
        f"| `{leaf.stem}.crt.pem`, `{leaf.stem}.key.pem` | {leaf.common_name}: {leaf.use} |" for leaf in LEAVES
    )
    return f"""# Demonstration PKI — NOT FOR PRODUCTION

Made by `bhxh-integrity keys dev-pki --out keys.example`. Every key here is public, because it
is committed to the repository: anything signed with it proves nothing. The service refuses
these keys unless it runs with `--demo` or `BHXH_DEMO=1`, and then logs a warning at start.
Production keys come from a licensed Vietnamese CA and live in a PKCS#11 token or an encrypted
key directory named by `BHXH_KEYS_DIR`.

Private keys are encrypted PKCS#8 PEM; the demo passphrase is in `passphrase.txt`.

| file | what |
| --- | --- |
| `ca.crt.pem`, `ca.key.pem` | demo root CA "{CA_NAME}" (RSA 3072) |
{rows}
| `audit-log.key.pem`, `audit-log.pub.pem` | the audit log's Ed25519 checkpoint key |
| `audit-log.vkey` | its C2SP signed-note verifier key, name `{AUDIT_KEY_NAME}` |
| `secrets.key` | base64 AES-256 key that encrypts TOTP secrets and other secrets at rest |
| `passphrase.txt` | the demo passphrase of the private keys |
| `{DEMO_MARKER}` | marker the service checks to recognise this directory as the demo PKI |

Each signing certificate says what it signs (docs/keys.md), so that a validator can tell a
receipt from a data message: the receipt certificate carries the certificate policy
`{POLICY_OIDS[KeyPurpose.RECEIPT].dotted_string}` and the extended key usage id-kp-documentSigning
(RFC 9336); the data-message certificate carries the policy
`{POLICY_OIDS[KeyPurpose.DATA_MESSAGE].dotted_string}`. The receipt key signs receipts only; data
messages (`POST /v1/signatures`, `bhxh-integrity sign`) are signed with the data-message key.
"""
