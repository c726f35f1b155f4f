"""Use case: every message between the portal and the one-stop system is checked and leaves
evidence (Decision 352/QĐ-BHXH Art. 5.2–5.3; docs/exchange-profile.md).

A message is accepted only if, in this order: its ``keyid`` names a registered peer's key
(its current key, or the key it replaced while their rotation overlap lasts); that
peer may use the route (method and path); the RFC 9421 signature verifies with the peer's key
under the exchange profile; the Content-Digest equals the body; ``created`` lies within
±``skew_seconds`` and ``expires`` has not passed; and the (keyid, nonce) pair was never seen
before. The pair is inserted only after the signature verified (an attacker cannot burn a
peer's nonces) with one atomic insert on the primary key, and kept until the signature
expires. The insert and the ``exchange.accepted`` entry are one unit in the audit log's group
commit (``AuditService.record_if``): both durable together or neither, and concurrent
messages share one transaction and one fsync instead of one each. A message is acted on only
once that commit returned. Every refusal is logged as ``exchange.rejected`` with its reason;
at the gateway, refusals whose signature did not verify are logged so one by one up to a limit
per sender address and minute, the rest as one ``exchange.rejections_summarised`` entry with
their count (integrity.refusal_log).

Only the system that acts on a message consumes its nonce (the gateway as it forwards, a
receiver through the verify API with ``consume``); a plain check looks the nonce up in the same
transaction as its ``exchange.checked`` entry and records nothing, so a party allowed to verify
cannot use up the nonce of a message it saw in flight.

The audit entry carries the message id, peer, keyid, route pattern, body digest and reason,
never the body or the raw URL (either may hold personal data): the URL appears as its SHA-256.
Bodies go only to the optional message archive.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from sqlalchemy import Connection, Engine, TextClause, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from integrity.audit_service import AuditService, Claim
from integrity.clock import stored_utc
from integrity.db import READ_ONLY
from integrity.errors import GatewayNotConfigured, InvalidPeer, PeerAlreadyExists, PeerNotFound
from integrity.exchange_tables import exchange_archive, exchange_nonces, exchange_peers
from integrity.refusal_log import RefusalKind, RefusalRecorder
from signing.errors import MessageSignatureError, UnsupportedExchangeKey
from signing.httpsig import (
    ExchangeSigningKey,
    HttpRequest,
    HttpResponse,
    PeerKey,
    SignatureParams,
    VerifiedSignature,
    body_digest,
    read_signature_params,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)
from signing.pkcs11 import token_object_id

__all__ = [
    "Direction",
    "ExchangeService",
    "ExchangeVerdict",
    "Peer",
    "Route",
    "build_exchange_service",
]

Clock = Callable[[], datetime]

GATEWAY_KEYID = "gateway"
PEER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
ROUTE_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})
MAX_ROUTES = 200
MAX_ROUTE_CHARS = 500
MAX_BASE_URL_CHARS = 2048
MESSAGE_ID_HEX = 32
# Expired nonces are deleted at most this often per instance; correctness never depends on
# it (an expired message is refused as expired), only the table's size does.
NONCE_PURGE_INTERVAL_SECONDS = 60
_AMBIGUOUS_PATH = re.compile(r"%2e|%2f|%5c|\\", re.IGNORECASE)
# A registry change made on another instance is seen within this many seconds.
DEFAULT_PEER_CACHE_SECONDS = 2.0
# The longest a replaced key may still be accepted after a rotation: enough to redeploy a
# peer's fleet, short enough that a forgotten old key stops working by itself.
MAX_OVERLAP_SECONDS = 30 * 24 * 3600
MAX_CACHED_PEERS = 1_000
_MISS = object()  # a peer-cache miss (None is a cached "no such peer")
# What a refusal may echo of attacker-chosen text into the audit log.
MAX_LOGGED_TEXT = 128

# Reasons decided here, beside the signature reasons of signing.errors (``exc.reason``).
UNKNOWN_KEY = "unknown-key"
ROUTE_NOT_ALLOWED = "route-not-allowed"
REPLAYED_NONCE = "replayed-nonce"
UNEXPECTED_SIGNER = "unexpected-signer"

ACCEPTED_ACTION = "exchange.accepted"
# A message that passed every check but whose nonce was not recorded (the verify API without
# "consume"): a look at a message, not its delivery.
CHECKED_ACTION = "exchange.checked"
CONSUME_REFUSED_ACTION = "exchange.consume.refused"
REJECTED_ACTION = "exchange.rejected"
FORWARD_FAILED_ACTION = "exchange.forward.failed"


class Direction(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


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


@dataclass(frozen=True)
class Peer:
    """A registered system: its exchange key (the algorithm comes with it), the routes it may
    use, and where the gateway reaches it."""

    name: str
    key: PeerKey
    base_url: str | None
    routes: tuple[Route, ...]
    created_at: datetime
    updated_at: datetime
    # The key this one replaced, accepted until ``previous_until`` (a rotation overlap: the
    # peer's instances switch to the new key one by one, and no message is refused meanwhile).
    previous: PeerKey | None = None
    previous_until: datetime | None = None

    @property
    def keyid(self) -> str:
        return self.key.keyid

    def key_for(self, keyid: str, now: datetime) -> PeerKey | None:
        """The key a message naming ``keyid`` must verify with at ``now``, or None."""
        if keyid == self.key.keyid:
            return self.key
        if self.previous is not None and keyid == self.previous.keyid and self.previous_until is not None:
            return self.previous if now < self.previous_until else None
        return None

    def route_for(self, method: str, path: str) -> Route | None:
        return next((r for r in self.routes if r.matches(method, path)), None)

    def fingerprint(self) -> str:
        """SHA-256 of the public key's SubjectPublicKeyInfo (hex), for logs and listings."""
        return hashlib.sha256(self.key.public_pem().encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "keyid": self.keyid,
            "algorithm": self.key.algorithm.value,
            "key_sha256": self.fingerprint(),
            "certificate_subject": self.key.certificate.subject.rfc4514_string() if self.key.certificate else None,
            "base_url": self.base_url,
            "routes": [str(r) for r in self.routes],
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "previous_keyid": self.previous.keyid if self.previous else None,
            "previous_until": self.previous_until.isoformat() if self.previous and self.previous_until else None,
        }


