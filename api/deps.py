"""FastAPI dependencies: the application state and the caller's identity and scopes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.rate_limit import CLASS_OF_SCOPE, require_address_budget, source_address, spend, spend_address
from auth import InvalidApiKey, MissingScope, SessionInvalid
from auth.apikeys import KEY_PREFIX
from integrity.app_state import AppState
from integrity.metrics import API_KEY_EVENTS
from integrity.rate_limits import Caller, CallerKind

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

    @property
    def rate_caller(self) -> Caller:
        """Whose budget the principal's requests spend: the client's, or the person's."""
        if self.kind == "client":
            return Caller(CallerKind.CLIENT, self.id)
        return Caller(CallerKind.USER, self.name)


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
    only a key not seen lately (or a session) costs a database read in a worker thread. Refused
    credentials spend the sender's address budget (api/rate_limit.py), and once it is spent
    they are not even looked up."""
    try:
        return await _authenticated(request)
    except InvalidApiKey:
        await spend_address(request)
        raise


async def _authenticated(request: Request) -> Principal:
    state: AppState = request.app.state.bhxh
    token = _bearer(request)
    if token.startswith(KEY_PREFIX + "_"):
        client = state.clients.cached(token)
        if client is None:
            await require_address_budget(request)
            # The address bounds how many refusals from one sender are logged one by one.
            source = source_address(request)
            client = await run_in_threadpool(state.clients.authenticate, token, source=source)
        return Principal("client", client.client_id, client.name, client.scopes)
    # A full session only: MFA tokens and enrolment-only sessions resolve to None here.
    await require_address_budget(request)
    user = await run_in_threadpool(state.accounts.authenticate_session, token)
    if user is not None:
        return Principal("user", user.id, user.name, user.scopes)
    API_KEY_EVENTS.labels("refused").inc()
    raise InvalidApiKey("unknown bearer token")


class RequireScope:
    """A dependency that lets the call through only for a caller holding ``scope``.

    A callable object rather than a closure: the scope it enforces stays readable, and the
    OpenAPI description (api/openapi.py) takes each operation's security requirement from it,
    so the published scope is the enforced one. It calls ``get_principal`` itself rather than
    through ``Depends``: FastAPI resolves every dependency node per request, and on the busiest
    routes that bookkeeping costs more than the check (bench/bench_signing.py)."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        # Every scope has its route class (KeyError at import for one that has none).
        self.route_class = CLASS_OF_SCOPE[scope]

    async def __call__(self, request: Request) -> Principal:
        principal = await get_principal(request)
        if self.scope not in principal.scopes:
            raise MissingScope(self.scope)
        # Before the route: a refused call costs nothing and writes nothing. After the scope: a
        # call the caller may not make spends nothing of a budget it does not have.
        await spend(request, self.route_class, principal.rate_caller)
        return principal


def require_scope(scope: str) -> RequireScope:
    return RequireScope(scope)


async def session_token(request: Request) -> str:
    """A person's bearer session token (checked by the use case, not here): the dependency of
    the routes acting on the caller's own account. ``async``: it only parses a header."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != BEARER or not credentials.strip():
        raise SessionInvalid("missing bearer session token")
    return credentials.strip()
