"""The service's own key material, parsed once at start-up (never per request or signature).

A bad file or passphrase stops ``serve`` and ``init`` with a ``ConfigurationError`` naming the
file; the demonstration PKI is refused unless demo mode is on, and logged loudly when it is.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from audit.checkpoint import VerifierKey
from audit.errors import MalformedVerifierKey
from audit.export import load_verifier_keys
from integrity.devpki import AUDIT_KEY_NAME, CA_NAME, DEMO_MARKER
from integrity.errors import ConfigurationError, DemoKeysRefused
from integrity.settings import Settings
from signing.errors import KeyNotUsable, TokenError, WeakKey
from signing.pkcs11 import KeyToken
from signing.purposes import KeyPurpose, certificate_purpose

SECRETS_KEY_BYTES = 32
SIGNING_CERT_FILE = "one-stop-signing.crt.pem"
DATA_MESSAGE_KEY_FILE = "institution-data-message.key.pem"
DATA_MESSAGE_CERT_FILE = "institution-data-message.crt.pem"


@dataclass(frozen=True)
class CertifiedKey:
    private_key: PrivateKeyTypes
    certificate: x509.Certificate


@dataclass(frozen=True)
class ServiceKeys:
    keys_dir: Path
    passphrase: bytes | None
    ca_certificates: tuple[x509.Certificate, ...]
    audit_key: ed25519.Ed25519PrivateKey | None  # None when the checkpoint key is on the token
    audit_key_name: str
    secrets_key: bytes
    one_stop_certificate: x509.Certificate
    one_stop_key: PrivateKeyTypes | None  # None when BHXH_RECEIPT_KEY_LABEL puts it on the token
    gateway_exchange_key: PrivateKeyTypes | None  # gateway-exchange.key.pem, if there and no token label
    demo: bool
    # institution-data-message.key.pem and its certificate, if there: the institution's key for
    # data messages (JWS, CMS, XML), never the receipt key (docs/keys.md).
    data_message_key: CertifiedKey | None = None


def is_demo_dir(keys_dir: Path) -> bool:
    if (keys_dir / DEMO_MARKER).exists():
        return True
    ca = keys_dir / "ca.crt.pem"
    if ca.exists():
        try:
            cert = x509.load_pem_x509_certificate(ca.read_bytes())
        except ValueError:
            return False
        return any(a.value == CA_NAME for a in cert.subject)
    return False


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read key file {path}: {exc.strerror}") from exc


def _private(path: Path, passphrase: bytes | None) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(_read(path), passphrase)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot load private key {path}: wrong passphrase or not an encrypted PKCS#8 PEM"
        ) from exc


def _cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError as exc:
        raise ConfigurationError(f"cannot load certificate {path}: not a PEM X.509 certificate") from exc


def _ca_certs(path: Path) -> tuple[x509.Certificate, ...]:
    """``ca.crt.pem``: the trust anchor, then any intermediate CAs of the one-stop certificate's
    chain (``keys install-cert`` writes it so); all are trusted and sent along with signatures."""
    try:
        certs = tuple(x509.load_pem_x509_certificates(_read(path)))
    except ValueError as exc:
        raise ConfigurationError(f"cannot load certificate {path}: not a PEM X.509 certificate") from exc
    return certs


def resolve_passphrase(settings: Settings, keys_dir: Path, demo: bool) -> bytes | None:
    try:
        explicit = settings.passphrase()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read BHXH_KEYS_PASSPHRASE_FILE {settings.keys_passphrase_file}: {exc.strerror}"
        ) from exc
    if explicit is not None:
        return explicit
    if demo and (keys_dir / "passphrase.txt").exists():
        return _read(keys_dir / "passphrase.txt").strip()
    return None


def load_service_keys(settings: Settings) -> ServiceKeys:
    keys_dir = settings.keys_dir
    if not keys_dir.is_dir():
        raise ConfigurationError(
            f"keys directory {keys_dir} does not exist (create the production keys with `bhxh-integrity keys init --out DIR` and set BHXH_KEYS_DIR, or use --demo for the demonstration PKI)"
        )
    try:
        demo_dir = is_demo_dir(keys_dir)
    except OSError as exc:
        raise ConfigurationError(f"cannot read keys directory {keys_dir}: {exc.strerror}") from exc
    if demo_dir and not settings.demo:
        raise DemoKeysRefused(
            f"{keys_dir} holds the demonstration PKI, which must never be used in production; "
            "pass --demo or set BHXH_DEMO=1 to run the demo"
        )
    passphrase = resolve_passphrase(settings, keys_dir, demo_dir)
    audit_key: ed25519.Ed25519PrivateKey | None = None
    if settings.checkpoint_key_label is None:
        loaded = _private(keys_dir / "audit-log.key.pem", passphrase)
        if not isinstance(loaded, ed25519.Ed25519PrivateKey):
            raise ConfigurationError("audit-log.key.pem must be an Ed25519 key (C2SP signed-note)")
        audit_key = loaded
    try:
        secrets_key = base64.b64decode(_read(keys_dir / "secrets.key").strip(), validate=True)
    except binascii.Error as exc:
        raise ConfigurationError("secrets.key must be one line of base64") from exc
    if len(secrets_key) != SECRETS_KEY_BYTES:
        raise ConfigurationError("secrets.key must hold a 256-bit key")
    # The gateway's is the only exchange key this service signs with: the portal's and the
    # one-stop system's keys in the demo directory belong to those systems and are not read.
    gateway_file = keys_dir / "gateway-exchange.key.pem"
    gateway_exchange_key = (
        _private(gateway_file, passphrase) if settings.gateway_key_label is None and gateway_file.exists() else None
    )
    one_stop_certificate = _cert(keys_dir / SIGNING_CERT_FILE)
    data_message_key = _data_message_key(keys_dir, passphrase, one_stop_certificate)
    return ServiceKeys(
        keys_dir=keys_dir,
        passphrase=passphrase,
        ca_certificates=_ca_certs(keys_dir / "ca.crt.pem"),
        audit_key=audit_key,
        audit_key_name=AUDIT_KEY_NAME if demo_dir else f"bhxh-integrity/audit/{settings.log_id}",
        secrets_key=secrets_key,
        one_stop_certificate=one_stop_certificate,
        one_stop_key=(
            _private(keys_dir / "one-stop-signing.key.pem", passphrase) if settings.receipt_key_label is None else None
        ),
        gateway_exchange_key=gateway_exchange_key,
        demo=demo_dir,
        data_message_key=data_message_key,
    )


def _data_message_key(
    keys_dir: Path, passphrase: bytes | None, receipt_certificate: x509.Certificate
) -> CertifiedKey | None:
    """The institution's data-message key and certificate, when the keys directory has them.
    It must be a key of its own: the receipt key never signs bytes a caller chooses."""
    key_file, cert_file = keys_dir / DATA_MESSAGE_KEY_FILE, keys_dir / DATA_MESSAGE_CERT_FILE
    if not key_file.exists() or not cert_file.exists():
        # ``keys init`` made the key; until ``keys install-cert`` installs the CA's certificate
        # for it, the service runs (receipts) without a data-message key.
        return None
    key = _private(key_file, passphrase)
    cert = _cert(cert_file)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise ConfigurationError(f"{cert_file} does not certify the key in {key_file}")
    if cert.public_key().public_bytes(der, spki) == receipt_certificate.public_key().public_bytes(der, spki):
        raise ConfigurationError(f"{key_file} is the receipt key: data messages need a key of their own (Decision 352)")
    marked = certificate_purpose(cert)
    if marked not in (None, KeyPurpose.DATA_MESSAGE):
        raise ConfigurationError(f"{cert_file} is a {marked} certificate, not one for data messages")
    return CertifiedKey(key, cert)


def checkpoint_key(settings: Settings, keys: ServiceKeys, token: KeyToken | None) -> ed25519.Ed25519PrivateKey:
    """The key that signs the audit log's checkpoints: ``audit-log.key.pem``, or, when
    ``BHXH_CHECKPOINT_KEY_LABEL`` is set, the Ed25519 key pair of that label on the PKCS#11
    token, made there by the HSM officer (sensitive, never extractable). A forger holding this
    key could sign a checkpoint over a rewritten log, so production keeps it on the HSM."""
    label = settings.checkpoint_key_label
    if label is None:
        assert keys.audit_key is not None  # load_service_keys read the file
        return keys.audit_key
    key = _token_key(token, label, "BHXH_CHECKPOINT_KEY_LABEL", "audit checkpoint key")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigurationError(
            f"the token key labelled {label!r} is not Ed25519: checkpoints are C2SP signed notes (Ed25519)"
        )
    return key


def gateway_key(settings: Settings, keys: ServiceKeys, token: KeyToken | None) -> PrivateKeyTypes | None:
    """The key the gateway signs forwarded requests and relayed answers with (RFC 9421 keyid
    ``gateway``): ``gateway-exchange.key.pem`` when the keys directory has it, or, when
    ``BHXH_GATEWAY_KEY_LABEL`` is set, the key pair of that label on the PKCS#11 token. Whoever
    holds this key can forge messages between the portal and the one-stop system in the
    gateway's name (Regulation Art. 5.3), so production keeps it on the HSM."""
    label = settings.gateway_key_label
    if label is None:
        return keys.gateway_exchange_key
    key = _token_key(token, label, "BHXH_GATEWAY_KEY_LABEL", "gateway key")
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
        # The exchange signs RSA as rsa-pss-sha512 (RFC 9421 §3.3.1); a token RSA key here signs
        # RSASSA-PSS with SHA-256 only, so it could never make a valid exchange signature.
        raise ConfigurationError(
            f"the token key labelled {label!r} is RSA: the gateway's token key must be Ed25519 or ECDSA P-256"
        )
    return key


