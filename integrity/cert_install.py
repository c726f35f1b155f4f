"""Installing the certificates a licensed CA issued for the CSRs of ``keys init``
(``bhxh-integrity keys install-cert``): the receipt certificate and the data-message one.

The certificate is matched by its public key to one of the two keys the keys directory (or the
token) holds, which says where it goes; a certificate whose policies (docs/keys.md) mark it
for the other purpose is refused, since each key signs for one purpose only. Before the service
relies on it, it must be valid now and lead to a trust anchor: the root at the end of the chain
the operator gives, or one of ``BHXH_TRUST_ANCHOR_FILES``. The path is validated by
``signing.trust`` (RFC 5280 path validation, weak algorithms refused, key usage that allows
signing), as every signer is.

Only then are ``one-stop-signing.crt.pem`` or ``institution-data-message.crt.pem`` (the
certificate) and ``ca.crt.pem`` (the anchors, then the intermediate CAs, which the service
trusts and embeds in its signatures) replaced; any refusal leaves the directory as it was.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from integrity.errors import CertificateRefusal, CertificateRefused, ConfigurationError
from integrity.key_material import (
    CA_CERT,
    DATA_MESSAGE_CERT,
    DATA_MESSAGE_CSR,
    DATA_MESSAGE_KEY,
    SIGNING_CERT,
    SIGNING_KEY,
)
from signing.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    NoCertificateChain,
    VerificationFailure,
)
from signing.purposes import KeyPurpose, certificate_purpose
from signing.trust import TrustPolicy


@dataclass(frozen=True)
class CertifiableKey:
    """One of our keys a CA may certify, and the file its certificate is installed as."""

    purpose: KeyPurpose
    public_key: PublicKeyTypes
    certificate_file: str


@dataclass(frozen=True)
class InstalledCertificate:
    purpose: KeyPurpose
    certificate: Path
    anchors_file: Path
    subject: str
    issuer: str
    serial: str
    not_after: datetime
    path: tuple[str, ...]  # subjects, anchor first

    def to_dict(self) -> dict[str, object]:
        return {
            "purpose": str(self.purpose),
            "certificate": str(self.certificate),
            "ca_certificates": str(self.anchors_file),
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_after": self.not_after.isoformat(),
            "path": list(self.path),
        }


def read_certificates(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    """Every certificate of a PEM file, in order; UNREADABLE if there is none."""
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        certs = ()
    if not certs:
        raise CertificateRefused(f"{what} is not a PEM X.509 certificate", reason=CertificateRefusal.UNREADABLE)
    return certs


def signing_public_key(keys_dir: Path, passphrase: bytes | None) -> PublicKeyTypes:
    """The public half of ``one-stop-signing.key.pem``, which only the passphrase opens."""
    return _public_half(keys_dir / SIGNING_KEY, passphrase)


def data_message_public_key(keys_dir: Path, passphrase: bytes | None) -> PublicKeyTypes | None:
    """The public half of the data-message key: from ``institution-data-message.key.pem``, or,
    when ``keys init`` made the key on the token, from the CSR it signed there (its signature
    proves the key's holder made it); None for a keys directory made without one."""
    if (keys_dir / DATA_MESSAGE_KEY).exists():
        return _public_half(keys_dir / DATA_MESSAGE_KEY, passphrase)
    path = keys_dir / DATA_MESSAGE_CSR
    if not path.exists():
        return None
    try:
        csr = x509.load_pem_x509_csr(path.read_bytes())
        valid = csr.is_signature_valid
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path}: not a PEM certificate signing request") from exc
    if not valid:
        raise ConfigurationError(f"{path} does not carry a valid signature of its key")
    return csr.public_key()


