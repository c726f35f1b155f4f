"""Use case: every message between the portal and the one-stop system is checked and leaves
evidence (Decision 352/QĐ-BHXH Art. 5.2–5.3; docs/exchange-profile.md).

A message is accepted only if, in this order: its ``keyid`` names a registered peer's key
(its current key, or the key it replaced while their rotation overlap lasts); that peer may
use the route (method and path); the RFC 9421 signature verifies with the peer's key under the
exchange profile; the Content-Digest equals the body; ``created`` lies within
±``skew_seconds`` and ``expires`` has not passed; and the (keyid, nonce) pair was never seen
before (integrity.exchange.nonces). A message is acted on only once the commit that records
its nonce and its ``exchange.accepted`` entry returned. Every refusal is logged as
``exchange.rejected`` with its reason; at the gateway, refusals whose signature did not verify
are logged so one by one up to a limit per sender address and minute, the rest as one
``exchange.rejections_summarised`` entry with their count (integrity.refusal_log).

Only the system that acts on a message consumes its nonce (the gateway as it forwards, a
receiver through the verify API with ``consume``); a plain check looks the nonce up in the same
transaction as its ``exchange.checked`` entry and records nothing, so a party allowed to verify
cannot use up the nonce of a message it saw in flight. Bodies go only to the optional message
archive.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from sqlalchemy import Engine, insert, select

from integrity.audit_service import AuditService
from integrity.clock import Clock
from integrity.db import READ_ONLY
from integrity.exchange.gateway_signer import GATEWAY_KEYID, GatewaySigner
from integrity.exchange.logged_text import short
from integrity.exchange.nonces import NoncePurge, nonce_guard
from integrity.exchange.peers import Peer
from integrity.exchange.registry import DEFAULT_PEER_CACHE_SECONDS, PeerRegistry
from integrity.exchange.tables import exchange_archive
from integrity.exchange.verdict import (
    CONSUME_REFUSED_ACTION,
    Checked,
    ExchangeVerdict,
    ForwardFailure,
    Reason,
    Seen,
    forward_failure_event,
    request_context,
    response_context,
)
from integrity.refusal_log import RefusalKind, RefusalRecorder
from signing.errors import MessageSignatureError
from signing.httpsig import (
    ExchangeSigningKey,
    HttpRequest,
    HttpResponse,
    PeerKey,
    SignatureParams,
    read_signature_params,
    verify_request,
    verify_response,
)


class ExchangeService:
    """The checks of exchanged messages (see the module docstring), with the registry they
    read (``peers``), the replay guard's housekeeping (``nonces``) and the gateway's own
    signatures (``gateway``).

    The per-message methods are coroutines and have no blocking twin: their callers (the
    gateway and the verify API) run on the event loop. Each check has two halves. The first
    needs no write: parse, find the peer, match the route, verify the signature (CPU only,
    once the peer is cached). The second makes the outcome durable by awaiting the audit log's
    group commit, so concurrent messages share one transaction and one fsync and none costs a
    worker-thread hop; only a peer-cache miss, the archive and the nonce purge use one."""

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
        if skew_seconds < 0:
            raise ValueError("skew_seconds must not be negative")
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self.skew_seconds = skew_seconds
        self.archive = archive
        self.refusals = refusals
        self.peers = PeerRegistry(engine, clock=clock, audit=audit, cache_seconds=peer_cache_seconds)
        self.nonces = NoncePurge(engine, clock=clock)
        self.gateway = GatewaySigner(gateway_key, clock=clock)

    # ------------------------------------------------------------- verification

    async def verify_request(
        self,
        request: HttpRequest,
        *,
        via: str,
        caller: str | None = None,
        source: str | None = None,
        consume: bool | None = None,
    ) -> ExchangeVerdict:
        """Check a request under the profile and the registry; logs and returns the verdict.
        Never raises for a bad message: a refusal is a verdict with its reason.

        ``consume`` (default: yes) records the nonce of an accepted message, so that no copy of
        it is accepted again: that is for the system that acts on the message (the gateway, a
        receiver). ``consume=False`` only looks: the verdict says whether the nonce was already
        recorded (``nonce_seen``; a seen one is refused as ``replayed-nonce``), nothing is
        recorded, and the entry is ``exchange.checked``. Given explicitly, it is also logged.

        ``source``: the sender's address, for a message from no authenticated caller (the
        gateway): its refusals whose signature did not verify are then logged one by one only
        up to the per-minute limit, the rest in a summary entry (``audit_seq`` None)."""
        await self.nonces.maybe_purge()
        seen, context = Seen.of(request), request_context(via, caller, consume)
        params = _read_params(request, seen, context)
        if isinstance(params, Checked):
            return await self._settle(params, source)
        peer = await self.peers.by_keyid(params.keyid) if params.keyid else None
        checked = self._check_request(request, seen, context, params, peer, consume is not False)
        return await self._settle(checked, source)

    async def verify_response(
        self, response: HttpResponse, *, expected_peer: str, via: str, in_reply_to: str | None = None
    ) -> ExchangeVerdict:
        """Check a response that ``expected_peer`` must have signed, bound to ``response.request``."""
        await self.nonces.maybe_purge()
        seen, context = Seen.of(response), response_context(response, via, in_reply_to)
        params = _read_params(response, seen, context)
        if isinstance(params, Checked):
            return await self._settle(params)
        peer = await self.peers.by_keyid(params.keyid) if params.keyid else None
        return await self._settle(self._check_response(response, seen, context, params, peer, expected_peer))

    async def refuse_request(
        self, request: HttpRequest, *, reason: Reason, detail: str, via: str, source: str | None = None
    ) -> ExchangeVerdict:
        """Log, as ``exchange.rejected`` with ``reason``, a request turned away before any check
        (the gateway's unsafe paths), bounded per ``source`` like the other refusals whose
        signature did not verify. Returns its verdict (for the message id)."""
        seen, context = Seen.of(request), request_context(via, None, None)
        params = _read_params(request, seen, context)
        keyid = None if isinstance(params, Checked) else short(params.keyid)
        return await self._settle(Checked(seen, context, reason, detail, keyid=keyid), source)

    async def record_consume_refused(self, request: HttpRequest, *, caller: str, scope: str) -> int:
        """Log that ``caller`` asked the verify API to record a message's nonce without holding
        ``scope``; nothing was checked or recorded."""
        seen = Seen.of(request)
        data = {"message_id": seen.message_id, "via": "verify-api", "missing_scope": scope, "digest": seen.digest}
        return await self.audit.record_async(caller, CONSUME_REFUSED_ACTION, seen.message_id, data)

    async def record_forward_failure(
        self, verdict: ExchangeVerdict, *, destination: str, reason: ForwardFailure, detail: str
    ) -> int:
        """Log that an accepted request could not be delivered (peer down, timeout)."""
        return await self.audit.record_async(*forward_failure_event(verdict, destination, reason, detail))

    def archived(self, message_id: str) -> list[dict[str, Any]]:
        """The archived copies of a message (empty when the archive is off)."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            rows = conn.execute(
                select(exchange_archive)
                .where(exchange_archive.c.message_id == message_id)
                .order_by(exchange_archive.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------------ checks

    def _check_request(
        self,
        request: HttpRequest,
        seen: Seen,
        context: dict[str, Any],
        params: SignatureParams,
        peer: Peer | None,
        consume: bool = True,
    ) -> Checked:
        key = self._key_of(peer, params)
        if key is None:
            return _unknown_key(seen, context, params, peer)
        assert peer is not None
        path = urlsplit(request.url).path or "/"
        route = peer.route_for(request.method, path)
        if route is None:
            return Checked(
                seen,
                context,
                Reason.ROUTE_NOT_ALLOWED,
                f"{peer.name} may not {request.method} this path",
                peer=peer,
                keyid=key.keyid,
            )
        try:
            verified = verify_request(request, key, clock=self.clock, skew_seconds=self.skew_seconds)
        except MessageSignatureError as exc:
            return Checked(seen, context, Reason.of(exc), str(exc), peer=peer, route=route, keyid=key.keyid)
        return Checked(seen, context, peer=peer, route=route, verified=verified, consume=consume)

    def _check_response(
        self,
        response: HttpResponse,
        seen: Seen,
        context: dict[str, Any],
        params: SignatureParams,
        peer: Peer | None,
        expected_peer: str,
    ) -> Checked:
        key = self._key_of(peer, params)
        if key is None:
            return _unknown_key(seen, context, params, peer)
        assert peer is not None
        if peer.name != expected_peer:
            return Checked(
                seen,
                context,
                Reason.UNEXPECTED_SIGNER,
                f"signed by {peer.name}, expected {expected_peer}",
                peer=peer,
                keyid=key.keyid,
            )
        try:
            verified = verify_response(response, key, clock=self.clock, skew_seconds=self.skew_seconds)
        except MessageSignatureError as exc:
            return Checked(seen, context, Reason.of(exc), str(exc), peer=peer, keyid=key.keyid)
        return Checked(seen, context, peer=peer, verified=verified)

    def _key_of(self, peer: Peer | None, params: SignatureParams) -> PeerKey | None:
        return None if peer is None or params.keyid is None else peer.key_for(params.keyid, self.clock())

    # ---------------------------------------------------------------- evidence

    async def _settle(self, checked: Checked, source: str | None = None) -> ExchangeVerdict:
        """Make the outcome durable and return its verdict: an acceptance records the nonce and
        appends its entry in ONE group-commit transaction (``AuditService.record_if_async``),
        a refusal appends ``exchange.rejected``."""
        seq: int | None
        refusals = self.refusals if source is not None else None
        if refusals is not None:
            await refusals.flush_due_async()
        if checked.verified is None:
            # Replays are not passed here with a source: their signature verified, so each
            # one is evidence against a named peer and keeps its own entry.
            if refusals is not None and not refusals.admit(RefusalKind.EXCHANGE, source or "", str(checked.reason)):
                return checked.verdict(None)
            seq = await self.audit.record_async(*checked.event())
        else:
            guard = nonce_guard(checked.verified, consume=checked.consume)
            seq = await self.audit.record_if_async(guard, *checked.event())
            if seq is None:
                return await self._settle(checked.replayed())
        if self.archive:
            await asyncio.to_thread(self._archive, checked, seq)
        return checked.verdict(seq)

    def _archive(self, checked: Checked, seq: int) -> None:
        seen = checked.seen
        with self.engine.begin() as conn:
            conn.execute(
                insert(exchange_archive).values(
                    message_id=seen.message_id,
                    direction=seen.direction.value,
                    verdict="accepted" if checked.verified is not None else "rejected",
                    reason=checked.reason.value if checked.reason else None,
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


def _read_params(message: HttpRequest | HttpResponse, seen: Seen, context: dict[str, Any]) -> SignatureParams | Checked:
    """The signature's parameters (to find the peer by keyid), or the refusal of a message
    whose signature fields cannot even be read."""
    try:
        return read_signature_params(message)
    except MessageSignatureError as exc:
        return Checked(seen, context, Reason.of(exc), str(exc))


def _unknown_key(seen: Seen, context: dict[str, Any], params: SignatureParams, peer: Peer | None) -> Checked:
    if peer is None:
        return Checked(
            seen, context, Reason.UNKNOWN_KEY, "no registered peer holds this keyid", keyid=short(params.keyid)
        )
    # A replaced key after its overlap: refused like an unknown one, but the evidence says
    # whose it was, so the operator can tell that peer to finish its rotation.
    ended = peer.previous_until.isoformat() if peer.previous_until else "?"
    return Checked(
        seen,
        context,
        Reason.UNKNOWN_KEY,
        f"this keyid is {peer.name}'s replaced key; its overlap ended at {ended}",
        peer=peer,
        keyid=params.keyid,
    )


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
