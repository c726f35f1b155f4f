"""Who runs a command from the server's shell, and the admin's second factor for the sensitive ones.

Every command that acts writes its audit entries as ``operator:<OS login>``, the person at the
shell, never as the service's own ``system``. The login is the one the OS gives: ``SUDO_USER``
when the command runs through sudo (the person who ran sudo, not the service account it
switched to), else ``getpass.getuser()`` (``LOGNAME``, ``USER``, ``LNAME``, ``USERNAME``, then
the password database entry of the process's user). When none names anybody the command is
refused: an entry is never written under a made-up name.

A local user can set those variables, so the name alone proves nothing. The commands that could
hide or enable abuse (erasing personal data, retiring a key, by rotation too, or revoking it,
unlocking an account, resetting a second factor, changing an exchange peer) also need the
current TOTP code of an administrator's account (RFC 6238). It is checked and spent like any code: counted on that
account's lockout (auth.lockout), refused when replayed, and every attempt is logged with the
operator as actor. The entries of the command then name that admin beside the operator.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection

from auth import lockout, totp
from auth import users as user_store
from auth.errors import InvalidCredentials, InvalidUsername, LoginThrottled, MfaNotEnrolled, UnknownUser
from auth.passwords import normalise_username
from auth.roles import scopes_for
from auth.users import User
from integrity.accounts import AccountService
from integrity.errors import ApproverNotAdmin, OperatorUnknown
from integrity.lockout_events import locked_entries, throttle_reason

OPERATOR_PREFIX = "operator:"
ADMIN_SCOPE = "admin"
MAX_LOGIN_CHARS = 64
# What an audit actor may hold after its prefix (audit.entry.ACTOR_PATTERN), shorter.
_LOGIN = re.compile(rf"[^\s\x00-\x1f\x7f]{{1,{MAX_LOGIN_CHARS}}}")
CONFIRMED_ACTION = "auth.operator.confirmed"
REFUSED_ACTION = "auth.operator.refused"


class SensitiveCommand(StrEnum):
    """The commands that need an administrator's second factor, named as the CLI spells them."""

    ERASE_PERSONAL_DATA = "audit erase-pii"
    RETIRE_KEY = "keys retire"
    ROTATE_KEY = "keys rotate"  # retires the current key
    REVOKE_KEY = "keys revoke"
    UNLOCK_ACCOUNT = "users unlock"
    RESET_MFA = "users reset-mfa"
    ADD_PEER = "exchange peers add"
    UPDATE_PEER = "exchange peers update"
    REMOVE_PEER = "exchange peers remove"


@dataclass(frozen=True)
class Operator:
    """The OS login running a command, and the admin whose code confirmed it (if one did)."""

    login: str
    admin: str | None = None

    @property
    def actor(self) -> str:
        return f"{OPERATOR_PREFIX}{self.login}"

    @property
    def approved_by(self) -> str | None:
        """The confirming admin as an audit actor, ``user:<name>``."""
        return f"user:{self.admin}" if self.admin is not None else None


def os_login(environ: Mapping[str, str] | None = None) -> str:
    """The OS login of the person running this process; OperatorUnknown when there is none."""
    env = os.environ if environ is None else environ
    name = env.get("SUDO_USER", "").strip()
    if not name:
        try:
            name = getpass.getuser().strip()
        except (OSError, KeyError):  # no variable set and no password database entry
            name = ""
    if not name:
        raise OperatorUnknown(
            "cannot tell who runs this command: the OS gives no login name (run it from a login shell or "
            "through sudo, or set LOGNAME)"
        )
    if not _LOGIN.fullmatch(name):
        raise OperatorUnknown(f"the OS login {name!r} is not one word of at most {MAX_LOGIN_CHARS} characters")
    return name


def current_operator() -> Operator:
    return Operator(os_login())


def confirm(accounts: AccountService, operator: Operator, admin: str, code: str, command: SensitiveCommand) -> Operator:
    """``operator`` confirmed by the TOTP code of the admin account ``admin``; raises
    UnknownUser, ApproverNotAdmin, MfaNotEnrolled, InvalidCredentials or LoginThrottled, and
    then nothing of the command may run. A wrong code stays counted and logged."""
    with accounts.engine.begin() as conn:
        user = _admin(conn, admin)
        refusal = _check(accounts, conn, user, code.strip(), operator.actor, {"command": command.value})
    if refusal is not None:
        raise refusal
    return Operator(operator.login, user.username)


def _admin(conn: Connection, admin: str) -> User:
    try:
        name = normalise_username(admin)
    except InvalidUsername as exc:
        raise UnknownUser(f"no account {admin!r}") from exc
    user = user_store.by_name(conn, name)
    if user is None:
        raise UnknownUser(f"no account {name!r}: a sensitive command is confirmed by an administrator's account")
    if ADMIN_SCOPE not in scopes_for(user.role):
        raise ApproverNotAdmin(f"{name!r} has the role {user.role!r}: only an administrator confirms this command")
    return user


def _check(
    accounts: AccountService, conn: Connection, user: User, code: str, actor: str, data: dict[str, Any]
) -> Exception | None:
    """The refusal to raise once this transaction commits (so the counted failure and its entry
    stay), or None when the code is right."""
    now = accounts.clock()
    if not totp.status(conn, user.user_id).active:
        return MfaNotEnrolled(f"{user.username!r} has no TOTP second factor: enrol one first")
    held = lockout.reserve_all(conn, [lockout.account_key(user.username)], now, accounts.policy.throttle)
    if isinstance(held, lockout.Block):
        refused = {**data, "reason": throttle_reason(held)}
        accounts.audit.record(actor, REFUSED_ACTION, user.username, refused, conn=conn)
        return LoginThrottled(held.retry_after)
    reason = accounts.spend_totp(conn, user, code, now) if code else "no_second_factor_given"
    if reason is not None:
        for subject, locked in locked_entries(held, user.username):
            accounts.audit.record(actor, "auth.locked", subject, locked, conn=conn)
        refused = {**data, "reason": reason, "failures": held[0].failure.failures}
        accounts.audit.record(actor, REFUSED_ACTION, user.username, refused, conn=conn)
        return InvalidCredentials(f"wrong or already used code for {user.username!r}: nothing was done")
    # A code alone is not a sign-in: its attempt is given back, earlier failures stand.
    lockout.settle(conn, held, lockout.Outcome.PASSED)
    accounts.audit.record(actor, CONFIRMED_ACTION, user.username, data, conn=conn)
    return None


__all__ = ["Operator", "SensitiveCommand", "confirm", "current_operator", "os_login"]
