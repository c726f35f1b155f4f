"""Request rate limits per caller and route class, shared by every instance (the ``limits`` library).

Who is counted: an API client (``client:<id>``), a person's session (``user:<name>``), a gateway
peer whose message verified (``peer:<keyid>``), and anonymous traffic by its source address
(``addr:<ip>``). Authenticated callers get one budget per route class (``BHXH_RATE_LIMITS``);
all anonymous traffic from one address shares one budget (``BHXH_RATE_LIMIT_PER_ADDRESS``).

Where the counts live: ``memory://`` keeps them in this process (one instance); ``redis://…``
keeps them in Redis, so every instance counting there enforces one limit together. The strategy
is the moving window: exact at window edges (a fixed window would admit twice the limit across
a boundary), at the cost of one list per key in the storage.

When the storage cannot answer (Redis down or slow), the check fails OPEN for authenticated
callers and CLOSED for anonymous ones. The other BHXH systems must keep being served while the
limiter is mended, and they are accountable (each has its own key and scopes); an anonymous
sender is not, so its traffic is refused (503) until the limiter answers again. Either way the
failure is counted (``bhxh_rate_limit_storage_errors_total``) and logged at error level.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.errors
import limits.strategies
from limits import RateLimitItem
from limits.storage import MemoryStorage

from integrity.logs import get_logger
from integrity.metrics import RATE_LIMIT_STORAGE_ERRORS, RATE_LIMITED

if TYPE_CHECKING:
    from integrity.settings import Settings

DEFAULT_KEY_PREFIX = "bhxh-integrity"
# A Redis that does not answer within this costs each request at most this long, and then the
# limiter is not asked again for ``STORAGE_PAUSE_SECONDS`` (the answer is the failure policy).
STORAGE_TIMEOUT_SECONDS = 0.25
STORAGE_PAUSE_SECONDS = 1.0
ERROR_LOG_SECONDS = 10.0
STORAGE_SCHEMES = ("memory://", "redis://", "rediss://", "redis+unix://")


class RouteClass(StrEnum):
    """The families of routes that share a budget; the value is the key in BHXH_RATE_LIMITS."""

    SIGN = "sign"  # POST /v1/signatures, /v1/signatures/batch
    VERIFY = "verify"  # signature, receipt and exchange-message verification
    RECEIPTS = "receipts"  # issuing and reading receipts
    AUDIT_READ = "audit-read"  # entries, proofs, exports, tiles, reports: the expensive reads
    AUDIT_APPEND = "audit-append"  # events of other systems
    ADMIN = "admin"  # clients, users, peers, erasure
    GATEWAY = "gateway"  # exchange gateway traffic, per verified peer keyid
    PUBLIC = "public"  # routes without a scope (login, the caller's own account, public keys): per address


# Per caller and class. Generous enough for the throughput the service is sized for (the
# gateway: 2,000 messages a second over all peers), tight enough that one runaway client
# cannot take the service from the others.
DEFAULT_LIMITS: dict[str, str] = {
    RouteClass.SIGN: "500/second",
    RouteClass.VERIFY: "2000/second",
    RouteClass.RECEIPTS: "100/second",
    RouteClass.AUDIT_READ: "100/second",
    RouteClass.AUDIT_APPEND: "500/second",
    RouteClass.ADMIN: "20/second",
    RouteClass.GATEWAY: "2000/second",
}
DEFAULT_PER_ADDRESS = "600/minute"


class CallerKind(StrEnum):
    CLIENT = "client"
    USER = "user"
    PEER = "peer"
    ADDRESS = "addr"


@dataclass(frozen=True)
class Caller:
    kind: CallerKind
    id: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def anonymous(self) -> bool:
        return self.kind is CallerKind.ADDRESS


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # seconds until the window admits the caller again (refusals only)
    unavailable: bool = False  # the storage did not answer; ``allowed`` is the failure policy


ALLOWED = Decision(True)


def parse_limit(text: str) -> tuple[RateLimitItem, ...]:
    """``"200/second"`` or several, ``"10/second; 300/minute"`` (the ``limits`` notation);
    ValueError naming the text otherwise."""
    try:
        items = tuple(limits.parse_many(text))
    except ValueError:
        items = ()
    if not items or any(item.amount < 1 for item in items):
        raise ValueError(f"{text[:64]!r} is not a rate limit such as '200/second' or '10/second; 300/minute'")
    return items


def check_storage_url(url: str) -> str:
    if not url.startswith(STORAGE_SCHEMES):
        raise ValueError(f"the rate-limit storage is memory:// or a redis:// URL, not {url.split(':', 1)[0]!r}")
    return url


class RateLimiter:
    """Counts requests per caller and route class in the configured storage (see the module)."""

    def __init__(
        self,
        limits_by_class: Mapping[RouteClass, tuple[RateLimitItem, ...]],
        per_address: tuple[RateLimitItem, ...],
        storage_url: str = "memory://",
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        self.limits = dict(limits_by_class)
        self.per_address = per_address
        self.storage_url = check_storage_url(storage_url)
        self.key_prefix = key_prefix
        self.shared = not storage_url.startswith("memory://")
        self._memory = None if self.shared else limits.strategies.MovingWindowRateLimiter(MemoryStorage())
        # redis.asyncio connections belong to the event loop that opened them: one client per loop.
        self._remote: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, limits.aio.strategies.MovingWindowRateLimiter
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._errors_unlogged = 0
        self._last_error_log = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        configured = {**DEFAULT_LIMITS, **settings.rate_limits}
        return cls(
            {RouteClass(name): parse_limit(text) for name, text in configured.items()},
            parse_limit(settings.rate_limit_per_address),
            settings.rate_limit_url,
            key_prefix=settings.rate_limit_key_prefix,
        )

    def items_for(self, route_class: RouteClass, caller: Caller) -> tuple[tuple[RateLimitItem, ...], tuple[str, ...]]:
        """The limits that apply and the storage key parts: one budget per address for anonymous
        traffic, one per class for everyone else."""
        if caller.anonymous or route_class is RouteClass.PUBLIC:
            return self.per_address, (self.key_prefix, caller.key)
        return self.limits.get(route_class, ()), (self.key_prefix, route_class.value, caller.key)

    async def hit(self, route_class: RouteClass, caller: Caller) -> Decision:
        """Count one request; refused when any limit of the caller's budget is spent."""
        return await self._check(route_class, caller, count=True)

    async def test(self, route_class: RouteClass, caller: Caller) -> Decision:
        """Whether one more request would be admitted, counting nothing."""
        return await self._check(route_class, caller, count=False)

    async def _check(self, route_class: RouteClass, caller: Caller, *, count: bool) -> Decision:
        items, ids = self.items_for(route_class, caller)
        if not items:
            return ALLOWED
        if self.shared and time.monotonic() < self._paused_until:
            return self._unavailable(caller)
        try:
            for item in items:
                admitted = await self._hit(item, ids) if count else await self._test(item, ids)
                if not admitted:
                    RATE_LIMITED.labels(route_class.value, caller.kind.value).inc()
                    return Decision(False, retry_after=await self._retry_after(item, ids))
        except (limits.errors.StorageError, OSError, TimeoutError) as exc:
            self._storage_failed(exc)
            return self._unavailable(caller)
        return ALLOWED

    async def _hit(self, item: RateLimitItem, ids: tuple[str, ...]) -> bool:
        if self._memory is not None:
            return self._memory.hit(item, *ids)
        return await self._remote_limiter().hit(item, *ids)

    async def _test(self, item: RateLimitItem, ids: tuple[str, ...]) -> bool:
        if self._memory is not None:
            return self._memory.test(item, *ids)
        return await self._remote_limiter().test(item, *ids)

    async def _retry_after(self, item: RateLimitItem, ids: tuple[str, ...]) -> int:
        if self._memory is not None:
            stats = self._memory.get_window_stats(item, *ids)
        else:
            stats = await self._remote_limiter().get_window_stats(item, *ids)
        # RFC 9110 §10.2.3: whole seconds; at least one, or a caller would retry at once.
        return max(1, math.ceil(stats.reset_time - time.time()))

    def _remote_limiter(self) -> limits.aio.strategies.MovingWindowRateLimiter:
        loop = asyncio.get_running_loop()
        limiter = self._remote.get(loop)
        if limiter is None:
            with self._lock:
                limiter = self._remote.get(loop)
                if limiter is None:
                    storage = limits.aio.storage.RedisStorage(
                        "async+" + self.storage_url,
                        wrap_exceptions=True,
                        implementation="redispy",
                        key_prefix="LIMITS",
                        socket_timeout=STORAGE_TIMEOUT_SECONDS,
                        socket_connect_timeout=STORAGE_TIMEOUT_SECONDS,
                    )
                    limiter = limits.aio.strategies.MovingWindowRateLimiter(storage)
                    self._remote[loop] = limiter
        return limiter

    def _unavailable(self, caller: Caller) -> Decision:
        allowed = not caller.anonymous
        RATE_LIMIT_STORAGE_ERRORS.labels("allowed" if allowed else "refused").inc()
        return Decision(allowed, retry_after=math.ceil(STORAGE_PAUSE_SECONDS), unavailable=True)

    def _storage_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._paused_until = now + STORAGE_PAUSE_SECONDS
        self._errors_unlogged += 1
        # Loud but bounded: one error line per interval, with how many failures it stands for.
        if now - self._last_error_log >= ERROR_LOG_SECONDS:
            get_logger().error(
                "rate_limit_storage_unavailable",
                error_type=type(exc).__name__,
                failures=self._errors_unlogged,
                policy="authenticated callers admitted, anonymous ones refused (503)",
            )
            self._last_error_log = now
            self._errors_unlogged = 0

    def close(self) -> None:
        """Forget the per-loop Redis clients; their connections close with their loops."""
        with self._lock:
            self._remote.clear()
