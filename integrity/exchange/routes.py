"""Which method and path a peer may use through the gateway: its route patterns.

A pattern is ``METHOD /path``, where ``METHOD`` may be ``*``, ``*`` matches within one path
segment and a ``**`` segment matches any number of segments (docs/exchange-profile.md §2).
Paths are matched as sent, never normalised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from integrity.errors import InvalidPeer
from integrity.exchange.logged_text import MAX_LOGGED_TEXT

ROUTE_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})
MAX_ROUTE_CHARS = 500
_AMBIGUOUS_PATH = re.compile(r"%2e|%2f|%5c|\\", re.IGNORECASE)


def _route_regex(pattern: str) -> re.Pattern[str]:
    # A route pattern is the project's own tiny glob: "*" matches within one path segment,
    # a "**" segment matches any number of segments. fnmatch lets "*" cross "/" and would
    # make "/gateway/one-stop/*" also allow "/gateway/one-stop/a/../../portal".
    parts: list[str] = []
    for segment in pattern.strip("/").split("/"):
        if segment == "**":
            parts.append("(?:/[^/]+)*")
        else:
            parts.append("/" + "[^/]*".join(re.escape(piece) for piece in segment.split("*")))
    body = "".join(parts) if pattern != "/" else "/"
    return re.compile(f"^{body}/?$")


@dataclass(frozen=True)
class Route:
    """One route a peer may use: a method (or ``*``) and a path pattern, e.g.
    ``POST /gateway/one-stop/v1/dossiers`` or ``GET /gateway/one-stop/v1/dossiers/*``."""

    method: str
    pattern: str
    _regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Route:
        method, _, pattern = text.strip().partition(" ")
        method, pattern = method.upper(), pattern.strip()
        if (
            method not in ROUTE_METHODS
            or not pattern.startswith("/")
            or len(text) > MAX_ROUTE_CHARS
            or any(c.isspace() or not c.isprintable() for c in pattern)
            or "?" in pattern
            or any(seg in {".", ".."} for seg in pattern.split("/"))
            or any("**" in seg and seg != "**" for seg in pattern.split("/"))
        ):
            raise InvalidPeer(
                f"route {text[:MAX_LOGGED_TEXT]!r} is not 'METHOD /path' (globs: * within a segment, ** for segments)"
            )
        return cls(method, pattern, _route_regex(pattern))

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method.upper()):
            return False
        # A path is matched as sent, never normalised, so anything a server behind the gateway
        # might normalise into another path is refused outright: dot segments, and encoded
        # dots, slashes and backslashes (RFC 3986 §6.2.2 is the receiver's to apply, not ours).
        if any(seg in {".", ".."} for seg in path.split("/")) or _AMBIGUOUS_PATH.search(path):
            return False
        return self._regex.match(path) is not None

    def __str__(self) -> str:
        return f"{self.method} {self.pattern}"
