from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from auth import lockout
from auth.lockout import Block, Outcome, Reservation, ThrottlePolicy

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


def _at(seconds: int) -> datetime:
    return NOW + timedelta(seconds=seconds)


def _reserved(got: Reservation | Block) -> Reservation:
    assert isinstance(got, Reservation), got
    return got


def test_fifth_reservation_locks_for_thirty_seconds(engine: Engine) -> None:
    with engine.begin() as conn:
        for _ in range(4):
            assert not _reserved(lockout.reserve(conn, KEY, NOW, POLICY)).failure.newly_locked
        assert lockout.check(conn, KEY, NOW, POLICY) is None
        fifth = _reserved(lockout.reserve(conn, KEY, NOW, POLICY)).failure
        assert fifth.newly_locked and fifth.locked_until == _at(30) and fifth.failures == 5
        # The delay holds from the reservation on, before anyone knows whether it failed.
        assert lockout.reserve(conn, KEY, _at(29), POLICY) == lockout.Block(KEY, 1, False)
        assert lockout.failures(conn, KEY) == 5  # a refused attempt is not counted
        assert lockout.check(conn, KEY, _at(30), POLICY) is None
        assert _reserved(lockout.reserve(conn, KEY, _at(30), POLICY)).failure.locked_until == _at(90)


def test_hundredth_reservation_disables_until_reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for i in range(99):
            _reserved(lockout.reserve(conn, KEY, _at(i * 3600), POLICY))
        last = _reserved(lockout.reserve(conn, KEY, _at(99 * 3600), POLICY)).failure
        assert last.disabled and last.newly_locked and last.failures == 100
        far = _at(200 * 86400)
        assert lockout.reserve(conn, KEY, far, POLICY) == lockout.Block(KEY, 3600, True)
        assert lockout.failures(conn, KEY) == 100
        assert lockout.reset(conn, KEY)
        assert lockout.check(conn, KEY, far, POLICY) is None and lockout.failures(conn, KEY) == 0


def test_fifty_concurrent_reservations_below_the_delay_count_fifty(engine: Engine) -> None:
    policy = ThrottlePolicy(free_failures=60)

    def reserve(_: int) -> None:
        with engine.begin() as conn:
            _reserved(lockout.reserve(conn, KEY, NOW, policy))

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(reserve, range(50)))
    with engine.connect() as conn:
        assert lockout.failures(conn, KEY) == 50


def _burst(engine: Engine, key: str, now: datetime, policy: ThrottlePolicy, n: int = 50) -> list[Reservation | Block]:
    """``n`` threads reserving on ``key`` at the same instant (released by a barrier)."""
    barrier = threading.Barrier(n)

    def reserve(_: int) -> Reservation | Block:
        barrier.wait(10)
        with engine.begin() as conn:
            return lockout.reserve(conn, key, now, policy)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(reserve, range(n)))


def test_burst_at_the_end_of_a_delay_gets_one_reservation(engine: Engine) -> None:
    with engine.begin() as conn:
        for _ in range(5):
            _reserved(lockout.reserve(conn, KEY, NOW, POLICY))
    results = _burst(engine, KEY, _at(30), POLICY)
    granted = [r for r in results if isinstance(r, Reservation)]
    assert len(granted) == 1 and granted[0].failure.failures == 6
    assert all(r == lockout.Block(KEY, 60, False) for r in results if isinstance(r, Block))
    with engine.connect() as conn:
        assert lockout.failures(conn, KEY) == 6


def test_burst_at_the_cap_stops_exactly_at_the_cap(engine: Engine) -> None:
    with engine.begin() as conn:
        for i in range(99):
            _reserved(lockout.reserve(conn, KEY, _at(i * 3600), POLICY))
    results = _burst(engine, KEY, _at(99 * 3600), POLICY)
    granted = [r for r in results if isinstance(r, Reservation)]
    assert len(granted) == 1 and granted[0].failure.disabled and granted[0].failure.failures == 100
    with engine.connect() as conn:
        assert lockout.failures(conn, KEY) == 100
        assert lockout.check(conn, KEY, _at(400 * 86400), POLICY) == lockout.Block(KEY, 3600, True)


