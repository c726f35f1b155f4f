"""Sign-in: the password, then the second factor when the account has one, then a session.

Callers outside get one generic answer (``InvalidCredentials`` → 401, ``LoginThrottled`` → 429);
the precise reason is in the audit entry's ``data.reason``. Each attempt is reserved on the
lockout counters before its secret is checked (see integrity.accounts).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from auth import lockout, totp
from auth import sessions as session_store
from auth import users as user_store
from auth.errors import InvalidCredentials, InvalidUsername, LoginThrottled
from auth.passwords import normalise_username
from auth.sessions import ENROL, FULL
from auth.users import User
from integrity.account_context import UNKNOWN_SUBJECT, AccountContext, FactorCheck, Refusal
from integrity.lockout_events import throttle_reason as _throttle_reason
from integrity.refusal_log import RefusalKind

_ATTEMPT_TAG_HEX = 16


@dataclass(frozen=True)
class LoginResult:
    """``token`` for a session, or ``mfa_required`` with ``mfa_token`` (half-logged-in)."""

    token: str | None = None
    mfa_required: bool = False
    mfa_token: str | None = None
    enrolment_required: bool = False  # the session may only enrol TOTP
    device_token: str | None = None


class SignIn:
    def __init__(self, ctx: AccountContext) -> None:
        self._ctx = ctx

    def _one_by_one(self, address: str, reason: str) -> bool:
        """Whether an anonymous refusal (no known account, or refused by the throttle before
        any check) gets its own entry; past the per-address limit it is counted in a summary
        (integrity.refusal_log). A failure against a known account always has its own entry:
        the account's lockout bounds those."""
        refusals = self._ctx.refusals
        return refusals is None or refusals.admit(RefusalKind.LOGIN, address, reason)

    def _flush_refusals(self) -> None:
        # Outside any transaction: the summaries take the audit log's group commit.
        if self._ctx.refusals is not None:
            self._ctx.refusals.flush_due()

    # --- the password -----------------------------------------------------------------------

    def login(self, username: str, password: str, *, address: str, device_token: str | None = None) -> LoginResult:
        ctx = self._ctx
        now = ctx.clock()
        try:
            name: str | None = normalise_username(username)
        except InvalidUsername:
            name = None
        # Reserve the attempt before the hash: one that a delay, the cap or the address limit
        # refuses never reaches argon2, and concurrent ones cannot all slip past one check.
        with ctx.engine.begin() as conn:
            user = user_store.by_name(conn, name) if name else None
            device = ctx.devices.verify(device_token, user.user_id, now) if user else None
            subject, pii, tag = self._subject(user, username, address)
            held = self._reserve(conn, name, address, device.device_id if device else None, now)
            if isinstance(held, lockout.Block) and self._one_by_one(address, _throttle_reason(held)):
                ctx.event(
                    conn,
                    "auth.login.failed",
                    subject,
                    {"reason": _throttle_reason(held), "stage": "password", **tag},
                    pii=pii,
                )
        if isinstance(held, lockout.Block):
            self._flush_refusals()
            raise LoginThrottled(held.retry_after)
        # The hash, outside any transaction; a dummy one when the account does not exist, so
        # both paths cost the same (enumeration resistance).
        check = ctx.hasher.verify(user.password_hash, password) if user else ctx.hasher.verify_dummy(password)
        if not check.ok or user is None:
            reason = "bad_password" if user else ("unknown_user" if name else "invalid_username")
            logged = user is not None or self._one_by_one(address, reason)
            with ctx.engine.begin() as conn:
                ctx.locked_events(conn, held, subject, address)  # the failure is already counted
                if logged:
                    ctx.event(
                        conn, "auth.login.failed", subject, {"reason": reason, "stage": "password", **tag}, pii=pii
                    )
            self._flush_refusals()
            raise InvalidCredentials("invalid username or password")
        new_hash = ctx.hasher.hash(password) if check.needs_rehash else None
        with ctx.engine.begin() as conn:
            if new_hash is not None:
                user_store.set_password_hash(conn, user.user_id, new_hash)
                ctx.event(conn, "auth.password.rehashed", user.username, {})
            if totp.status(conn, user.user_id).active:
                # The password alone completes nothing: its attempt is given back, and earlier
                # failures stand until the second factor passes.
                lockout.settle(conn, held, lockout.Outcome.PASSED)
                mfa_token = session_store.create_challenge(conn, user.user_id, now)
                ctx.event(conn, "auth.mfa.challenged", user.username, {"device_known": device is not None}, pii=pii)
                return LoginResult(mfa_required=True, mfa_token=mfa_token)
            kind = ENROL if user.mfa_required else FULL
            return self._open_session(conn, user, kind, now, device, "password", pii, held, mfa_at=None)

    # --- the second factor ------------------------------------------------------------------

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
        ctx = self._ctx
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            outcome = self._complete_mfa(conn, mfa_token, code, recovery_code, factor, address, device_token, now)
        if isinstance(outcome, Refusal):
            self._flush_refusals()
            raise outcome.error
        return outcome

    def _complete_mfa(
        self,
        conn: Connection,
        mfa_token: str,
        code: str | None,
        recovery_code: str | None,
        factor: FactorCheck | None,
        address: str,
        device_token: str | None,
        now: datetime,
    ) -> LoginResult | Refusal:
        ctx = self._ctx
        challenge = session_store.find_challenge(conn, mfa_token, now)
        user = user_store.by_id(conn, challenge.user_id) if challenge else None
        if challenge is None or user is None:
            # No account to count against: the source address takes the attempt.
            held = lockout.reserve_all(conn, [lockout.address_key(address)], now, ctx.policy.throttle)
            if isinstance(held, lockout.Block):
                if self._one_by_one(address, "throttled_address"):
                    ctx.event(
                        conn,
                        "auth.login.failed",
                        UNKNOWN_SUBJECT,
                        {"reason": "throttled_address", "stage": "mfa"},
                        pii={"address": address},
                    )
                return Refusal(LoginThrottled(held.retry_after))
            ctx.locked_events(conn, held, UNKNOWN_SUBJECT, address)
            if self._one_by_one(address, "mfa_token_invalid"):
                ctx.event(
                    conn,
                    "auth.login.failed",
                    UNKNOWN_SUBJECT,
                    {"reason": "mfa_token_invalid", "stage": "mfa"},
                    pii={"address": address},
                )
            return Refusal(InvalidCredentials("invalid or expired MFA token"))
        device = ctx.devices.verify(device_token, user.user_id, now)
        pii = {"address": address}
        # Reserved in this transaction, before the code is checked: the row stays locked until
        # commit, so concurrent codes for one account are checked one at a time.
        held = self._reserve(conn, user.username, address, device.device_id if device else None, now)
        if isinstance(held, lockout.Block):
            ctx.event(
                conn, "auth.login.failed", user.username, {"reason": _throttle_reason(held), "stage": "mfa"}, pii=pii
            )
            return Refusal(LoginThrottled(held.retry_after))
        method, reason, remaining = ctx.second_factor(conn, user, code, recovery_code, factor, now)
        if reason is None and not session_store.consume_challenge(conn, challenge, now):
            reason = "mfa_token_reused"
        if reason is not None:
            session_store.fail_challenge(conn, challenge)
            ctx.locked_events(conn, held, user.username, address)
            ctx.event(conn, "auth.login.failed", user.username, {"reason": reason, "stage": "mfa"}, pii=pii)
            return Refusal(InvalidCredentials("invalid code"))
        if method == "recovery_code":
            ctx.recovery_used(conn, user, remaining, now)
        return self._open_session(conn, user, FULL, now, device, f"password+{method}", pii, held, mfa_at=now)

    # --- the session ------------------------------------------------------------------------

    def _open_session(
        self,
        conn: Connection,
        user: User,
        kind: str,
        now: datetime,
        device: Any,
        method: str,
        pii: dict[str, Any] | None,
        held: tuple[lockout.Reservation, ...],
        *,
        mfa_at: datetime | None,
    ) -> LoginResult:
        ctx = self._ctx
        # A completed sign-in: the account's consecutive failures start over (a known device's
        # too, when it was one); the address gets its attempt back.
        lockout.settle(conn, held, lockout.Outcome.AUTHENTICATED)
        lockout.reset(conn, lockout.account_key(user.username))
        issued = session_store.create(conn, user.user_id, kind, now, ctx.policy.session, mfa_at=mfa_at)
        device_token = ctx.devices.issue(user.user_id, now, device.device_id if device else None)
        ctx.event(
            conn,
            "auth.login.succeeded",
            user.username,
            {"method": method, "session": kind, "device_known": device is not None},
            pii=pii,
        )
        return LoginResult(token=issued.token, enrolment_required=kind == ENROL, device_token=device_token)

    # --- throttling -------------------------------------------------------------------------

    def _reserve(
        self, conn: Connection, name: str | None, address: str, device_id: str | None, now: datetime
    ) -> tuple[lockout.Reservation, ...] | lockout.Block:
        """Reserve a sign-in attempt (password or second factor). A known device's attempt is
        counted on the device alone: it passes the account's temporary delay and the address
        limit, but not the 100-failure disable. Any other is counted on the account (when the
        name is well-formed, known or not) and on the address, account first."""
        policy = self._ctx.policy.throttle
        if device_id is not None:
            acct = lockout.check(conn, lockout.account_key(name), now, policy) if name else None
            if acct is not None and acct.disabled:
                return acct
            return lockout.reserve_all(conn, [lockout.device_key(device_id)], now, policy)
        keys = [lockout.account_key(name)] if name is not None else []
        return lockout.reserve_all(conn, [*keys, lockout.address_key(address)], now, policy)

    def _subject(self, user: User | None, typed: str, address: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        """(subject, personal data, extra data) of a login event. An unknown name may be a
        password typed into the wrong box, so it is stored nowhere, not even as personal data:
        only a keyed fingerprint, which lets an auditor see that attempts repeat a name."""
        if user is None:
            tag = hmac.new(self._ctx.attempt_key, typed.strip().casefold().encode(), hashlib.sha256).hexdigest()
            return UNKNOWN_SUBJECT, {"address": address}, {"attempted": tag[:_ATTEMPT_TAG_HEX]}
        return user.username, {"address": address}, {}
