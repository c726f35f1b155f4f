"""Use cases for API clients (other BHXH systems): create, list, revoke, authenticate.

Each creation, revocation and refusal is counted in metrics and recorded in the audit log;
the refusal's precise reason goes to the log only, the caller gets one generic answer.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine

from auth import ApiClient, InvalidApiKey, IssuedKey, authenticate, create_client, list_clients, revoke_client
from integrity.audit_service import AuditService
from integrity.clock import Clock
from integrity.db import READ_ONLY
from integrity.metrics import API_KEY_EVENTS
from integrity.refusal_log import RefusalKind, RefusalRecorder

# How long an authenticated key is trusted from memory. Another instance's revocation takes
# effect here within this time (as key states do for signing); this instance's at once.
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_ENTRIES = 10_000


@dataclass
class ClientService:
    engine: Engine
    clock: Clock
    audit: AuditService
    cache_seconds: float = AUTH_CACHE_SECONDS
    # Bounds the log entries of refusals per source (integrity.refusal_log); None: one each.
    refusals: RefusalRecorder | None = None
    # SHA-256 of the presented key → (client, monotonic expiry). Keyed by a digest so the map
    # never holds a usable key; only keys that authenticated are kept (refusals always go to
    # the database and the log).
    _cache: dict[bytes, tuple[ApiClient, float]] = field(default_factory=dict, init=False, repr=False)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # Bumped by every revocation here: a lookup that read the database before a revocation
    # committed must not put its (now stale) answer into the cache after the revocation.
    _generation: int = field(default=0, init=False, repr=False)

    def create(self, name: str, scopes: str | list[str], *, actor: str = "system") -> IssuedKey:
        with self.engine.begin() as conn:
            issued = create_client(conn, name, scopes, clock=self.clock)
            self.audit.record(
                actor,
                "admin.client.created",
                f"client:{issued.client.client_id}",
                {"name": issued.client.name, "scopes": sorted(issued.client.scopes)},
                conn=conn,
            )
        API_KEY_EVENTS.labels("created").inc()
        return issued

    def list(self) -> list[ApiClient]:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return list_clients(conn)

    def revoke(self, client_id: str, *, actor: str = "system") -> ApiClient:
        with self.engine.begin() as conn:
            client = revoke_client(conn, client_id, clock=self.clock)
            self.audit.record(actor, "admin.client.revoked", f"client:{client_id}", {}, conn=conn)
        with self._cache_lock:
            self._generation += 1
            for digest in [d for d, (c, _) in self._cache.items() if c.client_id == client_id]:
                del self._cache[digest]
        API_KEY_EVENTS.labels("revoked").inc()
        return client

    def cached(self, api_key: str) -> ApiClient | None:
        """The client of a key that authenticated in the last ``cache_seconds``, or None (then
        call ``authenticate``). No I/O: a request handler can call it on the event loop."""
        digest = hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).digest()
        hit = self._cache.get(digest)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def authenticate(self, api_key: str, *, source: str | None = None) -> ApiClient:
        """The key's client, or InvalidApiKey. ``source``: the caller's address; a refusal is
        then logged one by one only up to the per-minute limit, the rest in a summary."""
        generation = self._generation
        client = self._authenticate(api_key, source)
        if self.cache_seconds > 0:
            digest = hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).digest()
            with self._cache_lock:
                if generation != self._generation:
                    return client  # a revocation ran meanwhile: answer, but do not cache
                if len(self._cache) >= AUTH_CACHE_ENTRIES:
                    self._cache.clear()  # bounded: many distinct keys just cost database reads
                self._cache[digest] = (client, time.monotonic() + self.cache_seconds)
        return client

    def _authenticate(self, api_key: str, source: str | None) -> ApiClient:
        try:
            # A read: on SQLite a deferred transaction, so it never queues behind appends.
            with self.engine.connect().execution_options(**READ_ONLY) as conn:
                return authenticate(conn, api_key)
        except InvalidApiKey as exc:
            API_KEY_EVENTS.labels("refused").inc()
            refusals = self.refusals if source is not None else None
            # The key itself never reaches the log; only why it was refused.
            if refusals is None or refusals.admit(RefusalKind.API_KEY, source or "", str(exc)):
                self.audit.record("system", RefusalKind.API_KEY.value, "api", {"reason": str(exc)})
            if refusals is not None:
                refusals.flush_due()
            raise
