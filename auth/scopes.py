"""The API scopes (the table in docs/api.md)."""

from __future__ import annotations

from auth.errors import UnknownScope

SCOPES: frozenset[str] = frozenset(
    {"sign", "verify", "exchange:consume", "receipts:issue", "receipts:read", "audit:append", "audit:read", "admin"}
)


def parse_scopes(values: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    """Parse ``a,b`` or a list into a set of known scopes; an unknown or empty scope is refused."""
    items = values.split(",") if isinstance(values, str) else list(values)
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = sorted(scopes - SCOPES)
    if unknown:
        # repr: the names come from the caller and may hold anything, lone surrogates included.
        raise UnknownScope(f"unknown scope(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(SCOPES))}")
    if not scopes:
        raise UnknownScope("at least one scope is required")
    return scopes
