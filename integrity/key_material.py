"""The production key material (``bhxh-integrity keys init``): the keys this service owns, and a
certificate signing request for each of the two keys a licensed CA must certify.

The service owns the audit log's checkpoint key (Ed25519, C2SP signed notes), the key that
encrypts secrets at rest, and the gateway's RFC 9421 key. The one-stop system's receipt
certificate (PAdES receipts) and the institution's data-message certificate (JWS, CMS, XML)
must come from a licensed Vietnamese CA, so only their keys and CSRs are made here (``keys
install-cert`` installs what the CA sends back); each key has one purpose (docs/keys.md).
Private keys are written as encrypted PKCS#8 under the service's passphrase; with a PKCS#11
token configured, the checkpoint, gateway, receipt and data-message keys are made on the token
instead (sensitive, never extractable) and only their labels and public halves leave it.

Every file is checked before anything is made: an existing key is never overwritten.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

from audit.checkpoint import origin_for
from integrity.devpki import note_verifier_key
from integrity.errors import ConfigurationError, KeyFileExists
from integrity.keys import DATA_MESSAGE_CERT_FILE, DATA_MESSAGE_KEY_FILE, SECRETS_KEY_BYTES
from integrity.settings import Settings
from signing.algorithms import Algorithm
from signing.errors import SigningError
from signing.pkcs11 import KeyToken, token_object_id

# The one-stop signing (receipt) and data-message keys: RSA 3072, what the demo PKI and the national CAs' signing
# certificates use (RSA ≥ 2048 under Circular 15/2025/TT-BKHCN, RSASSA-PSS with SHA-256).
RECEIPT_RSA_BITS = 3072
# A passphrase an operator can type still has to resist an offline guess at the PKCS#8 files.
MIN_PASSPHRASE_BYTES = 12

AUDIT_KEY = "audit-log.key.pem"
AUDIT_PUBLIC = "audit-log.pub.pem"
AUDIT_VKEY = "audit-log.vkey"
SECRETS_KEY = "secrets.key"
GATEWAY_KEY = "gateway-exchange.key.pem"
GATEWAY_PUBLIC = "gateway-exchange.pub.pem"
SIGNING_KEY = "one-stop-signing.key.pem"
SIGNING_CSR = "one-stop-signing.csr.pem"
SIGNING_CERT = "one-stop-signing.crt.pem"
DATA_MESSAGE_KEY = DATA_MESSAGE_KEY_FILE
DATA_MESSAGE_CSR = "institution-data-message.csr.pem"
DATA_MESSAGE_CERT = DATA_MESSAGE_CERT_FILE
CA_CERT = "ca.crt.pem"
# What the data-message CSR asks for by default: a name that says the certificate's purpose.
DATA_MESSAGE_COMMON_NAME = "BHXH Institution Data Message Signing"
# Every file ``keys init`` or ``keys install-cert`` may write: if any is there, the directory
# already holds key material, and ``keys init`` refuses rather than mix two generations.
MANAGED_FILES = (
    AUDIT_KEY,
    AUDIT_PUBLIC,
    AUDIT_VKEY,
    SECRETS_KEY,
    GATEWAY_KEY,
    GATEWAY_PUBLIC,
    SIGNING_KEY,
    SIGNING_CSR,
    SIGNING_CERT,
    DATA_MESSAGE_KEY,
    DATA_MESSAGE_CSR,
    DATA_MESSAGE_CERT,
    CA_CERT,
)


class KeyRole(StrEnum):
    """The keys ``keys init`` makes that may live on a PKCS#11 token, with their label setting."""

    CHECKPOINT = "checkpoint"
    GATEWAY = "gateway"
    RECEIPT = "receipt"
    DATA_MESSAGE = "data-message"

    @property
    def setting(self) -> str | None:
        """The setting naming this key on the token; None for the data-message key, which joins
        the keystore (``keys import-token``) once the CA has certified it."""
        return None if self is KeyRole.DATA_MESSAGE else f"BHXH_{self.name}_KEY_LABEL"


@dataclass(frozen=True)
class CsrSubject:
    """The subject the CSR asks for; the CA decides what it finally certifies."""

    common_name: str = "BHXH One-Stop System Signing"
    organization: str = "Bảo hiểm xã hội Việt Nam"
    country: str = "VN"

    def name(self) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, self.country),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                x509.NameAttribute(NameOID.COMMON_NAME, self.common_name),
            ]
        )


