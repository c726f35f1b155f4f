"""The gateway's own RFC 9421 signatures: every request it forwards and every answer it relays
is signed anew with its key, keyid ``gateway`` (docs/exchange-profile.md §3). The key is
``gateway-exchange.key.pem`` or a key pair on the PKCS#11 token (``integrity.keys.gateway_key``);
without one the gateway cannot forward."""

from __future__ import annotations

import asyncio

from integrity.clock import Clock
from integrity.errors import GatewayNotConfigured
from signing.httpsig import ExchangeSigningKey, HttpRequest, HttpResponse, PeerKey, sign_request, sign_response
from signing.pkcs11 import token_object_id

GATEWAY_KEYID = "gateway"


class GatewaySigner:
    """Signs with the gateway's key, or raises ``GatewayNotConfigured`` when there is none.

    The signing methods are coroutines only: their one caller is the gateway, which runs on
    the event loop between two ``httpx.AsyncClient`` exchanges. A key in memory signs in about
    0.1 ms, inline; a token key is a PKCS#11 round trip that may wait on the HSM (or on the
    token's session lock), so it signs in a worker thread, never on the event loop."""

    def __init__(self, key: ExchangeSigningKey | None, *, clock: Clock) -> None:
        self.key = key
        self.clock = clock

    @property
    def on_token(self) -> bool:
        return self.key is not None and token_object_id(self.key.private_key) is not None

    def public_key(self) -> PeerKey:
        """The gateway's verification key, for the peers that check what it signs."""
        return self._require().peer_key()

    async def sign_request(self, request: HttpRequest) -> HttpRequest:
        """``request`` re-signed by the gateway (its own keyid, a fresh nonce and digest)."""
        key = self._require()

        def signed() -> HttpRequest:
            return request.with_headers(sign_request(request, key, clock=self.clock).as_dict())

        return await asyncio.to_thread(signed) if self.on_token else signed()

    async def sign_response(self, response: HttpResponse) -> HttpResponse:
        """``response`` signed by the gateway, bound to the request it answers."""
        key = self._require()

        def signed() -> HttpResponse:
            return response.with_headers(sign_response(response, key, clock=self.clock).as_dict())

        return await asyncio.to_thread(signed) if self.on_token else signed()

    def _require(self) -> ExchangeSigningKey:
        if self.key is None:
            raise GatewayNotConfigured(
                "the gateway has no exchange signing key (gateway-exchange.key.pem or BHXH_GATEWAY_KEY_LABEL)"
            )
        return self.key