def test_a_right_secret_gives_its_attempt_back_and_lifts_the_delay_it_set(engine: Engine) -> None:
    with engine.begin() as conn:
        for _ in range(4):
            _reserved(lockout.reserve(conn, KEY, NOW, POLICY))
        fifth = _reserved(lockout.reserve(conn, KEY, NOW, POLICY))
        lockout.settle(conn, [fifth], Outcome.PASSED)
        assert lockout.failures(conn, KEY) == 4 and lockout.check(conn, KEY, NOW, POLICY) is None
        lockout.settle(conn, [_reserved(lockout.reserve(conn, KEY, NOW, POLICY))], Outcome.AUTHENTICATED)
        assert lockout.failures(conn, KEY) == 0


def test_giving_back_keeps_the_delay_of_a_later_attempt(engine: Engine) -> None:
    with engine.begin() as conn:
        for _ in range(2):
            _reserved(lockout.reserve(conn, KEY, NOW, POLICY))
        mine = _reserved(lockout.reserve(conn, KEY, NOW, POLICY))  # the 3rd, still being checked
        _reserved(lockout.reserve(conn, KEY, NOW, POLICY))
        fifth = _reserved(lockout.reserve(conn, KEY, NOW, POLICY))  # starts the delay
        assert fifth.failure.locked_until == _at(30)
        lockout.settle(conn, [mine], Outcome.PASSED)
        assert lockout.failures(conn, KEY) == 4
        assert lockout.check(conn, KEY, NOW, POLICY) == lockout.Block(KEY, 30, False)


def test_a_failed_attempt_stays_counted(engine: Engine) -> None:
    with engine.begin() as conn:
        lockout.settle(conn, [_reserved(lockout.reserve(conn, KEY, NOW, POLICY))], Outcome.FAILED)
        assert lockout.failures(conn, KEY) == 1


def test_reserve_all_takes_every_counter_or_none(engine: Engine) -> None:
    policy = ThrottlePolicy(address_limit=2)
    addr = lockout.address_key("198.51.100.9")
    with engine.begin() as conn:
        for name in ("a", "b"):
            held = lockout.reserve_all(conn, [lockout.account_key(name), addr], NOW, policy)
            assert isinstance(held, tuple) and len(held) == 2
        refused = lockout.reserve_all(conn, [lockout.account_key("c"), addr], NOW, policy)
        assert refused == lockout.Block(addr, 900, False)
        # The account reservation made before the address refused was undone with it.
        assert lockout.failures(conn, lockout.account_key("c")) == 0 and lockout.failures(conn, addr) == 2


def test_counter_survives_a_restart(db_url: str) -> None:
    from integrity.db import make_engine

    first = make_engine(db_url)
    with first.begin() as conn:
        for _ in range(6):
            _reserved(lockout.reserve(conn, KEY, _at(_ * 40), POLICY))
    first.dispose()
    second = make_engine(db_url)
    try:
        with second.connect() as conn:
            assert lockout.failures(conn, KEY) == 6
            assert lockout.check(conn, KEY, _at(5 * 40 + 59), POLICY) is not None
    finally:
        second.dispose()


def test_address_limit_holds_for_its_window_then_resets(engine: Engine) -> None:
    policy = ThrottlePolicy(address_limit=3, address_window=600)
    key = lockout.address_key("198.51.100.9")
    with engine.begin() as conn:
        _reserved(lockout.reserve(conn, key, NOW, policy))
        _reserved(lockout.reserve(conn, key, _at(10), policy))
        third = _reserved(lockout.reserve(conn, key, _at(20), policy)).failure
        assert third.newly_locked and third.locked_until == _at(600)
        assert lockout.reserve(conn, key, _at(599), policy) == lockout.Block(key, 1, False)
        assert lockout.check(conn, key, _at(600), policy) is None
        fresh = _reserved(lockout.reserve(conn, key, _at(700), policy)).failure
        assert fresh.failures == 1 and not fresh.newly_locked


def test_address_gets_its_attempt_back_after_a_success(engine: Engine) -> None:
    policy = ThrottlePolicy(address_limit=3, address_window=600)
    key = lockout.address_key("198.51.100.9")
    with engine.begin() as conn:
        for _ in range(2):
            _reserved(lockout.reserve(conn, key, NOW, policy))
        last = _reserved(lockout.reserve(conn, key, NOW, policy))
        assert lockout.check(conn, key, NOW, policy) is not None
        lockout.settle(conn, [last], Outcome.AUTHENTICATED)  # addresses count failures only
        assert lockout.failures(conn, key) == 2 and lockout.check(conn, key, NOW, policy) is None
