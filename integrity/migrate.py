"""Schema migrations (Alembic). Each domain package owns an Alembic branch labelled with its
name (``auth``, ``audit``, ``signing``, ``integrity``), so the packages evolve their tables
independently; ``upgrade`` applies every branch to its head."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from integrity.db import connection_failed, describe, probe_engine
from integrity.db_grants import SERVICE_ROLE_ENV, apply_service_grants, check_service_role
from integrity.errors import SetupError

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def code_revisions() -> tuple[set[str], set[str]]:
    """This version's heads, and every revision it knows (a database at an unknown one was
    migrated by a newer version)."""
    scripts = ScriptDirectory.from_config(_config())
    return set(scripts.get_heads()), {rev.revision for rev in scripts.walk_revisions()}


def pending(engine: Engine) -> set[str]:
    """Heads not yet applied to the database (empty when the schema is current)."""
    heads = set(ScriptDirectory.from_config(_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return heads - current


def require_current(url: str) -> None:
    """Refuse (SetupError) unless the database exists and every branch is at its head. Creates
    nothing: commands other than ``init`` and ``migrate`` call this before they open the store,
    so a mistyped path or an empty server never gets a half-made database."""
    engine = probe_engine(url)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except DBAPIError as exc:
        raise connection_failed(url, exc) from exc
    finally:
        engine.dispose()
    if not current:
        raise SetupError(f"database {describe(url)} is not initialised: run `bhxh-integrity init` (or `migrate`)")
    scripts = ScriptDirectory.from_config(_config())
    heads = set(scripts.get_heads())
    if current == heads:
        return
    unknown = current - {rev.revision for rev in scripts.walk_revisions()}
    if unknown:
        raise SetupError(
            f"database {describe(url)} is at revision(s) {', '.join(sorted(unknown))}, unknown to this version: "
            "it was migrated by a newer bhxh-integrity"
        )
    raise SetupError(
        f"database {describe(url)} is behind: expected revision(s) {', '.join(sorted(heads))}, "
        f"found {', '.join(sorted(current))}: run `bhxh-integrity migrate`"
    )


def upgrade(engine: Engine) -> list[str]:
    """Apply all pending migrations; returns the heads that were applied (empty if none).

    On PostgreSQL with BHXH_DB_SERVICE_ROLE set, the service role's rights on every table are
    then (re)applied in the same transaction (integrity.db_grants), also when nothing was
    pending: a refusal there leaves the database as it was."""
    try:
        todo = pending(engine)
    except DBAPIError as exc:
        raise connection_failed(engine.url, exc) from exc
    role = os.environ.get(SERVICE_ROLE_ENV) if engine.dialect.name == "postgresql" else None
    if not todo and not role:
        return []
    cfg = _config()
    with engine.begin() as conn:
        if role:
            check_service_role(conn, role)
        if todo:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")
        if role:
            apply_service_grants(conn, role)
    return sorted(todo)
