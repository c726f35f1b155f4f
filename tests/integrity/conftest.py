"""The account use cases as the integrity tests drive them: a movable clock and an
AccountService on the test database with a real audit log (tests/auth/support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from integrity.accounts import AccountService
from integrity.clock import FrozenClock
from tests.auth.support import make_accounts


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def accounts(engine: Engine, clock: FrozenClock) -> Iterator[AccountService]:
    svc = make_accounts(engine, clock)
    yield svc
    svc.audit.close()  # type: ignore[attr-defined]
