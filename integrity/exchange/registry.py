"""The registry of peers, stored in ``exchange_peers`` and read through a short per-instance
cache (docs/exchange-profile.md §4).

A keyid names one key for good: no peer may take a keyid another peer holds, as its current
or as its replaced key. Every change is logged (``exchange.peer.added``, ``.updated``,
``.removed``) in the transaction that makes it. A change made here clears this instance's
cache at once; another instance sees it within ``cache_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from integrity.audit_service import AuditService
from integrity.clock import Clock, stored_utc
from integrity.db import READ_ONLY
from integrity.errors import InvalidPeer, PeerAlreadyExists, PeerNotFound
from integrity.exchange.logged_text import short
from integrity.exchange.peers import (
    MAX_OVERLAP_SECONDS,
    PEER_NAME,
    Peer,
    check_base_url,
    check_name,
    parse_routes,
    peer_key,
)
from integrity.exchange.routes import Route
from integrity.exchange.tables import exchange_peers
from signing.httpsig import PeerKey

# A registry change made on another instance is seen within this many seconds.
DEFAULT_PEER_CACHE_SECONDS = 2.0
MAX_CACHED_PEERS = 1_000
_MISS = object()  # a peer-cache miss (None is a cached "no such peer")


class PeerRegistry:
    """The peers: registered, changed and removed by an operator, looked up for each message."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        audit: AuditService,
        cache_seconds: float = DEFAULT_PEER_CACHE_SECONDS,
    ) -> None:
        if cache_seconds < 0:
            raise ValueError("cache_seconds must not be negative")
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self.cache_seconds = cache_seconds
        self._key_cache: dict[tuple[str, str], PeerKey] = {}
        self._peer_cache: dict[tuple[str, str], tuple[float, Peer | None]] = {}

    # ------------------------------------------------------------------ reads

    def all(self) -> list[Peer]:
        with self._reader() as conn:
            rows = conn.execute(select(exchange_peers).order_by(exchange_peers.c.name)).all()
        return [self._row_to_peer(r) for r in rows]

    def get(self, name: str) -> Peer:
        if not PEER_NAME.fullmatch(name):
            # No such peer can exist; and PostgreSQL refuses to even compare text holding NUL.
            raise PeerNotFound(f"no peer named {short(name)!r}")
        with self._reader() as conn:
            row = conn.execute(select(exchange_peers).where(exchange_peers.c.name == name)).first()
        if row is None:
            raise PeerNotFound(f"no peer named {short(name)!r}")
        return self._row_to_peer(row)

    # Only the per-message lookups below are coroutines: they serve the gateway and the verify
    # API on the event loop, where a cache hit must cost no worker-thread hop (a miss reads
    # the database in a worker thread). Registry changes and listings are operator actions,
    # called from the CLI and from sync routes that FastAPI already runs in its threadpool.

    async def by_keyid(self, keyid: str) -> Peer | None:
        """The peer holding ``keyid``, as its current or previous key (through the cache);
        ``Peer.key_for`` then says whether that key is still good."""
        key = ("keyid", keyid)
        hit = self._cache_hit(key)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        return await asyncio.to_thread(self._cached, key, _holds(keyid))

    async def destination(self, name: str) -> Peer:
        """The peer named ``name``, for forwarding (through the cache)."""
        peer: Peer | None = None
        if PEER_NAME.fullmatch(name):
            key = ("name", name)
            hit = self._cache_hit(key)
            if hit is _MISS:
                peer = await asyncio.to_thread(self._cached, key, exchange_peers.c.name == name)
            else:
                peer = hit  # type: ignore[assignment]
        if peer is None:
            raise PeerNotFound(f"no peer named {short(name)!r}")
        return peer

    def _cache_hit(self, key: tuple[str, str]) -> Peer | object | None:
        cached = self._peer_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        return _MISS

    def _cached(self, key: tuple[str, str], condition: Any) -> Peer | None:
        """A registry read through a cache of at most ``cache_seconds``: a change made here
        clears it at once; one made by another instance is seen within that time (0 reads the
        database for every message). Monotonic time: this is not domain time."""
        now = time.monotonic()
        hit = self._cache_hit(key)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        with self._reader() as conn:
            row = conn.execute(select(exchange_peers).where(condition)).first()
        peer = None if row is None else self._row_to_peer(row)
        if self.cache_seconds > 0:
            if len(self._peer_cache) >= MAX_CACHED_PEERS:
                self._peer_cache.clear()
            self._peer_cache[key] = (now, peer)
        return peer

    def _reader(self) -> Connection:
        # A deferred (snapshot) transaction on SQLite: a lookup must not take the write lock.
        return self.engine.connect().execution_options(**READ_ONLY)

    def _parsed_key(self, keyid: str, pem: str) -> PeerKey:
        # Parsing is memoised (by keyid and PEM); which peer holds which key is always read
        # from the database, so a removal takes effect at once on every instance.
        key = self._key_cache.get((keyid, pem))
        if key is None:
            key = peer_key(keyid, pem)
            self._key_cache[(keyid, pem)] = key
        return key

    def _row_to_peer(self, row: Any) -> Peer:
        previous = None
        if row.previous_keyid is not None:
            previous = self._parsed_key(row.previous_keyid, row.previous_certificate_pem or row.previous_public_key_pem)
        return Peer(
            name=row.name,
            key=self._parsed_key(row.keyid, row.certificate_pem or row.public_key_pem),
            base_url=row.base_url,
            routes=tuple(Route.parse(r) for r in json.loads(row.routes)),
            created_at=row.created_at,
            updated_at=row.updated_at,
            previous=previous,
            previous_until=stored_utc(row.previous_until) if previous is not None else None,
        )

    # ---------------------------------------------------------------- changes

    def add(
        self,
        name: str,
        *,
        keyid: str,
        key_pem: bytes | str,
        routes: Sequence[str] = (),
        base_url: str | None = None,
        actor: str = "system",
        approved_by: str | None = None,
    ) -> Peer:
        """Register a peer (``exchange.peer.added``). The key may be a PEM certificate or a PEM
        public key; its algorithm is fixed here, from the key. ``approved_by``: the admin who
        confirmed an operator's command (``user:<name>``), logged with the change."""
        name = check_name(name)
        key = peer_key(keyid, key_pem)
        parsed_routes = parse_routes(routes)
        url = check_base_url(base_url)
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                _lock_registry(conn)
                taken = conn.execute(select(exchange_peers.c.name).where(exchange_peers.c.name == name)).first()
                if taken is not None or _keyid_holder(conn, key.keyid) is not None:
                    raise PeerAlreadyExists(f"a peer named {name!r} or holding keyid {key.keyid!r} exists")
                peer = Peer(name, key, url, parsed_routes, now, now)
                conn.execute(insert(exchange_peers).values(name=name, created_at=now, **peer.stored()))
                logged = peer.logged() | _approval(approved_by)
                self.audit.record(actor, "exchange.peer.added", f"peer:{name}", logged, conn=conn)
        except DbIntegrityError as exc:  # a concurrent add won the race for the name or keyid
            raise PeerAlreadyExists(f"a peer named {name!r} or holding keyid {key.keyid!r} exists") from exc
        finally:
            self._peer_cache.clear()
        return peer

    def update(
        self,
        name: str,
        *,
        keyid: str | None = None,
        key_pem: bytes | str | None = None,
        routes: Sequence[str] | None = None,
        base_url: str | None = None,
        clear_base_url: bool = False,
        overlap_seconds: int = 0,
        end_overlap: bool = False,
        actor: str = "system",
        approved_by: str | None = None,
    ) -> Peer:
        """Change a peer's key, routes or base URL (``exchange.peer.updated``, with what changed).

        A new key with ``overlap_seconds`` keeps the replaced key (under its own keyid) accepted
        for that long, so a peer can roll the new key out instance by instance; without it the
        old key is refused at once. A peer has one replaced key at a time: a new rotation drops
        the one before. ``end_overlap`` stops accepting the replaced key now (say, when it is
        suspected compromised)."""
        if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
            raise InvalidPeer(f"an overlap lasts from 1 second to {MAX_OVERLAP_SECONDS // 86400} days")
        if overlap_seconds and end_overlap:
            raise InvalidPeer("an overlap cannot be started and ended in one change")
        if not PEER_NAME.fullmatch(name):
            raise PeerNotFound(f"no peer named {short(name)!r}")
        new_routes = None if routes is None else parse_routes(routes)
        new_url = None if base_url is None else check_base_url(base_url)
        try:
            with self.engine.begin() as conn:
                # Read under the registry's write lock: the key being replaced is the one stored
                # now, not one read before a concurrent change.
                _lock_registry(conn)
                row = conn.execute(select(exchange_peers).where(exchange_peers.c.name == name)).first()
                if row is None:
                    raise PeerNotFound(f"no peer named {name!r}")
                current = self._row_to_peer(row)
                peer = self._changed_peer(
                    current, keyid, key_pem, new_routes, new_url, clear_base_url, overlap_seconds, end_overlap
                )
                holder = _keyid_holder(conn, peer.keyid)
                if holder is not None and holder != name:
                    raise PeerAlreadyExists(f"keyid {peer.keyid!r} is held by another peer")
                changed = sorted(k for k, v in peer.logged().items() if current.logged().get(k) != v)
                conn.execute(update(exchange_peers).where(exchange_peers.c.name == name).values(**peer.stored()))
                logged = {**peer.logged(), "changed": changed} | _approval(approved_by)
                self.audit.record(actor, "exchange.peer.updated", f"peer:{name}", logged, conn=conn)
        except DbIntegrityError as exc:
            raise PeerAlreadyExists(f"a keyid of {name!r} is held by another peer") from exc
        finally:
            self._peer_cache.clear()
        return peer

    def _changed_peer(
        self,
        current: Peer,
        keyid: str | None,
        key_pem: bytes | str | None,
        routes: tuple[Route, ...] | None,
        base_url: str | None,
        clear_base_url: bool,
        overlap_seconds: int,
        end_overlap: bool,
    ) -> Peer:
        if key_pem is not None:
            key = peer_key(keyid or current.keyid, key_pem)
        elif keyid is not None and keyid != current.keyid:
            key = peer_key(keyid, current.key.certificate_pem() or current.key.public_pem())
        else:
            key = current.key
        now = self.clock()
        rotated = key.keyid != current.keyid or key.public_pem() != current.key.public_pem()
        previous, until = current.previous, current.previous_until
        if overlap_seconds:
            if not rotated:
                raise InvalidPeer("an overlap applies only to a change of key")
            if key.keyid == current.keyid:
                # Messages name their key by keyid alone (RFC 9421 §2.3): two live keys need two.
                raise InvalidPeer("to keep the old key during an overlap, give the new key a new keyid")
            previous, until = current.key, now + timedelta(seconds=overlap_seconds)
        elif rotated or end_overlap:
            previous, until = None, None
        if previous is not None and previous.keyid == key.keyid:
            previous, until = None, None  # rolled back to the previous key: it is current again
        url = None if clear_base_url else (current.base_url if base_url is None else base_url)
        return Peer(
            current.name,
            key,
            url,
            current.routes if routes is None else routes,
            current.created_at,
            now,
            previous,
            until,
        )

    def remove(self, name: str, *, actor: str = "system", approved_by: str | None = None) -> Peer:
        """Unregister a peer (``exchange.peer.removed``): its messages are refused from now on."""
        peer = self.get(name)
        with self.engine.begin() as conn:
            done = conn.execute(delete(exchange_peers).where(exchange_peers.c.name == name))
            if done.rowcount != 1:
                raise PeerNotFound(f"no peer named {name!r}")
            logged = peer.logged() | _approval(approved_by)
            self.audit.record(actor, "exchange.peer.removed", f"peer:{name}", logged, conn=conn)
        self._peer_cache.clear()
        return peer

    def seed_demo(self, keys_dir: Path, *, actor: str = "system") -> str | None:
        """``init --demo`` step: register the demo portal, one-stop system and gateway from
        their certificates in ``keys_dir`` (keys.example/) when no peer is registered yet.
        The portal may use every gateway route to the one-stop system and back; base URLs
        are left for the operator (``exchange peers update NAME --base-url …``)."""
        if self.all():
            return None
        demo: tuple[tuple[str, str, list[str]], ...] = (
            ("portal", "portal-exchange", ["* /gateway/one-stop/**"]),
            ("one-stop", "one-stop-exchange", ["* /gateway/portal/**"]),
            ("gateway", "gateway-exchange", []),
        )
        added = []
        for name, stem, routes in demo:
            cert = keys_dir / f"{stem}.crt.pem"
            if cert.exists():
                self.add(name, keyid=name, key_pem=cert.read_bytes(), routes=routes, actor=actor)
                added.append(name)
        return f"registered the demo exchange peers {', '.join(added)}" if added else None


def _approval(approved_by: str | None) -> dict[str, Any]:
    return {"approved_by": approved_by} if approved_by else {}


def _lock_registry(conn: Connection) -> None:
    """Serialise registry changes for the rest of the transaction, so that the check "no other
    peer holds this keyid, current or previous" (two columns, no single constraint) and the
    write are one step. SQLite's BEGIN IMMEDIATE already holds the write lock; PostgreSQL
    takes a table lock that conflicts only with other registry writers, never with readers."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE exchange_peers IN SHARE ROW EXCLUSIVE MODE"))


def _keyid_holder(conn: Connection, keyid: str) -> str | None:
    """The peer holding ``keyid`` as its current or previous key (expired or not: a keyid
    names one key for good, or a message could verify under a key it never meant)."""
    return conn.execute(select(exchange_peers.c.name).where(_holds(keyid))).scalar()


def _holds(keyid: str) -> Any:
    """The registry rows holding ``keyid`` as their current or replaced key."""
    return (exchange_peers.c.keyid == keyid) | (exchange_peers.c.previous_keyid == keyid)
