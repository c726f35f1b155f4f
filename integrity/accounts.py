"""Use cases of people's accounts, behind one ``AccountService``: administration
(integrity.account_admin), sign-in and its second factor (integrity.sign_in), live sessions,
step-up and one-off confirmation of a second factor (integrity.account_sessions), TOTP and
recovery-code enrolment (integrity.enrolment), password change (integrity.password_change)
and the "My security" reads (integrity.account_status). What they share is in
integrity.account_context.

Every security event goes to the audit log through ``AuditService.record``
(``AccountContext.event`` is the one place that calls it), in the same transaction as the
change it describes. Callers outside get one generic answer (``InvalidCredentials`` → 401,
``LoginThrottled`` → 429); the precise reason is in the audit entry's ``data.reason``.

Every check of a secret (password at login or password change, TOTP or recovery code at
login, step-up or enrolment) first reserves its attempt on the lockout counters
(``auth.lockout.reserve_all``): a refused attempt never reaches the check, a reserved one is
counted as a failure until the secret proves right. The argon2 verification runs outside any
write transaction, after its reservation is committed: on SQLite a write transaction holds the
database's one write lock, and holding it for a 30 ms hash would serialise logins.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, Engine

from auth.passwords import PasswordHasher
from auth.sessions import SessionPolicy
from auth.totp import Enrolment
from auth.users import User
from integrity import account_status, password_change
from integrity.account_admin import AccountAdmin
from integrity.account_context import (
    UNKNOWN_SUBJECT,
    AccountContext,
    AccountPolicy,
    FactorCheck,
    UserPrincipal,
    derive_key,
)
from integrity.account_sessions import AccountSessions
from integrity.account_status import SECURITY_EVENTS_SHOWN, AccountStatus, SecurityEvent
from integrity.audit_service import AuditService
from integrity.enrolment import ConfirmedEnrolment, Enrolments
from integrity.refusal_log import RefusalRecorder
from integrity.settings import Settings
from integrity.sign_in import LoginResult, SignIn


class AccountService:
    """The one object callers use; each method hands over to the module that holds its job."""

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
        self._ctx = AccountContext(
            engine, clock, audit, secrets_key=secrets_key, policy=policy, hasher=hasher, refusals=refusals
        )
        self._admin = AccountAdmin(self._ctx)
        self._sign_in = SignIn(self._ctx)
        self._sessions = AccountSessions(self._ctx)
        self._enrolments = Enrolments(self._ctx)

    @property
    def engine(self) -> Engine:
        return self._ctx.engine

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._ctx.clock

    @property
    def audit(self) -> AuditService:
        return self._ctx.audit

    @property
    def policy(self) -> AccountPolicy:
        return self._ctx.policy

    @property
    def hasher(self) -> PasswordHasher:
        return self._ctx.hasher

    @property
    def refusals(self) -> RefusalRecorder | None:
        return self._ctx.refusals

    # --- admin (integrity.account_admin) ----------------------------------------------------

    def create_user(
        self,
        username: str,
        password: str,
        role: str,
        *,
        actor: str,
        reason: str,
        mfa_required: bool | None = None,
    ) -> User:
        return self._admin.create_user(username, password, role, actor=actor, reason=reason, mfa_required=mfa_required)

    def unlock(self, username: str, *, actor: str, reason: str, approved_by: str | None = None) -> None:
        self._admin.unlock(username, actor=actor, reason=reason, approved_by=approved_by)

    def reset_mfa(self, username: str, *, actor: str, reason: str, approved_by: str | None = None) -> None:
        self._admin.reset_mfa(username, actor=actor, reason=reason, approved_by=approved_by)

    # --- sign-in (integrity.sign_in) --------------------------------------------------------

    def login(self, username: str, password: str, *, address: str, device_token: str | None = None) -> LoginResult:
        return self._sign_in.login(username, password, address=address, device_token=device_token)

    def complete_mfa(
        self,
        mfa_token: str,
        *,
        code: str | None = None,
        recovery_code: str | None = None,
        factor: FactorCheck | None = None,
        address: str,
        device_token: str | None = None,
    ) -> LoginResult:
        return self._sign_in.complete_mfa(
            mfa_token,
            code=code,
            recovery_code=recovery_code,
            factor=factor,
            address=address,
            device_token=device_token,
        )

    # --- sessions, step-up, one-off confirmation (integrity.account_sessions) ---------------

    def authenticate_session(self, token: str) -> UserPrincipal | None:
        return self._sessions.authenticate_session(token)

    def require_step_up(self, token: str) -> UserPrincipal:
        return self._sessions.require_step_up(token)

    def step_up(
        self,
        token: str,
        *,
        code: str | None = None,
        recovery_code: str | None = None,
        factor: FactorCheck | None = None,
        address: str,
    ) -> str:
        return self._sessions.step_up(token, code=code, recovery_code=recovery_code, factor=factor, address=address)

    def confirm_second_factor(
        self,
        username: str,
        *,
        code: str | None = None,
        factor: FactorCheck | None = None,
        address: str,
        purpose: str,
    ) -> UserPrincipal:
        return self._sessions.confirm_second_factor(
            username, code=code, factor=factor, address=address, purpose=purpose
        )

    def spend_totp(self, conn: Connection, user: User, code: str, now: datetime) -> str | None:
        return self._sessions.spend_totp(conn, user, code, now)

    def logout(self, token: str) -> None:
        self._sessions.logout(token)

    # --- enrolment (integrity.enrolment) and password (integrity.password_change) -----------

    def begin_totp_enrolment(self, token: str) -> Enrolment:
        return self._enrolments.begin_totp_enrolment(token)

    def confirm_totp_enrolment(self, token: str, code: str) -> ConfirmedEnrolment:
        return self._enrolments.confirm_totp_enrolment(token, code)

    def regenerate_recovery_codes(self, token: str) -> list[str]:
        return self._enrolments.regenerate_recovery_codes(token)

    def change_password(self, token: str, current: str, new: str, *, address: str) -> str:
        return password_change.change_password(self._ctx, token, current, new, address=address)

    # --- "My security" (integrity.account_status) -------------------------------------------

    def status(self, token: str) -> AccountStatus:
        return account_status.account_status(self._ctx, token)

    def security_events(self, token: str, limit: int = SECURITY_EVENTS_SHOWN) -> list[SecurityEvent]:
        return account_status.security_events(self._ctx, token, limit)


def build_account_service(
    settings: Settings,
    engine: Engine,
    clock: Callable[[], datetime],
    audit: AuditService,
    secrets_key: bytes,
    refusals: RefusalRecorder | None = None,
) -> AccountService:
    """The service as ``build_state`` wires it (session limits from ``BHXH_SESSION_*``)."""
    policy = AccountPolicy(session=SessionPolicy(settings.session_idle_seconds, settings.session_absolute_seconds))
    return AccountService(engine, clock, audit, secrets_key=secrets_key, policy=policy, refusals=refusals)


__all__ = [
    "SECURITY_EVENTS_SHOWN",
    "UNKNOWN_SUBJECT",
    "AccountPolicy",
    "AccountService",
    "AccountStatus",
    "ConfirmedEnrolment",
    "FactorCheck",
    "LoginResult",
    "SecurityEvent",
    "UserPrincipal",
    "build_account_service",
    "derive_key",
]