@dataclass(frozen=True)
class KeyInitReport:
    out: Path
    files: tuple[Path, ...]
    token_labels: dict[KeyRole, str]
    verifier_key: str
    csr: Path  # the receipt key's
    data_message_csr: Path
    next_steps: tuple[str, ...] = field(default=())

    @property
    def settings(self) -> dict[str, str]:
        """The token label settings the service needs (BHXH_…_KEY_LABEL → label)."""
        return {role.setting: label for role, label in self.token_labels.items() if role.setting is not None}

    def to_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out),
            "files": [str(p) for p in self.files],
            "token_labels": self.settings,
            "data_message_token_label": self.token_labels.get(KeyRole.DATA_MESSAGE),
            "verifier_key": self.verifier_key,
            "csr": str(self.csr),
            "data_message_csr": str(self.data_message_csr),
            "csrs": [str(self.csr), str(self.data_message_csr)],
            "next_steps": list(self.next_steps),
        }


def configured_passphrase(settings: Settings) -> bytes | None:
    """BHXH_KEYS_PASSPHRASE_FILE's content (or BHXH_KEYS_PASSPHRASE), None when neither is set."""
    try:
        return settings.passphrase()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the keys passphrase file {settings.keys_passphrase_file} "
            f"(BHXH_KEYS_PASSPHRASE_FILE): {exc.strerror}"
        ) from exc


def service_passphrase(settings: Settings) -> bytes:
    """The passphrase of the keys directory: the production keys are never written
    unencrypted, so there is no default."""
    passphrase = configured_passphrase(settings)
    if not passphrase:
        raise ConfigurationError(
            "no passphrase for the private keys: set BHXH_KEYS_PASSPHRASE_FILE (or BHXH_KEYS_PASSPHRASE)"
        )
    if len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise ConfigurationError(f"the keys passphrase must be at least {MIN_PASSPHRASE_BYTES} characters")
    return passphrase


def _encrypted(key: PrivateKeyTypes, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(passphrase)
    )


