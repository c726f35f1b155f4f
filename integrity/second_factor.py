"""The fresh second factor that activates one personal signature.

EN 419 241-1 asks that the signer alone activate each signature, with data bound to what is
signed. The activation (integrity.personal_signing) carries that binding: one document digest,
one key, single use, a few minutes. The proof that the person is there comes from a
``SecondFactor``: a TOTP code today. A passkey (a WebAuthn assertion) fits the same interface:
its ``confirm`` verifies an assertion whose challenge is the activation's ``challenge``, so the
authenticator itself signs the binding. Every check of a secret counts against the account's
lockout (integrity.accounts), whichever factor it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol

# What the account's audit entries say the factor was checked for.
SIGNATURE_ACTIVATION = "signature-activation"


class FactorMethod(StrEnum):
    TOTP = "totp"


class SecondFactor(Protocol):
    """One proof of the person's presence, checked once."""

    @property
    def method(self) -> FactorMethod: ...

    def confirm(self, username: str, *, challenge: bytes, address: str) -> None:
        """Return if the proof is ``username``'s and fresh; raise an ``auth.errors.AuthError``
        (``InvalidCredentials``, ``LoginThrottled``, ``MfaNotEnrolled``) otherwise. ``challenge``
        is what a proof able to sign data must sign (the activation's binding)."""
        ...


class CodeChecker(Protocol):
    """``AccountService``: checks a factor on the account, counted on its lockout. A passkey's
    check goes in as ``factor`` (``integrity.accounts.FactorCheck``), run in the same reserved
    transaction as a code's."""

    def confirm_second_factor(self, username: str, *, code: str | None, address: str, purpose: str) -> object: ...


@dataclass(frozen=True)
class TotpCode:
    """A TOTP code (RFC 6238) typed by the person. A code cannot carry the challenge; the
    activation's single use, expiry and digest bind it instead, and the code itself is spent."""

    checker: CodeChecker = field(repr=False)
    code: str = field(repr=False)
    method: ClassVar[FactorMethod] = FactorMethod.TOTP

    def confirm(self, username: str, *, challenge: bytes, address: str) -> None:
        del challenge
        self.checker.confirm_second_factor(username, code=self.code, address=address, purpose=SIGNATURE_ACTIVATION)
