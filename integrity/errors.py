"""Errors of the application core (use cases that cross domains), under one base class."""

from __future__ import annotations

from enum import StrEnum


class IntegrityError(Exception):
    """Base of every error raised by ``integrity``."""


class ConfigurationError(IntegrityError):
    """Settings or key material are unusable; the service must not start."""


class DemoKeysRefused(ConfigurationError):
    """The demonstration PKI was found but demo mode is off."""


class SetupError(ConfigurationError):
    """The database cannot be used as configured: an unsupported URL, a server that does not
    answer, or a store that was never initialised or is behind the code's migrations."""


# --- events other systems append (integrity/client_events.py) ---


class AuditNamespaceRefused(IntegrityError):
    """A client tried to append an event outside its own ``ext.<client name>.`` namespace
    (every other namespace belongs to the service); nothing of the event was written."""

    def __init__(self, message: str, *, allowed_prefix: str | None) -> None:
        super().__init__(message)
        self.allowed_prefix = allowed_prefix
        self.problem_extra = {"allowed_prefix": allowed_prefix}


class ApproverNotAdmin(IntegrityError):
    """The person named as approving an erasure of personal data, or confirming an operator's
    sensitive command, holds no admin role."""


class OperatorUnknown(IntegrityError):
    """The command line cannot tell which OS login runs it (integrity/operator_auth.py)."""


# --- receipts (integrity/receipts.py, integrity/dossier_code.py, integrity/units.py) ---


class ReceiptError(IntegrityError):
    """Base of the receipt use cases' errors."""


class InvalidDossierCode(ReceiptError):
    """Text that is not a dossier code of the national format."""


class UnknownReceivingUnit(ReceiptError):
    """The receiving unit is not in the configured list of units."""


class InvalidReceiptRequest(ReceiptError):
    """A receipt request the service refuses (times out of range, unit name mismatch, …)."""


class DailySequenceExhausted(ReceiptError):
    """The unit already issued 9,999 dossier codes today; the 10,000th gets none (no wrap-around)."""


class ReceiptNotFound(ReceiptError):
    """No receipt is registered under that code."""


class IdempotencyKeyReused(ReceiptError):
    """The Idempotency-Key was used before with a different request."""


class UnreadableReceipt(ReceiptError):
    """The file given for verification is not a readable PDF (malformed, truncated, not a PDF)."""


class ReceiptSigningFailed(ReceiptError):
    """Rendering or signing failed (e.g. the timestamp authority is down); nothing was issued."""


class ReceiptAlreadyRevoked(ReceiptError):
    """The receipt was revoked before; a revocation is made once and never undone."""


class ReceiptFileTooLarge(ReceiptError):
    """A file presented to the public check is larger than any receipt this system issues."""


# --- portal ↔ one-stop exchange (integrity/exchange/, api/gateway.py) ---


class ExchangeError(IntegrityError):
    """Base of the exchange use cases' errors."""


class InvalidPeer(ExchangeError):
    """A peer definition the registry refuses (name, key, route pattern or base URL)."""


class PeerNotFound(ExchangeError):
    """No peer of that name is registered."""


class PeerAlreadyExists(ExchangeError):
    """A peer of that name, or a peer holding that keyid, is already registered."""


class ExchangeRejected(ExchangeError):
    """A message was refused (unsigned, unknown key, bad signature, digest, time, replay).

    The precise reason is in the audit entry; the caller learns only the message id."""

    def __init__(self, message: str, *, message_id: str, reason: str) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.reason = reason
        self.problem_extra = {"message_id": message_id}
        self.problem_headers: dict[str, str] = {}  # the gateway adds Accept-Signature (RFC 9421 §5.1)


class ExchangeRouteForbidden(ExchangeRejected):
    """The signed message is valid but its peer may not use this route."""


class ExchangeBadTarget(ExchangeRejected):
    """The gateway refuses the request's raw path before any other check (an encoded peer
    name, a dot or empty segment, an encoded delimiter): nothing is forwarded."""


class ExchangeTargetTooLong(ExchangeBadTarget):
    """The gateway request's path is longer than the gateway forwards."""


class UpstreamRejected(ExchangeError):
    """The destination peer's response failed verification; nothing was passed back."""

    def __init__(self, message: str, *, message_id: str, reason: str) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.reason = reason
        self.problem_extra = {"message_id": message_id}


class PeerUnreachable(ExchangeError):
    """The destination peer could not be reached (connection refused, reset, DNS)."""


class PeerTimeout(ExchangeError):
    """The destination peer did not answer in time."""


