"""Request rate limits at the HTTP edge: who the caller is, which budget a route spends, and the
429 (integrity/rate_limits.py counts; this module only asks and refuses).

A refused request is refused before its route does any work, so nothing is signed, logged or
stored for it. Authenticated routes spend the caller's budget of their class (``RequireScope``,
api/deps.py); routes without a scope spend the sender's address budget (``limit_public``); the
gateway spends the budget of the peer whose signature verified (api/gateway.py).
"""

from __future__ import annotations

from fastapi import Request

from api.origin import external_origin
from integrity.app_state import AppState
from integrity.errors import RateLimited, RateLimiterUnavailable
from integrity.rate_limits import Caller, CallerKind, Decision, RouteClass

# The route class of each scope: the routes needing a scope have the cost profile of its class.
CLASS_OF_SCOPE: dict[str, RouteClass] = {
    "sign": RouteClass.SIGN,
    "verify": RouteClass.VERIFY,
    "receipts:issue": RouteClass.RECEIPTS,
    "receipts:read": RouteClass.RECEIPTS,
    "audit:read": RouteClass.AUDIT_READ,
    "audit:append": RouteClass.AUDIT_APPEND,
    "admin": RouteClass.ADMIN,
}


def source_address(request: Request) -> str:
    """The sender's address, as the address budget, the login throttle and the count of
    anonymous refusals key it: the TCP peer, or, when that peer is a trusted reverse proxy
    (BHXH_TRUSTED_PROXIES), the address the proxy states (``Forwarded: for=`` or
    ``X-Forwarded-For``; api/origin.py). From any other peer those fields change nothing."""
    return external_origin(_state(request)).client_address(request.scope)


def address_caller(request: Request) -> Caller:
    return Caller(CallerKind.ADDRESS, source_address(request))


def enforce(decision: Decision, route_class: RouteClass) -> None:
    """Raise the refusal a decision stands for (429, or 503 when the storage is down for an
    anonymous caller); return when it admits the request."""
    if decision.allowed:
        return
    if decision.unavailable:
        raise RateLimiterUnavailable(decision.retry_after)
    raise RateLimited(route_class.value, decision.retry_after)


def _state(request: Request) -> AppState:
    return request.app.state.bhxh  # type: ignore[no-any-return]


async def spend(request: Request, route_class: RouteClass, caller: Caller) -> None:
    """Count one request of ``caller`` in ``route_class``; raise when its budget is spent."""
    enforce(await _state(request).rate_limiter.hit(route_class, caller), route_class)


async def spend_address(request: Request) -> None:
    """Count one anonymous request (or refused credentials) against the sender's address."""
    await spend(request, RouteClass.PUBLIC, address_caller(request))


async def require_address_budget(request: Request) -> None:
    """Refuse at once, counting nothing, when the sender's address has spent its anonymous
    budget: credentials not seen lately are then not even looked up (a flood of made-up keys
    costs no database read and writes nothing). A key that authenticated lately is answered
    from the cache before this check, so a client sharing an address with such a flood keeps
    being served. A storage that does not answer refuses nothing here: the credentials decide."""
    decision = await _state(request).rate_limiter.test(RouteClass.PUBLIC, address_caller(request))
    if not decision.unavailable:
        enforce(decision, RouteClass.PUBLIC)


async def limit_public(request: Request) -> None:
    """The dependency of every route without a scope (login, the caller's own account, public
    keys): each call spends the sender's address budget. ``async``: no thread hop."""
    await spend_address(request)


async def gateway_budget_left(request: Request, claimed_keyid: str | None) -> None:
    """Refuse a gateway message, counting nothing, when the sender's address has spent its
    anonymous budget or the peer it claims to come from has spent its budget."""
    limiter = _state(request).rate_limiter
    enforce(await limiter.test(RouteClass.PUBLIC, address_caller(request)), RouteClass.PUBLIC)
    if claimed_keyid:
        peer = Caller(CallerKind.PEER, claimed_keyid)
        enforce(await limiter.test(RouteClass.GATEWAY, peer), RouteClass.GATEWAY)


async def spend_peer(request: Request, keyid: str) -> None:
    """Count one verified gateway message of the peer holding ``keyid``."""
    await spend(request, RouteClass.GATEWAY, Caller(CallerKind.PEER, keyid))
