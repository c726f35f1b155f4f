"""What a person sees of their own account's security ("My security"): its state and its recent
security events from the audit log. Reads only."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from audit.tables import audit_entries
from auth import recovery, totp
from integrity.account_context import AccountContext

SECURITY_EVENTS_SHOWN = 20
_SECURITY_ACTION_PREFIXES = ("auth.", "admin.user.")


@dataclass(frozen=True)
class SecurityEvent:
    seq: int
    ts: str
    action: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class AccountStatus:
    username: str
    role: str
    mfa_enabled: bool
    mfa_required: bool
    enrolment_pending: bool
    session_kind: str
    session_expires_at: datetime
    step_up_valid: bool
    recovery_codes_left: int
    recovery_code_used_at: datetime | None


def account_status(ctx: AccountContext, token: str) -> AccountStatus:
    session, user = ctx.session(token, allow_enrol=True)
    now = ctx.clock()
    with ctx.read() as conn:
        state = totp.status(conn, user.user_id)
        left = recovery.remaining(conn, user.user_id)
    return AccountStatus(
        username=user.username,
        role=user.role,
        mfa_enabled=state.active,
        mfa_required=user.mfa_required,
        enrolment_pending=state.pending,
        session_kind=session.kind,
        session_expires_at=session.expires_at,
        step_up_valid=session.has_recent_mfa(now, ctx.policy.step_up_seconds),
        recovery_codes_left=left,
        recovery_code_used_at=user.recovery_used_at,
    )


def security_events(ctx: AccountContext, token: str, limit: int = SECURITY_EVENTS_SHOWN) -> list[SecurityEvent]:
    """The account's recent security events, newest first, from the audit log."""
    _, user = ctx.session(token, allow_enrol=True)
    with ctx.read() as conn:
        rows = conn.execute(
            select(audit_entries.c.seq, audit_entries.c.ts, audit_entries.c.action, audit_entries.c.data)
            .where(audit_entries.c.subject == user.username)
            .order_by(audit_entries.c.seq.desc())
            .limit(limit * 3)
        ).all()
    events = [
        SecurityEvent(r.seq, r.ts, r.action, json.loads(r.data))
        for r in rows
        if r.action.startswith(_SECURITY_ACTION_PREFIXES)
    ]
    return events[:limit]
