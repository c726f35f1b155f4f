"""Storage of signature activations (migration personal_signing_0001, both back ends): the table
comes and goes with its branch; an activation is spent once, even by concurrent claims, and
never after it expired."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError

from integrity.migrate import upgrade
from integrity.signature_activations import ActivationRecord, add, claim, find, new_id

MIGRATIONS = Path(__file__).resolve().parents[2] / "integrity" / "migrations"


def _record(now: datetime, **changes: object) -> ActivationRecord:
    values: dict[str, object] = {
        "id": new_id(),
        "username": "lan",
        "key_id": "kid-of-lan",
        "format": "cms",
        "sha256": "ab" * 32,
        "created_at": now,
        "expires_at": now + timedelta(minutes=5),
        "used_at": None,
    }
    values.update(changes)
    return ActivationRecord(**values)  # type: ignore[arg-type]


def test_the_migration_creates_and_drops_the_table(engine: Engine) -> None:
    assert "signature_activations" in inspect(engine).get_table_names()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "personal_signing@base")
    assert "signature_activations" not in inspect(engine).get_table_names()
    assert upgrade(engine) == ["personal_signing_0001"]
    columns = {c["name"] for c in inspect(engine).get_columns("signature_activations")}
    assert columns == {"id", "username", "key_id", "format", "sha256", "created_at", "expires_at", "used_at"}


def test_an_activation_is_claimed_once_even_concurrently(engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    record = _record(now)
    with engine.begin() as conn:
        add(conn, record)
    won: list[bool] = []
    barrier = threading.Barrier(4)

    def take() -> None:
        barrier.wait()
        with engine.begin() as conn:
            won.append(claim(conn, record.id, "lan", now + timedelta(seconds=1)))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(won) == [False, False, False, True]
    with engine.connect() as conn:
        stored = find(conn, record.id)
    assert stored is not None and stored.used_at == now + timedelta(seconds=1)


def test_an_expired_or_anothers_activation_is_never_claimed(engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    record = _record(now)
    with engine.begin() as conn:
        add(conn, record)
        assert not claim(conn, record.id, "minh", now)
        assert not claim(conn, record.id, "lan", record.expires_at)
        assert claim(conn, record.id, "lan", record.expires_at - timedelta(seconds=1))


def test_an_activation_must_expire_after_it_was_made(engine: Engine) -> None:
    now = datetime.now(UTC)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        add(conn, _record(now, expires_at=now))
