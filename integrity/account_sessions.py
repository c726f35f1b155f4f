"""Live sessions: who is behind a token, the step-up (a fresh second factor for a session), the
confirmation of a second factor for one operation without a session, and logout."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from auth import lockout, totp
from auth import sessions as session_store
from auth.errors import InvalidCredentials, LoginThrottled, MfaNotEnrolled, SessionInvalid, StepUpRequired
from auth.sessions import Session
from auth.users import User
from integrity.account_context import AccountContext, FactorCheck, OfferedFactor, Refusal, UserPrincipal
from integrity.lockout_events import throttle_reason as _throttle_reason


class AccountSessions:
    def __init__(self, ctx: AccountContext) -> None:
        self._ctx = ctx

    def authenticate_session(self, token: str) -> UserPrincipal | None:
        """The person behind a full session token; None for anything else, including an MFA
        token (half-logged-in) and an enrolment-only session."""
        try:
            _, user = self._ctx.session(token)
        except SessionInvalid:
            return None
        return self._ctx.principal(user)

    def require_step_up(self, token: str) -> UserPrincipal:
        """The person, if the session passed a second factor within the step-up window."""
        ctx = self._ctx
        session, user = ctx.session(token)
        if not session.has_recent_mfa(ctx.clock(), ctx.policy.step_up_seconds):
            raise StepUpRequired(
                f"this operation needs a second factor within the last {ctx.policy.step_up_seconds // 60} minutes"
            )
        return ctx.principal(user)

    def step_up(
        self,
        token: str,
        *,
        code: str | None = None,
        recovery_code: str | None = None,
        factor: FactorCheck | None = None,
        address: str,
    ) -> str:
        """Check a second factor for a live session; returns the rotated session token."""
        ctx = self._ctx
        session, user = ctx.session(token)
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            outcome = self._step_up(conn, session, user, code, recovery_code, factor, address, now)
        if isinstance(outcome, Refusal):
            raise outcome.error
        return outcome

    def _step_up(
        self,
        conn: Connection,
        session: Session,
        user: User,
        code: str | None,
        recovery_code: str | None,
        factor: FactorCheck | None,
        address: str,
        now: datetime,
    ) -> str | Refusal:
        ctx = self._ctx
        checked = OfferedFactor(code, recovery_code, factor)
        method = self._fresh_factor(conn, user, checked, address, now, "auth.mfa.stepup.failed", {})
        if isinstance(method, Refusal):
            return method
        issued = session_store.rotate(conn, session, now, ctx.policy.session, mfa_at=now)
        ctx.event(conn, "auth.mfa.stepup.succeeded", user.username, {"method": method}, pii={"address": address})
        return issued.token

    def confirm_second_factor(
        self,
        username: str,
        *,
        code: str | None = None,
        factor: FactorCheck | None = None,
        address: str,
        purpose: str,
    ) -> UserPrincipal:
        """Check a fresh second factor of ``username`` (a TOTP code, or ``factor``: a passkey)
        for one operation, ``purpose`` (a signature activation): the step-up's check, reserved
        on the account's lockout and spending the code, without a session to rotate. Raises
        ``InvalidCredentials``, ``LoginThrottled``, ``MfaNotEnrolled`` or ``UnknownUser``."""
        ctx = self._ctx
        now = ctx.clock()
        tag = {"purpose": purpose}
        with ctx.engine.begin() as conn:
            user = ctx.user_or_raise(conn, username)
            checked = OfferedFactor(code, None, factor)
            method = self._fresh_factor(conn, user, checked, address, now, "auth.mfa.confirm.failed", tag)
            if not isinstance(method, Refusal):
                ctx.event(conn, "auth.mfa.confirm.succeeded", user.username, {"method": method, **tag})
        if isinstance(method, Refusal):
            raise method.error
        return ctx.principal(user)

    def _fresh_factor(
        self,
        conn: Connection,
        user: User,
        checked: OfferedFactor,
        address: str,
        now: datetime,
        failed: str,
        tag: dict[str, str],
    ) -> str | Refusal:
        """The method of a second factor checked now, once its attempt is reserved on the
        account's lockout; a refusal is logged as ``failed``. A pass resets the account's
        consecutive failures, as a completed sign-in does."""
        ctx = self._ctx
        pii = {"address": address}
        if not totp.status(conn, user.user_id).active:
            return Refusal(MfaNotEnrolled("enrol TOTP first"))
        held = lockout.reserve_all(conn, [lockout.account_key(user.username)], now, ctx.policy.throttle)
        if isinstance(held, lockout.Block):
            ctx.event(conn, failed, user.username, {"reason": _throttle_reason(held), **tag}, pii=pii)
            return Refusal(LoginThrottled(held.retry_after))
        method, reason, remaining = ctx.second_factor(
            conn, user, checked.code, checked.recovery_code, checked.factor, now
        )
        if reason is not None:
            ctx.locked_events(conn, held, user.username, address)
            data = {"reason": reason, "failures": held[0].failure.failures, **tag}
            ctx.event(conn, failed, user.username, data, pii=pii)
            return Refusal(InvalidCredentials("invalid code"))
        if method == "recovery_code":
            ctx.recovery_used(conn, user, remaining, now)
        lockout.settle(conn, held, lockout.Outcome.AUTHENTICATED)
        return method

    def spend_totp(self, conn: Connection, user: User, code: str, now: datetime) -> str | None:
        """Check ``user``'s TOTP code and spend it (replay guard), in the caller's transaction:
        None when right, else the reason for the audit log. For second-factor checks outside
        a session (integrity/operator_auth.py), which do their own lockout accounting."""
        return totp.verify_and_consume(conn, self._ctx.box, user.user_id, code, now).reason

    def logout(self, token: str) -> None:
        ctx = self._ctx
        session, user = ctx.session(token, allow_enrol=True)
        with ctx.engine.begin() as conn:
            session_store.revoke(conn, session.token_hash, ctx.clock())
            ctx.event(conn, "auth.logout", user.username, {})