@dataclass(frozen=True)
class ExchangeVerdict:
    """The outcome of checking one message, as logged (``audit_seq``)."""

    message_id: str
    direction: Direction
    accepted: bool
    reason: str | None
    detail: str | None
    peer: str | None
    keyid: str | None
    route: str | None
    digest: str
    # None: an anonymous refusal past the per-source limit, counted in a summary entry
    # (integrity.refusal_log) instead of an entry of its own.
    audit_seq: int | None
    signature: VerifiedSignature | None = None
    # Whether the (keyid, nonce) pair had been recorded before this check; None when an
    # earlier check failed (the nonce of an unverified message means nothing).
    nonce_seen: bool | None = None

    @property
    def reasons(self) -> list[str]:
        return [] if self.accepted else [f"{self.reason}: {self.detail}" if self.detail else str(self.reason)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.accepted,
            "message_id": self.message_id,
            "direction": self.direction.value,
            "peer": self.peer,
            "keyid": self.keyid,
            "route": self.route,
            "digest": self.digest,
            "reason": self.reason,
            "reasons": self.reasons,
            "nonce_seen": self.nonce_seen,
            "audit_seq": self.audit_seq,
        }


@dataclass(frozen=True)
class _Seen:
    """What is known of a message before any check: computed from the bytes as received."""

    message_id: str
    direction: Direction
    digest: str
    method: str
    target_sha256: str
    target_uri: str
    status: int | None
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _short(text: str | None) -> str | None:
    if text is None:
        return None
    return "".join(c for c in text if c.isprintable())[:MAX_LOGGED_TEXT]


def _seen(message: HttpRequest | HttpResponse) -> _Seen:
    request = message.request if isinstance(message, HttpResponse) else message
    status = message.status if isinstance(message, HttpResponse) else None
    digest = body_digest(message.body)
    # Deterministic, so a replay carries the same id as the original it copies.
    h = hashlib.sha256()
    for part in (request.method, request.url, str(status or ""), message.header("Signature") or "", digest):
        h.update(part.encode("utf-8", "replace") + b"\n")
    return _Seen(
        message_id=h.hexdigest()[:MESSAGE_ID_HEX],
        direction=Direction.RESPONSE if status is not None else Direction.REQUEST,
        digest=digest,
        method=request.method,
        target_sha256=hashlib.sha256(request.url.encode("utf-8", "replace")).hexdigest(),
        target_uri=request.url,
        status=status,
        headers=message.headers,
        body=message.body,
    )


def _check_name(name: str) -> str:
    if not PEER_NAME.fullmatch(name):
        raise InvalidPeer("a peer name is 1–64 characters of a-z, 0-9 and '-', starting with a letter or digit")
    return name


def _check_base_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
        or len(url) > MAX_BASE_URL_CHARS
        or not url.isascii()
    ):
        raise InvalidPeer("a base URL is an absolute http(s) URL without credentials, query or fragment")
    return url.rstrip("/")


def _parse_routes(routes: Sequence[str]) -> tuple[Route, ...]:
    if isinstance(routes, str):
        raise InvalidPeer("routes must be a list of 'METHOD /path' strings")
    if len(routes) > MAX_ROUTES:
        raise InvalidPeer(f"at most {MAX_ROUTES} routes per peer")
    return tuple(Route.parse(r) for r in routes)


