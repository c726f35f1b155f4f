"""Which peer a gateway request goes to, and the path it is forwarded to, read from the raw
request target ``/gateway/{peer}/{path}`` (the bytes the sender signed, never the decoded path).

The router matches the decoded path, so ``/gateway/%6Fne-stop/…`` reaches the gateway as peer
``one-stop`` while its raw bytes say something else. Anything a server on either side might
read differently from us is therefore refused before the message is even verified: a
percent-encoded byte in ``/gateway/{peer}``, a ``.`` or ``..`` segment, an empty segment
(``//``), an encoded ``.``, ``/`` or ``\\`` or a raw ``\\`` anywhere, a path longer than
``MAX_PATH_CHARS``. The forwarded path is rebuilt from the checked segments, never cut out of
the raw bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from integrity.exchange import Reason

GATEWAY_SEGMENT = "gateway"
# The longest raw path the gateway forwards; route patterns are at most 500 characters, and a
# dossier path is far shorter.
MAX_PATH_CHARS = 2048
# Encoded dot, slash and backslash, and a raw backslash (RFC 3986 §2.2, §6.2.2: a receiver
# may decode or normalise them into another path).
_AMBIGUOUS = re.compile(r"%2e|%2f|%5c|\\", re.IGNORECASE)


class UnsafeGatewayPath(ValueError):
    """The raw path is refused; ``reason`` says why (the ``reason`` of its ``exchange.rejected``
    entry, one of the path members of ``integrity.exchange.Reason``)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class GatewayTarget:
    """The destination peer and the path and query to forward to under its base URL."""

    peer: str
    forward: str

    @classmethod
    def parse(cls, raw_path: str, query: str = "") -> GatewayTarget:
        """Read ``/gateway/{peer}/{path}`` from the raw path; raises ``UnsafeGatewayPath``."""
        if len(raw_path) > MAX_PATH_CHARS:
            raise UnsafeGatewayPath(Reason.PATH_TOO_LONG, f"the path is longer than {MAX_PATH_CHARS} characters")
        segments = raw_path.split("/")
        # "", "gateway", peer, then the forwarded segments (at least one, maybe empty: "/").
        if len(segments) < 4 or segments[0] != "" or segments[1] != GATEWAY_SEGMENT or "%" in segments[2]:
            raise UnsafeGatewayPath(Reason.ENCODED_NAME, "the gateway and peer segments must be sent unencoded")
        peer, rest = segments[2], segments[3:]
        if any(s in (".", "..") for s in segments):
            raise UnsafeGatewayPath(Reason.DOT_SEGMENT, "the path holds a '.' or '..' segment")
        # A trailing slash is an empty last segment; an empty one anywhere else is a "//".
        if not peer or any(s == "" for s in rest[:-1]):
            raise UnsafeGatewayPath(Reason.EMPTY_SEGMENT, "the path holds an empty segment ('//')")
        if _AMBIGUOUS.search(raw_path):
            raise UnsafeGatewayPath(Reason.AMBIGUOUS_PATH_BYTE, "the path holds an encoded '.', '/' or '\\'")
        return cls(peer, "/" + "/".join(rest) + (f"?{query}" if query else ""))
