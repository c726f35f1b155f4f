"""Errors of the account-protection domain, all under one base class."""

from __future__ import annotations


class AuthError(Exception):
    """Base of every error raised by ``auth``."""


class InvalidApiKey(AuthError):
    """The API key is missing, malformed, unknown or revoked (one opaque answer outside)."""


class MissingScope(AuthError):
    """A known caller lacks the scope the operation needs."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"the caller lacks the scope {scope!r}")
        self.scope = scope


class UnknownScope(AuthError):
    """A scope name that the system does not define."""


class UnknownClient(AuthError):
    """No API client with that id."""


class InvalidClientName(AuthError):
    """The client name is empty or too long."""


# --- Accounts: passwords, usernames, login, MFA, sessions ------------------------------------


class InvalidUsername(AuthError):
    """The username is empty, too long or holds characters a username may not hold."""


class UsernameTaken(AuthError):
    """Another account already has this username (compared after NFKC normalisation)."""


class UsernameConfusable(AuthError):
    """The username mixes scripts with look-alike letters, or looks like an existing account's
    (Unicode TR39 skeletons)."""


class UnknownUser(AuthError):
    """No account with that username (admin operations only; login never says this)."""


class InvalidRole(AuthError):
    """A role the system does not define."""


class PasswordRejected(AuthError):
    """The password breaks a rule of the NIST SP 800-63B-4 policy; ``rule`` names it."""

    rule = "policy"

    @property
    def problem_extra(self) -> dict[str, str]:
        return {"rule": self.rule}


class PasswordTooShort(PasswordRejected):
    rule = "min_length"


class PasswordTooLong(PasswordRejected):
    rule = "max_length"


class PasswordBlocklisted(PasswordRejected):
    rule = "blocklist"


class PasswordContainsContext(PasswordRejected):
    """The password holds the username or the service's name (SP 800-63B-4 context words)."""

    rule = "context_words"


class InvalidCredentials(AuthError):
    """Login or second factor refused. One opaque answer; the precise reason goes to the audit log."""


class LoginThrottled(AuthError):
    """Too many failures (per account, device or source address): 429 with ``Retry-After``.

    The answer is the same whatever the password was, so a locked account cannot be probed."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed attempts; try again later")
        self.retry_after = max(1, int(retry_after))
        # Read by api/errors.py to set the header (RFC 9110 §10.2.3).
        self.problem_headers = {"Retry-After": str(self.retry_after)}


class SessionInvalid(AuthError):
    """The session token is missing, unknown, expired, revoked or not a full session."""


class StepUpRequired(AuthError):
    """The operation needs a second factor within the last few minutes (RFC 9470's
    ``insufficient_user_authentication``)."""


class MfaNotEnrolled(AuthError):
    """The account has no active second factor to check."""


class EnrolmentNotStarted(AuthError):
    """A confirming code arrived but no TOTP enrolment is pending."""


class SecretUnreadable(AuthError):
    """A stored secret failed authenticated decryption (wrong key or altered row)."""


# --- Passkeys ----------------------------------------------------------------------------------


class PasskeyNotFound(AuthError):
    """No passkey with that id on the caller's account."""


class InvalidPasskeyName(AuthError):
    """A passkey's name is empty, too long or holds control characters."""


class PasskeyAlreadyRegistered(AuthError):
    """The authenticator's credential is already registered (to this account or another)."""


class PasskeyRejected(AuthError):
    """A registration response failed verification (challenge, origin, RP id, user verification,
    attestation); the precise reason is in the audit log."""
