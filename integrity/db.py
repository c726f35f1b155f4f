"""Database engines for the embedded (SQLite) and scale-out (PostgreSQL) stores.

SQLite: WAL, synchronous=FULL (an acknowledged append survives kill -9 and power loss),
foreign keys on, a busy timeout, and BEGIN IMMEDIATE for every transaction that may write so
two writers never deadlock on a lock upgrade. A connection opened with the execution option
``bhxh_read_only=True`` begins a deferred (snapshot) transaction instead, so long reads such
as chain verification do not hold the write lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, NullPool, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from integrity.errors import SetupError

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = {"bhxh_read_only": True}
ACCEPTED_URLS = "sqlite:///path/to/file.db or postgresql+psycopg://user@host:port/dbname"
# A server that does not answer must not hang a command: libpq waits forever by default.
PROBE_CONNECT_TIMEOUT_S = 10


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def parse_url(url: str | URL) -> URL:
    """``url`` parsed and checked to be SQLite or PostgreSQL (psycopg 3); SetupError otherwise."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SetupError(f"BHXH_DATABASE_URL is not a database URL: use {ACCEPTED_URLS}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" or parsed.drivername == "postgresql+psycopg":
        return parsed
    raise SetupError(f"unsupported database URL scheme {parsed.drivername!r}: use {ACCEPTED_URLS}")


def describe(url: str | URL) -> str:
    """How messages name the database: the SQLite file, or the PostgreSQL database and server."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    where = f"{parsed.host}:{parsed.port or 5432}" if parsed.host else "the local socket"
    return f"{parsed.database or '(default)'} at {where}"


def connection_failed(url: str | URL, exc: DBAPIError) -> SetupError:
    """One line for a database that cannot be opened (refused, unknown host or database, bad
    password, not an SQLite file): the driver's first line without its prefixes, whose rest
    (hints, further attempts) spans lines."""
    detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    detail = " ".join(detail.rsplit("failed: ", 1)[-1].split())
    if parse_url(url).get_backend_name() == "sqlite":
        return SetupError(f"cannot open database {describe(url)}: {detail}")
    return SetupError(f"cannot connect to PostgreSQL database {describe(url)}: {detail}")


def probe_engine(url: str | URL) -> Engine:
    """A throw-away engine that looks and never creates anything: SQLite opened read-only (a
    missing file is refused before anything is opened), PostgreSQL with a connect timeout."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise SetupError("an in-memory SQLite database is empty at every start: use sqlite:///path/to/file.db")
        path = Path(parsed.database)
        if not path.exists():
            raise SetupError(f"database {parsed.database} is not initialised: run `bhxh-integrity init` (or `migrate`)")
        if not path.is_file():
            raise SetupError(f"database {parsed.database} is not a file")
        uri = f"{path.resolve().as_uri()}?mode=ro"
        return create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool)
    args = {} if "connect_timeout" in parsed.query else {"connect_timeout": PROBE_CONNECT_TIMEOUT_S}
    return create_engine(parsed, poolclass=NullPool, connect_args=args)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Build the engine for ``url`` with this project's durability settings. Nothing is created
    until the first connection (an SQLite file's folder included)."""
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _install_sqlite_pragmas(engine)
        if parsed.database and parsed.database != ":memory:":
            _create_folder_on_connect(engine, Path(parsed.database))
        return engine
    return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _create_folder_on_connect(engine: Engine, path: Path) -> None:
    @event.listens_for(engine, "do_connect")
    def _make_folder(*_args: Any) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"cannot create the folder of database {path}: {exc.strerror}") from exc


def _install_sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module; we emit BEGIN ourselves.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("bhxh_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
