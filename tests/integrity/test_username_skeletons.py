"""Accounts made before usernames had skeletons (auth_0004): the migration gives each its TR39
skeleton, keeps a look-alike pair working, and from then on no new look-alike joins them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, insert, inspect, select

from auth.errors import UsernameConfusable
from auth.tables import users
from integrity.migrate import _config, upgrade
from tests.auth.support import ADDRESS, STRONG, make_accounts

CYRILLIC_ALICE = "\u0430lice"


def _old_account(engine: Engine, user_id: str, username: str, created_at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(users).values(
                user_id=user_id,
                username=username,
                role="citizen",
                password_hash=make_accounts(engine).hasher.hash(STRONG),
                mfa_required=False,
                created_at=created_at,
                password_changed_at=created_at,
                recovery_used_at=None,
            )
        )


def test_old_look_alikes_keep_working_and_no_new_one_is_made(engine: Engine) -> None:
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "auth_0003")
    assert "username_skeleton" not in {c["name"] for c in inspect(engine).get_columns("users")}
    earlier = datetime(2025, 1, 1, tzinfo=UTC)
    _old_account(engine, "a" * 32, "alice", earlier)
    _old_account(engine, "b" * 32, CYRILLIC_ALICE, earlier + timedelta(days=1))  # possible before auth_0004

    assert upgrade(engine) == ["auth_0004"]
    with engine.connect() as conn:
        marks = dict(conn.execute(select(users.c.username, users.c.username_skeleton)).all())
    assert marks["alice"] is not None and marks[CYRILLIC_ALICE] is None  # the older account keeps the name

    accounts = make_accounts(engine)
    for name in ("alice", CYRILLIC_ALICE):
        assert accounts.login(name, STRONG, address=ADDRESS).token
    with pytest.raises(UsernameConfusable, match="looks like the existing account 'alice'"):
        accounts.create_user("\u0251lice", STRONG, "citizen", actor="operator:ops", reason="new citizen")
    created = accounts.create_user("alicia", STRONG, "citizen", actor="operator:ops", reason="new citizen")
    assert created.username == "alicia"
