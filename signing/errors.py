"""Every error raised by ``signing``, flat, under one base class ``SigningError``.

Two families live here. Request errors (bad key choice, bad input) are raised to the caller and
become a 4xx. Verification failures are raised by the low-level checks inside a verifier and are
collected into a ``VerificationResult``; each carries the ETSI EN 319 102-1 sub-indication it
stands for, so the verifier never has to guess.

Other modules of this package (pdf, httpsig, receipts) append their own classes below; keep the
file flat and every class under ``SigningError``.
"""

from __future__ import annotations

from typing import ClassVar


class SigningError(Exception):
    """Base of every error raised by ``signing``."""


# --- keys -------------------------------------------------------------------------------------


class KeystoreError(SigningError):
    """A key-management request was refused."""


class UnknownKey(KeystoreError):
    """No key with that ``kid`` (or no key of that kind) in the keystore."""


class KeyNotUsable(KeystoreError):
    """The key exists but may not do what was asked (retired or revoked, wrong kind for the
    format, no certificate for CMS/XAdES, another person's key)."""


class KeyPurposeMismatch(KeyNotUsable):
    """The key exists but is for another purpose (``signing.purposes``): the receipt key never
    signs a data message, a data-message key never a receipt, a person's key only for them."""


class DuplicateKey(KeystoreError):
    """The key is already in the keystore (same RFC 7638 thumbprint)."""


class ActiveKeyExists(KeystoreError):
    """An active key of that algorithm exists; rotate instead of adding a second one."""


class KeyImportFailed(KeystoreError):
    """Key material could not be read: wrong passphrase, bad file, key and certificate differ."""


class WeakKey(KeystoreError):
    """A key below the policy (RSA under 2048 bits, a curve other than P-256, DSA, …)."""


class InvalidKeyState(KeystoreError):
    """A state change that the key's life cycle does not allow (e.g. reactivating a revoked key)."""


class PassphraseRequired(KeystoreError):
    """Private keys are kept encrypted at rest; no passphrase was configured."""


class TokenError(KeystoreError):
    """The PKCS#11 token cannot be used: module, token, PIN or key object missing or refused."""


# --- requests ---------------------------------------------------------------------------------


class InvalidRequest(SigningError):
    """The request to sign or verify cannot be processed as given."""


class UnknownFormat(InvalidRequest):
    """A signature format other than jws, cms or xml."""


class InvalidEncoding(InvalidRequest):
    """A field that must be base64 is not."""


class PayloadTooLarge(InvalidRequest):
    """The payload exceeds the configured limit."""


class BatchTooLarge(InvalidRequest):
    """More items in one batch than allowed."""


class InvalidXml(InvalidRequest):
    """The XML to sign is not well-formed, or carries a DTD / entity declarations (refused to
    rule out XXE and entity-expansion bombs)."""


class MalformedSignature(InvalidRequest):
    """The signature to verify could not even be parsed (FORMAT_FAILURE). Raised by the HTTP
    layer after the verdict was logged; the verdict travels in ``problem_extra``."""

    def __init__(self, message: str, verification: dict[str, object]) -> None:
        super().__init__(message)
        self.problem_extra = {"verification": verification}


# --- verification failures (collected into a VerificationResult) -------------------------------


class VerificationFailure(SigningError):
    """Raised by a verifier's inner checks; the verifier turns it into a verdict."""

    sub_indication: ClassVar[str] = "GENERIC"


class FormatFailure(VerificationFailure):
    """The signature is not a well-formed object of its format."""

    sub_indication = "FORMAT_FAILURE"


class HashFailure(VerificationFailure):
    """The signed digest does not match the data (the data changed after signing)."""

    sub_indication = "HASH_FAILURE"


class SigCryptoFailure(VerificationFailure):
    """The signature value does not verify under the signer's public key."""

    sub_indication = "SIG_CRYPTO_FAILURE"


class CryptoConstraintsFailure(VerificationFailure):
    """An algorithm or key below the policy: SHA-1, RSA under 2048 bits, an unknown key type."""

    sub_indication = "CRYPTO_CONSTRAINTS_FAILURE"


class NoSigningCertificate(VerificationFailure):
    """The signer cannot be identified: unknown ``kid``, no matching certificate."""

    sub_indication = "NO_SIGNING_CERTIFICATE_FOUND"


class NoCertificateChain(VerificationFailure):
    """No path from the signer's certificate to a configured trust anchor."""

    sub_indication = "NO_CERTIFICATE_CHAIN_FOUND"


class ChainConstraintsFailure(VerificationFailure):
    """A path exists but violates a constraint (key usage, basic constraints, …)."""

    sub_indication = "CHAIN_CONSTRAINTS_FAILURE"


class SignerRevoked(VerificationFailure):
    """The signing key or certificate was revoked before the signing time."""

    sub_indication = "REVOKED"


class SignerRevokedNoPoe(VerificationFailure):
    """The certificate is revoked now; the claimed signing time precedes the revocation but
    nothing proves it (no timestamp)."""

    sub_indication = "REVOKED_NO_POE"


class CertificateExpired(VerificationFailure):
    """The signer's certificate has expired."""

    sub_indication = "EXPIRED"


class CertificateNotYetValid(VerificationFailure):
    """The signer's certificate is not yet valid, or the claimed signing time precedes it."""

    sub_indication = "NOT_YET_VALID"


class RevocationUnavailable(VerificationFailure):
    """Revocation status was required but could not be obtained."""

    sub_indication = "TRY_LATER"


# --- PDF receipts (signing/pdf.py, signing/receipt_pdf.py) --------------------------------------


class PdfSigningError(SigningError):
    """A PDF could not be signed (key unsuitable, timestamp authority failed, …)."""


class MalformedPdf(SigningError):
    """The input is not a readable PDF (empty, truncated, too large, damaged)."""


class ReceiptRenderError(SigningError):
    """The receipt slip could not be rendered from the given fields."""


# --- RFC 9421 exchange messages (signing/httpsig.py) ---


class MessageSignatureError(SigningError):
    """A signed HTTP message was refused. ``reason`` is a stable slug for the audit log."""

    reason = "invalid-signature"


class MessageUnsigned(MessageSignatureError):
    """The message carries no signature of the exchange profile."""

    reason = "unsigned"


class MalformedMessageSignature(MessageSignatureError):
    """Signature-Input, Signature or Content-Digest cannot be parsed."""

    reason = "malformed-signature"


class MessageProfileViolation(MessageSignatureError):
    """The signature does not follow the profile (components, tag, lifetime, nonce)."""

    reason = "profile-violation"


class MessageKeyMismatch(MessageSignatureError):
    """The signature names another keyid than the key it is checked with."""

    reason = "key-mismatch"


class MessageSignatureInvalid(MessageSignatureError):
    """The signature does not verify over the covered components (or its alg disagrees)."""

    reason = "bad-signature"


class ContentDigestMismatch(MessageSignatureError):
    """The signed Content-Digest does not match the body (RFC 9530)."""

    reason = "digest-mismatch"


class MessageCreatedOutOfWindow(MessageSignatureError):
    """``created`` lies outside the allowed clock skew (stale or from the future)."""

    reason = "created-out-of-window"


class MessageSignatureExpired(MessageSignatureError):
    """The signature's ``expires`` has passed."""

    reason = "expired"


class UnsupportedExchangeKey(SigningError):
    """A key that the exchange profile does not accept (type, curve, size or keyid)."""


class ReplayedMessage(MessageSignatureError):
    """A message whose (keyid, nonce) was already accepted: a replay."""

    reason = "replayed-nonce"
