"""Schema migrations (Alembic). Each domain package owns an Alembic branch labelled with its
name (``auth``, ``audit``, ``signing``, ``integrity``), so the packages evolve their tables
independently; ``upgrade`` applies every branch to its head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def pending(engine: Engine) -> set[str]:
    """Heads not yet applied to the database (empty when the schema is current)."""
    heads = set(ScriptDirectory.from_config(_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return heads - current


def upgrade(engine: Engine) -> list[str]:
    """Apply all pending migrations; returns the heads that were applied (empty if none)."""
    todo = pending(engine)
    if not todo:
        return []
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
    return sorted(todo)
