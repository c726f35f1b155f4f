"""What every account use case shares: the policy, the derived keys, the one path to the audit log,
the session lookup, and the check of a second factor once its attempt is reserved.

The use cases themselves are in integrity.account_admin, integrity.sign_in,
integrity.account_sessions, integrity.enrolment, integrity.password_change and
integrity.account_status; integrity.accounts puts them behind one ``AccountService``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, Engine

from auth import lockout, recovery, totp
from auth import sessions as session_store
from auth import users as user_store
from auth.devices import DeviceTokens
from auth.errors import InvalidUsername, SessionInvalid, UnknownUser
from auth.lockout import ThrottlePolicy
from auth.passwords import PasswordHasher, PasswordPolicy, normalise_username
from auth.roles import scopes_for
from auth.sessions import STEP_UP_SECONDS, Session, SessionPolicy
from auth.totp import SecretBox
from auth.users import User
from integrity.audit_service import AuditService
from integrity.db import READ_ONLY
from integrity.lockout_events import locked_entries
from integrity.refusal_log import RefusalRecorder

# HKDF info strings: one subkey per use of the secrets key (domain separation, RFC 5869 §3.2).
_TOTP_KEY_INFO = b"bhxh-integrity/totp-secrets/v1"
_DEVICE_KEY_INFO = b"bhxh-integrity/device-tokens/v1"
_ATTEMPT_KEY_INFO = b"bhxh-integrity/unknown-username-tag/v1"
# A second factor checked elsewhere (a passkey): called once the attempt is reserved, in its
# transaction; returns (method, failure reason or None).
FactorCheck = Callable[[Connection, User, datetime], tuple[str, str | None]]
UNKNOWN_SUBJECT = "unknown-user"


@dataclass(frozen=True)
class AccountPolicy:
    session: SessionPolicy = field(default_factory=SessionPolicy)
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    password: PasswordPolicy = field(default_factory=PasswordPolicy)
    step_up_seconds: int = STEP_UP_SECONDS
    issuer: str = totp.ISSUER


@dataclass(frozen=True)
class UserPrincipal:
    """A fully logged-in person; the same fields as ``api.deps.Principal``."""

    id: str
    name: str
    scopes: frozenset[str]
    role: str
    kind: Literal["user"] = "user"

    @property
    def actor(self) -> str:
        return f"user:{self.name}"


@dataclass(frozen=True)
class Refusal:
    """A refusal decided inside a transaction that must still commit (its audit entries and
    lockout counts stand); raised once the transaction is over."""

    error: Exception


@dataclass(frozen=True)
class OfferedFactor:
    """What a person offered as a second factor: one of a TOTP code, a recovery code, or a
    factor checked elsewhere (``FactorCheck``)."""

    code: str | None
    recovery_code: str | None
    factor: FactorCheck | None


def derive_key(secrets_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secrets_key)


class AccountContext:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        audit: AuditService,
        *,
        secrets_key: bytes,
        policy: AccountPolicy | None = None,
        hasher: PasswordHasher | None = None,
        refusals: RefusalRecorder | None = None,
    ) -> None:
        self.engine = engine
        self.refusals = refusals
        self.clock = clock
        self.audit = audit
        self.policy = policy or AccountPolicy()
        self.hasher = hasher or PasswordHasher()
        self.box = SecretBox(derive_key(secrets_key, _TOTP_KEY_INFO))
        self.devices = DeviceTokens(derive_key(secrets_key, _DEVICE_KEY_INFO))
        self.attempt_key = derive_key(secrets_key, _ATTEMPT_KEY_INFO)

    # --- the one path to the audit log ------------------------------------------------------

    def event(
        self,
        conn: Connection,
        action: str,
        subject: str,
        data: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
        pii: dict[str, Any] | None = None,
    ) -> None:
        self.audit.record(actor or f"user:{subject}", action, subject, data or {}, pii, conn=conn)

    def locked_events(
        self, conn: Connection, held: tuple[lockout.Reservation, ...], subject: str, address: str | None
    ) -> None:
        """``auth.locked`` for each counter that this failed attempt put into a delay or the disable."""
        pii = {"address": address} if address is not None else None
        for entry_subject, data in locked_entries(held, subject):
            self.event(conn, "auth.locked", entry_subject, data, actor="system", pii=pii)

    def read(self) -> Any:
        return self.engine.connect().execution_options(**READ_ONLY)

    # --- accounts and sessions --------------------------------------------------------------

    def user_or_raise(self, conn: Connection, username: str) -> User:
        try:
            name = normalise_username(username)
        except InvalidUsername as exc:
            raise UnknownUser(f"no account {username!r}") from exc
        user = user_store.by_name(conn, name)
        if user is None:
            raise UnknownUser(f"no account {name!r}")
        return user

    def session(self, token: str, *, allow_enrol: bool = False) -> tuple[Session, User]:
        now = self.clock()
        with self.read() as conn:
            session = session_store.resolve(conn, token, now, self.policy.session)
            user = user_store.by_id(conn, session.user_id) if session else None
        if session is None or user is None or (not session.full and not allow_enrol):
            raise SessionInvalid("no valid session")
        if session_store.needs_touch(session, now):
            with self.engine.begin() as conn:
                session_store.touch(conn, session, now)
        return session, user

    def principal(self, user: User) -> UserPrincipal:
        return UserPrincipal(user.user_id, user.username, scopes_for(user.role), user.role)

    # --- the second factor, once its attempt is reserved ------------------------------------

    def second_factor(
        self,
        conn: Connection,
        user: User,
        code: str | None,
        recovery_code: str | None,
        factor: FactorCheck | None,
        now: datetime,
    ) -> tuple[str, str | None, int | None]:
        """(method, failure reason or None, recovery codes left)."""
        if factor is not None:
            return (*factor(conn, user, now), None)
        if code and not recovery_code:
            verdict = totp.verify_and_consume(conn, self.box, user.user_id, code, now)
            return "totp", verdict.reason, None
        if recovery_code and not code:
            used = recovery.use(conn, user.user_id, recovery_code, now)
            return "recovery_code", used.reason, used.remaining
        return "none", "no_second_factor_given", None

    def recovery_used(self, conn: Connection, user: User, remaining: int | None, now: datetime) -> None:
        user_store.set_recovery_used(conn, user.user_id, now)
        self.event(conn, "auth.recovery.used", user.username, {"remaining": remaining})
