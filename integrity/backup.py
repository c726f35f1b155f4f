"""Backup and restore of the SQLite store, so that nothing is lost without being said.

``backup`` takes a consistent copy of the live database with SQLite's online backup API while
the service keeps running and writing (WAL readers do not block writers), checks the copy, and
installs it under its final name only when complete (temporary file in the same folder, fsync,
link without overwriting). ``restore`` checks a backup completely before it touches the live
database, refuses while the service holds the database open, says which audit entries the live
log holds that the backup does not (and refuses unless forced), keeps the replaced file, and
installs the backup with one atomic rename after recording an ``audit.restored`` entry in it.

PostgreSQL has its own tools (``pg_dump -Fc`` / ``pg_restore``); re-implementing them here
would only be a worse copy, so both commands point to them instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, NullPool, create_engine
from sqlalchemy.exc import SQLAlchemyError

from audit import store
from audit.erasure import SERVICE_ACTOR
from audit.errors import AuditError
from audit.store import PendingEvent
from integrity import backup_files as files
from integrity.clock import Clock, system_clock
from integrity.db import make_engine, parse_url
from integrity.errors import BackupRefusal, BackupRefused
from integrity.migrate import code_revisions

RESTORED_ACTION = "audit.restored"
MANIFEST_SUFFIX = ".manifest.json"
# How long ``restore`` waits for the live database's lock: a running service holds it at once,
# so a short wait is enough to tell "in use" from a lock being released.
LOCK_TIMEOUT_S = 0.5
# The source of an online backup may be busy with a checkpoint for a moment: wait like the service.
SOURCE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LogState:
    """What a database's audit log holds: its size, the hash of its last entry, and the size
    and root of its latest signed checkpoint (None before the first)."""

    tree_size: int
    head_hash: str
    checkpoint_size: int | None
    checkpoint_root: str | None


@dataclass(frozen=True)
class BackupReport:
    file: Path
    manifest: Path
    bytes: int
    sha256: str
    log: LogState
    revisions: tuple[str, ...]
    created_at: datetime

    def manifest_dict(self) -> dict[str, object]:
        return {
            "file": str(self.file),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "tree_size": self.log.tree_size,
            "head_hash": self.log.head_hash,
            "checkpoint_size": self.log.checkpoint_size,
            "checkpoint_root": self.log.checkpoint_root,
            "revisions": list(self.revisions),
            "integrity_check": "ok",
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class LostRange:
    """Audit entries ``first``..``last`` (inclusive) that only the live database holds."""

    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first}..{self.last}"


@dataclass(frozen=True)
class RestoreReport:
    database: Path
    source: Path
    sha256: str
    backup_log: LogState
    live_tree_size: int | None  # None: there was no live database, or it could not be read
    lost: LostRange | None
    lost_unknown: bool  # the live database could not be read: what it held is not known
    kept_at: Path | None  # where the replaced live database was kept
    entry_seq: int  # seq of the audit.restored entry in the restored log


# ------------------------------------------------------------------ backup


def backup(database_url: str, out: Path, *, clock: Clock = system_clock) -> BackupReport:
    """Copy the live SQLite database to ``out`` (never overwritten) and write ``out`` +
    ``.manifest.json`` beside it. Raises BackupRefused; on refusal nothing is left behind."""
    live = _sqlite_path(database_url, "backup")
    if not live.is_file():
        raise BackupRefused(
            f"database {live} does not exist: there is nothing to back up", reason=BackupRefusal.UNREADABLE
        )
    manifest = out.with_name(out.name + MANIFEST_SUFFIX)
    for target in (out, manifest):
        if target.exists() or target.is_symlink():
            raise BackupRefused(
                f"{target} already exists: a backup never overwrites a file; choose another name",
                reason=BackupRefusal.TARGET_EXISTS,
            )
    folder = out.parent
    if not folder.is_dir():
        raise BackupRefused(f"folder {folder} does not exist", reason=BackupRefusal.UNREADABLE)
    with files.temporary(folder, out.name) as temp:
        _online_copy(live, temp)
        _check_integrity(temp, f"the copy of {live}")
        revisions = _revisions(temp)
        if not revisions:
            raise BackupRefused(
                f"database {live} is not initialised: run `bhxh-integrity init` (or `migrate`)",
                reason=BackupRefusal.WRONG_SCHEMA,
            )
        log = _log_state(temp, f"database {live}")
        files.fsync(temp)
        size, digest = files.size_and_digest(temp)
        report = BackupReport(out, manifest, size, digest, log, tuple(sorted(revisions)), clock())
        files.link_new(temp, out)
    try:
        with files.temporary(folder, manifest.name) as temp_manifest:
            temp_manifest.write_text(json.dumps(report.manifest_dict(), indent=2) + "\n", encoding="utf-8")
            files.fsync(temp_manifest)
            files.link_new(temp_manifest, manifest)
    except BaseException:
        # A backup without its manifest is not what was asked for: take it back.
        out.unlink(missing_ok=True)
        raise
    files.fsync_folder(folder)
    return report


def _online_copy(live: Path, temp: Path) -> None:
    """SQLite's backup API in one step: a single read snapshot of the live database (writers
    go on meanwhile under WAL), so the copy is one consistent state; copied page by page in
    several steps, concurrent writes would restart it again and again."""
    try:
        source = sqlite3.connect(f"{live.resolve().as_uri()}?mode=rw", uri=True, timeout=SOURCE_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise BackupRefused(f"cannot open database {live}: {exc}", reason=BackupRefusal.UNREADABLE) from exc
    try:
        target = sqlite3.connect(temp)
        try:
            source.backup(target)
            # One self-contained file: the service turns WAL back on when it opens it.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    except sqlite3.Error as exc:
        raise BackupRefused(f"cannot copy database {live}: {exc}", reason=BackupRefusal.UNREADABLE) from exc
    finally:
        source.close()


# ----------------------------------------------------------------- restore


def restore(
    database_url: str,
    source: Path,
    *,
    force: bool = False,
    clock: Clock = system_clock,
    actor: str = SERVICE_ACTOR,
) -> RestoreReport:
    """Replace the live SQLite database with the backup ``source``. Refuses (BackupRefused,
    nothing changed) a backup that is not a sound database of this schema, a live database in
    use, and — unless ``force`` — a live log holding entries the backup lacks. ``actor`` writes
    the ``audit.restored`` entry (the operator, ``operator:<login>``, from the command line)."""
    live = _sqlite_path(database_url, "restore")
    if not source.is_file():
        raise BackupRefused(f"backup {source} does not exist or is not a file", reason=BackupRefusal.UNREADABLE)
    folder = live.parent
    if not folder.is_dir():
        raise BackupRefused(f"folder {folder} of database {live} does not exist", reason=BackupRefusal.UNREADABLE)
    with files.temporary(folder, live.name) as temp:
        files.copy_file(source, temp)
        sha256 = files.size_and_digest(temp)[1]
        _check_integrity(temp, f"backup {source}")
        _check_schema(temp, source)
        backup_log = _log_state(temp, f"backup {source}")
        kept = files.kept_name(live, clock()) if live.exists() else None
        live_size, lost, unknown, why = _compare_with_live(live, temp, backup_log)
        if (lost is not None or unknown) and not force:
            raise BackupRefused(_loss_message(live, lost, why, kept), reason=BackupRefusal.WOULD_LOSE_ENTRIES)
        data: dict[str, object] = {
            "backup": str(source.resolve()),
            "backup_sha256": sha256,
            "backup_tree_size": backup_log.tree_size,
            "live_tree_size": live_size,
            "lost_first": lost.first if lost else None,
            "lost_last": lost.last if lost else None,
            "lost_unknown": unknown,
            "replaced_kept_at": str(kept.resolve()) if kept else None,
        }
        seq = _record_restored(temp, live.name, data, clock, actor)
        if kept is not None:
            shutil.copymode(live, temp)  # the restored file keeps the live file's permissions
        files.fsync(temp)
        if kept is not None:
            files.keep_aside(live, kept)
        os.replace(temp, live)
    files.fsync_folder(folder)
    return RestoreReport(live, source, sha256, backup_log, live_size, lost, unknown, kept, seq)


def _loss_message(live: Path, lost: LostRange | None, why: str, kept: Path | None) -> str:
    keep = f" (the live file would be kept as {kept})" if kept else ""
    if lost is not None:
        return (
            f"restoring drops audit entries {lost} that exist only in the live database {live}: "
            f"pass --force to restore anyway{keep}"
        )
    return (
        f"the live database {live} cannot be read ({why}), so what restoring would drop cannot be told: "
        f"pass --force to restore anyway{keep}"
    )


def _compare_with_live(live: Path, temp: Path, backup_log: LogState) -> tuple[int | None, LostRange | None, bool, str]:
    """(live tree size, the entries only the live log holds, whether the live log could not be
    read, why not). Holds the live database's exclusive lock while it reads, so a running
    service is refused rather than raced."""
    if not live.exists():
        return None, None, False, ""
    if not live.is_file():
        raise BackupRefused(f"database {live} is not a file", reason=BackupRefusal.UNREADABLE)
    with _exclusive(live) as live_conn:
        try:
            with _read_only(temp) as backup_conn:
                live_size = store.tree_size(live_conn)
                agreed = _agreeing_prefix(live_conn, backup_conn, min(live_size, backup_log.tree_size))
        except (sqlite3.Error, SQLAlchemyError, AuditError) as exc:
            return None, None, True, _first_line(exc)
    lost = LostRange(agreed, live_size - 1) if agreed < live_size else None
    return live_size, lost, False, ""


def _agreeing_prefix(live: Connection, backup: Connection, common: int) -> int:
    """How many first entries both logs share. Each entry's hash covers the previous one, so
    when entry k agrees every entry before it does: a binary search, O(log n) reads."""
    low, high = 0, common  # entries < low agree; entries >= high are not known to
    while low < high:
        middle = (low + high) // 2
        if store.get_entry(live, middle).hash == store.get_entry(backup, middle).hash:
            low = middle + 1
        else:
            high = middle
    return low


def _record_restored(temp: Path, database: str, data: dict[str, object], clock: Clock, actor: str) -> int:
    """Append the ``audit.restored`` entry to the copy about to be installed: the restored log
    itself then says what it dropped and where the replaced file went."""
    engine = make_engine(f"sqlite:///{temp}", pool_size=1)
    try:
        with engine.begin() as conn:
            event = PendingEvent.of(actor, RESTORED_ACTION, f"database:{database}", data)
            seq = store.append(conn, [event], clock)[0].seq
    finally:
        engine.dispose()
    _set_rollback_journal(temp)
    return seq


@contextlib.contextmanager
def _exclusive(live: Path) -> Iterator[Connection]:
    """The live database under an exclusive lock that excludes every other connection, idle
    ones included: in WAL mode an open connection shares the lock that EXCLUSIVE locking mode
    needs, so a service that holds the file open — even doing nothing — is refused."""
    try:
        raw = sqlite3.connect(live, timeout=LOCK_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupRefused(f"cannot open database {live}: {exc}", reason=BackupRefusal.UNREADABLE) from exc
    try:
        try:
            raw.execute("PRAGMA locking_mode=EXCLUSIVE")
            raw.execute("BEGIN EXCLUSIVE")
        except sqlite3.DatabaseError as exc:
            # Anything but a lock held elsewhere (a file that is no database) the reads below report.
            if "locked" in str(exc) or "busy" in str(exc):
                raise _in_use(live) from exc
        engine = create_engine("sqlite://", creator=lambda: raw, poolclass=NullPool)
        with engine.connect() as conn:
            yield conn
    finally:
        raw.close()
    # The last connection to close folds the WAL into the file and removes it: a WAL still
    # there means another connection opened the database meanwhile.
    wal = Path(f"{live}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise _in_use(live)


def _in_use(live: Path) -> BackupRefused:
    return BackupRefused(f"the database {live} is in use: stop the service first", reason=BackupRefusal.IN_USE)


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[Connection]:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


# ------------------------------------------------------------------ checks


def _sqlite_path(database_url: str, command: str) -> Path:
    parsed = parse_url(database_url)
    if parsed.get_backend_name() != "sqlite":
        raise BackupRefused(_postgresql_advice(database_url, command), reason=BackupRefusal.POSTGRESQL)
    if not parsed.database or parsed.database == ":memory:":
        raise BackupRefused(
            f"{command} needs a database file: use sqlite:///path/to/file.db", reason=BackupRefusal.UNREADABLE
        )
    return Path(parsed.database)


def _postgresql_advice(database_url: str, command: str) -> str:
    parsed = parse_url(database_url)
    options = " ".join(
        f"{flag} {value}"
        for flag, value in (("-h", parsed.host), ("-p", parsed.port), ("-U", parsed.username))
        if value is not None
    )
    connect = f"{options} " if options else ""
    name = parsed.database or "DBNAME"
    if command == "backup":
        return (
            f"`bhxh-integrity backup` copies SQLite databases only: back up PostgreSQL with "
            f"`pg_dump -Fc {connect}-f FILE {name}` (see docs/operations.md)"
        )
    return (
        f"`bhxh-integrity restore` restores SQLite databases only: restore PostgreSQL with "
        f"`pg_restore --clean --if-exists {connect}-d {name} FILE` with the service stopped (see docs/operations.md)"
    )


def _check_integrity(path: Path, what: str) -> None:
    try:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            conn.execute("PRAGMA journal_mode=DELETE")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupRefused(
            f"{what} is not a usable SQLite database: {_first_line(exc)}", reason=BackupRefusal.UNREADABLE
        ) from exc
    if rows != [("ok",)]:
        raise BackupRefused(f"{what} fails SQLite's integrity check: {rows[0][0]}", reason=BackupRefusal.UNREADABLE)


def _revisions(path: Path) -> set[str]:
    with _read_only(path) as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def _check_schema(path: Path, source: Path) -> None:
    """The backup must be at exactly this version's migrations, like every store the service
    opens: an older or newer schema would be refused by the service after the swap."""
    current = _revisions(path)
    heads, known = code_revisions()
    if current == heads:
        return
    if not current:
        raise BackupRefused(
            f"backup {source} is not a bhxh-integrity database (it has no schema revision)",
            reason=BackupRefusal.WRONG_SCHEMA,
        )
    unknown = current - known
    if unknown:
        raise BackupRefused(
            f"backup {source} is at revision(s) {', '.join(sorted(unknown))}, unknown to this version: "
            "it was written by a newer bhxh-integrity",
            reason=BackupRefusal.WRONG_SCHEMA,
        )
    raise BackupRefused(
        f"backup {source} is at revision(s) {', '.join(sorted(current))}, this version expects "
        f"{', '.join(sorted(heads))}: restore it with the version that wrote it, then run `bhxh-integrity migrate`",
        reason=BackupRefusal.WRONG_SCHEMA,
    )


def _log_state(path: Path, what: str) -> LogState:
    try:
        with _read_only(path) as conn:
            head = store.read_head(conn)
            latest = store.latest_checkpoint(conn)
    except SQLAlchemyError as exc:
        raise BackupRefused(
            f"{what} holds no readable audit log: {_first_line(exc)}", reason=BackupRefusal.WRONG_SCHEMA
        ) from exc
    return LogState(
        head.size,
        head.last_hash,
        latest.tree_size if latest else None,
        latest.root_hash if latest else None,
    )


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def _set_rollback_journal(path: Path) -> None:
    """One self-contained file (no WAL beside it) to install; the service turns WAL back on."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
