"""A person signs with their own key, only after step-up (session → step-up → sign → log).

The check itself belongs to the accounts use cases; this module only needs something that
answers ``require_step_up(session_token)`` with the person, or raises an ``auth`` error when
the session is not valid or its second factor is not recent. ``AccountService`` satisfies
``StepUpGate`` as it is. Every refusal is logged with its reason (never the token) and raised
as one ``PersonalSigningRefused``: the caller learns that it was refused, the log learns why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from auth.errors import AuthError
from integrity.signatures import SignatureService, SignedMessage, SignRequest
from signing.errors import KeystoreError, PersonalSigningRefused

ACTION_REFUSED = "signature.personal.refused"


class Person(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def actor(self) -> str: ...


class StepUpGate(Protocol):
    def require_step_up(self, token: str) -> Person:
        """The person behind ``token`` if their second factor is recent; raises an
        ``auth.errors.AuthError`` (session invalid, step-up required) otherwise."""
        ...


def owner_of(person: Person) -> str:
    """The keystore ``owner`` of a person's keys."""
    return f"user:{person.name}"


@dataclass
class PersonalSigningService:
    signatures: SignatureService
    gate: StepUpGate | None

    def sign(self, session_token: str, request: SignRequest) -> SignedMessage:
        if self.gate is None:
            raise self._refused("system", "step_up_unavailable")
        try:
            person = self.gate.require_step_up(session_token)
        except AuthError as exc:
            raise self._refused("system", type(exc).__name__) from exc
        try:
            return self.signatures.sign(request, actor=person.actor, owner=owner_of(person))
        except KeystoreError as exc:
            # No active key of theirs, or a key_id that is not theirs: refused the same way.
            raise self._refused(person.actor, type(exc).__name__) from exc

    def _refused(self, actor: str, reason: str) -> PersonalSigningRefused:
        self.signatures.audit.record(actor, ACTION_REFUSED, "personal-signing", {"reason": reason})
        return PersonalSigningRefused(
            "personal signing needs a valid session, a recent second factor and an active personal key"
        )
