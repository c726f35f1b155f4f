"""Anonymous refusals in the audit log, bounded per source and minute.

A refusal that names no authenticated caller (a missing, wrong or revoked API key; a gateway
request whose signature did not verify; a login for no known account, or one refused by the
throttle) costs the sender nothing, yet each one would append a permanent, hash-chained entry.
So per source (the client address) and per minute, the first ``per_minute`` refusals are
logged one by one as before, and the rest are counted and logged as ONE summary entry per
source and minute (``*.summarised`` actions below) with their count and reasons. Nothing is
dropped: every refusal is either an entry of its own or counted in a summary.

A summary is written once its minute has closed: by the next refusal after that, by the
application's background flush (``run_flusher``), and at shutdown (``RefusalRecorder.
flush_all``, called by ``AppState.close``).

The counters live in this process's memory: with several instances (PostgreSQL) each one
counts and summarises its own refusals, so the bound is per instance — ``instances ×
sources × (per_minute + 1)`` entries a minute at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from integrity.audit_service import AuditService
from integrity.clock import Clock
from integrity.logs import get_logger

DEFAULT_PER_MINUTE = 20
# Distinct sources counted one by one in a minute; past this, further sources share one
# counter (``OTHER_SOURCES``), so memory and the number of summaries stay bounded under a
# flood from many addresses.
MAX_SOURCES = 10_000
OTHER_SOURCES = "other-sources"
# Distinct reasons kept per summary; the rest are counted under OTHER_REASONS.
MAX_REASONS = 32
OTHER_REASONS = "other"
MAX_REASON_CHARS = 64
# Summaries per append: record_many is all-or-none, so keep each batch modest.
WRITE_BATCH = 500
FLUSH_SECONDS = 5.0
SUBJECT = "address"


class RefusalKind(StrEnum):
    """The families of anonymous refusal; the value is the action of a one-by-one entry."""

    API_KEY = "auth.apikey.refused"
    LOGIN = "auth.login.failed"
    EXCHANGE = "exchange.rejected"

    @property
    def summary_action(self) -> str:
        return _SUMMARY_ACTIONS[self]


_SUMMARY_ACTIONS = {
    RefusalKind.API_KEY: "auth.apikey.refusals_summarised",
    RefusalKind.LOGIN: "auth.login.failures_summarised",
    RefusalKind.EXCHANGE: "exchange.rejections_summarised",
}


@dataclass(frozen=True)
class RefusalSummary:
    """The refusals of one kind from one source in one minute beyond the one-by-one limit."""

    kind: RefusalKind
    source: str
    minute: datetime  # the start of the minute, UTC
    count: int
    limit: int
    reasons: tuple[tuple[str, int], ...]

    def event(self) -> tuple[str, str, str, dict[str, Any], dict[str, Any] | None]:
        """``(actor, action, subject, data, pii)`` for ``AuditService.record_many``. The
        address is personal data: it goes to the erasable part of the entry."""
        data: dict[str, Any] = {
            "minute": self.minute.isoformat(),
            "count": self.count,
            "logged_one_by_one": self.limit,
            "reasons": dict(self.reasons),
        }
        if self.source == OTHER_SOURCES:
            data["source"] = OTHER_SOURCES
            return "system", self.kind.summary_action, SUBJECT, data, None
        return "system", self.kind.summary_action, SUBJECT, data, {"address": self.source}


@dataclass
class _Tally:
    seen: int = 0
    beyond: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


class RefusalLog:
    """Counts anonymous refusals per (kind, source) in the current minute of ``clock``.

    ``admit`` says whether a refusal is logged on its own; the others wait in a summary that
    ``take_due`` hands out once its minute has closed (``take_all`` also the open minute).
    Thread-safe: refusals arrive from the event loop and from worker threads."""

    def __init__(self, *, per_minute: int = DEFAULT_PER_MINUTE, clock: Clock, max_sources: int = MAX_SOURCES) -> None:
        if per_minute < 1 or max_sources < 1:
            raise ValueError("per_minute and max_sources must be at least 1")
        self.per_minute = per_minute
        self.max_sources = max_sources
        self.clock = clock
        self._lock = threading.Lock()
        self._minute = self._minute_now()
        self._tallies: dict[tuple[RefusalKind, str], _Tally] = {}
        self._closed: list[RefusalSummary] = []

    def _minute_now(self) -> int:
        return int(self.clock().timestamp()) // 60

    def _roll(self) -> None:
        """Close the counted minute if the clock has left it (lock held). A clock that steps
        back stays in the minute already open: counts are never re-opened."""
        minute = self._minute_now()
        if minute <= self._minute:
            return
        self._closed.extend(self._summaries())
        self._tallies.clear()
        self._minute = minute

    def _summaries(self) -> list[RefusalSummary]:
        start = datetime.fromtimestamp(self._minute * 60, UTC)
        return [
            RefusalSummary(kind, source, start, t.beyond, self.per_minute, tuple(sorted(t.reasons.items())))
            for (kind, source), t in self._tallies.items()
            if t.beyond
        ]

    def admit(self, kind: RefusalKind, source: str, reason: str) -> bool:
        """Count one refusal; True: log it on its own, False: it is counted in a summary."""
        with self._lock:
            self._roll()
            key = (kind, source)
            tally = self._tallies.get(key)
            if tally is None:
                if len(self._tallies) >= self.max_sources:
                    key = (kind, OTHER_SOURCES)
                    tally = self._tallies.get(key)
                if tally is None:
                    tally = self._tallies[key] = _Tally()
            tally.seen += 1
            if tally.seen <= self.per_minute:
                return True
            tally.beyond += 1
            reason = reason[:MAX_REASON_CHARS]
            if reason not in tally.reasons and len(tally.reasons) >= MAX_REASONS:
                reason = OTHER_REASONS
            tally.reasons[reason] += 1
            return False

    @property
    def due(self) -> bool:
        """Whether a closed minute holds summaries to write (cheap: no lock, a hint)."""
        return bool(self._closed) or self._minute_now() > self._minute

    def take_due(self) -> list[RefusalSummary]:
        """The summaries of the minutes that have closed, handed out once."""
        with self._lock:
            self._roll()
            taken, self._closed = self._closed, []
            return taken

    def take_all(self) -> list[RefusalSummary]:
        """Every pending summary, the open minute's too (at shutdown)."""
        with self._lock:
            self._roll()
            taken = self._closed + self._summaries()
            self._closed = []
            self._tallies.clear()
            return taken

    def put_back(self, summaries: Sequence[RefusalSummary]) -> None:
        """Summaries that could not be written: handed out again next time."""
        with self._lock:
            self._closed[:0] = summaries


