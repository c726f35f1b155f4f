"""The one fast path of the verifier: the same checks as ``audit.verify.ChainVerifier`` with
less parsing, for exports of millions of entries and the nightly check of the live log.
tests/audit/test_verify_fast.py proves by property that both reach the same report.

The idea, in both entry points: hash the entry's bytes exactly as they came, before parsing
anything. If those bytes hash to the entry's claimed hash, the fields can be read straight
from them. Why that is sound: an entry only counts once it is anchored, i.e. its hash is a
leaf under a trusted signed checkpoint; the log computed every such leaf over the entry's
RFC 8785 bytes, so by SHA-256's collision resistance bytes that give the same hash ARE those
canonical bytes, and the fields read from them are the logged ones. Bytes that do not hash to
the claimed value, or are laid out otherwise, go to the reference path, which decides.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from audit.entry import LEAF_PREFIX, hash_fields
from audit.errors import InvalidEntry
from audit.verify import ChainVerifier, Personal, StoredRow

_HASH_MEMBER = b',"hash":"'
# An entry line exactly as the exporter writes it (RFC 8785 member order, our field formats):
# the head up to the action, and the tail from the hash member to the end.
# Tail groups: 1 hash, 2 pii, 3 prev, 4 seq, 5 ts.
_CANONICAL_HEAD = re.compile(rb'\{"action":"([a-z0-9_.-]{1,100})",')
_CANONICAL_TAIL = re.compile(
    rb',"hash":"([0-9a-f]{64})","pii":(null|"[0-9a-f]{64}"),"prev":"([0-9a-f]{64})",'
    rb'"seq":(0|[1-9][0-9]{0,15}),"subject":"(?:[^"\\]|\\.)*",'
    rb'"ts":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)"\}'
)
_sha256 = hashlib.sha256


class FastChainVerifier(ChainVerifier):
    """``ChainVerifier`` whose ``add_line`` and ``add_stored`` try the bytes-first shortcut."""

    def add_line(self, line: bytes) -> None:
        # JCS orders the members action, actor, data, hash, pii, prev, seq, subject, ts, so the
        # body's JCS bytes are the line without its hash member. The last raw `,"hash":"` is
        # that member (a JSON string cannot hold a raw quote, and the members after it are hex,
        # digits and one string); the strict tail pattern must reach the final '}'.
        line = line.rstrip(b"\r\n")
        at = line.rfind(_HASH_MEMBER)
        tail = _CANONICAL_TAIL.fullmatch(line, at) if at > 0 else None
        head = _CANONICAL_HEAD.match(line) if tail is not None else None
        if head is None or tail is None or head.end() > at:
            super().add_line(line)
            return
        claimed = tail.group(1).decode()
        if _sha256(LEAF_PREFIX + line[:at] + line[tail.end(1) + 1 :]).hexdigest() != claimed:
            super().add_line(line)
            return
        pii = tail.group(2)

        def body() -> dict[str, Any]:
            obj: dict[str, Any] = json.loads(line)
            obj.pop("hash", None)
            return obj

        self._add_hashed(
            int(tail.group(4)),
            tail.group(3).decode(),
            claimed,
            tail.group(5).decode(),
            head.group(1).decode(),
            None if pii == b"null" else pii[1:-1].decode(),
            None,
            body,
        )

    def add_stored(self, row: StoredRow, personal: Personal | None = None) -> None:
        # The stored ``data`` text is JCS when the log wrote it; hashed as it is, without parsing.
        seq, ts, actor, action, subject, data_text, commitment, prev, claimed = row
        try:
            exact = hash_fields(seq, ts, actor, action, subject, data_text.encode(), commitment, prev) == claimed
        except (InvalidEntry, TypeError, AttributeError):  # a mistyped column, as an insider could write
            exact = False
        if not exact:
            super().add_stored(row, personal)
            return

        def body() -> dict[str, Any]:
            return {
                "seq": seq,
                "ts": ts,
                "actor": actor,
                "action": action,
                "subject": subject,
                "data": json.loads(data_text),
                "pii": commitment,
                "prev": prev,
            }

        self._add_hashed(seq, prev, claimed, ts, action, commitment, personal, body)
