"""Exchange: ``POST /v1/exchange/verify`` (scope ``verify``; recording the nonce also needs
``exchange:consume``) and the peer registry under
``/v1/admin/peers`` (scope ``admin``; every change is audited by ``integrity.exchange``).

Thin: pydantic models in, ``integrity.exchange`` does the checks and the logging, JSON out.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.deps import Principal, get_state, require_scope
from api.openapi import problems
from auth import MissingScope
from integrity.app_state import AppState
from integrity.exchange import MAX_OVERLAP_SECONDS, ExchangeService, Peer
from signing.httpsig import HttpRequest

router = APIRouter(tags=["exchange"])

MAX_HEADERS = 200
MAX_URL_CHARS = 8192
SERVICE_KEY = "exchange"
CONSUME_SCOPE = "exchange:consume"


def get_exchange(state: AppState = Depends(get_state)) -> ExchangeService:
    return state.exchange


async def exchange_service(state: AppState = Depends(get_state)) -> ExchangeService:
    """``get_exchange`` for the per-message routes: ``async`` because it only reads an
    attribute, and a sync dependency costs a worker-thread hop per message."""
    return state.exchange


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VerifyIn(_Strict):
    method: str = Field(min_length=1, max_length=16, examples=["POST"])
    url: str = Field(
        min_length=1, max_length=MAX_URL_CHARS, description="the absolute target URI as the receiver saw it"
    )
    headers: dict[str, str] | list[tuple[str, str]] = Field(
        description="the received header fields, as an object or as [name, value] pairs (repeated fields)"
    )
    body_b64: str = Field("", description="the received body, base64")
    consume: bool = Field(
        False,
        description="record the message's nonce, so that no copy of it is accepted again: for the system "
        "that acts on the message (scope exchange:consume). Without it the message is only checked",
    )

    @field_validator("headers")
    @classmethod
    def _not_too_many(cls, value: dict[str, str] | list[tuple[str, str]]) -> dict[str, str] | list[tuple[str, str]]:
        if len(value) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} header fields")
        return value

    def body(self) -> bytes:
        try:
            return base64.b64decode(self.body_b64, validate=True)
        except binascii.Error as exc:
            raise ValueError("body_b64 is not base64") from exc

    @model_validator(mode="after")
    def _decodable(self) -> VerifyIn:
        self.body()
        return self


class VerifyOut(BaseModel):
    valid: bool
    peer: str | None
    reasons: list[str]
    reason: str | None = Field(description="stable slug of the refusal, e.g. replayed-nonce")
    nonce_seen: bool | None = Field(
        description="the message's nonce had been recorded before (then refused as replayed-nonce); "
        "null when an earlier check failed"
    )
    message_id: str
    keyid: str | None
    route: str | None
    digest: str = Field(description="RFC 9530 sha-256 Content-Digest of the body as received")
    audit_seq: int


@router.post("/v1/exchange/verify", response_model=VerifyOut, responses=problems(503))
async def verify_message(
    body: VerifyIn,
    exchange: ExchangeService = Depends(exchange_service),
    caller: Principal = Depends(require_scope("verify")),
) -> dict[str, Any]:
    """Check a message another system received: signature, digest, time, replay, peer, route.
    A refused message is a 200 answer with ``valid: false`` and the reason (it is also logged).
    The nonce is only looked up (``nonce_seen``), never recorded, unless ``consume`` is asked
    by a caller holding ``exchange:consume``: otherwise anyone allowed to verify who saw a
    message in flight could use up its nonce before its real delivery.
    ``async``: the checks are CPU work and the evidence is awaited in the audit log's group
    commit, so a message costs no worker-thread hop."""
    request = HttpRequest(body.method.upper(), body.url, _pairs(body.headers), body.body())
    if body.consume and CONSUME_SCOPE not in caller.scopes:
        await exchange.record_consume_refused(request, caller=caller.actor, scope=CONSUME_SCOPE)
        raise MissingScope(CONSUME_SCOPE)
    verdict = await exchange.verify_request(request, via="verify-api", caller=caller.actor, consume=body.consume)
    return verdict.as_dict()


def _pairs(headers: dict[str, str] | list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(headers.items()) if isinstance(headers, dict) else tuple(headers)


# --- admin: the peer registry -------------------------------------------------------------------


class PeerIn(_Strict):
    name: str = Field(min_length=1, max_length=64, examples=["portal"])
    keyid: str = Field(min_length=1, max_length=128, examples=["portal"])
    key_pem: str = Field(min_length=1, max_length=20_000, description="PEM certificate or PEM public key")
    routes: list[str] = Field(default_factory=list, max_length=200, examples=[["POST /gateway/one-stop/v1/dossiers"]])
    base_url: str | None = Field(None, max_length=2048, description="where the gateway forwards to this peer")


class PeerPatch(_Strict):
    keyid: str | None = Field(None, min_length=1, max_length=128)
    key_pem: str | None = Field(None, min_length=1, max_length=20_000)
    routes: list[str] | None = Field(None, max_length=200)
    base_url: str | None = Field(None, max_length=2048, description="null removes the base URL")
    overlap_seconds: int = Field(
        0,
        ge=0,
        le=MAX_OVERLAP_SECONDS,
        description="with a new key and keyid: how long the replaced key is still accepted (rotation overlap)",
    )
    end_overlap: bool = Field(False, description="stop accepting the replaced key now")


class PeerOut(BaseModel):
    name: str
    keyid: str
    algorithm: str
    key_sha256: str
    certificate_subject: str | None
    base_url: str | None
    routes: list[str]
    created_at: str
    updated_at: str
    previous_keyid: str | None = Field(None, description="the replaced key, accepted until previous_until")
    previous_until: str | None = None


def _out(peer: Peer) -> dict[str, Any]:
    return peer.as_dict()


@router.get("/v1/admin/peers", response_model=list[PeerOut], tags=["admin"])
def list_peers(
    exchange: ExchangeService = Depends(get_exchange), _admin: Principal = Depends(require_scope("admin"))
) -> list[dict[str, Any]]:
    return [_out(p) for p in exchange.peers.all()]


@router.get("/v1/admin/peers/{name}", response_model=PeerOut, tags=["admin"], responses=problems(404))
def get_peer(
    name: str, exchange: ExchangeService = Depends(get_exchange), _admin: Principal = Depends(require_scope("admin"))
) -> dict[str, Any]:
    return _out(exchange.peers.get(name))


@router.post(
    "/v1/admin/peers", response_model=PeerOut, status_code=201, tags=["admin"], responses=problems(409, 422, 503)
)
def add_peer(
    body: PeerIn, exchange: ExchangeService = Depends(get_exchange), admin: Principal = Depends(require_scope("admin"))
) -> dict[str, Any]:
    peer = exchange.peers.add(
        body.name, keyid=body.keyid, key_pem=body.key_pem, routes=body.routes, base_url=body.base_url, actor=admin.actor
    )
    return _out(peer)


@router.patch("/v1/admin/peers/{name}", response_model=PeerOut, tags=["admin"], responses=problems(404, 409, 422, 503))
def update_peer(
    name: str,
    body: PeerPatch,
    exchange: ExchangeService = Depends(get_exchange),
    admin: Principal = Depends(require_scope("admin")),
) -> dict[str, Any]:
    clear = "base_url" in body.model_fields_set and body.base_url is None
    peer = exchange.peers.update(
        name,
        keyid=body.keyid,
        key_pem=body.key_pem,
        routes=body.routes,
        base_url=body.base_url,
        clear_base_url=clear,
        overlap_seconds=body.overlap_seconds,
        end_overlap=body.end_overlap,
        actor=admin.actor,
    )
    return _out(peer)


@router.delete("/v1/admin/peers/{name}", response_model=PeerOut, tags=["admin"], responses=problems(404, 503))
def remove_peer(
    name: str, exchange: ExchangeService = Depends(get_exchange), admin: Principal = Depends(require_scope("admin"))
) -> dict[str, Any]:
    return _out(exchange.peers.remove(name, actor=admin.actor))
