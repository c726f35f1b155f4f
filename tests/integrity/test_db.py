"""Storage: the engine factory's durability settings and migrations on both back ends."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect

from integrity.db import is_sqlite, make_engine
from integrity.errors import SetupError
from integrity.migrate import pending, upgrade


def test_sqlite_engine_uses_wal_full_sync_foreign_keys_and_busy_timeout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()


def test_unknown_database_scheme_is_refused_naming_the_accepted_forms() -> None:
    with pytest.raises(SetupError, match=r"unsupported database URL scheme 'mysql'.*sqlite:///.*postgresql"):
        make_engine("mysql://root@localhost/test")


def test_sqlite_engine_creates_no_folder_until_it_connects(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path}/var/data/x.db")
    try:
        assert not (tmp_path / "var").exists()
        with engine.connect():
            pass
        assert (tmp_path / "var" / "data" / "x.db").is_file()
    finally:
        engine.dispose()


def test_migrations_are_applied_and_current(engine: Engine) -> None:
    assert pending(engine) == set()
    assert upgrade(engine) == []
    assert "api_clients" in inspect(engine).get_table_names()


def test_backend_under_test_is_named(engine: Engine, db_url: str) -> None:
    # Makes CI output show both back ends ran: ids are [sqlite] and [postgresql].
    assert is_sqlite(engine) == db_url.startswith("sqlite")
