"""Account administration: create an account, unlock it, reset its second factors.

Every change is audited with the admin who made it and the reason given, in the same
transaction as the change.
"""

from __future__ import annotations

from auth import lockout, passkeys, recovery, totp
from auth import sessions as session_store
from auth import users as user_store
from auth.passwords import normalise_username
from auth.roles import MFA_REQUIRED_BY_DEFAULT, parse_role
from auth.users import User
from integrity.account_context import AccountContext


class AccountAdmin:
    def __init__(self, ctx: AccountContext) -> None:
        self._ctx = ctx

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
        ctx = self._ctx
        clean_role = parse_role(role)
        name = normalise_username(username)
        need_mfa = clean_role in MFA_REQUIRED_BY_DEFAULT if mfa_required is None else mfa_required
        ctx.policy.password.check(password, mfa=need_mfa, username=name)
        hashed = ctx.hasher.hash(password)
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            user = user_store.create(conn, name, clean_role, hashed, mfa_required=need_mfa, now=now)
            ctx.event(
                conn,
                "admin.user.created",
                name,
                {"role": clean_role, "mfa_required": need_mfa, "reason": reason, "admin": actor},
                actor=actor,
            )
        return user

    def unlock(self, username: str, *, actor: str, reason: str, approved_by: str | None = None) -> None:
        """Clear the account's failure counter (also the 100-failure disable). ``approved_by``:
        the admin who confirmed an operator's command (the actor itself when an admin acts)."""
        ctx = self._ctx
        with ctx.engine.begin() as conn:
            user = ctx.user_or_raise(conn, username)
            cleared = lockout.reset(conn, lockout.account_key(user.username))
            ctx.event(
                conn,
                "admin.user.unlocked",
                user.username,
                {"reason": reason, "admin": approved_by or actor, "counter_cleared": cleared},
                actor=actor,
            )

    def reset_mfa(self, username: str, *, actor: str, reason: str, approved_by: str | None = None) -> None:
        """Forget TOTP and recovery codes, revoke every session, force re-enrolment."""
        ctx = self._ctx
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            user = ctx.user_or_raise(conn, username)
            had = totp.remove(conn, user.user_id)
            recovery.remove_all(conn, user.user_id)
            removed = passkeys.remove_all(conn, user.user_id)
            user_store.set_mfa_required(conn, user.user_id, True)
            user_store.set_recovery_used(conn, user.user_id, None)
            revoked = session_store.revoke_all(conn, user.user_id, now)
            session_store.revoke_challenges(conn, user.user_id, now)
            ctx.event(
                conn,
                "admin.user.mfa_reset",
                user.username,
                {
                    "reason": reason,
                    "admin": approved_by or actor,
                    "had_totp": had,
                    "passkeys": removed,
                    "sessions_revoked": revoked,
                },
                actor=actor,
            )
