"""Who may approve erasing personal data from the audit log when no request carries an identity.

Over HTTP the authenticated admin approves (``POST /v1/admin/audit/pii/{seq}/erase``). The
``audit erase-pii`` command runs with the database's own rights and no login, so the operator
names the approving administrator: the name must be an account holding the admin role, and it
is recorded in the erasure marker as ``user:<name>`` (audit.erasure).
"""

from __future__ import annotations

from sqlalchemy import Engine

from auth import UnknownUser, normalise_username
from auth import users as user_store
from auth.roles import scopes_for
from integrity.db import READ_ONLY
from integrity.errors import ApproverNotAdmin

ADMIN_SCOPE = "admin"


def admin_approver(engine: Engine, username: str) -> str:
    """``user:<name>`` of the admin account ``username``; InvalidUsername, UnknownUser or
    ApproverNotAdmin otherwise."""
    name = normalise_username(username)
    with engine.connect().execution_options(**READ_ONLY) as conn:
        user = user_store.by_name(conn, name)
    if user is None:
        raise UnknownUser(f"no account {name!r}: the approver must be an administrator's account")
    if ADMIN_SCOPE not in scopes_for(user.role):
        raise ApproverNotAdmin(f"{name!r} has the role {user.role!r}; only an administrator approves an erasure")
    return f"user:{user.username}"
