"""Errors of the application core (use cases that cross domains), under one base class."""

from __future__ import annotations


class IntegrityError(Exception):
    """Base of every error raised by ``integrity``."""


class ConfigurationError(IntegrityError):
    """Settings or key material are unusable; the service must not start."""


class DemoKeysRefused(ConfigurationError):
    """The demonstration PKI was found but demo mode is off."""


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


# --- portal ↔ one-stop exchange (integrity/exchange.py, api/gateway.py) ---


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


class ExchangeRouteForbidden(ExchangeRejected):
    """The signed message is valid but its peer may not use this route."""


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
