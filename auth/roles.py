"""People's roles and the API scopes each role grants to a fully logged-in session."""

from __future__ import annotations

from auth.errors import InvalidRole

OFFICER = "officer"
AUDITOR = "auditor"
ADMIN = "admin"
CITIZEN = "citizen"

# Scope names are those of auth/scopes.py (see docs/api.md). ``sign`` signs data messages as
# the institution: it belongs to systems (API clients), never to a person's session, because a
# person signs only as themselves (Decision 352 forbids signing with another's signature).
# Personal signing uses the person's own key after a recent second factor (step-up).
ROLE_SCOPES: dict[str, frozenset[str]] = {
    OFFICER: frozenset({"verify", "receipts:issue", "receipts:read"}),
    AUDITOR: frozenset({"verify", "audit:read", "receipts:read"}),
    ADMIN: frozenset({"admin", "verify", "audit:read"}),
    CITIZEN: frozenset({"verify"}),
}
ROLES = frozenset(ROLE_SCOPES)
# Staff accounts must enrol a second factor before they can do anything else.
MFA_REQUIRED_BY_DEFAULT = frozenset({OFFICER, AUDITOR, ADMIN})


def parse_role(value: str) -> str:
    role = value.strip().lower()
    if role not in ROLES:
        raise InvalidRole(f"unknown role {value!r}; known: {', '.join(sorted(ROLES))}")
    return role


def scopes_for(role: str) -> frozenset[str]:
    return ROLE_SCOPES.get(role, frozenset())
