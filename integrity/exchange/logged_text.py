"""How much of a sender's own text (a keyid, a method, a refusal's detail, a peer name) an
error message or audit entry may echo: printable characters only, and at most
``MAX_LOGGED_TEXT`` of them, whatever the sender sent."""

from __future__ import annotations

MAX_LOGGED_TEXT = 128


def short(text: str | None) -> str | None:
    if text is None:
        return None
    return "".join(c for c in text if c.isprintable())[:MAX_LOGGED_TEXT]
