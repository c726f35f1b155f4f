"""What the audit log says about the lockout counters (auth.lockout), in one place for every use
case that checks a secret: the accounts (password, TOTP, recovery code) and the passkeys."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from auth import lockout


def throttle_reason(block: lockout.Block) -> str:
    """The audit log's ``reason`` for an attempt that a counter refused."""
    scope = lockout.scope_of(block.key)
    if scope is lockout.Scope.ACCOUNT and block.disabled:
        return "account_disabled"
    return f"throttled_{scope.value}"


def locked_entries(held: Iterable[lockout.Reservation], subject: str) -> list[tuple[str, dict[str, Any]]]:
    """(subject, data) of one ``auth.locked`` entry per counter that a failed attempt put into a
    delay or the disable; an address counter's entry has the subject ``address``."""
    entries: list[tuple[str, dict[str, Any]]] = []
    for r in held:
        failure = r.failure
        if not failure.newly_locked:
            continue
        data: dict[str, Any] = {"scope": r.scope.value, "failures": failure.failures}
        if r.scope is not lockout.Scope.ADDRESS:
            data["disabled"] = failure.disabled
        data["until"] = failure.locked_until.isoformat() if failure.locked_until else None
        entries.append(("address" if r.scope is lockout.Scope.ADDRESS else subject, data))
    return entries
