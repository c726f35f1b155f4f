from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from auth import lockout
from auth.lockout import ThrottlePolicy

NOW = datetime(2025, 11, 23, 8, 0, 0, tzinfo=UTC)
POLICY = ThrottlePolicy()
KEY = lockout.account_key("alice")


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 0), (4, 0), (5, 30), (6, 60), (7, 120), (11, 1920), (12, 3600), (99, 3600)],
)
def test_delay_starts_after_five_failures_and_doubles_to_one_hour(failures: int, delay: int) -> None:
    assert POLICY.account_delay(failures) == delay


@pytest.mark.parametrize(
    "kwargs",
    [{"free_failures": 0}, {"free_failures": 100}, {"base_delay": 0}, {"base_delay": 7200}, {"address_limit": 0}],
)
def test_nonsense_policy_is_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ThrottlePolicy(**kwargs)


def test_fifth_failure_locks_for_thirty_seconds(engine: Engine) -> None:
    with engine.begin() as conn:
        for _ in range(4):
            assert not lockout.record_account_failure(conn, KEY, NOW, POLICY).newly_locked
        assert lockout.check(conn, KEY, NOW, POLICY) is None
        fifth = lockout.record_account_failure(conn, KEY, NOW, POLICY)
        assert fifth.newly_locked and fifth.locked_until == NOW + timedelta(seconds=30)
        assert lockout.check(conn, KEY, NOW, POLICY) == lockout.Block(KEY, 30, False)
        assert lockout.check(conn, KEY, NOW + timedelta(seconds=30), POLICY) is None


def test_hundredth_failure_disables_until_reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for _ in range(99):
            lockout.record_account_failure(conn, KEY, NOW, POLICY)
        last = lockout.record_account_failure(conn, KEY, NOW, POLICY)
        assert last.disabled and last.newly_locked and last.failures == 100
        far = NOW + timedelta(days=30)
        assert lockout.check(conn, KEY, far, POLICY) == lockout.Block(KEY, 3600, True)
        assert lockout.reset(conn, KEY)
        assert lockout.check(conn, KEY, far, POLICY) is None and lockout.failures(conn, KEY) == 0


def test_fifty_concurrent_failures_count_fifty(engine: Engine) -> None:
    def fail(_: int) -> None:
        with engine.begin() as conn:
            lockout.record_account_failure(conn, KEY, NOW, POLICY)

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(fail, range(50)))
    with engine.connect() as conn:
        assert lockout.failures(conn, KEY) == 50


def test_counter_survives_a_restart(db_url: str) -> None:
    from integrity.db import make_engine

    first = make_engine(db_url)
    with first.begin() as conn:
        for _ in range(6):
            lockout.record_account_failure(conn, KEY, NOW, POLICY)
    first.dispose()
    second = make_engine(db_url)
    try:
        with second.connect() as conn:
            assert lockout.failures(conn, KEY) == 6
            assert lockout.check(conn, KEY, NOW + timedelta(seconds=59), POLICY) is not None
    finally:
        second.dispose()


def test_address_limit_holds_for_its_window_then_resets(engine: Engine) -> None:
    policy = ThrottlePolicy(address_limit=3, address_window=600)
    key = lockout.address_key("198.51.100.9")
    with engine.begin() as conn:
        lockout.record_address_failure(conn, key, NOW, policy)
        lockout.record_address_failure(conn, key, NOW + timedelta(seconds=10), policy)
        third = lockout.record_address_failure(conn, key, NOW + timedelta(seconds=20), policy)
        assert third.newly_locked and third.locked_until == NOW + timedelta(seconds=600)
        assert lockout.check(conn, key, NOW + timedelta(seconds=599), policy) is not None
        assert lockout.check(conn, key, NOW + timedelta(seconds=600), policy) is None
        fresh = lockout.record_address_failure(conn, key, NOW + timedelta(seconds=700), policy)
        assert fresh.failures == 1 and not fresh.newly_locked
