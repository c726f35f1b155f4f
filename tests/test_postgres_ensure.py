"""PostgreSQL for the test suite. scripts/postgres-ensure (`make postgres`) names the server and
database the tests use, creates that database when missing, and stops a CI run when PostgreSQL
cannot be reached; the suite then fails in CI without it, and elsewhere skips the PostgreSQL half
and ends with one line that says how many tests that was and why."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PG_ADMIN_DSN, REPO_ROOT
from tests.tools import require_tool

SCRIPT = REPO_ROOT / "scripts" / "postgres-ensure"
CLOSED_PORT_DSN = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1
ON_BOTH_BACK_ENDS = """
def test_on_both_back_ends(db_url):
    assert db_url
"""


def _run(dsn: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    require_tool("pg_isready", "Debian package postgresql-client")
    require_tool("psql", "Debian package postgresql-client")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["BHXH_TEST_PG_DSN"] = dsn
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_unreachable_server_stops_a_ci_run_with_a_clear_message() -> None:
    out = _run(CLOSED_PORT_DSN, "true")
    assert out.returncode == 1
    assert "PostgreSQL is not reachable at 127.0.0.1:1" in out.stderr
    assert "CI is set, so the PostgreSQL tests must run" in out.stderr
    assert out.stdout == ""


def test_unreachable_server_outside_ci_says_the_postgresql_half_will_be_skipped() -> None:
    out = _run(CLOSED_PORT_DSN, None)
    assert out.returncode == 0, out.stderr
    assert "PostgreSQL is not reachable at 127.0.0.1:1" in out.stdout
    assert "PostgreSQL half of the storage tests will be skipped" in out.stdout
    assert "BHXH_TEST_PG_DSN" in out.stdout


def test_a_dsn_libpq_cannot_read_is_named_as_such() -> None:
    out = _run("postgresql://postgres@127.0.0.1:notaport/test", "true")
    assert out.returncode == 1
    assert "BHXH_TEST_PG_DSN is not a connection string libpq reads" in out.stderr


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # the server of the suite, or skip/fail
def test_missing_test_database_is_created_and_named(db_url: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    name = f"bhxh_ensure_{uuid.uuid4().hex[:8]}"
    dsn = psycopg.conninfo.make_conninfo(**{**params, "dbname": name})
    where = f"{params.get('host', 'the local socket')}:{params.get('port', '5432')}"
    try:
        first = _run(dsn, "true")
        assert first.returncode == 0, first.stderr
        assert f"at {where}, user " in first.stdout and f"database {name} (created now)" in first.stdout
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
        again = _run(dsn, "true")
        assert again.returncode == 0, again.stderr
        assert f"database {name} (exists)" in again.stdout
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _suite(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """A small suite on the fixtures of tests/conftest.py, with PostgreSQL out of reach."""
    (tmp_path / "test_both.py").write_text(ON_BOTH_BACK_ENDS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(BHXH_TEST_PG_DSN=CLOSED_PORT_DSN, PYTHONPATH=str(REPO_ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "test_both.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_postgresql_the_run_ends_with_one_line_naming_the_skipped_half(tmp_path: Path) -> None:
    out = _suite(tmp_path, None)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed, 1 skipped" in out.stdout
    last = out.stdout.rstrip().splitlines()[-1]
    assert last.startswith(f"PostgreSQL half skipped: 1 test (PostgreSQL unreachable at {CLOSED_PORT_DSN}: ")
    assert last.endswith("set BHXH_TEST_PG_DSN to a server where that user may CREATE DATABASE)")


def test_without_postgresql_a_ci_run_fails_and_skips_nothing(tmp_path: Path) -> None:
    out = _suite(tmp_path, "true")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 passed, 1 error" in out.stdout and "skipped" not in out.stdout
    assert "(CI is set: PostgreSQL tests must run)" in out.stdout