def receipt_key(settings: Settings, keys: ServiceKeys, token: KeyToken | None) -> CertifiedKey:
    """The one-stop system's key that signs the receipts (PAdES) with its certificate
    ``one-stop-signing.crt.pem``: ``one-stop-signing.key.pem``, or, when ``BHXH_RECEIPT_KEY_LABEL``
    is set, the RSA or P-256 key pair of that label on the PKCS#11 token. A receipt is the
    applicant's proof of filing (Regulation Art. 4.5): a stolen key could issue false ones.
    A certificate marked for another purpose (a data-message certificate, say) never signs one."""
    marked = certificate_purpose(keys.one_stop_certificate)
    if marked not in (None, KeyPurpose.RECEIPT):
        raise ConfigurationError(
            f"{SIGNING_CERT_FILE} is a {marked} certificate: receipts are signed only with a receipt certificate"
        )
    label = settings.receipt_key_label
    if label is None:
        assert keys.one_stop_key is not None  # load_service_keys read the file
        return CertifiedKey(keys.one_stop_key, keys.one_stop_certificate)
    # PdfSigner checks that the key is the certificate's (a mismatch stops start-up).
    return CertifiedKey(_token_key(token, label, "BHXH_RECEIPT_KEY_LABEL", "receipt key"), keys.one_stop_certificate)


