"""The bound on anonymous refusals in the audit log (integrity.refusal_log), on a moved clock."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from audit.errors import AuditUnavailable
from audit.tables import audit_entries
from integrity.clock import FrozenClock
from integrity.refusal_log import (
    OTHER_SOURCES,
    RefusalKind,
    RefusalLog,
    RefusalRecorder,
    RefusalSummary,
    flushing,
)
from integrity.settings import Settings
from tests.conftest import Service

LIMIT = 20
SOURCES = [f"203.0.113.{i}" for i in range(1, 8)]


def _minute_start(clock: FrozenClock) -> FrozenClock:
    clock.now = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    return clock


def test_a_flood_of_100000_refusals_is_bounded_and_every_one_is_counted() -> None:
    clock = _minute_start(FrozenClock())
    log = RefusalLog(per_minute=LIMIT, clock=clock)
    rng = random.Random(352)
    total = 100_000
    one_by_one: Counter[tuple[datetime, RefusalKind, str]] = Counter()
    summaries: list[RefusalSummary] = []
    sent: Counter[tuple[datetime, RefusalKind, str]] = Counter()
    for i in range(total):
        if i % 5_000 == 0 and i:
            clock.advance(17)  # ~ 6 minutes in all, with minutes that close mid-flood
            summaries += log.take_due()
        kind = rng.choice(list(RefusalKind))
        source = rng.choice(SOURCES)
        minute = clock.now.replace(second=0, microsecond=0)
        sent[minute, kind, source] += 1
        if log.admit(kind, source, rng.choice(["unknown API key", "revoked API key", "missing-signature"])):
            one_by_one[minute, kind, source] += 1
    summaries += log.take_all()

    entries: defaultdict[tuple[datetime, RefusalKind, str], int] = defaultdict(int)
    for key, n in one_by_one.items():
        entries[key] += n
    for s in summaries:
        entries[s.minute, s.kind, s.source] += 1
    written = sum(entries.values())
    assert all(n <= LIMIT + 1 for n in entries.values()), f"{written} entries for {total} refusals: {entries}"
    minutes = len({m for m, _, _ in sent})
    assert written <= minutes * len(RefusalKind) * len(SOURCES) * (LIMIT + 1), f"{written} entries for {total} refusals"
    beyond = total - sum(one_by_one.values())
    assert sum(s.count for s in summaries) == beyond, f"{written} entries; summaries count {beyond} refusals"
    for s in summaries:
        assert s.count == sent[s.minute, s.kind, s.source] - LIMIT
        assert sum(n for _, n in s.reasons) == s.count
    assert len(summaries) == len({(s.minute, s.kind, s.source) for s in summaries})  # one per minute and source
    print(f"{total} anonymous refusals -> {written} audit entries ({len(summaries)} summaries)")


def test_a_summary_waits_for_its_minute_to_close() -> None:
    clock = _minute_start(FrozenClock())
    log = RefusalLog(per_minute=2, clock=clock)
    assert [log.admit(RefusalKind.API_KEY, "198.51.100.1", "unknown API key") for _ in range(5)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    clock.advance(59)
    assert not log.due and log.take_due() == []
    clock.advance(1)
    assert log.due
    (summary,) = log.take_due()
    assert (summary.kind, summary.source, summary.count, summary.reasons) == (
        RefusalKind.API_KEY,
        "198.51.100.1",
        3,
        (("unknown API key", 3),),
    )
    assert summary.minute == datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    assert log.take_due() == []  # handed out once
    # The new minute starts with a fresh allowance.
    assert log.admit(RefusalKind.API_KEY, "198.51.100.1", "unknown API key") is True


def test_the_open_minute_is_taken_at_shutdown_and_a_minute_within_the_limit_has_no_summary() -> None:
    clock = _minute_start(FrozenClock())
    log = RefusalLog(per_minute=3, clock=clock)
    for _ in range(3):
        log.admit(RefusalKind.LOGIN, "198.51.100.2", "unknown_user")
    for _ in range(4):
        log.admit(RefusalKind.EXCHANGE, "198.51.100.3", "missing-signature")
    (summary,) = log.take_all()
    assert (summary.kind, summary.source, summary.count) == (RefusalKind.EXCHANGE, "198.51.100.3", 1)
    assert log.take_all() == []


def test_a_clock_stepping_back_never_reopens_a_closed_minute() -> None:
    clock = _minute_start(FrozenClock())
    log = RefusalLog(per_minute=1, clock=clock)
    log.admit(RefusalKind.API_KEY, "a", "r")
    clock.advance(61)
    log.admit(RefusalKind.API_KEY, "a", "r")
    clock.advance(-120)
    assert log.admit(RefusalKind.API_KEY, "a", "r") is False  # counted in the open minute
    (summary,) = log.take_all()
    assert summary.minute == datetime(2026, 5, 4, 9, 1, tzinfo=UTC) and summary.count == 1


def test_sources_past_the_cap_share_one_counter() -> None:
    clock = _minute_start(FrozenClock())
    log = RefusalLog(per_minute=1, clock=clock, max_sources=3)
    admitted = [log.admit(RefusalKind.API_KEY, f"10.0.0.{i}", "r") for i in range(10)]
    assert admitted == [True] * 4 + [False] * 6  # 3 sources, then the shared one
    summaries = log.take_all()
    assert [(s.source, s.count) for s in summaries] == [(OTHER_SOURCES, 6)]
    assert summaries[0].event()[4] is None  # no address to keep


def test_reasons_are_bounded_and_truncated() -> None:
    clock = _minute_start(FrozenClock())
    log = RefusalLog(per_minute=1, clock=clock)
    for i in range(100):
        log.admit(RefusalKind.EXCHANGE, "a", f"reason-{i}-" + "x" * 200)
    (summary,) = log.take_all()
    reasons = dict(summary.reasons)
    assert len(reasons) == 33 and reasons["other"] == 99 - 32
    assert all(len(r) <= 64 for r in reasons)
    assert sum(reasons.values()) == summary.count == 99


@pytest.mark.parametrize("per_minute", [0, -1])
def test_a_limit_below_one_is_refused(per_minute: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RefusalLog(per_minute=per_minute, clock=FrozenClock())


@pytest.mark.parametrize("value", ["0", "10001", "many"])
def test_the_setting_is_validated(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BHXH_REFUSAL_LOG_PER_MINUTE", value)
    with pytest.raises(ValidationError, match="refusal_log_per_minute"):
        Settings()


def test_the_setting_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().refusal_log_per_minute == 20
    monkeypatch.setenv("BHXH_REFUSAL_LOG_PER_MINUTE", "5")
    assert Settings().refusal_log_per_minute == 5


def _summaries(service: Service) -> list[dict[str, object]]:
    with service.state.engine.connect() as conn:
        rows = conn.execute(
            select(audit_entries.c.action, audit_entries.c.data).where(audit_entries.c.action.like("%summarised"))
        ).all()
    return [{"action": r.action, **json.loads(r.data)} for r in rows]


def test_the_background_flush_writes_a_closed_minute_without_another_refusal(db_url: str) -> None:
    service = Service(db_url, refusal_log_per_minute=1)
    try:
        recorder: RefusalRecorder = service.state.refusals
        for _ in range(3):
            recorder.admit(RefusalKind.API_KEY, "198.51.100.9", "unknown API key")

        async def serve_a_while() -> None:
            async with flushing(recorder, interval=0.01):
                await asyncio.sleep(0.1)
                assert _summaries(service) == []  # the minute is still open
                service.clock.advance(60)
                for _ in range(200):
                    await asyncio.sleep(0.01)
                    if _summaries(service):
                        break

        asyncio.run(serve_a_while())
        (summary,) = _summaries(service)
        assert summary["action"] == "auth.apikey.refusals_summarised" and summary["count"] == 2
    finally:
        service.close()


class _FlakyAudit:
    """An audit log that cannot take entries until ``up`` (the database away for a while)."""

    def __init__(self) -> None:
        self.up = False
        self.written: list[tuple[str, str, str, dict[str, object], dict[str, object] | None]] = []

    def record_many(self, events: list[tuple[str, str, str, dict[str, object], dict[str, object] | None]]) -> list[int]:
        if not self.up:
            raise AuditUnavailable("the audit log cannot take entries now")
        self.written += events
        return list(range(len(events)))


def test_summaries_that_cannot_be_written_wait_for_the_next_try() -> None:
    clock = _minute_start(FrozenClock())
    audit = _FlakyAudit()
    recorder = RefusalRecorder(RefusalLog(per_minute=1, clock=clock), audit)  # type: ignore[arg-type]
    for source in ("a", "b"):
        for _ in range(3):
            recorder.admit(RefusalKind.API_KEY, source, "unknown API key")
    clock.advance(60)
    assert recorder.flush_due() == 0 and audit.written == []  # refused answer unchanged, nothing lost
    audit.up = True
    assert recorder.flush_due() == 2
    assert sorted(((e[1], e[3]["count"], e[4]) for e in audit.written), key=repr) == [
        ("auth.apikey.refusals_summarised", 2, {"address": "a"}),
        ("auth.apikey.refusals_summarised", 2, {"address": "b"}),
    ]
    assert recorder.flush_due() == 0 and recorder.flush_all() == 0  # written once
