"""The replay guard: one row per (keyid, nonce) accepted, kept until the signature's
``expires`` (docs/exchange-profile.md §2, "Replay window").

A pair is inserted only after the signature verified (so nobody can burn a peer's nonces),
with one atomic insert on the primary key, inside the audit log's group commit that appends
the ``exchange.accepted`` entry (``AuditService.record_if``): both durable together or
neither. A check that does not consume only looks the pair up, in the same transaction as its
``exchange.checked`` entry.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, TextClause, delete, select, text

from integrity.audit_service import Claim
from integrity.clock import Clock
from integrity.exchange.tables import exchange_nonces
from signing.httpsig import VerifiedSignature

# Expired nonces are deleted at most this often per instance; correctness never depends on
# it (an expired message is refused as expired), only the table's size does.
NONCE_PURGE_INTERVAL_SECONDS = 60
# Rows per nonce INSERT: a group commit with more claims sends several statements, so that at
# most this many statement texts are ever compiled and cached.
_NONCE_ROWS = 64


@functools.lru_cache(maxsize=_NONCE_ROWS)
def _nonce_insert(rows: int) -> TextClause:
    """INSERT of ``rows`` (keyid, nonce) pairs that skips those already there and returns the
    new ones; the same SQL on SQLite (3.35+) and PostgreSQL. Written as text because
    SQLAlchemy compiles a multi-row ``insert().values()`` anew on every execution; a text
    clause is compiled once per size and then served from its statement cache."""
    values = ", ".join(f"(:k{i}, :n{i}, :e{i})" for i in range(rows))
    return text(
        f"INSERT INTO {exchange_nonces.name} (keyid, nonce, expires_at) VALUES {values} "
        "ON CONFLICT (keyid, nonce) DO NOTHING RETURNING keyid, nonce"
    )


def _claim_nonces(conn: Connection, claims: Sequence[Claim]) -> set[Hashable]:
    """Insert the (keyid, nonce) pairs of one group commit, up to ``_NONCE_ROWS`` per
    statement, and return those that were new. The primary key makes each insert atomic on
    both back ends, also between instances sharing a PostgreSQL database. RETURNING, not
    rowcount: a driver may report -1 for an INSERT … ON CONFLICT. Sorted, so that two
    instances inserting overlapping pairs take them in the same order and cannot deadlock."""
    pairs = sorted((cast(tuple[str, str], c.key), cast(int, c.data)) for c in claims)
    new: set[Hashable] = set()
    for start in range(0, len(pairs), _NONCE_ROWS):
        chunk = pairs[start : start + _NONCE_ROWS]
        params: dict[str, Any] = {}
        for i, ((keyid, nonce), expires_at) in enumerate(chunk):
            params[f"k{i}"], params[f"n{i}"], params[f"e{i}"] = keyid, nonce, expires_at
        new.update((row.keyid, row.nonce) for row in conn.execute(_nonce_insert(len(chunk)), params))
    return new


def nonce_guard(verified: VerifiedSignature, *, consume: bool) -> Claim | Callable[[Connection], bool]:
    """The group-commit guard of a verified message: claim its nonce (kept until it expires),
    or, not consuming, only make sure it was never claimed, in the same transaction as the
    entry."""
    if consume:
        assert verified.nonce is not None and verified.expires is not None  # the profile demands both
        return Claim(_claim_nonces, (verified.keyid, verified.nonce), int(verified.expires.timestamp()))
    keyid, nonce = verified.keyid, verified.nonce

    def unseen(conn: Connection) -> bool:
        found = conn.execute(
            select(exchange_nonces.c.nonce).where(exchange_nonces.c.keyid == keyid, exchange_nonces.c.nonce == nonce)
        ).first()
        return found is None

    return unseen


class NoncePurge:
    """Deletes expired pairs: by hand (``purge_expired``, the CLI) and, at most once a
    minute per instance, on the way of a verification (``maybe_purge``)."""

    def __init__(self, engine: Engine, *, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._lock = threading.Lock()
        self._last: datetime | None = None

    def purge_expired(self) -> int:
        """Delete the pairs whose signatures have expired; returns how many."""
        cutoff = int(self.clock().timestamp())
        with self.engine.begin() as conn:
            return conn.execute(delete(exchange_nonces).where(exchange_nonces.c.expires_at < cutoff)).rowcount

    async def maybe_purge(self) -> None:
        """Purge when a minute has passed since the last purge. A DELETE is a database write:
        never on the event loop, so the due purge runs in a worker thread."""
        if self._due():
            await asyncio.to_thread(self._purge_once)

    def _due(self) -> bool:
        last = self._last
        return last is None or (self.clock() - last).total_seconds() >= NONCE_PURGE_INTERVAL_SECONDS

    def _purge_once(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is purging
        try:
            if self._due():
                self._last = self.clock()
                self.purge_expired()
        finally:
            self._lock.release()