class RefusalRecorder:
    """A ``RefusalLog`` bound to the audit log: what the use cases call."""

    def __init__(self, log: RefusalLog, audit: AuditService) -> None:
        self.log = log
        self.audit = audit

    def admit(self, kind: RefusalKind, source: str, reason: str) -> bool:
        return self.log.admit(kind, source, reason)

    def flush_due(self) -> int:
        """Write the summaries of closed minutes (blocking: a worker thread or the CLI).

        A failure to write is logged and the summaries wait for the next try: it must not
        change the answer to the refusal that happened to trigger the write."""
        if not self.log.due:
            return 0
        try:
            return self._write(self.log.take_due())
        except Exception as exc:
            _write_failed(exc)
            return 0

    async def flush_due_async(self) -> int:
        if not self.log.due:
            return 0
        try:
            return await self._write_async(self.log.take_due())
        except Exception as exc:
            _write_failed(exc)
            return 0

    def flush_all(self) -> int:
        """At shutdown: write every pending summary, the open minute's too."""
        try:
            return self._write(self.log.take_all())
        except Exception as exc:
            _write_failed(exc, lost=sum(s.count for s in self.log.take_all()))
            return 0

    def _write(self, summaries: list[RefusalSummary]) -> int:
        for start in range(0, len(summaries), WRITE_BATCH):
            batch = summaries[start : start + WRITE_BATCH]
            try:
                self.audit.record_many([s.event() for s in batch])
            except Exception:
                self.log.put_back(summaries[start:])
                raise
        return len(summaries)

    async def _write_async(self, summaries: list[RefusalSummary]) -> int:
        for start in range(0, len(summaries), WRITE_BATCH):
            batch = summaries[start : start + WRITE_BATCH]
            try:
                # Shielded: a batch handed to the writer is committed even if this task is
                # cancelled (shutdown), so only the batches after it go back.
                await asyncio.shield(self.audit.record_many_async([s.event() for s in batch]))
            except asyncio.CancelledError:
                self.log.put_back(summaries[start + WRITE_BATCH :])
                raise
            except Exception:
                self.log.put_back(summaries[start:])
                raise
        return len(summaries)


def _write_failed(exc: Exception, *, lost: int | None = None) -> None:
    # The operator's log says that the audit log could not take the summaries (and, at
    # shutdown, how many refusals they counted).
    get_logger().error("refusal_summary_failed", error_type=type(exc).__name__, refusals_not_logged=lost)


async def run_flusher(recorder: RefusalRecorder, interval: float = FLUSH_SECONDS) -> None:
    """Write closed minutes' summaries every ``interval`` seconds until cancelled, so a flood
    that stops is still summed up within a minute and a few seconds."""
    while True:
        await asyncio.sleep(interval)
        await recorder.flush_due_async()


@contextlib.asynccontextmanager
async def flushing(recorder: RefusalRecorder, interval: float = FLUSH_SECONDS) -> AsyncIterator[None]:
    """An application's lifespan: the background flush runs while the application serves.
    The open minute is written by ``AppState.close`` (``flush_all``) after it."""
    task = asyncio.create_task(run_flusher(recorder, interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
