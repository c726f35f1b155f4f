"""Audit entries: the fixed JSON shape, RFC 8785 canonical form and the leaf hash.

docs/audit-log.md: ``hash`` = hex(SHA-256(0x00 ‖ JCS(entry without ``hash``))). The
same value is the chain link (``prev`` of the next entry) and the RFC 9162 §2.1.1 leaf hash, so
the leaf prefix 0x00 is part of the entry hash itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring as _encode_string
from typing import Any

import rfc8785

from audit.errors import InvalidEntry

# RFC 9162 §2.1.1: leaf hashes are domain-separated from interior nodes by a 0x00 prefix.
LEAF_PREFIX = b"\x00"
GENESIS_PREV = "0" * 64
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
HASH_HEX_LEN = 64

# Hyphens after the first segment: a client's own events sit under ``ext.<client name>.``
# and client names such as ``dvc-portal`` hold them.
ACTION_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_-]+)+$")
# ``operator:<OS login>``: a person running a command on the server's shell.
ACTOR_PATTERN = re.compile(r"^(system|(user|client|peer|operator):[^\s\x00-\x1f\x7f]{1,200})$")
MAX_ACTION_CHARS = 100
MAX_SUBJECT_CHARS = 500
MAX_DATA_BYTES = 16 * 1024
MAX_NESTING = 16
# RFC 8785 §3.2.2.3 (I-JSON): integers outside ±(2^53 − 1) have no exact JSON number form.
SAFE_INTEGER = 2**53 - 1
# Keys at or above U+E000 sort differently by UTF-16 code units (RFC 8785 §3.2.3) than by code
# point when compared with astral characters; only below it is Python's key order JCS order.
_FIRST_UNSAFE_KEY_CHAR = "\ue000"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

ENTRY_FIELDS = ("seq", "ts", "actor", "action", "subject", "data", "pii", "prev", "hash")


@dataclass(frozen=True)
class Entry:
    """One log entry exactly as it is hashed, stored and exported."""

    seq: int
    ts: str
    actor: str
    action: str
    subject: str
    data: Mapping[str, Any] = field(hash=False)
    pii: str | None
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """The entry without ``hash``: the object whose JCS form is hashed."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "data": dict(self.data),
            "pii": self.pii,
            "prev": self.prev,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    def leaf(self) -> bytes:
        """The entry hash as 32 bytes: the RFC 9162 leaf hash of this entry."""
        return bytes.fromhex(self.hash)


