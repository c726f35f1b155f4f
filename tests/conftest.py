"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

Each test gets a fresh, fully migrated database: on SQLite a copy of a migrated template
file, on PostgreSQL ``CREATE DATABASE … TEMPLATE`` from a template migrated once per test
session (a fresh database per session, dropped at the end). In CI an unreachable PostgreSQL is
a failure, never a skip; elsewhere the PostgreSQL half is skipped and the run ends with one line
that says how many tests that was and why.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from sqlalchemy import Engine

from integrity.audit_service import AuditService
from integrity.db import make_engine
from integrity.migrate import upgrade
from integrity.settings import Settings
from tests.tools import in_ci

if TYPE_CHECKING:
    from tests.token_support import SoftToken

PG_ADMIN_DSN = os.environ.get("BHXH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def _pg_shown() -> str:
    """BHXH_TEST_PG_DSN as messages show it: never with its password."""
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    if "password" not in params:
        return PG_ADMIN_DSN
    return psycopg.conninfo.make_conninfo(**{**params, "password": "***"})


def _pg_url(dbname: str) -> str:
    base = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    host = base.get("host", "127.0.0.1")
    port = base.get("port", "5432")
    user = base.get("user", "postgres")
    return f"postgresql+psycopg://{user}@{host}:{port}/{dbname}"


class _PgTemplates:
    def __init__(self) -> None:
        self.prefix = f"bhxh_t{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template: str | None = None
        self.created: list[str] = []
        self.error: str | None = None
        self.skipped = 0  # tests whose PostgreSQL half was skipped because the server is unusable

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)

    def ensure_template(self) -> str:
        if self.template:
            return self.template
        if self.error:
            raise RuntimeError(self.error)
        name = f"{self.prefix}_tmpl"
        try:
            with self._admin() as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
        except (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege) as exc:
            detail = " ".join(str(exc).split())  # libpq's message spans lines; the summary is one
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                self.error = f"PostgreSQL at {_pg_shown()} refuses CREATE DATABASE to its user: {detail}"
            else:
                self.error = f"PostgreSQL unreachable at {_pg_shown()}: {detail}"
            raise RuntimeError(self.error) from exc
        self.created.append(name)
        engine = make_engine(_pg_url(name))
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        self.template = name
        return name

    def fresh(self) -> str:
        tmpl = self.ensure_template()
        name = f"{self.prefix}_{len(self.created)}"
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{tmpl}"')
        self.created.append(name)
        return _pg_url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.remove(name)

    def drop_all(self) -> None:
        if not self.created:
            return
        with self._admin() as admin:
            for name in reversed(self.created):
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


_PG_TEMPLATES = pytest.StashKey[_PgTemplates]()


@pytest.fixture(scope="session")
def _pg_templates(pytestconfig: pytest.Config) -> Iterator[_PgTemplates]:
    templates = _PgTemplates()
    pytestconfig.stash[_PG_TEMPLATES] = templates  # read by the closing summary line below
    yield templates
    templates.drop_all()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
        raw = engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
    finally:
        engine.dispose()
    return path


def _require_pg(templates: _PgTemplates) -> None:
    try:
        templates.ensure_template()
    except RuntimeError as exc:
        if in_ci():
            pytest.fail(f"{exc} (CI is set: PostgreSQL tests must run)")
        templates.skipped += 1
        pytest.skip(str(exc))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, object, object]:
    """After pytest's own closing lines, one more when the PostgreSQL half was skipped, so that a
    run that never touched PostgreSQL cannot be mistaken for a full one."""
    result = yield
    templates = session.config.stash.get(_PG_TEMPLATES, None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if templates is not None and templates.skipped and reporter is not None:
        reporter.write_line(
            f"PostgreSQL half skipped: {templates.skipped} test{'s' if templates.skipped != 1 else ''} "
            f"({templates.error}; "
            "set BHXH_TEST_PG_DSN to a server where that user may CREATE DATABASE)",
            yellow=True,
            bold=True,
        )
    return result


@pytest.fixture(params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    _sqlite_template: Path,
    _pg_templates: _PgTemplates,
) -> Iterator[str]:
    """URL of a fresh, migrated database; the test runs once per back end."""
    if request.param == "sqlite":
        path = tmp_path / "integrity.db"
        shutil.copyfile(_sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    _require_pg(_pg_templates)
    url = _pg_templates.fresh()
    yield url
    _pg_templates.drop(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_KEYS = REPO_ROOT / "keys.example"


def demo_keys_without(tmp_path: Path, file: str) -> Path:
    """A copy of the demo keys without ``file`` (a key that a token label replaces: the service
    must then not need, nor read, the file)."""
    keys = tmp_path / "keys"
    shutil.copytree(DEMO_KEYS, keys)
    (keys / file).unlink()
    return keys


@contextmanager
def writer_held(audit: AuditService, callers: int) -> Iterator[None]:
    """Hold the audit log's group-commit writer inside a batch (a guard that waits) for the
    body of the ``with``; on leaving, wait until ``callers`` more callers queue behind it, then
    let it go, so that they are all committed together in the next batch."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn: object) -> bool:
        entered.set()
        return release.wait(10)

    holder = threading.Thread(target=audit.record_if, args=(hold, "system", "test.hold", "h"))
    holder.start()
    assert entered.wait(10)
    try:
        yield
        deadline = time.monotonic() + 10
        while audit.writer.waiters < callers + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # a caller counts itself as waiting just before it enqueues
    finally:
        release.set()
        holder.join(10)


def demo_settings(db_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": db_url,
        "keys_dir": DEMO_KEYS,
        "demo": True,
        "public_base_url": "http://testserver",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class Service:
    """A running app (TestClient) over a fresh database, with a movable clock."""

    def __init__(self, db_url: str, **overrides: object) -> None:
        from fastapi.testclient import TestClient

        from api.app import create_app
        from integrity.app_state import build_state
        from integrity.clock import FrozenClock

        self.clock = FrozenClock()
        self.settings = demo_settings(db_url, **overrides)
        self.state = build_state(self.settings, clock=self.clock)
        self.app = create_app(state=self.state)
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def api_key(self, *scopes: str) -> str:
        return self.state.clients.create("test-client", list(scopes)).api_key

    def auth(self, *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key(*scopes)}"}

    def close(self) -> None:
        self.client.close()
        self.state.close()


@pytest.fixture
def service(db_url: str) -> Iterator[Service]:
    svc = Service(db_url)
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def soft_token(tmp_path_factory: pytest.TempPathFactory) -> SoftToken:
    """One SoftHSM2 token for the session (a PKCS#11 module is loaded once per process)."""
    from tests.token_support import make_soft_token

    return make_soft_token(tmp_path_factory.mktemp("softhsm"))