def _public_half(path: Path, passphrase: bytes | None) -> PublicKeyTypes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {path}: {exc.strerror} (run `bhxh-integrity keys init` first, or set BHXH_RECEIPT_KEY_LABEL)"
        ) from exc
    if not passphrase:
        raise ConfigurationError("set BHXH_KEYS_PASSPHRASE_FILE: the private key is checked against the certificate")
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot open {path}: wrong passphrase or not an encrypted PKCS#8 PEM") from exc
    return key.public_key()


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def install_certificate(
    keys_dir: Path,
    cert_pem: bytes,
    chain_pem: bytes | None,
    *,
    keys: Sequence[CertifiableKey],
    trust_anchors: Sequence[x509.Certificate],
    now: datetime,
) -> InstalledCertificate:
    """Check the CA's certificate for the one of ``keys`` it certifies and install it with its
    anchor and intermediates. ``cert_pem`` is the certificate (optionally followed by its
    chain), ``chain_pem`` the chain."""
    given = read_certificates(cert_pem, "the certificate file")
    leaf, rest = given[0], given[1:]
    if chain_pem is not None:
        rest += read_certificates(chain_pem, "the chain file")
    key = next((k for k in keys if _spki(k.public_key) == _spki(leaf.public_key())), None)
    if key is None:
        raise CertificateRefused(
            "the certificate does not certify this service's receipt or data-message key "
            "(was it issued for one of our CSRs?)",
            reason=CertificateRefusal.KEY_MISMATCH,
        )
    marked = certificate_purpose(leaf)
    if marked not in (None, key.purpose):
        raise CertificateRefused(
            f"the certificate certifies the {key.purpose} key but its policy marks it for {marked}: "
            f"ask the CA for a {key.purpose} certificate",
            reason=CertificateRefusal.WRONG_PURPOSE,
        )
    if now < leaf.not_valid_before_utc:
        raise CertificateRefused(
            f"the certificate is not valid yet (from {leaf.not_valid_before_utc.isoformat()})",
            reason=CertificateRefusal.NOT_YET_VALID,
        )
    if now > leaf.not_valid_after_utc:
        raise CertificateRefused(
            f"the certificate has expired ({leaf.not_valid_after_utc.isoformat()})", reason=CertificateRefusal.EXPIRED
        )
    # The operator vouches for the root it hands over with the chain, as for the configured anchors.
    anchors = [c for c in rest if _self_signed(c)] + list(trust_anchors)
    intermediates = [c for c in rest if not _self_signed(c)]
    if not anchors:
        raise CertificateRefused(
            "no trust anchor: give the chain up to the CA's root with --chain, or list the root in "
            "BHXH_TRUST_ANCHOR_FILES",
            reason=CertificateRefusal.UNTRUSTED,
        )
    try:
        path = TrustPolicy(anchors).validate(leaf, intermediates, moment=now)
    except NoCertificateChain as exc:
        raise CertificateRefused(
            "the certificate does not chain to a trusted anchor (the chain's root or BHXH_TRUST_ANCHOR_FILES)",
            reason=CertificateRefusal.UNTRUSTED,
        ) from exc
    except CertificateExpired as exc:
        raise CertificateRefused("a certificate of the chain has expired", reason=CertificateRefusal.EXPIRED) from exc
    except CertificateNotYetValid as exc:
        raise CertificateRefused(
            "a certificate of the chain is not valid yet", reason=CertificateRefusal.NOT_YET_VALID
        ) from exc
    except VerificationFailure as exc:
        reason = " ".join(str(exc).split())  # one line, whatever the validator wrote
        raise CertificateRefused(
            f"the certificate cannot sign for this service: {reason}", reason=CertificateRefusal.NOT_FOR_SIGNING
        ) from exc
    # Anchor first, then the intermediates down to the leaf's issuer; the CAs already installed
    # stay, since the other certificate (receipt or data-message) may chain to them.
    cas = [*_installed_cas(keys_dir), *path[:-1]]
    cas = [c for i, c in enumerate(cas) if c not in cas[:i]]
    _replace_files(
        keys_dir,
        {
            CA_CERT: b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas),
            key.certificate_file: leaf.public_bytes(serialization.Encoding.PEM),
        },
    )
    return InstalledCertificate(
        purpose=key.purpose,
        certificate=keys_dir / key.certificate_file,
        anchors_file=keys_dir / CA_CERT,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        not_after=leaf.not_valid_after_utc,
        path=tuple(c.subject.rfc4514_string() for c in path),
    )


def _installed_cas(keys_dir: Path) -> list[x509.Certificate]:
    path = keys_dir / CA_CERT
    if not path.exists():
        return []
    try:
        return list(x509.load_pem_x509_certificates(path.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path}: not PEM X.509 certificates") from exc


def receipt_and_data_message(
    receipt: PublicKeyTypes, data_message: PublicKeyTypes | None
) -> tuple[CertifiableKey, ...]:
    """The keys ``keys install-cert`` may install a certificate for."""
    keys = [CertifiableKey(KeyPurpose.RECEIPT, receipt, SIGNING_CERT)]
    if data_message is not None:
        keys.append(CertifiableKey(KeyPurpose.DATA_MESSAGE, data_message, DATA_MESSAGE_CERT))
    return tuple(keys)


def _replace_files(keys_dir: Path, contents: dict[str, bytes]) -> None:
    """Write every file beside its final name first, then rename them all (each rename is
    atomic), so a failed write installs nothing."""
    staged: list[tuple[Path, Path]] = []
    try:
        for name, data in contents.items():
            final = keys_dir / name
            temp = keys_dir / f".{name}.new"
            temp.write_bytes(data)
            temp.chmod(0o644)
            staged.append((temp, final))
        for temp, final in staged:
            os.replace(temp, final)
    except OSError as exc:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
        raise ConfigurationError(f"cannot write to {keys_dir}: {exc.strerror}") from exc
