"""One injectable clock for the whole service.

Domain packages take a zero-argument callable returning an aware UTC datetime, so tests move
time instead of sleeping (the Fernet `encrypt_at_time` idea).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def stored_utc(value: datetime) -> datetime:
    """A time read back from the database, aware: SQLite returns naive datetimes even for
    ``DateTime(timezone=True)``, and every time this service stores is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass
class FrozenClock:
    """A clock for tests: stands still until moved."""

    # Starts at the real current second: certificates of the demo PKI are valid around now.
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now = self.now + timedelta(seconds=seconds)