def _token_key(token: KeyToken | None, label: str, setting: str, what: str) -> PrivateKeyTypes:
    if token is None:
        raise ConfigurationError(f"{setting} names a token key: set BHXH_PKCS11_MODULE, _TOKEN_LABEL and _PIN_FILE")
    try:
        return token.key_by_label(label)
    except (TokenError, KeyNotUsable, WeakKey) as exc:
        raise ConfigurationError(f"{what}: {exc}") from exc


def retired_checkpoint_keys(settings: Settings, name: str) -> list[VerifierKey]:
    """The verifier keys of checkpoint keys used before a rotation (say, from the file to the
    token), so that the checkpoints they signed still verify: the same file format as
    ``audit verify --public-key`` (verifier-key lines, or a PEM key for the signer ``name``)."""
    path = settings.checkpoint_retired_keys_file
    if path is None:
        return []
    text = _read(path).decode("utf-8", "replace")
    if not any(line.strip() and not line.strip().startswith("#") for line in text.splitlines()):
        return []  # an empty list of retired keys
    try:
        return load_verifier_keys(text, [name])
    except MalformedVerifierKey as exc:
        raise ConfigurationError(f"{path}, {exc}") from exc


def open_key_token(settings: Settings) -> KeyToken | None:
    """The PKCS#11 token holding signing keys, logged in once; None when none is configured.
    A missing module, token or a wrong PIN stops start-up like a bad key file."""
    if settings.pkcs11_module is None:
        if settings.pkcs11_token_label or settings.pkcs11_pin or settings.pkcs11_pin_file:
            raise ConfigurationError("BHXH_PKCS11_TOKEN_LABEL and _PIN are set but BHXH_PKCS11_MODULE is not")
        return None
    if not settings.pkcs11_token_label:
        raise ConfigurationError("BHXH_PKCS11_MODULE is set: BHXH_PKCS11_TOKEN_LABEL must name the token")
    try:
        pin = settings.token_pin()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the PKCS#11 PIN file {settings.pkcs11_pin_file}: {exc.strerror}"
        ) from exc
    try:
        return KeyToken.open(settings.pkcs11_module, settings.pkcs11_token_label, pin or b"")
    except TokenError as exc:
        raise ConfigurationError(str(exc)) from exc