def _peer_key(keyid: str, key_pem: bytes | str) -> PeerKey:
    pem = key_pem.encode() if isinstance(key_pem, str) else key_pem
    try:
        return PeerKey.from_pem(keyid, pem)
    except UnsupportedExchangeKey as exc:
        raise InvalidPeer(f"peer key refused: {exc}") from exc


class ExchangeService:
    """The registry of peers and the checks of exchanged messages (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        audit: AuditService,
        skew_seconds: int = 300,
        archive: bool = False,
        gateway_key: ExchangeSigningKey | None = None,
        peer_cache_seconds: float = DEFAULT_PEER_CACHE_SECONDS,
        refusals: RefusalRecorder | None = None,
    ) -> None:
        if skew_seconds < 0 or peer_cache_seconds < 0:
            raise ValueError("skew_seconds and peer_cache_seconds must not be negative")
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self.skew_seconds = skew_seconds
        self.archive = archive
        self.gateway_key = gateway_key
        self.refusals = refusals
        self._purge_lock = threading.Lock()
        self._last_purge: datetime | None = None
        self.peer_cache_seconds = peer_cache_seconds
        self._key_cache: dict[tuple[str, str], PeerKey] = {}
        self._peer_cache: dict[tuple[str, str], tuple[float, Peer | None]] = {}

    # ----------------------------------------------------------------- registry

    def _parsed_key(self, keyid: str, pem: str) -> PeerKey:
        # Parsing is memoised (by keyid and PEM); which peer holds which key is always read
        # from the database, so a removal takes effect at once on every instance.
        key = self._key_cache.get((keyid, pem))
        if key is None:
            key = _peer_key(keyid, pem)
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

    def _reader(self) -> Connection:
        # A deferred (snapshot) transaction on SQLite: a lookup must not take the write lock.
        return self.engine.connect().execution_options(**READ_ONLY)

    def list_peers(self) -> list[Peer]:
        with self._reader() as conn:
            rows = conn.execute(select(exchange_peers).order_by(exchange_peers.c.name)).all()
        return [self._row_to_peer(r) for r in rows]

    def get_peer(self, name: str) -> Peer:
        if not PEER_NAME.fullmatch(name):
            # No such peer can exist; and PostgreSQL refuses to even compare text holding NUL.
            raise PeerNotFound(f"no peer named {_short(name)!r}")
        with self._reader() as conn:
            row = conn.execute(select(exchange_peers).where(exchange_peers.c.name == name)).first()
        if row is None:
            raise PeerNotFound(f"no peer named {_short(name)!r}")
        return self._row_to_peer(row)

    def peer_by_keyid(self, keyid: str) -> Peer | None:
        """The peer holding ``keyid``, as its current or previous key (read through the peer
        cache, see ``_cached``); ``Peer.key_for`` then says whether that key is still good."""
        return self._cached(("keyid", keyid), _holds(keyid))

    def destination(self, name: str) -> Peer:
        """The peer named ``name``, for forwarding (read through the peer cache)."""
        peer = None if not PEER_NAME.fullmatch(name) else self._cached(("name", name), exchange_peers.c.name == name)
        if peer is None:
            raise PeerNotFound(f"no peer named {_short(name)!r}")
        return peer

    async def _peer_by_keyid_async(self, keyid: str) -> Peer | None:
        """``peer_by_keyid`` for a coroutine: a cache hit stays on the event loop; a miss reads
        the database in a worker thread."""
        hit = self._cache_hit(("keyid", keyid))
        return hit if hit is not _MISS else await asyncio.to_thread(self.peer_by_keyid, keyid)  # type: ignore[return-value]

    async def destination_async(self, name: str) -> Peer:
        """``destination`` for a coroutine (see ``_peer_by_keyid_async``)."""
        hit = self._cache_hit(("name", name)) if PEER_NAME.fullmatch(name) else _MISS
        if hit is _MISS:
            return await asyncio.to_thread(self.destination, name)
        if hit is None:
            raise PeerNotFound(f"no peer named {_short(name)!r}")
        return hit  # type: ignore[return-value]

    def _cache_hit(self, key: tuple[str, str]) -> Peer | object | None:
        cached = self._peer_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.peer_cache_seconds:
            return cached[1]
        return _MISS

    def _cached(self, key: tuple[str, str], condition: Any) -> Peer | None:
        """A registry read through a cache of at most ``peer_cache_seconds``: a change made
        here clears it at once; one made by another instance is seen within that time (0
        reads the database for every message). Monotonic time: this is not domain time."""
        now = time.monotonic()
        hit = self._cache_hit(key)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        with self._reader() as conn:
            row = conn.execute(select(exchange_peers).where(condition)).first()
        peer = None if row is None else self._row_to_peer(row)
        if self.peer_cache_seconds > 0:
            if len(self._peer_cache) >= MAX_CACHED_PEERS:
                self._peer_cache.clear()
            self._peer_cache[key] = (now, peer)
        return peer

    def add_peer(
        self,
        name: str,
        *,
        keyid: str,
        key_pem: bytes | str,
        routes: Sequence[str] = (),
        base_url: str | None = None,
        actor: str = "system",
    ) -> Peer:
        """Register a peer (``exchange.peer.added``). The key may be a PEM certificate or a PEM
        public key; its algorithm is fixed here, from the key."""
        name = _check_name(name)
        key = _peer_key(keyid, key_pem)
        parsed_routes = _parse_routes(routes)
        url = _check_base_url(base_url)
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                _lock_registry(conn)
                taken = conn.execute(select(exchange_peers.c.name).where(exchange_peers.c.name == name)).first()
                if taken is not None or _keyid_holder(conn, key.keyid) is not None:
                    raise PeerAlreadyExists(f"a peer named {name!r} or holding keyid {key.keyid!r} exists")
                peer = Peer(name, key, url, parsed_routes, now, now)
                conn.execute(insert(exchange_peers).values(name=name, created_at=now, **_peer_row(peer)))
                self.audit.record(actor, "exchange.peer.added", f"peer:{name}", _peer_log(peer), conn=conn)
        except DbIntegrityError as exc:  # a concurrent add won the race for the name or keyid
            raise PeerAlreadyExists(f"a peer named {name!r} or holding keyid {key.keyid!r} exists") from exc
        finally:
            self._peer_cache.clear()
        return peer

    def update_peer(
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
            raise PeerNotFound(f"no peer named {_short(name)!r}")
        new_routes = None if routes is None else _parse_routes(routes)
        new_url = None if base_url is None else _check_base_url(base_url)
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
                changed = sorted(k for k, v in _peer_log(peer).items() if _peer_log(current).get(k) != v)
                conn.execute(update(exchange_peers).where(exchange_peers.c.name == name).values(**_peer_row(peer)))
                self.audit.record(
                    actor, "exchange.peer.updated", f"peer:{name}", {**_peer_log(peer), "changed": changed}, conn=conn
                )
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
            key = _peer_key(keyid or current.keyid, key_pem)
        elif keyid is not None and keyid != current.keyid:
            key = _peer_key(keyid, current.key.certificate_pem() or current.key.public_pem())
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

    def remove_peer(self, name: str, *, actor: str = "system") -> Peer:
        """Unregister a peer (``exchange.peer.removed``): its messages are refused from now on."""
        peer = self.get_peer(name)
        with self.engine.begin() as conn:
            done = conn.execute(delete(exchange_peers).where(exchange_peers.c.name == name))
            if done.rowcount != 1:
                raise PeerNotFound(f"no peer named {name!r}")
            self.audit.record(actor, "exchange.peer.removed", f"peer:{name}", _peer_log(peer), conn=conn)
        self._peer_cache.clear()
        return peer

    def seed_demo_peers(self, keys_dir: Path) -> str | None:
        """``init --demo`` step: register the demo portal, one-stop system and gateway from
        their certificates in ``keys_dir`` (keys.example/) when no peer is registered yet.
        The portal may use every gateway route to the one-stop system and back; base URLs
        are left for the operator (``exchange peers update NAME --base-url …``)."""
        if self.list_peers():
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
                self.add_peer(name, keyid=name, key_pem=cert.read_bytes(), routes=routes)
                added.append(name)
        return f"registered the demo exchange peers {', '.join(added)}" if added else None

    # ------------------------------------------------------------- verification
    #
    # Each check has two halves. The first needs no write: parse, find the peer, match the
    # route, verify the signature (CPU only, once the peer is cached). The second makes the
    # outcome durable: an acceptance inserts the (keyid, nonce) pair and appends its
    # ``exchange.accepted`` entry in ONE group-commit transaction (``AuditService.record_if``),
    # so both are durable together and concurrent messages share one fsync; a refusal appends
    # ``exchange.rejected``. The ``*_async`` forms run the same halves for a coroutine, with no
    # worker-thread hop (only a peer-cache miss, the archive and the nonce purge use one).

    def verify_request(
        self, request: HttpRequest, *, via: str, caller: str | None = None, consume: bool | None = None
    ) -> ExchangeVerdict:
        """Check a request under the profile and the registry; logs and returns the verdict.
        Never raises for a bad message: a refusal is a verdict with its reason.

        ``consume`` (default: yes) records the nonce of an accepted message, so that no copy of
        it is accepted again: that is for the system that acts on the message (the gateway, a
        receiver). ``consume=False`` only looks: the verdict says whether the nonce was already
        recorded (``nonce_seen``; a seen one is refused as ``replayed-nonce``), nothing is
        recorded, and the entry is ``exchange.checked``. Given explicitly, it is also logged."""
        self._maybe_purge()
        seen, context = _seen(request), _request_context(via, caller, consume)
        params = _read_params(request, seen, context)
        if isinstance(params, _Checked):
            return self._settle(params)
        peer = self.peer_by_keyid(params.keyid) if params.keyid else None
        return self._settle(self._check_request(request, seen, context, params, peer, consume is not False))

    async def verify_request_async(
        self,
        request: HttpRequest,
        *,
        via: str,
        caller: str | None = None,
        source: str | None = None,
        consume: bool | None = None,
    ) -> ExchangeVerdict:
        """``verify_request`` for a coroutine (the gateway, the verify API). ``source``: the
        sender's address, for a message from no authenticated caller (the gateway): its
        refusals whose signature did not verify are then logged one by one only up to the
        per-minute limit, the rest in a summary entry (``audit_seq`` None)."""
        await self._maybe_purge_async()
        seen, context = _seen(request), _request_context(via, caller, consume)
        params = _read_params(request, seen, context)
        if isinstance(params, _Checked):
            return await self._settle_async(params, source)
        peer = await self._peer_by_keyid_async(params.keyid) if params.keyid else None
        checked = self._check_request(request, seen, context, params, peer, consume is not False)
        return await self._settle_async(checked, source)

    async def refuse_request_async(
        self, request: HttpRequest, *, reason: str, detail: str, via: str, source: str | None = None
    ) -> ExchangeVerdict:
        """Log, as ``exchange.rejected`` with ``reason``, a request turned away before any check
        (the gateway's unsafe paths), bounded per ``source`` like the other refusals whose
        signature did not verify. Returns its verdict (for the message id)."""
        seen, context = _seen(request), _request_context(via, None, None)
        params = _read_params(request, seen, context)
        keyid = None if isinstance(params, _Checked) else _short(params.keyid)
        return await self._settle_async(_Checked(seen, context, reason, detail, keyid=keyid), source)

    async def record_consume_refused_async(self, request: HttpRequest, *, caller: str, scope: str) -> int:
        """Log that ``caller`` asked the verify API to record a message's nonce without holding
        ``scope``; nothing was checked or recorded."""
        seen = _seen(request)
        data = {"message_id": seen.message_id, "via": "verify-api", "missing_scope": scope, "digest": seen.digest}
        return await self.audit.record_async(caller, CONSUME_REFUSED_ACTION, seen.message_id, data)

    def verify_response(
        self, response: HttpResponse, *, expected_peer: str, via: str, in_reply_to: str | None = None
    ) -> ExchangeVerdict:
        """Check a response that ``expected_peer`` must have signed, bound to ``response.request``."""
        self._maybe_purge()
        seen, context = _seen(response), _response_context(response, via, in_reply_to)
        params = _read_params(response, seen, context)
        if isinstance(params, _Checked):
            return self._settle(params)
        peer = self.peer_by_keyid(params.keyid) if params.keyid else None
        return self._settle(self._check_response(response, seen, context, params, peer, expected_peer))

    async def verify_response_async(
        self, response: HttpResponse, *, expected_peer: str, via: str, in_reply_to: str | None = None
    ) -> ExchangeVerdict:
        """``verify_response`` for a coroutine (the gateway)."""
        await self._maybe_purge_async()
        seen, context = _seen(response), _response_context(response, via, in_reply_to)
        params = _read_params(response, seen, context)
        if isinstance(params, _Checked):
            return await self._settle_async(params)
        peer = await self._peer_by_keyid_async(params.keyid) if params.keyid else None
        return await self._settle_async(self._check_response(response, seen, context, params, peer, expected_peer))

    def _check_request(
        self,
        request: HttpRequest,
        seen: _Seen,
        context: dict[str, Any],
        params: SignatureParams,
        peer: Peer | None,
        consume: bool = True,
    ) -> _Checked:
        key = self._key_of(peer, params)
        if key is None:
            return self._unknown_key(seen, context, params, peer)
        assert peer is not None
        path = urlsplit(request.url).path or "/"
        route = peer.route_for(request.method, path)
        if route is None:
            return _Checked(
                seen,
                context,
                ROUTE_NOT_ALLOWED,
                f"{peer.name} may not {request.method} this path",
                peer=peer,
                keyid=key.keyid,
            )
        try:
            verified = verify_request(request, key, clock=self.clock, skew_seconds=self.skew_seconds)
        except MessageSignatureError as exc:
            return _Checked(seen, context, exc.reason, str(exc), peer=peer, route=route, keyid=key.keyid)
        return _Checked(seen, context, peer=peer, route=route, verified=verified, consume=consume)

    def _check_response(
        self,
        response: HttpResponse,
        seen: _Seen,
        context: dict[str, Any],
        params: SignatureParams,
        peer: Peer | None,
        expected_peer: str,
    ) -> _Checked:
        key = self._key_of(peer, params)
        if key is None:
            return self._unknown_key(seen, context, params, peer)
        assert peer is not None
        if peer.name != expected_peer:
            return _Checked(
                seen,
                context,
                UNEXPECTED_SIGNER,
                f"signed by {peer.name}, expected {expected_peer}",
                peer=peer,
                keyid=key.keyid,
            )
        try:
            verified = verify_response(response, key, clock=self.clock, skew_seconds=self.skew_seconds)
        except MessageSignatureError as exc:
            return _Checked(seen, context, exc.reason, str(exc), peer=peer, keyid=key.keyid)
        return _Checked(seen, context, peer=peer, verified=verified)

    def _key_of(self, peer: Peer | None, params: SignatureParams) -> PeerKey | None:
        return None if peer is None or params.keyid is None else peer.key_for(params.keyid, self.clock())

    @staticmethod
    def _unknown_key(seen: _Seen, context: dict[str, Any], params: SignatureParams, peer: Peer | None) -> _Checked:
        if peer is None:
            return _Checked(
                seen, context, UNKNOWN_KEY, "no registered peer holds this keyid", keyid=_short(params.keyid)
            )
        # A replaced key after its overlap: refused like an unknown one, but the evidence says
        # whose it was, so the operator can tell that peer to finish its rotation.
        ended = peer.previous_until.isoformat() if peer.previous_until else "?"
        return _Checked(
            seen,
            context,
            UNKNOWN_KEY,
            f"this keyid is {peer.name}'s replaced key; its overlap ended at {ended}",
            peer=peer,
            keyid=params.keyid,
        )

    def _settle(self, checked: _Checked) -> ExchangeVerdict:
        """Make the outcome durable (see above) and return its verdict."""
        seq: int | None
        if checked.verified is None:
            seq = self.audit.record(*_event(checked))
        else:
            seq = self.audit.record_if(_nonce_check(checked), *_event(checked))
            if seq is None:
                return self._settle(checked.replayed())
        self._archive(checked, seq)
        return checked.verdict(seq)

    async def _settle_async(self, checked: _Checked, source: str | None = None) -> ExchangeVerdict:
        seq: int | None
        refusals = self.refusals if source is not None else None
        if refusals is not None:
            await refusals.flush_due_async()
        if checked.verified is None:
            # Replays are not passed here with a source: their signature verified, so each
            # one is evidence against a named peer and keeps its own entry.
            if refusals is not None and not refusals.admit(RefusalKind.EXCHANGE, source or "", str(checked.reason)):
                return checked.verdict(None)
            seq = await self.audit.record_async(*_event(checked))
        else:
            seq = await self.audit.record_if_async(_nonce_check(checked), *_event(checked))
            if seq is None:
                return await self._settle_async(checked.replayed())
        if self.archive:
            await asyncio.to_thread(self._archive, checked, seq)
        return checked.verdict(seq)

    def _archive(self, checked: _Checked, seq: int) -> None:
        if not self.archive:
            return
        seen = checked.seen
        with self.engine.begin() as conn:
            conn.execute(
                insert(exchange_archive).values(
                    message_id=seen.message_id,
                    direction=seen.direction.value,
                    verdict="accepted" if checked.verified is not None else "rejected",
                    reason=checked.reason,
                    peer=checked.peer.name if checked.peer else None,
                    received_at=self.clock(),
                    method=seen.method[:16],
                    target_uri=seen.target_uri,
                    status=seen.status,
                    headers=json.dumps([list(h) for h in seen.headers], ensure_ascii=False),
                    body=seen.body,
                    audit_seq=seq,
                )
            )

    def archived(self, message_id: str) -> list[dict[str, Any]]:
        """The archived copies of a message (empty when the archive is off)."""
        with self._reader() as conn:
            rows = conn.execute(
                select(exchange_archive)
                .where(exchange_archive.c.message_id == message_id)
                .order_by(exchange_archive.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    def record_forward_failure(self, verdict: ExchangeVerdict, *, destination: str, reason: str, detail: str) -> int:
        """Log that an accepted request could not be delivered (peer down, timeout)."""
        return self.audit.record(*_forward_failure(verdict, destination, reason, detail))

    async def record_forward_failure_async(
        self, verdict: ExchangeVerdict, *, destination: str, reason: str, detail: str
    ) -> int:
        return await self.audit.record_async(*_forward_failure(verdict, destination, reason, detail))

    # ----------------------------------------------------------- gateway signing

    def gateway_sign_request(self, request: HttpRequest) -> HttpRequest:
        """``request`` re-signed by the gateway (its own keyid, a fresh nonce and digest)."""
        key = self._require_gateway_key()
        return request.with_headers(sign_request(request, key, clock=self.clock).as_dict())

    def gateway_sign_response(self, response: HttpResponse) -> HttpResponse:
        key = self._require_gateway_key()
        return response.with_headers(sign_response(response, key, clock=self.clock).as_dict())

    async def gateway_sign_request_async(self, request: HttpRequest) -> HttpRequest:
        """``gateway_sign_request`` for the event loop. A key in memory signs in ~0.1 ms, inline;
        a token key is a PKCS#11 round trip that may wait on the HSM (or on the token's session
        lock), so it signs in a worker thread, never on the event loop."""
        if self.gateway_key_on_token:
            return await asyncio.to_thread(self.gateway_sign_request, request)
        return self.gateway_sign_request(request)

    async def gateway_sign_response_async(self, response: HttpResponse) -> HttpResponse:
        if self.gateway_key_on_token:
            return await asyncio.to_thread(self.gateway_sign_response, response)
        return self.gateway_sign_response(response)

    @property
    def gateway_key_on_token(self) -> bool:
        key = self.gateway_key
        return key is not None and token_object_id(key.private_key) is not None

    def gateway_public_key(self) -> PeerKey:
        """The gateway's verification key, for the peers that check what it signs."""
        return self._require_gateway_key().peer_key()

    def _require_gateway_key(self) -> ExchangeSigningKey:
        if self.gateway_key is None:
            raise GatewayNotConfigured(
                "the gateway has no exchange signing key (gateway-exchange.key.pem or BHXH_GATEWAY_KEY_LABEL)"
            )
        return self.gateway_key

    # ------------------------------------------------------------------ nonces

    def purge_expired_nonces(self) -> int:
        """Delete the replay-guard entries whose signatures have expired; returns how many."""
        cutoff = int(self.clock().timestamp())
        with self.engine.begin() as conn:
            return conn.execute(delete(exchange_nonces).where(exchange_nonces.c.expires_at < cutoff)).rowcount

    def _purge_due(self) -> bool:
        last = self._last_purge
        return last is None or (self.clock() - last).total_seconds() >= NONCE_PURGE_INTERVAL_SECONDS

    def _maybe_purge(self) -> None:
        if not self._purge_due():
            return
        if not self._purge_lock.acquire(blocking=False):
            return  # another thread is purging
        try:
            if self._purge_due():
                self._last_purge = self.clock()
                self.purge_expired_nonces()
        finally:
            self._purge_lock.release()

    async def _maybe_purge_async(self) -> None:
        # A DELETE is a database write: never on the event loop, and at most once a minute.
        if self._purge_due():
            await asyncio.to_thread(self._maybe_purge)


