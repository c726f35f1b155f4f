"""File handling of backup and restore: a database file never appears half-written under its
final name. Work happens in a temporary file in the target folder (so the final rename stays on
one file system and is atomic), is fsynced, and then takes its name: by a hard link when the
name must not exist yet (a link never replaces a file, where a rename would), by a rename when
it replaces the live database. The folder is fsynced too, since a rename lives in the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from integrity.errors import BackupRefusal, BackupRefused

_STAMP = "%Y%m%dT%H%M%SZ"
_SIDECARS = ("-wal", "-shm", "-journal")


@contextlib.contextmanager
def temporary(folder: Path, name: str) -> Iterator[Path]:
    """A new empty file in ``folder`` (same file system: the final rename is atomic), removed
    with its SQLite side files unless it was renamed into place."""
    try:
        handle, raw = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise BackupRefused(
            f"cannot write in folder {folder}: {exc.strerror}", reason=BackupRefusal.UNREADABLE
        ) from exc
    os.close(handle)
    temp = Path(raw)
    try:
        yield temp
    finally:
        for path in (temp, *(Path(f"{temp}{suffix}") for suffix in _SIDECARS)):
            path.unlink(missing_ok=True)


def copy_file(source: Path, temp: Path) -> None:
    """Byte copy of a backup (and of its WAL, should it have one), so that checking it never
    writes next to the backup itself."""
    try:
        shutil.copyfile(source, temp)
        wal = Path(f"{source}-wal")
        if wal.is_file():
            shutil.copyfile(wal, Path(f"{temp}-wal"))
    except OSError as exc:
        raise BackupRefused(f"cannot read backup {source}: {exc.strerror}", reason=BackupRefusal.UNREADABLE) from exc


def kept_name(live: Path, now: datetime) -> Path:
    base = f"{live.name}.replaced-{now.strftime(_STAMP)}"
    candidate, counter = live.with_name(base), 1
    while candidate.exists():
        counter += 1
        candidate = live.with_name(f"{base}-{counter}")
    return candidate


def keep_aside(live: Path, kept: Path) -> None:
    """Keep the live file under ``kept`` (a second name, so ``live`` never goes missing before
    the backup takes its place). Side files still there (the WAL or journal of a live file that
    could not be opened) go with it: left beside the restored file, SQLite would replay them
    into it."""
    try:
        os.link(live, kept)
    except FileExistsError:
        raise
    except OSError:
        shutil.copy2(live, kept)  # a file system without hard links
        fsync(kept)
    for suffix in _SIDECARS:
        side = Path(f"{live}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{kept}{suffix}"))


def link_new(temp: Path, final: Path) -> None:
    """Give ``temp`` its final name, refusing if that name appeared meanwhile (a link never
    replaces a file, where a rename would)."""
    try:
        os.link(temp, final)
    except FileExistsError as exc:
        raise BackupRefused(
            f"{final} already exists: a backup never overwrites a file; choose another name",
            reason=BackupRefusal.TARGET_EXISTS,
        ) from exc
    except OSError:
        if final.exists():
            raise BackupRefused(
                f"{final} already exists: a backup never overwrites a file; choose another name",
                reason=BackupRefusal.TARGET_EXISTS,
            ) from None
        os.replace(temp, final)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Make the renames durable: a rename lives in the folder's entry, not in the file."""
    with contextlib.suppress(OSError):  # some platforms cannot open a folder for fsync
        fsync(folder)


def size_and_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()