def canonical(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of ``value``.

    The ``rfc8785`` package is the reference. For the common case (no floats, integers within
    ±(2^53 − 1), no object key at or above U+E000) the standard library's compact sorted
    ``json.dumps`` produces byte-identical output several times faster: both escape only
    ``"``, ``\\`` and C0 controls, with the same short forms and lowercase ``\\u00xx``, and emit
    other characters as raw UTF-8. tests/audit/test_entry.py proves the equality by property.
    """
    if _plain(value, 1, MAX_NESTING + 1):
        try:
            return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: let rfc8785 refuse it with its own error
    return rfc8785.dumps(value)


def _plain(value: Any, level: int, limit: int) -> bool:
    """True if ``value`` holds only strings, booleans, null, safe integers, lists and objects
    with JCS-ordered keys, nested at most ``limit`` levels (a scalar counts as a level)."""
    if level > limit:
        return False
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        number: int = value
        return -SAFE_INTEGER <= number <= SAFE_INTEGER
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (not key.isascii() and max(key) >= _FIRST_UNSAFE_KEY_CHAR):
                return False
            if not _plain(item, level + 1, limit):
                return False
        return True
    if kind is list:
        return all(_plain(item, level + 1, limit) for item in value)
    return False


def hash_body(body: Mapping[str, Any]) -> str:
    """hex(SHA-256(0x00 ‖ JCS(body))) for an entry body (the entry without ``hash``)."""
    return hashlib.sha256(LEAF_PREFIX + canonical(body)).hexdigest()


def format_ts(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``, the only timestamp form in the log."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidEntry("the clock must return an aware UTC datetime")
    return moment.astimezone(UTC).strftime(TS_FORMAT)


def validate_event(
    actor: str, action: str, subject: str, data: Mapping[str, Any] | None
) -> tuple[dict[str, Any], bytes]:
    """Check the caller-supplied fields of an entry; returns ``data`` as a plain dict and its
    JCS bytes.

    Raises InvalidEntry naming the first field refused; nothing is written on refusal.
    """
    if not isinstance(actor, str) or not ACTOR_PATTERN.fullmatch(actor):
        raise InvalidEntry("actor must be 'system' or 'user:<name>', 'client:<id>', 'peer:<name>', 'operator:<login>'")
    if not isinstance(action, str) or len(action) > MAX_ACTION_CHARS or not ACTION_PATTERN.fullmatch(action):
        raise InvalidEntry("action must be dotted lowercase, e.g. 'signature.created'")
    if not isinstance(subject, str) or len(subject) > MAX_SUBJECT_CHARS or _CONTROL_CHARS.search(subject):
        raise InvalidEntry(f"subject must be text of at most {MAX_SUBJECT_CHARS} characters without controls")
    try:
        subject.encode()
    except UnicodeEncodeError:
        raise InvalidEntry("subject holds a lone surrogate (not valid Unicode)") from None
    if data is None:
        return {}, b"{}"
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise InvalidEntry("data must be a JSON object with string keys")
    plain = dict(data)
    encoded = canonical_or_refuse(plain, "data")
    if len(encoded) > MAX_DATA_BYTES:
        raise InvalidEntry(f"data is {len(encoded)} bytes in canonical form; the limit is {MAX_DATA_BYTES}")
    return plain, encoded


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of ``value``, stopping once it passes ``limit`` (no deep recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(node, Mapping):
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((child, level + 1) for child in node)
    return deepest


def canonical_or_refuse(value: Any, what: str) -> bytes:
    """JCS bytes of ``value``, or InvalidEntry naming ``what`` when it has no JCS form.

    Also refused: nesting deeper than MAX_NESTING (readers and serialisers have limits), and
    values whose JCS text does not read back to the same JCS text — e.g. a whole float of 2^53
    or more is written as an integer literal that JCS then refuses, which would make the stored
    entry unreadable by every verifier (RFC 8785 §3.2.2.3 covers only IEEE 754 doubles)."""
    if _plain(value, 1, MAX_NESTING):
        # Shallow enough, no floats, only safe integers: the text reads back to itself by
        # construction, so the depth walk and the round trip below (most of the cost of
        # every append) are not needed.
        try:
            return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: refused below with rfc8785's own error
    if _depth(value, MAX_NESTING) > MAX_NESTING:
        raise InvalidEntry(f"{what} is nested deeper than {MAX_NESTING} levels")
    try:
        encoded = canonical(value)
        stable = canonical(json.loads(encoded)) == encoded
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise InvalidEntry(f"{what} is not representable as RFC 8785 JSON: {exc}") from None
    if not stable:
        raise InvalidEntry(f"{what} does not survive a JSON round trip (a number outside the exact range?)")
    return encoded


def build_entry(
    *,
    seq: int,
    ts: str,
    actor: str,
    action: str,
    subject: str,
    data: Mapping[str, Any],
    pii: str | None,
    prev: str,
    data_jcs: bytes | None = None,
) -> Entry:
    """Assemble an entry and compute its hash (fields already validated).

    ``data_jcs``, when the caller already holds JCS(data), saves canonicalising it again: the JCS
    form of an object is its members in key order with JCS values (RFC 8785 §3.2.3), so the body
    is assembled around it. The key order below is the sorted order of the eight body keys.
    """
    plain = dict(data)
    if data_jcs is None:
        data_jcs = canonical(plain)
    digest = hash_fields(seq, ts, actor, action, subject, data_jcs, pii, prev)
    return Entry(seq, ts, actor, action, subject, plain, pii, prev, digest)


def hash_fields(
    seq: int, ts: str, actor: str, action: str, subject: str, data_jcs: bytes, pii: str | None, prev: str
) -> str:
    """The entry hash from its fields, with ``data`` already in JCS form (see ``build_entry``)."""
    body = body_bytes(seq, ts, actor, action, subject, data_jcs, pii, prev)
    return hashlib.sha256(LEAF_PREFIX + body).hexdigest()


def body_bytes(
    seq: int, ts: str, actor: str, action: str, subject: str, data_jcs: bytes, pii: str | None, prev: str
) -> bytes:
    """JCS(entry without ``hash``) from its fields: the bytes the entry hash is the leaf hash of."""
    try:
        return b"".join(
            (
                b'{"action":',
                _jcs_string(action),
                b',"actor":',
                _jcs_string(actor),
                b',"data":',
                data_jcs,
                b',"pii":',
                b"null" if pii is None else _jcs_string(pii),
                b',"prev":',
                _jcs_string(prev),
                b',"seq":',
                str(seq).encode(),
                b',"subject":',
                _jcs_string(subject),
                b',"ts":',
                _jcs_string(ts),
                b"}",
            )
        )
    except UnicodeEncodeError:
        raise InvalidEntry("entry text holds a lone surrogate (not valid Unicode)") from None


def _jcs_string(value: str) -> bytes:
    # A JSON string in JCS form: the stdlib's non-ASCII string encoder (what json.dumps uses with
    # ensure_ascii=False) escapes exactly what RFC 8785 §3.2.2.2 escapes.
    return _encode_string(value).encode()


def entry_from_dict(obj: Mapping[str, Any]) -> Entry:
    """An Entry from its JSON object (export line or API), shape-checked but not verified."""
    try:
        seq = obj["seq"]
        fields = (obj["ts"], obj["actor"], obj["action"], obj["subject"], obj["prev"], obj["hash"])
        data = obj["data"]
        pii = obj["pii"]
    except (KeyError, TypeError) as exc:
        raise InvalidEntry(f"entry lacks field {exc}") from None
    if type(seq) is not int or seq < 0:
        raise InvalidEntry("entry seq must be a non-negative integer")
    if not all(isinstance(f, str) for f in fields) or not isinstance(data, dict):
        raise InvalidEntry("entry fields have the wrong JSON types")
    if pii is not None and not isinstance(pii, str):
        raise InvalidEntry("entry pii must be a hex string or null")
    ts, actor, action, subject, prev, hash_ = fields
    return Entry(seq, ts, actor, action, subject, data, pii, prev, hash_)