@dataclass(frozen=True)
class _Checked:
    """A message after the checks that write nothing: refused (``reason``), or verified and
    waiting for its nonce to be recorded (``verified``)."""

    seen: _Seen
    context: dict[str, Any]
    reason: str | None = None
    detail: str | None = None
    peer: Peer | None = None
    route: Route | None = None
    verified: VerifiedSignature | None = None
    keyid: str | None = None  # as the message names it (when no peer holds it, or before it verified)
    consume: bool = True  # record the nonce of a verified message (else only look it up)
    nonce_seen: bool | None = None

    @property
    def logged_keyid(self) -> str | None:
        if self.verified is not None:
            return self.verified.keyid
        return self.keyid if self.keyid is not None or self.peer is None else self.peer.keyid

    def replayed(self) -> _Checked:
        return replace(
            self,
            verified=None,
            reason=REPLAYED_NONCE,
            detail="this keyid and nonce were already accepted",
            nonce_seen=True,
        )

    def verdict(self, seq: int | None) -> ExchangeVerdict:
        seen = self.seen
        return ExchangeVerdict(
            seen.message_id,
            seen.direction,
            self.verified is not None,
            self.reason,
            self.detail,
            self.peer.name if self.peer else None,
            self.logged_keyid,
            str(self.route) if self.route else None,
            seen.digest,
            seq,
            self.verified,
            False if self.verified is not None else self.nonce_seen,
        )


