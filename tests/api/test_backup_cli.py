"""``bhxh-integrity backup`` and ``restore`` through the real entry point (``api.cli:main``):
an online copy taken while entries are appended verifies with the project's own verifier; a
refusal is one line, exit code 2, and leaves every file as it was; a forced restore keeps the
replaced file and says in the restored log which audit entries it dropped."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from api.cli import main
from integrity.db import make_engine
from tests.api.operator_support import OPERATOR_LOGIN, as_operator
from tests.conftest import DEMO_KEYS, REPO_ROOT, Service, _pg_url

VKEY = DEMO_KEYS / "audit-log.vkey"


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.stdout)  # type: ignore[no-any-return]


Cli = Callable[..., Outcome]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    """``bhxh-integrity ARGS`` through ``main()`` against the SQLite database ``db`` (a path)."""

    def run(args: list[str], db: Path) -> Outcome:
        for name in [n for n in os.environ if n.startswith("BHXH_")]:
            monkeypatch.delenv(name)
        env = {"BHXH_DATABASE_URL": f"sqlite:///{db}", "BHXH_KEYS_DIR": str(DEMO_KEYS), "BHXH_LOG_LEVEL": "ERROR"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        as_operator(monkeypatch)  # the OS login the acting commands record
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["bhxh-integrity", *args])
        capsys.readouterr()
        code: int | str | None = 0
        try:
            main()
        except SystemExit as stopped:
            code = stopped.code
        out, err = capsys.readouterr()
        return Outcome(code if isinstance(code, int) else 1, out, err)

    return run


@pytest.fixture
def live(cli: Cli, tmp_path: Path) -> Path:
    """An initialised live database (log created, first checkpoint signed) in its own folder."""
    folder = tmp_path / "live"
    folder.mkdir()
    db = folder / "integrity.db"
    assert cli(["init", "--demo"], db).code == 0
    return db


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` and its bytes: "nothing changed" means this is equal before and after."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_error_line(outcome: Outcome, *fragments: str) -> None:
    assert outcome.code == 2, outcome
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr
    assert "Traceback" not in outcome.stderr and outcome.stdout == ""
    for fragment in fragments:
        assert fragment in " ".join(lines[0].split()), lines[0]


def _add_entries(cli: Cli, db: Path, count: int) -> None:
    for index in range(count):
        assert cli(["clients", "create", f"extra-{index}", "--scopes", "sign", "--demo"], db).code == 0


def _export(cli: Cli, db: Path, out: Path) -> list[dict]:  # type: ignore[type-arg]
    assert cli(["audit", "export", "--out", str(out), "--demo"], db).code == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def _backup(cli: Cli, db: Path, out: Path) -> dict:  # type: ignore[type-arg]
    done = cli(["backup", "--out", str(out), "--json"], db)
    assert done.code == 0, done.stderr
    return done.json()


# ------------------------------------------------------------------ backup


@pytest.fixture
def appending(live: Path) -> Iterator[tuple[Service, threading.Event, list[int]]]:
    """The service over ``live`` with a client appending events over HTTP in another thread."""
    service = Service(f"sqlite:///{live}")
    auth = service.auth("audit:append")
    stop, seqs = threading.Event(), []

    def append() -> None:
        index = 0
        while not stop.is_set():
            body = {"action": "ext.test-client.tick", "subject": f"tick-{index}", "data": {"i": index}}
            answer = service.client.post("/v1/audit/events", json=body, headers=auth)
            assert answer.status_code == 201, answer.text
            seqs.append(answer.json()["seq"])
            index += 1

    writer = threading.Thread(target=append)
    writer.start()
    try:
        yield service, stop, seqs
    finally:
        stop.set()
        writer.join(30)
        service.close()


def test_backup_while_entries_are_appended_is_consistent_and_verifies(
    cli: Cli, live: Path, tmp_path: Path, appending: tuple[Service, threading.Event, list[int]]
) -> None:
    service, stop, seqs = appending
    while len(seqs) < 20:
        threading.Event().wait(0.01)
    out = tmp_path / "backups" / "b1.db"
    out.parent.mkdir()
    manifest = _backup(cli, live, out)
    appended_during = len(seqs)
    while len(seqs) < appended_during + 10:  # the service goes on writing after the copy
        threading.Event().wait(0.01)
    stop.set()

    assert set(manifest) >= {"file", "bytes", "sha256", "tree_size", "checkpoint_size", "created_at", "head_hash"}
    assert manifest["bytes"] == out.stat().st_size
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    written = json.loads(Path(f"{out}.manifest.json").read_text())
    assert {k: v for k, v in manifest.items() if k != "manifest"} == written
    size = manifest["tree_size"]
    assert 20 <= size < service.state.audit.size()
    # The copy is a state the live log went through: its head is the live log's entry there.
    assert manifest["head_hash"] == service.state.audit.entry(size - 1).hash
    checked = sqlite3.connect(out)
    try:
        assert checked.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        checked.close()
    assert sorted(os.listdir(out.parent)) == ["b1.db", "b1.db.manifest.json"]  # no temporary file left

    # Restored where no database is, the copy is a log the project's verifier accepts.
    restored = tmp_path / "restored" / "integrity.db"
    restored.parent.mkdir()
    done = cli(["restore", "--from", str(out), "--json"], restored)
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["kept_at"] is None and report["lost"] is None and report["live_tree_size"] is None
    assert report["backup_tree_size"] == size and report["entry_seq"] == size
    entries = _export(cli, restored, tmp_path / "export.ndjson")
    assert sum(1 for line in entries if "seq" in line) == size + 1
    verified = cli(["audit", "verify", "--export", str(tmp_path / "export.ndjson"), "--public-key", str(VKEY)], live)
    assert verified.code == 0, verified.stdout


def test_backup_text_output_names_the_log_it_holds(cli: Cli, live: Path, tmp_path: Path) -> None:
    done = cli(["backup", "--out", str(tmp_path / "b.db")], live)
    assert done.code == 0, done.stderr
    assert "integrity check ok" in done.stdout and "latest checkpoint at" in done.stdout
    assert f"manifest: {tmp_path / 'b.db'}.manifest.json" in done.stdout


@pytest.mark.parametrize("existing", ["b.db", "b.db.manifest.json"])
def test_backup_never_overwrites_a_file(cli: Cli, live: Path, tmp_path: Path, existing: str) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / existing).write_bytes(b"an earlier backup")
    before = _snapshot(folder)
    result = cli(["backup", "--out", str(folder / "b.db")], live)
    _one_error_line(result, f"{folder / existing} already exists", "never overwrites")
    assert _snapshot(folder) == before


def test_backup_of_a_missing_database_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    result = cli(["backup", "--out", str(tmp_path / "b.db")], tmp_path / "nowhere" / "integrity.db")
    _one_error_line(result, "does not exist: there is nothing to back up")
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "b.db").exists()


# ----------------------------------------------------------------- restore


@pytest.fixture
def older_backup(cli: Cli, live: Path, tmp_path: Path) -> tuple[Path, int, int]:
    """A backup of ``live``, then 3 more entries in ``live``: (backup, its size, live size)."""
    out = tmp_path / "older.db"
    size = _backup(cli, live, out)["tree_size"]
    _add_entries(cli, live, 3)
    live_size = _backup(cli, live, tmp_path / "now.db")["tree_size"]
    assert live_size == size + 3
    return out, size, live_size


def test_restore_of_an_older_backup_names_the_lost_range_and_changes_nothing(
    cli: Cli, live: Path, older_backup: tuple[Path, int, int]
) -> None:
    backup, size, live_size = older_backup
    before = _snapshot(live.parent)
    result = cli(["restore", "--from", str(backup)], live)
    _one_error_line(
        result,
        f"restoring drops audit entries {size}..{live_size - 1} that exist only in the live database {live}",
        "--force",
    )
    assert _snapshot(live.parent) == before


def test_forced_restore_keeps_the_replaced_file_and_logs_the_lost_range(
    cli: Cli, live: Path, tmp_path: Path, older_backup: tuple[Path, int, int]
) -> None:
    backup, size, live_size = older_backup
    replaced = live.read_bytes()
    done = cli(["restore", "--from", str(backup), "--force", "--json"], live)
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["lost"] == {"first": size, "last": live_size - 1} and report["live_tree_size"] == live_size
    kept = Path(report["kept_at"])
    assert kept.parent == live.parent and kept.name.startswith("integrity.db.replaced-")
    assert kept.read_bytes() == replaced  # kept, never deleted

    entries = [e for e in _export(cli, live, tmp_path / "restored.ndjson") if "seq" in e]
    assert len(entries) == size + 1
    restored = entries[-1]
    assert restored["seq"] == size == report["entry_seq"]
    assert (restored["actor"], restored["action"]) == (f"operator:{OPERATOR_LOGIN}", "audit.restored")
    assert restored["data"]["lost_first"] == size and restored["data"]["lost_last"] == live_size - 1
    assert restored["data"]["replaced_kept_at"] == str(kept.resolve())
    assert restored["data"]["backup_sha256"] == hashlib.sha256(backup.read_bytes()).hexdigest()
    # The restored database is one the service opens and whose log verifies.
    assert cli(["audit", "checkpoint", "--demo"], live).code == 0
    assert cli(["audit", "verify", "--demo"], live).code == 0


def test_restore_of_a_newer_backup_loses_nothing_and_needs_no_force(cli: Cli, tmp_path: Path, live: Path) -> None:
    """A live log that is a prefix of the backup's (a live file rolled back by the disk): no
    audit entry is lost, and the replaced file is kept all the same."""
    older = tmp_path / "older.db"
    size = _backup(cli, live, older)["tree_size"]
    _add_entries(cli, live, 2)
    newer = tmp_path / "newer.db"
    assert _backup(cli, live, newer)["tree_size"] == size + 2
    rolled_back = tmp_path / "rolled-back" / "integrity.db"
    rolled_back.parent.mkdir()
    rolled_back.write_bytes(older.read_bytes())
    done = cli(["restore", "--from", str(newer), "--json"], rolled_back)
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["lost"] is None and report["live_tree_size"] == size
    assert Path(report["kept_at"]).read_bytes() == older.read_bytes()


def test_restore_names_entries_of_a_live_log_that_diverged_from_the_backup(
    cli: Cli, tmp_path: Path, live: Path
) -> None:
    """As long as the backup: no entry more in the live log, but its last one differs."""
    older = tmp_path / "older.db"
    size = _backup(cli, live, older)["tree_size"]
    _add_entries(cli, live, 1)
    newer = tmp_path / "newer.db"
    assert _backup(cli, live, newer)["tree_size"] == size + 1
    assert cli(["restore", "--from", str(older), "--force"], live).code == 0  # appends audit.restored at ``size``
    before = _snapshot(live.parent)
    result = cli(["restore", "--from", str(newer)], live)
    _one_error_line(result, f"restoring drops audit entries {size}..{size} that exist only in the live database")
    assert _snapshot(live.parent) == before


def test_restore_over_an_unreadable_live_file_needs_force_and_keeps_it(cli: Cli, live: Path, tmp_path: Path) -> None:
    backup = tmp_path / "b.db"
    size = _backup(cli, live, backup)["tree_size"]
    damaged = b"no longer a database\n" * 500
    live.write_bytes(damaged)
    before = _snapshot(live.parent)
    result = cli(["restore", "--from", str(backup)], live)
    _one_error_line(
        result, f"the live database {live} cannot be read (file is not a database)", "cannot be told", "--force"
    )
    assert _snapshot(live.parent) == before
    done = cli(["restore", "--from", str(backup), "--force", "--json"], live)
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["lost_unknown"] is True and report["lost"] is None and report["live_tree_size"] is None
    assert Path(report["kept_at"]).read_bytes() == damaged
    restored = [e for e in _export(cli, live, tmp_path / "e.ndjson") if "seq" in e][-1]
    assert restored["seq"] == size and restored["action"] == "audit.restored"
    assert restored["data"]["lost_unknown"] is True and restored["data"]["live_tree_size"] is None


def test_entries_left_in_the_wal_by_a_killed_service_are_counted_and_kept(cli: Cli, live: Path, tmp_path: Path) -> None:
    """A service killed without closing leaves committed entries in the WAL only: restore must
    count them as lost, and the kept file must hold them."""
    backup = tmp_path / "b.db"
    size = _backup(cli, live, backup)["tree_size"]
    crash = (
        "import os; from integrity.app_state import build_state; from tests.conftest import demo_settings; "
        f"state = build_state(demo_settings('sqlite:///{live}')); "
        "[state.audit.record('system', 'test.crash', f's{i}') for i in range(3)]; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", crash], cwd=REPO_ROOT, check=True, timeout=120)
    assert Path(f"{live}-wal").stat().st_size > 0
    result = cli(["restore", "--from", str(backup)], live)
    _one_error_line(result, f"restoring drops audit entries {size}..{size + 2} that exist only in the live database")
    done = cli(["restore", "--from", str(backup), "--force", "--json"], live)
    assert done.code == 0, done.stderr
    kept = sqlite3.connect(done.json()["kept_at"])
    try:
        actions = [row[0] for row in kept.execute("SELECT action FROM audit_entries WHERE seq >= ?", (size,))]
    finally:
        kept.close()
    assert actions == ["test.crash"] * 3
    assert not Path(f"{live}-wal").exists() or Path(f"{live}-wal").stat().st_size == 0


def _foreign_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()


def _unknown_revision(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    conn.execute("INSERT INTO alembic_version VALUES ('f00dfeedbeef')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "is not a usable SQLite database: file is not a database"),
        ("empty", "is not a bhxh-integrity database (it has no schema revision)"),
        ("foreign", "is not a bhxh-integrity database (it has no schema revision)"),
        ("newer", "is at revision(s) f00dfeedbeef, unknown to this version"),
        ("truncated", "is not a usable SQLite database: database disk image is malformed"),
    ],
)
def test_restore_refuses_what_is_not_a_backup_of_this_schema(
    cli: Cli, live: Path, tmp_path: Path, kind: str, message: str
) -> None:
    bad = tmp_path / f"{kind}.db"
    if kind == "text":
        bad.write_text("SQLite format 3? no: a note that is not a database\n" * 100)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "foreign":
        _foreign_schema(bad)
    elif kind == "newer":
        _unknown_revision(bad)
    else:
        good = tmp_path / "good.db"
        _backup(cli, live, good)
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    before, backup_before = _snapshot(live.parent), bad.read_bytes()
    result = cli(["restore", "--from", str(bad), "--force"], live)
    _one_error_line(result, f"backup {bad}", message)
    assert _snapshot(live.parent) == before
    assert bad.read_bytes() == backup_before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f"{kind}.db-")]  # nothing written beside it


def test_restore_of_a_missing_backup_is_refused(cli: Cli, live: Path, tmp_path: Path) -> None:
    before = _snapshot(live.parent)
    _one_error_line(cli(["restore", "--from", str(tmp_path / "gone.db")], live), "does not exist")
    assert _snapshot(live.parent) == before


@pytest.mark.parametrize("hold", ["idle", "writing"])
def test_restore_refuses_while_another_connection_holds_the_database(
    cli: Cli, live: Path, tmp_path: Path, hold: str
) -> None:
    backup = tmp_path / "b.db"
    _backup(cli, live, backup)
    engine = make_engine(f"sqlite:///{live}")  # the service's own engine settings
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM audit_entries"))
            if hold == "idle":
                conn.commit()  # a service at rest still holds its pooled connection open
            before = live.read_bytes()
            result = cli(["restore", "--from", str(backup), "--force"], live)
            _one_error_line(result, f"the database {live} is in use: stop the service first")
            assert live.read_bytes() == before
    finally:
        engine.dispose()
    assert not [p for p in live.parent.iterdir() if ".replaced-" in p.name or p.suffix == ".tmp"]


# -------------------------------------------------------------- PostgreSQL


def test_postgresql_is_pointed_to_pg_dump_and_pg_restore(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = _pg_url("bhxh_backup")
    monkeypatch.setenv("BHXH_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    for args, advice in [
        (["backup", "--out", "b.dump"], "pg_dump -Fc -h "),
        (["restore", "--from", "b.dump", "--force"], "pg_restore --clean --if-exists -h "),
    ]:
        monkeypatch.setattr(sys, "argv", ["bhxh-integrity", *args])
        with pytest.raises(SystemExit) as stopped:
            main()
        out, err = capsys.readouterr()
        _one_error_line(Outcome(int(stopped.value.code or 0), out, err), advice, "bhxh_backup", "docs/operations.md")
    assert list(tmp_path.iterdir()) == []