class GatewayNotConfigured(ExchangeError):
    """The gateway has no signing key, or the destination peer has no base URL."""


# --- production key material (integrity/key_material.py, integrity/cert_install.py) ---


class KeyMaterialError(IntegrityError):
    """``keys init`` or ``keys install-cert`` refused; nothing was written or installed."""


class KeyFileExists(KeyMaterialError):
    """A key file that ``keys init`` would write is already there: keys are never overwritten."""


class CertificateRefusal(StrEnum):
    """Why ``keys install-cert`` refused a certificate."""

    UNREADABLE = "unreadable"  # not a PEM X.509 certificate (or chain)
    KEY_MISMATCH = "key-mismatch"  # it certifies another key than the one ``keys init`` made
    UNTRUSTED = "untrusted"  # no path to a configured trust anchor
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    NOT_FOR_SIGNING = "not-for-signing"  # weak algorithm, key usage without signing, bad chain
    WRONG_PURPOSE = "wrong-purpose"  # its policies mark it for the other key's purpose (docs/keys.md)


class CertificateRefused(KeyMaterialError):
    """A certificate ``keys install-cert`` will not install; ``reason`` says why."""

    def __init__(self, message: str, *, reason: CertificateRefusal) -> None:
        super().__init__(message)
        self.reason = reason


# --- backup and restore of the SQLite store (integrity/backup.py) ---


class BackupRefusal(StrEnum):
    """Why ``backup`` or ``restore`` refused; in every case nothing was written or replaced."""

    POSTGRESQL = "postgresql"  # PostgreSQL is backed up and restored with pg_dump / pg_restore
    TARGET_EXISTS = "target-exists"  # a backup never overwrites a file
    UNREADABLE = "unreadable"  # missing, not an SQLite database, or failing its integrity check
    WRONG_SCHEMA = "wrong-schema"  # not a bhxh-integrity database of this version's schema
    IN_USE = "in-use"  # another connection holds the live database open
    WOULD_LOSE_ENTRIES = "would-lose-entries"  # the live log holds entries the backup lacks


class BackupRefused(IntegrityError):
    """``backup`` or ``restore`` refused; ``reason`` says why."""

    def __init__(self, message: str, *, reason: BackupRefusal) -> None:
        super().__init__(message)
        self.reason = reason


# --- personal signing (integrity/personal_signing.py) ---


class ActivationRefusal(StrEnum):
    """Why a personal signature was refused (the ``reason`` of ``signature.personal.refused``)."""

    NO_PERSONAL_KEY = "no_personal_key"  # no active personal key of theirs that signs this format
    UNKNOWN_ACTIVATION = "unknown_activation"
    NOT_OWNER = "not_owner"  # another person's activation
    DIGEST_MISMATCH = "digest_mismatch"  # the document is not the one the activation was made for
    EXPIRED = "expired"
    ALREADY_USED = "already_used"
    KEY_NOT_USABLE = "key_not_usable"  # the activation's key was retired or revoked meanwhile
    SECOND_FACTOR_FAILED = "second_factor_failed"
    SIGNING_FAILED = "signing_failed"  # the token or the PDF failed after the activation was spent


class PersonalSigningRefused(IntegrityError):
    """A personal signature was refused; ``reason`` says why (also in the audit entry)."""

    def __init__(self, message: str, *, reason: ActivationRefusal) -> None:
        super().__init__(message)
        self.reason = reason
        self.problem_extra = {"reason": reason.value}


class ActivationNotFound(PersonalSigningRefused):
    """No activation of this person has that id (none at all, or another person's)."""


class PersonalKeyUnavailable(PersonalSigningRefused):
    """The person has no active personal key that can make a signature of that format."""


class UnknownPerson(IntegrityError):
    """No account of that name: a personal key or signature names an existing person."""


# --- request rate limits (integrity/rate_limits.py) ---


class RateLimited(IntegrityError):
    """The caller spent its budget for the route class: 429 with ``Retry-After``, and the
    request was not acted on."""

    def __init__(self, route_class: str, retry_after: int) -> None:
        super().__init__(f"the rate limit of the route class {route_class!r} is reached; try again later")
        self.retry_after = max(1, int(retry_after))
        self.problem_headers = {"Retry-After": str(self.retry_after)}


class RateLimiterUnavailable(IntegrityError):
    """The rate-limit storage does not answer and the caller is anonymous: refused (503)
    rather than served unmetered (integrity/rate_limits.py)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the rate limiter cannot be reached")
        self.problem_headers = {"Retry-After": str(max(1, int(retry_after)))}