def _request_context(via: str, caller: str | None, consume: bool | None) -> dict[str, Any]:
    return {
        "via": via,
        **({"caller": caller} if caller else {}),
        **({"consume": consume} if consume is not None else {}),
    }


def _response_context(response: HttpResponse, via: str, in_reply_to: str | None) -> dict[str, Any]:
    return {"via": via, "status": response.status, **({"in_reply_to": in_reply_to} if in_reply_to else {})}


def _read_params(
    message: HttpRequest | HttpResponse, seen: _Seen, context: dict[str, Any]
) -> SignatureParams | _Checked:
    """The signature's parameters (to find the peer by keyid), or the refusal of a message
    whose signature fields cannot even be read."""
    try:
        return read_signature_params(message)
    except MessageSignatureError as exc:
        return _Checked(seen, context, exc.reason, str(exc))


def _event(checked: _Checked) -> tuple[str, str, str, dict[str, Any]]:
    """``(actor, action, subject, data)`` of the audit entry for ``checked``: message id, peer,
    keyid, route pattern, digest and reason; never the body or the raw URL."""
    seen, peer, route = checked.seen, checked.peer, checked.route
    data: dict[str, Any] = {
        "message_id": seen.message_id,
        "direction": seen.direction.value,
        "peer": peer.name if peer else None,
        "keyid": checked.logged_keyid,
        "method": _short(seen.method),
        "route": str(route) if route else None,
        "target_sha256": seen.target_sha256,
        "digest": seen.digest,
        **checked.context,
    }
    if checked.verified is None:
        data["reason"] = checked.reason
        data["detail"] = _short(checked.detail)
    actor = f"peer:{peer.name}" if peer else "system"
    return actor, _action(checked), seen.message_id, data


