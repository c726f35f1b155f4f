"""``bhxh-integrity init``: migrate, create the log, load keys. Idempotent: a second run
changes nothing and says so."""

from __future__ import annotations

from dataclasses import dataclass

from audit.erasure import SERVICE_ACTOR
from integrity.app_state import build_state
from integrity.clock import Clock, system_clock
from integrity.db import make_engine
from integrity.migrate import upgrade
from integrity.settings import Settings


@dataclass(frozen=True)
class InitReport:
    changes: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def initialise(settings: Settings, *, actor: str = SERVICE_ACTOR, clock: Clock = system_clock) -> InitReport:
    """``actor`` writes every entry of the set-up: ``operator:<OS login>`` from the command
    line (docs/operations.md, Operators)."""
    changes: list[str] = []
    engine = make_engine(settings.database_url)
    try:
        applied = upgrade(engine)
        if applied:
            changes.append(f"applied migrations: {', '.join(applied)}")
        state = build_state(settings, clock=clock, engine=engine, actor=actor)
        try:
            for step in state.init_steps(actor):
                done = step()
                if done:
                    changes.append(done)
        finally:
            state.audit.close()
    finally:
        engine.dispose()
    return InitReport(tuple(changes))
