"""A person changing their own password, proved by the current one."""

from __future__ import annotations

from auth import lockout, totp
from auth import sessions as session_store
from auth import users as user_store
from auth.errors import InvalidCredentials, LoginThrottled
from integrity.account_context import AccountContext
from integrity.lockout_events import throttle_reason as _throttle_reason


def change_password(ctx: AccountContext, token: str, current: str, new: str, *, address: str) -> str:
    """Change the password; every session is revoked and a new one returned."""
    session, user = ctx.session(token)
    with ctx.read() as conn:
        has_mfa = totp.status(conn, user.user_id).active
    ctx.policy.password.check(new, mfa=has_mfa, username=user.username)
    pii = {"address": address}
    # The current password is a guessable secret like the login's: same counter, reserved
    # before argon2, so a stolen session cannot guess it faster than a login could.
    with ctx.engine.begin() as conn:
        held = lockout.reserve_all(conn, [lockout.account_key(user.username)], ctx.clock(), ctx.policy.throttle)
        if isinstance(held, lockout.Block):
            reason = _throttle_reason(held)
            ctx.event(conn, "auth.password.change_failed", user.username, {"reason": reason}, pii=pii)
    if isinstance(held, lockout.Block):
        raise LoginThrottled(held.retry_after)
    if not ctx.hasher.verify(user.password_hash, current).ok:
        with ctx.engine.begin() as conn:
            ctx.locked_events(conn, held, user.username, address)
            ctx.event(conn, "auth.password.change_failed", user.username, {"reason": "bad_password"}, pii=pii)
        raise InvalidCredentials("invalid password")
    hashed = ctx.hasher.hash(new)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        # A password change is not a sign-in: the attempt is given back, earlier failures stand.
        lockout.settle(conn, held, lockout.Outcome.PASSED)
        user_store.set_password_hash(conn, user.user_id, hashed, now)
        revoked = session_store.revoke_all(conn, user.user_id, now)
        issued = session_store.create(
            conn,
            user.user_id,
            session.kind,
            now,
            ctx.policy.session,
            mfa_at=session.mfa_at,
            expires_at=session.expires_at,
        )
        ctx.event(conn, "auth.password.changed", user.username, {"sessions_revoked": revoked}, pii={"address": address})
    return issued.token