def _action(checked: _Checked) -> str:
    if checked.verified is None:
        return REJECTED_ACTION
    return ACCEPTED_ACTION if checked.consume else CHECKED_ACTION


def _forward_failure(
    verdict: ExchangeVerdict, destination: str, reason: str, detail: str
) -> tuple[str, str, str, dict[str, Any]]:
    return (
        f"peer:{verdict.peer}",
        FORWARD_FAILED_ACTION,
        verdict.message_id,
        {
            "message_id": verdict.message_id,
            "peer": verdict.peer,
            "destination": destination,
            "route": verdict.route,
            "digest": verdict.digest,
            "reason": reason,
            "detail": _short(detail),
        },
    )


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


def _nonce_check(checked: _Checked) -> Claim | Callable[[Connection], bool]:
    """The group-commit guard of a verified message: claim its nonce, or (not consuming) only
    make sure it was never claimed, in the same transaction as the entry."""
    verified = checked.verified
    assert verified is not None
    if checked.consume:
        return _nonce_guard(verified)
    keyid, nonce = verified.keyid, verified.nonce

    def unseen(conn: Connection) -> bool:
        found = conn.execute(
            select(exchange_nonces.c.nonce).where(exchange_nonces.c.keyid == keyid, exchange_nonces.c.nonce == nonce)
        ).first()
        return found is None

    return unseen


