"""A newcomer's first mistakes through the real entry point, ``api.cli:main`` (in this process,
or as a process for the servers and the default store): each is one ``error: …`` line on stderr,
exit code 2, no traceback, and nothing created (no SQLite file, no folder, no table)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from api.cli import main
from integrity.db import make_engine
from tests.conftest import DEMO_KEYS, PG_ADMIN_DSN, REPO_ROOT, _pg_url, _PgTemplates, _require_pg
from tests.loopback import free_port

ACCEPTED = ("sqlite:///", "postgresql+psycopg://")
NOT_INITIALISED = "is not initialised: run `bhxh-integrity init` (or `migrate`)"
# Commands that open the store; each must refuse a missing one before it creates anything.
STORE_COMMANDS = [
    ["audit", "verify", "--demo"],
    ["audit", "checkpoint", "--demo"],
    ["clients", "list", "--demo"],
    ["keys", "list", "--demo"],
    ["exchange", "peers", "list", "--demo"],
    ["users", "unlock", "alice", "--reason", "forgot", "--admin", "hoa", "--code", "123456", "--demo"],
]


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., Outcome]


def run_process(args: list[str], cwd: Path, **env: str) -> Outcome:
    """``bhxh-integrity ARGS`` as its own process, from ``cwd``, with only the BHXH_* given here
    (the servers, which would keep running in this process if they started)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BHXH_")}
    done = subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(REPO_ROOT), "BHXH_KEYS_DIR": str(DEMO_KEYS), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``bhxh-integrity ARGS`` through ``main()`` in this process (an uncaught error fails the
    test with its traceback), from ``cwd``, with only the BHXH_* given here."""

    def run(args: list[str], cwd: Path, **env: str) -> Outcome:
        for name in [n for n in os.environ if n.startswith("BHXH_")]:
            monkeypatch.delenv(name)
        for name, value in {"BHXH_KEYS_DIR": str(DEMO_KEYS), **env}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["bhxh-integrity", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            main()
        out, err = capsys.readouterr()
        code = stopped.value.code
        return Outcome(code if isinstance(code, int) else 1, out, err)

    return run


def assert_one_line_error(result: Outcome, *needles: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty working directory: whatever a command creates by mistake shows up here."""
    work = tmp_path / "work"
    work.mkdir()
    return work


# --- SQLite: a store that was never initialised ---------------------------------------------------


