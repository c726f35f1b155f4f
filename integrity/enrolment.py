"""Enrolment of a second factor: a TOTP secret (RFC 6238) confirmed by a code, and the recovery
codes that come with it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from auth import lockout, recovery, totp
from auth import sessions as session_store
from auth import users as user_store
from auth.errors import InvalidCredentials, LoginThrottled, MfaNotEnrolled, StepUpRequired
from auth.sessions import FULL, Session
from auth.totp import Enrolment
from auth.users import User
from integrity.account_context import AccountContext, Refusal


@dataclass(frozen=True)
class ConfirmedEnrolment:
    recovery_codes: list[str]  # shown once
    token: str  # the rotated session token


class Enrolments:
    def __init__(self, ctx: AccountContext) -> None:
        self._ctx = ctx

    def begin_totp_enrolment(self, token: str) -> Enrolment:
        ctx = self._ctx
        session, user = ctx.session(token, allow_enrol=True)
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            # Replacing an active second factor is an MFA change: it needs a fresh step-up.
            if totp.status(conn, user.user_id).active and not session.has_recent_mfa(now, ctx.policy.step_up_seconds):
                raise StepUpRequired("replacing the second factor needs a recent step-up")
            secret = totp.new_secret()
            totp.start_enrolment(conn, ctx.box, user.user_id, secret, now)
            ctx.event(conn, "auth.mfa.enrolment_started", user.username, {})
        return totp.enrolment_for(secret, user.username, ctx.policy.issuer)

    def confirm_totp_enrolment(self, token: str, code: str) -> ConfirmedEnrolment:
        ctx = self._ctx
        session, user = ctx.session(token, allow_enrol=True)
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            outcome = self._confirm(conn, session, user, code, now)
        if isinstance(outcome, Refusal):
            raise outcome.error
        return outcome

    def _confirm(
        self, conn: Connection, session: Session, user: User, code: str, now: datetime
    ) -> ConfirmedEnrolment | Refusal:
        ctx = self._ctx
        held = lockout.reserve_all(conn, [lockout.account_key(user.username)], now, ctx.policy.throttle)
        if isinstance(held, lockout.Block):
            return Refusal(LoginThrottled(held.retry_after))
        match = totp.confirm_enrolment(conn, ctx.box, user.user_id, code, now)
        if not match.ok:
            ctx.locked_events(conn, held, user.username, None)
            ctx.event(conn, "auth.mfa.enrolment_failed", user.username, {"reason": "bad_totp"})
            return Refusal(InvalidCredentials("invalid code"))
        # A code of the new secret proves nothing about the account's existing factors: the
        # attempt is given back, earlier failures stand.
        lockout.settle(conn, held, lockout.Outcome.PASSED)
        codes = recovery.replace_all(conn, user.user_id, now)
        user_store.set_recovery_used(conn, user.user_id, None)
        # An MFA change revokes every other session; this one is rotated and now counts as
        # having passed the second factor.
        revoked = session_store.revoke_all(conn, user.user_id, now, keep=session.token_hash)
        issued = session_store.rotate(conn, session, now, ctx.policy.session, kind=FULL, mfa_at=now)
        ctx.event(conn, "auth.mfa.enrolled", user.username, {"method": "totp", "sessions_revoked": revoked})
        return ConfirmedEnrolment(codes, issued.token)

    def regenerate_recovery_codes(self, token: str) -> list[str]:
        ctx = self._ctx
        session, user = ctx.session(token)
        now = ctx.clock()
        if not session.has_recent_mfa(now, ctx.policy.step_up_seconds):
            raise StepUpRequired("new recovery codes need a recent second factor")
        with ctx.engine.begin() as conn:
            if not totp.status(conn, user.user_id).active:
                raise MfaNotEnrolled("enrol TOTP first")
            codes = recovery.replace_all(conn, user.user_id, now)
            user_store.set_recovery_used(conn, user.user_id, None)
            ctx.event(conn, "auth.recovery.regenerated", user.username, {"count": len(codes)})
        return codes
