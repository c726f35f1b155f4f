from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from auth import recovery
from auth import users as user_store
from auth.tables import recovery_codes

NOW = datetime(2025, 11, 23, 8, 0, 0, tzinfo=UTC)


def _user(engine: Engine) -> str:
    with engine.begin() as conn:
        return user_store.create(conn, "alice", "officer", "x", mfa_required=True, now=NOW).user_id


def test_ten_distinct_codes_of_at_least_64_bits() -> None:
    codes = recovery.generate()
    assert len(codes) == 10 == len(set(codes))
    for code in codes:
        assert re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", code)  # 16 base32 chars = 80 bits


def test_codes_are_stored_as_salted_hashes_only(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        codes = recovery.replace_all(conn, uid, NOW)
    with engine.connect() as conn:
        rows = conn.execute(select(recovery_codes)).all()
    assert len(rows) == 10 and len({bytes(r.salt) for r in rows}) == 10
    blob = b"".join(bytes(r.salt) + bytes(r.digest) for r in rows)
    for code in codes:
        assert code.encode() not in blob and code.replace("-", "").upper().encode() not in blob


def test_a_code_works_once(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        codes = recovery.replace_all(conn, uid, NOW)
    with engine.begin() as conn:
        first = recovery.use(conn, uid, codes[3], NOW)
    assert first.ok and first.remaining == 9
    with engine.begin() as conn:
        assert recovery.use(conn, uid, codes[3], NOW).reason == "spent_recovery_code"


def test_code_typed_loosely_is_accepted(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        codes = recovery.replace_all(conn, uid, NOW)
        assert recovery.use(conn, uid, " " + codes[0].replace("-", " ").upper() + " ", NOW).ok


def test_unknown_code_is_refused(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        recovery.replace_all(conn, uid, NOW)
        assert recovery.use(conn, uid, "aaaa-bbbb-cccc-dddd", NOW).reason == "bad_recovery_code"
        assert recovery.remaining(conn, uid) == 10


def test_concurrent_reuse_of_one_code_gives_exactly_one_success(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        code = recovery.replace_all(conn, uid, NOW)[0]

    def attempt(_: int) -> bool:
        with engine.begin() as conn:
            return recovery.use(conn, uid, code, NOW).ok

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(attempt, range(8))).count(True) == 1


def test_regenerating_invalidates_old_codes(engine: Engine) -> None:
    uid = _user(engine)
    with engine.begin() as conn:
        old = recovery.replace_all(conn, uid, NOW)
        recovery.replace_all(conn, uid, NOW)
        assert not recovery.use(conn, uid, old[0], NOW).ok