@pytest.mark.parametrize("args", STORE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_default_database_not_initialised_is_refused_and_nothing_is_created(
    run_cli: Cli, args: list[str], home: Path
) -> None:
    line = assert_one_line_error(run_cli(args, home), "database var/integrity.db", NOT_INITIALISED)
    assert "no such table" not in line
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("args", [["serve", "--demo"], ["exchange", "gateway", "--demo"]], ids=["serve", "gateway"])
def test_servers_refuse_an_uninitialised_database_at_start_up(args: list[str], home: Path) -> None:
    result = run_process([*args, "--port", str(free_port())], home)
    assert_one_line_error(result, "database var/integrity.db", NOT_INITIALISED)
    assert list(home.iterdir()) == []


def test_the_command_as_a_process_prints_one_line_and_creates_nothing(home: Path) -> None:
    result = run_process(["audit", "verify", "--demo"], home)
    assert_one_line_error(result, "database var/integrity.db", NOT_INITIALISED)
    assert list(home.iterdir()) == []


def test_a_database_under_missing_folders_is_not_created(run_cli: Cli, home: Path) -> None:
    db = home / "data" / "[bold]" / "integrity.db"  # printed as text, never taken for rich markup
    result = run_cli(["audit", "verify", "--demo"], home, BHXH_DATABASE_URL=f"sqlite:///{db}")
    assert_one_line_error(result, str(db), NOT_INITIALISED)
    assert not (home / "data").exists()


def test_an_empty_database_file_is_not_initialised_and_stays_empty(run_cli: Cli, home: Path) -> None:
    db = home / "integrity.db"
    db.touch()
    result = run_cli(["clients", "list", "--demo"], home, BHXH_DATABASE_URL=f"sqlite:///{db}")
    assert_one_line_error(result, NOT_INITIALISED)
    assert db.stat().st_size == 0


def test_a_file_that_is_not_a_database_is_named(run_cli: Cli, home: Path) -> None:
    db = home / "notes.db"
    db.write_text("not a database at all, just some notes\n" * 20)
    result = run_cli(["audit", "verify", "--demo"], home, BHXH_DATABASE_URL=f"sqlite:///{db}")
    assert_one_line_error(result, f"cannot open database {db}", "not a database")


# --- the database URL -------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["audit", "verify", "--demo"], ["init", "--demo"], ["migrate"]])
def test_unsupported_database_scheme_names_the_accepted_forms(run_cli: Cli, args: list[str], home: Path) -> None:
    result = run_cli(args, home, BHXH_DATABASE_URL="mysql://root@127.0.0.1/bhxh")
    assert_one_line_error(result, "unsupported database URL scheme 'mysql'", *ACCEPTED)
    assert list(home.iterdir()) == []


def test_text_that_is_no_url_names_the_setting(run_cli: Cli, home: Path) -> None:
    result = run_cli(["init", "--demo"], home, BHXH_DATABASE_URL="var/integrity.db")
    assert_one_line_error(result, "BHXH_DATABASE_URL is not a database URL", *ACCEPTED)
    assert list(home.iterdir()) == []


def test_in_memory_sqlite_is_refused(run_cli: Cli, home: Path) -> None:
    result = run_cli(["clients", "list", "--demo"], home, BHXH_DATABASE_URL="sqlite://")
    assert_one_line_error(result, "in-memory SQLite")


# --- PostgreSQL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["audit", "verify", "--demo"], ["init", "--demo"], ["migrate"]])
def test_unreachable_postgresql_names_host_and_port(run_cli: Cli, args: list[str], home: Path) -> None:
    port = free_port()  # nothing listens there
    result = run_cli(
        args, home, BHXH_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{port}/bhxh", BHXH_LOG_LEVEL="ERROR"
    )
    assert_one_line_error(result, f"cannot connect to PostgreSQL database bhxh at 127.0.0.1:{port}")
    assert list(home.iterdir()) == []


@pytest.fixture
def empty_pg_url(_pg_templates: _PgTemplates) -> Iterator[str]:
    """A PostgreSQL database that exists and holds nothing (created by hand, never migrated)."""
    _require_pg(_pg_templates)
    name = f"{_pg_templates.prefix}_empty_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    _pg_templates.created.append(name)
    url = _pg_url(name)
    yield url
    _pg_templates.drop(url)


def _tables(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("args", [["audit", "verify", "--demo"], ["serve", "--demo"]], ids=["verify", "serve"])
def test_empty_postgresql_database_is_not_initialised_and_gets_no_table(
    run_cli: Cli, args: list[str], empty_pg_url: str, home: Path
) -> None:
    name = empty_pg_url.rsplit("/", 1)[1]
    extra = ["--port", str(free_port())] if args[0] == "serve" else []
    run = run_process if args[0] == "serve" else run_cli
    result = run([*args, *extra], home, BHXH_DATABASE_URL=empty_pg_url)
    assert_one_line_error(result, f"database {name} at ", NOT_INITIALISED)
    assert _tables(empty_pg_url) == []


def test_missing_postgresql_database_is_named(run_cli: Cli, _pg_templates: _PgTemplates, home: Path) -> None:
    _require_pg(_pg_templates)
    name = f"{_pg_templates.prefix}_never_created"
    result = run_cli(["clients", "list", "--demo"], home, BHXH_DATABASE_URL=_pg_url(name))
    assert_one_line_error(result, f"cannot connect to PostgreSQL database {name}", "does not exist")


# --- a migrated store whose schema does not match the code (both back ends) -------------------------------


def _set_versions(db_url: str, sql: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def test_a_store_behind_the_migrations_names_the_expected_revisions(run_cli: Cli, db_url: str, home: Path) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            versions = sorted(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()
    _set_versions(db_url, f"DELETE FROM alembic_version WHERE version_num = '{versions[0]}'")
    result = run_cli(["audit", "verify", "--demo"], home, BHXH_DATABASE_URL=db_url)
    line = assert_one_line_error(result, "is behind: expected revision(s)", "run `bhxh-integrity migrate`")
    assert all(v in line for v in versions)


def test_a_store_from_a_newer_release_is_named(run_cli: Cli, db_url: str, home: Path) -> None:
    _set_versions(db_url, "INSERT INTO alembic_version (version_num) VALUES ('f00dfeedbeef')")
    result = run_cli(["clients", "list", "--demo"], home, BHXH_DATABASE_URL=db_url)
    assert_one_line_error(result, "f00dfeedbeef", "newer bhxh-integrity")


# --- settings and keys (a migrated store, so that these are what is wrong) -----------------------------


def test_missing_passphrase_file_is_one_line(run_cli: Cli, db_url: str, home: Path) -> None:
    missing = home / "no-such-passphrase.txt"
    result = run_cli(
        ["audit", "verify", "--demo"], home, BHXH_DATABASE_URL=db_url, BHXH_KEYS_PASSPHRASE_FILE=str(missing)
    )
    assert_one_line_error(result, f"cannot read BHXH_KEYS_PASSPHRASE_FILE {missing}", "No such file")
    assert list(home.iterdir()) == []


def test_missing_passphrase_file_stops_init_on_a_fresh_store(run_cli: Cli, home: Path) -> None:
    result = run_cli(["init", "--demo"], home, BHXH_KEYS_PASSPHRASE_FILE=str(home / "nope"))
    assert_one_line_error(result, "cannot read BHXH_KEYS_PASSPHRASE_FILE")


def test_wrong_passphrase_is_one_line_naming_the_key(run_cli: Cli, db_url: str, home: Path) -> None:
    result = run_cli(["clients", "list", "--demo"], home, BHXH_DATABASE_URL=db_url, BHXH_KEYS_PASSPHRASE="wrong")
    assert_one_line_error(result, "audit-log.key.pem", "wrong passphrase")


def test_demo_keys_without_demo_flag_are_refused(run_cli: Cli, db_url: str, home: Path) -> None:
    result = run_cli(["clients", "list"], home, BHXH_DATABASE_URL=db_url)
    assert_one_line_error(result, "demonstration PKI", "--demo")


def test_missing_keys_dir_is_one_line(run_cli: Cli, db_url: str, home: Path) -> None:
    result = run_cli(["clients", "list"], home, BHXH_DATABASE_URL=db_url, BHXH_KEYS_DIR=str(home / "keys"))
    assert_one_line_error(result, f"keys directory {home / 'keys'}")
    assert list(home.iterdir()) == []


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("BHXH_PORT", "eighty", "BHXH_PORT"),
        ("BHXH_WORKERS", "0", "BHXH_WORKERS"),
        ("BHXH_LOG_LEVEL", "LOUD", "BHXH_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR"),
        ("BHXH_TRUST_ANCHOR_FILES", "/etc/ssl/root.pem", "BHXH_TRUST_ANCHOR_FILES is not valid JSON"),
        ("BHXH_EXCHANGE_ARCHIVE", "maybe", "BHXH_EXCHANGE_ARCHIVE"),
    ],
)
def test_a_bad_setting_names_its_variable(run_cli: Cli, variable: str, value: str, needle: str, home: Path) -> None:
    result = run_cli(["audit", "verify", "--demo"], home, **{variable: value})
    assert_one_line_error(result, "invalid settings: ", needle)
    assert list(home.iterdir()) == []


# --- commands that need no database create none ------------------------------------------------------


def test_verifying_a_missing_export_is_one_line_and_needs_no_database(run_cli: Cli, home: Path) -> None:
    missing = home / "audit.ndjson"
    result = run_cli(
        ["audit", "verify", "--export", str(missing), "--public-key", str(DEMO_KEYS / "audit-log.vkey")], home
    )
    assert_one_line_error(result, str(missing))
    assert list(home.iterdir()) == []


def test_verifying_an_export_with_a_missing_key_file_is_one_line(run_cli: Cli, home: Path) -> None:
    export = home / "audit.ndjson"
    export.write_text("")
    result = run_cli(["audit", "verify", "--export", str(export), "--public-key", str(home / "log.vkey")], home)
    assert_one_line_error(result, "cannot read public key", "log.vkey")
    assert sorted(p.name for p in home.iterdir()) == ["audit.ndjson"]


def test_demo_pki_into_an_unusable_folder_is_one_line(run_cli: Cli, home: Path) -> None:
    (home / "notes.txt").write_text("a file, not a folder\n")
    result = run_cli(["keys", "dev-pki", "--out", str(home / "notes.txt" / "keys")], home)
    assert_one_line_error(result, "cannot write the demo PKI to", "notes.txt")
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
