from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from auth import sessions as store
from auth import users as user_store
from auth.sessions import SessionPolicy
from auth.tables import sessions

NOW = datetime(2025, 11, 23, 8, 0, 0, tzinfo=UTC)
POLICY = SessionPolicy(idle_seconds=1800, absolute_seconds=8 * 3600)


def _user(engine: Engine) -> str:
    with engine.begin() as conn:
        return user_store.create(conn, "alice", "officer", "x", mfa_required=False, now=NOW).user_id


@pytest.mark.parametrize("kwargs", [{"idle_seconds": 3601}, {"absolute_seconds": 12 * 3600 + 1}, {"idle_seconds": 0}])
def test_limits_above_the_ceiling_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SessionPolicy(**kwargs)


def test_token_has_256_random_bits_and_only_its_hash_is_stored(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        issued = store.create(conn, uid, store.FULL, NOW, POLICY)
    assert issued.token.startswith("ses_") and len(issued.token) >= 4 + 43
    with engine.connect() as conn:
        stored = conn.execute(select(sessions.c.token_hash)).scalar_one()
    assert bytes(stored) == store.token_hash(issued.token) and issued.token.encode() not in bytes(stored)


def test_idle_timeout_ends_a_session_and_use_restarts_it(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        token = store.create(conn, uid, store.FULL, NOW, POLICY).token
    halfway = NOW + timedelta(seconds=1700)
    with engine.begin() as conn:
        live = store.resolve(conn, token, halfway, POLICY)
        assert live is not None and store.needs_touch(live, halfway)
        store.touch(conn, live, halfway)
        assert store.resolve(conn, token, halfway + timedelta(seconds=1799), POLICY) is not None
        assert store.resolve(conn, token, halfway + timedelta(seconds=1800), POLICY) is None


def test_absolute_lifetime_ends_a_busy_session(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        token = store.create(conn, uid, store.FULL, NOW, POLICY).token
        when = NOW
        while when < NOW + timedelta(hours=8) - timedelta(minutes=20):
            when += timedelta(minutes=20)
            live = store.resolve(conn, token, when, POLICY)
            assert live is not None
            store.touch(conn, live, when)
        assert store.resolve(conn, token, NOW + timedelta(hours=8), POLICY) is None


def test_rotation_kills_the_old_token_and_keeps_the_absolute_deadline(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        first = store.create(conn, uid, store.FULL, NOW, POLICY)
        later = NOW + timedelta(minutes=10)
        second = store.rotate(conn, first.session, later, POLICY, mfa_at=later)
        assert second.token != first.token
        assert store.resolve(conn, first.token, later, POLICY) is None
        again = store.resolve(conn, second.token, later, POLICY)
        assert again is not None and again.expires_at == first.session.expires_at and again.mfa_at == later


def test_revoke_all_spares_only_the_kept_session(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        tokens = [store.create(conn, uid, store.FULL, NOW, POLICY) for _ in range(3)]
        assert store.revoke_all(conn, uid, NOW, keep=tokens[0].session.token_hash) == 2
        assert [store.resolve(conn, t.token, NOW, POLICY) is not None for t in tokens] == [True, False, False]


def test_recent_mfa_window(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        session = store.create(conn, uid, store.FULL, NOW, POLICY, mfa_at=NOW).session
    assert session.has_recent_mfa(NOW + timedelta(seconds=300))
    assert not session.has_recent_mfa(NOW + timedelta(seconds=301))
    assert not store.Session(b"", uid, store.FULL, NOW, NOW, NOW, None).has_recent_mfa(NOW)


def test_mfa_token_is_never_a_session_and_is_single_use(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        token = store.create_challenge(conn, uid, NOW)
        assert token.startswith("mfa_")
        assert store.resolve(conn, token, NOW, POLICY) is None
        challenge = store.find_challenge(conn, token, NOW)
        assert challenge is not None and store.consume_challenge(conn, challenge, NOW)
        assert not store.consume_challenge(conn, challenge, NOW)
        assert store.find_challenge(conn, token, NOW) is None


def test_mfa_token_expires_and_dies_after_three_failures(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        expiring = store.create_challenge(conn, uid, NOW)
        assert store.find_challenge(conn, expiring, NOW + timedelta(seconds=300)) is None
        token = store.create_challenge(conn, uid, NOW)
        for _ in range(3):
            challenge = store.find_challenge(conn, token, NOW)
            assert challenge is not None
            store.fail_challenge(conn, challenge)
        assert store.find_challenge(conn, token, NOW) is None


def test_session_token_is_not_an_mfa_token(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        token = store.create(conn, uid, store.FULL, NOW, POLICY).token
        assert store.find_challenge(conn, token, NOW) is None
