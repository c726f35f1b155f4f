"""``ExchangeAuth``: an ``httpx.Auth`` for other BHXH systems talking through the exchange.

It signs every outgoing request under the exchange profile (RFC 9421 over ``@method``,
``@target-uri``, ``content-type``, ``content-digest``; ``created``, ``expires``, a 128-bit
``nonce``, ``keyid``, ``tag="bhxh-exchange-v1"``) and, when given the server's key, verifies
the response before the caller sees it: signature with the algorithm of that key, bound to
this very request (``"@method";req``, ``"@target-uri";req``), Content-Digest, time window and
a replay guard. A response that fails raises a ``signing.errors.MessageSignatureError``
subclass (its ``reason`` names why); no unverified response is returned.

    auth = ExchangeAuth.from_files(
        keyid="portal", key_file="keys/portal-exchange.key.pem", passphrase=b"…",
        server_keyid="gateway", server_key_file="keys/gateway-exchange.crt.pem",
    )
    with httpx.Client(auth=auth) as client:
        r = client.post("https://gateway.bhxh.internal/gateway/one-stop/v1/dossiers", json={...})

Works with ``httpx.Client`` and ``httpx.AsyncClient``. It imports only ``signing.httpsig``
(the pure profile), not the service, so a peer system needs no database to use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
from cryptography.hazmat.primitives import serialization

from signing.errors import MessageSignatureError, ReplayedMessage
from signing.httpsig import (
    MAX_LIFETIME_SECONDS,
    ExchangeSigningKey,
    HttpRequest,
    HttpResponse,
    PeerKey,
    VerifiedSignature,
    sign_request,
    verify_response,
)

__all__ = ["ExchangeAuth", "MemoryReplayGuard", "ReplayGuard", "ResponseNotVerified"]

DEFAULT_SKEW_SECONDS = 300
# Entries older than their expiry are dropped once the guard holds this many.
_GUARD_SWEEP_AT = 10_000


class ResponseNotVerified(MessageSignatureError):
    """The response could not be checked at all (e.g. it was content-coded)."""

    reason = "unverifiable-response"


class ReplayGuard(Protocol):
    def first_sighting(self, keyid: str, nonce: str, expires: datetime) -> bool:
        """True the first time (keyid, nonce) is offered; kept at least until ``expires``."""


class MemoryReplayGuard:
    """A process-local replay guard (the service itself uses its database instead)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()

    def first_sighting(self, keyid: str, nonce: str, expires: datetime) -> bool:
        with self._lock:
            if len(self._seen) >= _GUARD_SWEEP_AT:
                now = self._clock()
                self._seen = {k: v for k, v in self._seen.items() if v >= now}
            if (keyid, nonce) in self._seen:
                return False
            self._seen[(keyid, nonce)] = expires
            return True


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ExchangeAuth(httpx.Auth):
    """Sign requests with ``key``; verify responses with ``server_key`` (see the module doc)."""

    requires_request_body = True
    requires_response_body = True

    def __init__(
        self,
        key: ExchangeSigningKey,
        *,
        server_key: PeerKey | None,
        clock: Callable[[], datetime] = _utc_now,
        skew_seconds: int = DEFAULT_SKEW_SECONDS,
        lifetime_seconds: int = MAX_LIFETIME_SECONDS,
        replay_guard: ReplayGuard | None = None,
    ) -> None:
        self.key = key
        self.server_key = server_key
        self.clock = clock
        self.skew_seconds = skew_seconds
        self.lifetime_seconds = lifetime_seconds
        self.replay_guard = replay_guard if replay_guard is not None else MemoryReplayGuard(clock)

    @classmethod
    def from_files(
        cls,
        *,
        keyid: str,
        key_file: str | Path,
        passphrase: bytes | None,
        server_keyid: str | None = None,
        server_key_file: str | Path | None = None,
        **options: object,
    ) -> ExchangeAuth:
        """Our encrypted PKCS#8 key, and the server's certificate or public key (PEM)."""
        private = serialization.load_pem_private_key(Path(key_file).read_bytes(), passphrase)
        server = None
        if server_key_file is not None:
            server = PeerKey.from_pem(server_keyid or "", Path(server_key_file).read_bytes())
        return cls(ExchangeSigningKey.from_private_key(keyid, private), server_key=server, **options)  # type: ignore[arg-type]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # Identity coding: the Content-Digest we check covers the body as transferred, and
        # httpx hands us the decoded body.
        request.headers["Accept-Encoding"] = "identity"
        signed = self._as_message(request)
        for name, value in (
            sign_request(signed, self.key, clock=self.clock, lifetime_seconds=self.lifetime_seconds).as_dict().items()
        ):
            request.headers[name] = value
        response = yield request
        if self.server_key is not None:
            response.extensions["bhxh_exchange"] = self.verify(request, response)

    def verify(self, request: httpx.Request, response: httpx.Response) -> VerifiedSignature:
        """Check ``response`` as the answer to ``request``; raises on any failure."""
        assert self.server_key is not None
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise ResponseNotVerified("the response is content-coded; its digest cannot be checked")
        answer = HttpResponse(
            response.status_code, tuple(response.headers.multi_items()), response.content, self._as_message(request)
        )
        verified = verify_response(answer, self.server_key, clock=self.clock, skew_seconds=self.skew_seconds)
        assert verified.nonce is not None and verified.expires is not None  # the profile demands both
        if not self.replay_guard.first_sighting(verified.keyid, verified.nonce, verified.expires):
            raise ReplayedMessage("this response's keyid and nonce were seen before")
        return verified

    @staticmethod
    def _as_message(request: httpx.Request) -> HttpRequest:
        return HttpRequest(request.method, str(request.url), tuple(request.headers.multi_items()), request.content)
