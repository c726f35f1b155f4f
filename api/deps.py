"""FastAPI dependencies: the application state and the caller's identity and scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from auth import InvalidApiKey, MissingScope
from auth.apikeys import KEY_PREFIX
from integrity.app_state import AppState
from integrity.metrics import API_KEY_EVENTS

BEARER = "bearer"


@dataclass(frozen=True)
class Principal:
    kind: Literal["client", "user"]
    id: str
    name: str
    scopes: frozenset[str]

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id if self.kind == 'client' else self.name}"


async def get_state(request: Request) -> AppState:
    # ``async`` because it only reads an attribute: a sync dependency costs a thread hop.
    return request.app.state.bhxh


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != BEARER or not credentials.strip():
        API_KEY_EVENTS.labels("refused").inc()
        raise InvalidApiKey("missing bearer credentials")
    return credentials.strip()


async def get_principal(request: Request) -> Principal:
    """The authenticated caller: an API client, or a fully logged-in user session.

    A system calling many times a second is answered from the client cache on the event loop;
    only a key not seen lately (or a session) costs a database read in a worker thread."""
    state: AppState = request.app.state.bhxh
    token = _bearer(request)
    if token.startswith(KEY_PREFIX + "_"):
        client = state.clients.cached(token) or await run_in_threadpool(state.clients.authenticate, token)
        return Principal("client", client.client_id, client.name, client.scopes)
    # A full session only: MFA tokens and enrolment-only sessions resolve to None here.
    user = await run_in_threadpool(state.accounts.authenticate_session, token)
    if user is not None:
        return Principal("user", user.id, user.name, user.scopes)
    API_KEY_EVENTS.labels("refused").inc()
    raise InvalidApiKey("unknown bearer token")


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets the call through only for a caller holding ``scope``.

    It calls ``get_principal`` itself rather than through ``Depends``: FastAPI resolves every
    dependency node per request, and on the busiest routes that bookkeeping costs more than
    the check (bench/bench_signing.py)."""

    async def _check(request: Request) -> Principal:
        principal = await get_principal(request)
        if scope not in principal.scopes:
            raise MissingScope(scope)
        return principal

    _check.__name__ = f"require_scope_{scope.replace(':', '_')}"
    return _check
