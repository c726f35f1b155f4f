"""Personal data kept apart from the chain: a salted SHA-256 commitment in the entry.

``pii`` = hex(SHA-256(salt ‖ JCS(personal data))) (docs/audit-log.md). The random salt stops anyone
holding the log from confirming a guessed name or ID number against the commitment; deleting
salt and data (erasure) leaves the entry, its hash and every proof intact.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from audit.entry import canonical_or_refuse
from audit.errors import InvalidEntry, PiiMismatch

SALT_BYTES = 32
MAX_PII_BYTES = 16 * 1024


@dataclass(frozen=True)
class PersonalData:
    """Personal data ready to store: salt, canonical bytes and the commitment for the entry."""

    salt: bytes = field(repr=False)
    canonical: bytes = field(repr=False)
    commitment: str


def commitment(salt: bytes, canonical_data: bytes) -> str:
    return hashlib.sha256(salt + canonical_data).hexdigest()


def seal(personal: Mapping[str, Any], *, salt: bytes | None = None) -> PersonalData:
    """Canonicalise personal data under a fresh random salt (``salt`` only for test vectors)."""
    if not isinstance(personal, Mapping) or not personal or not all(isinstance(k, str) for k in personal):
        raise InvalidEntry("pii must be a non-empty JSON object with string keys")
    data = canonical_or_refuse(dict(personal), "pii")
    if len(data) > MAX_PII_BYTES:
        raise InvalidEntry(f"pii is {len(data)} bytes in canonical form; the limit is {MAX_PII_BYTES}")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise InvalidEntry(f"a pii salt is {SALT_BYTES} bytes")
    return PersonalData(salt, data, commitment(salt, data))


def check(expected: str, salt: bytes, personal: Any) -> None:
    """Returns nothing when stored personal data matches the entry's commitment; raises
    PiiMismatch otherwise (primitives raise, the verifier turns it into a fault)."""
    try:
        data = canonical_or_refuse(personal, "pii")
    except InvalidEntry:
        raise PiiMismatch("personal data has no canonical form") from None
    if not hmac.compare_digest(commitment(salt, data), expected):
        raise PiiMismatch("personal data does not match the entry's commitment")