def _nonce_guard(verified: VerifiedSignature) -> Claim:
    """The group-commit guard of an acceptance: the nonce is inserted only now, after the
    signature verified (so nobody can burn a peer's nonces), and kept until it expires."""
    assert verified.nonce is not None and verified.expires is not None  # the profile demands both
    return Claim(_claim_nonces, (verified.keyid, verified.nonce), int(verified.expires.timestamp()))


def _peer_log(peer: Peer) -> dict[str, Any]:
    return {
        "name": peer.name,
        "keyid": peer.keyid,
        "algorithm": peer.key.algorithm.value,
        "key_sha256": peer.fingerprint(),
        "base_url": peer.base_url,
        "routes": [str(r) for r in peer.routes],
        "previous_keyid": peer.previous.keyid if peer.previous else None,
        "previous_until": peer.previous_until.isoformat() if peer.previous_until else None,
    }


def _peer_row(peer: Peer) -> dict[str, Any]:
    """The stored columns of ``peer`` except its name and creation time."""
    previous = peer.previous
    return {
        "keyid": peer.keyid,
        "algorithm": peer.key.algorithm.value,
        "public_key_pem": peer.key.public_pem(),
        "certificate_pem": peer.key.certificate_pem(),
        "base_url": peer.base_url,
        "routes": json.dumps([str(r) for r in peer.routes]),
        "updated_at": peer.updated_at,
        "previous_keyid": previous.keyid if previous else None,
        "previous_public_key_pem": previous.public_pem() if previous else None,
        "previous_certificate_pem": previous.certificate_pem() if previous else None,
        "previous_until": peer.previous_until if previous else None,
    }


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


def build_exchange_service(
    *,
    engine: Engine,
    clock: Clock,
    audit: AuditService,
    gateway_key: PrivateKeyTypes | None,
    skew_seconds: int,
    archive: bool = False,
    peer_cache_seconds: float = DEFAULT_PEER_CACHE_SECONDS,
    refusals: RefusalRecorder | None = None,
) -> ExchangeService:
    """The wiring's constructor: the gateway signs with ``gateway_key`` (``integrity.keys.
    gateway_key``: the file or the token) under keyid ``gateway``; None: no gateway."""
    signing_key = ExchangeSigningKey.from_private_key(GATEWAY_KEYID, gateway_key) if gateway_key is not None else None
    return ExchangeService(
        engine,
        clock=clock,
        audit=audit,
        skew_seconds=skew_seconds,
        archive=archive,
        gateway_key=signing_key,
        peer_cache_seconds=peer_cache_seconds,
        refusals=refusals,
    )