def _public_pem(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def signing_csr(key: rsa.RSAPrivateKey, subject: CsrSubject) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for a document-signing certificate (digitalSignature and
    nonRepudiation, RFC 5280 §4.2.1.3), signed RSASSA-PSS with SHA-256: the only RSA scheme a
    token key here offers, and the one the certificate itself must use."""
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject.name()).add_extension(usage, critical=True)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    return builder.sign(key, hashes.SHA256(), rsa_padding=pss)


def refuse_existing(out: Path, names: Sequence[str] = MANAGED_FILES) -> None:
    present = [name for name in names if (out / name).exists()]
    if present:
        more = f" and {len(present) - 1} more" if len(present) > 1 else ""
        raise KeyFileExists(
            f"{out} already holds key material ({present[0]}{more}): keys are never overwritten, choose another --out"
        )


def init_key_material(
    out: Path,
    *,
    passphrase: bytes,
    log_id: str,
    subject: CsrSubject = CsrSubject(),
    data_message_subject: CsrSubject = CsrSubject(common_name=DATA_MESSAGE_COMMON_NAME),
    token: KeyToken | None = None,
    label_prefix: str = "bhxh",
) -> KeyInitReport:
    """Make the service's keys and the receipt and data-message CSRs in ``out``. With ``token``
    the checkpoint, gateway, receipt and data-message keys are made on it; their labels are in
    the report."""
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out} exists and is not a directory")
    refuse_existing(out)
    contents: dict[str, tuple[bytes, int]] = {}  # name -> (data, mode); written once all is made
    labels: dict[KeyRole, str] = {}
    on_token: list[PrivateKeyTypes] = []
    suffix = secrets.token_hex(4)

    def make(role: KeyRole, algorithm: Algorithm, key_file: str) -> PrivateKeyTypes:
        """A new key: on the token when there is one (its label noted), else encrypted to ``key_file``."""
        if token is None:
            key: PrivateKeyTypes = (
                rsa.generate_private_key(public_exponent=65537, key_size=RECEIPT_RSA_BITS)
                if algorithm is Algorithm.PS256
                else ed25519.Ed25519PrivateKey.generate()
            )
            contents[key_file] = (_encrypted(key, passphrase), 0o600)
            return key
        label = f"{label_prefix}-{role.value}-{suffix}"
        try:
            key = token.generate(algorithm, rsa_bits=RECEIPT_RSA_BITS, label=label)
        except SigningError as exc:
            raise ConfigurationError(f"cannot make the {role.value} key on the PKCS#11 token: {exc}") from exc
        labels[role] = label
        on_token.append(key)
        return key

    try:
        return _make_all(
            out,
            contents,
            make,
            log_id=log_id,
            subjects={KeyRole.RECEIPT: subject, KeyRole.DATA_MESSAGE: data_message_subject},
            labels=labels,
        )
    except BaseException:
        # A refusal leaves nothing behind: not on the disk (``_write_all``), nor on the token.
        for object_id in filter(None, map(token_object_id, on_token)):
            assert token is not None
            with suppress(SigningError):  # the first failure is the one to report
                token.destroy(object_id)
        raise


def _make_all(
    out: Path,
    contents: dict[str, tuple[bytes, int]],
    make: Callable[[KeyRole, Algorithm, str], PrivateKeyTypes],
    *,
    log_id: str,
    subjects: dict[KeyRole, CsrSubject],
    labels: dict[KeyRole, str],
) -> KeyInitReport:
    audit_public = make(KeyRole.CHECKPOINT, Algorithm.ED25519, AUDIT_KEY).public_key()
    assert isinstance(audit_public, ed25519.Ed25519PublicKey)
    verifier_key = note_verifier_key(origin_for(log_id), audit_public)
    contents[AUDIT_PUBLIC] = (_public_pem(audit_public), 0o644)
    contents[AUDIT_VKEY] = ((verifier_key + "\n").encode(), 0o644)
    # A 256-bit AES-GCM key for secrets at rest (TOTP secrets), base64 on one line.
    contents[SECRETS_KEY] = (base64.b64encode(secrets.token_bytes(SECRETS_KEY_BYTES)) + b"\n", 0o600)
    contents[GATEWAY_PUBLIC] = (_public_pem(make(KeyRole.GATEWAY, Algorithm.ED25519, GATEWAY_KEY).public_key()), 0o644)
    # Two keys, two certificates: the receipt key never signs the bytes a caller sends.
    for role, key_file, csr_file in (
        (KeyRole.RECEIPT, SIGNING_KEY, SIGNING_CSR),
        (KeyRole.DATA_MESSAGE, DATA_MESSAGE_KEY, DATA_MESSAGE_CSR),
    ):
        key = make(role, Algorithm.PS256, key_file)
        assert isinstance(key, rsa.RSAPrivateKey)  # PS256: RSA, in memory or on the token
        contents[csr_file] = (signing_csr(key, subjects[role]).public_bytes(serialization.Encoding.PEM), 0o644)

    report = KeyInitReport(
        out, _write_all(out, contents), labels, verifier_key, out / SIGNING_CSR, out / DATA_MESSAGE_CSR
    )
    return replace(report, next_steps=next_steps(report))


def _write_all(out: Path, contents: dict[str, tuple[bytes, int]]) -> tuple[Path, ...]:
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, (data, mode) in contents.items():
            path = out / name
            # O_EXCL: a file that appeared since the check is still never overwritten.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(path)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
    except OSError as exc:
        for path in written:  # leave no half-made key set behind
            path.unlink(missing_ok=True)
        raise ConfigurationError(f"cannot write {out}: {exc.strerror}") from exc
    return tuple(written)


def next_steps(report: KeyInitReport) -> tuple[str, ...]:
    """What the operator does next, in order."""
    out = report.out
    steps = [
        f"Send both CSRs to a licensed Vietnamese CA: {report.csr} for the receipt (PAdES) certificate and "
        f"{report.data_message_csr} for the data-message (JWS, CMS, XML) certificate; ask for document-signing "
        "certificates (RSASSA-PSS, keyUsage digitalSignature + nonRepudiation); keep every private key here secret.",
        f"Install each certificate the CA returns: BHXH_KEYS_DIR={out} bhxh-integrity keys install-cert CERT.pem "
        "--chain CA-CHAIN.pem (it tells the two apart by their key; the chain ends at the CA's root, or list the "
        "root in BHXH_TRUST_ANCHOR_FILES).",
        f"Run the service with BHXH_KEYS_DIR={out} and BHXH_KEYS_PASSPHRASE_FILE, then `bhxh-integrity init` "
        "and `bhxh-integrity serve`.",
        f"Give the auditors {out / AUDIT_VKEY} (`audit verify --export FILE --public-key {AUDIT_VKEY}`).",
        f"Register the gateway's public key {out / GATEWAY_PUBLIC} with the portal and the one-stop system "
        "(keyid gateway).",
    ]
    if report.settings:
        settings = " ".join(f"{name}={label}" for name, label in report.settings.items())
        steps.insert(2, f"Set {settings} (the keys stay on the PKCS#11 token).")
    data_label = report.token_labels.get(KeyRole.DATA_MESSAGE)
    if data_label is not None:
        # No setting names a token data-message key: the keystore holds it, with its chain.
        steps.insert(
            3,
            f"Add the data-message key to the keystore once its certificate is installed: bhxh-integrity keys "
            f"import-token {data_label} --cert CERT-AND-CHAIN.pem (the certificate, then the CA chain).",
        )
    return tuple(steps)
