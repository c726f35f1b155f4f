"""``bhxh-integrity backup`` and ``bhxh-integrity restore`` (mounted at the top level).

Thin: the work and every refusal are in integrity/backup.py; a refusal is a BackupRefused that
``main()`` prints as one line with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from api.cli_operator import cli_actor
from api.cli_output import console, emit_json
from api.cli_state import load_settings
from integrity.logs import configure_logging

app = typer.Typer(help="Backup and restore of the SQLite database.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _say(text: str) -> None:
    """A line of plain text: paths and hashes are neither markup nor wrapped."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command("backup")
def backup_cmd(
    out: Annotated[Path, typer.Option("--out", help="the backup file to write (never overwritten)")],
    as_json: JsonOption = False,
) -> None:
    """Copy the SQLite database while the service runs; check the copy; write FILE.manifest.json.

    PostgreSQL is backed up with pg_dump -Fc (docs/operations.md)."""
    from integrity.backup import backup

    settings = load_settings()
    configure_logging(settings.log_level)
    report = backup(settings.database_url, out)
    if as_json:
        emit_json({**report.manifest_dict(), "manifest": str(report.manifest)})
        return
    log = report.log
    checkpoint = "no checkpoint yet" if log.checkpoint_size is None else f"latest checkpoint at {log.checkpoint_size}"
    _say(f"wrote {report.file} ({report.bytes} bytes, sha256 {report.sha256})")
    _say(f"integrity check ok; audit log of {log.tree_size} entries, head {log.head_hash}, {checkpoint}")
    _say(f"manifest: {report.manifest}")


@app.command("restore")
def restore_cmd(
    source: Annotated[Path, typer.Option("--from", help="the backup file to restore")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="restore even though the live log holds entries the backup lacks (they are named)"
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Replace the SQLite database with a checked backup (service stopped); keep the old file.

    The replaced file is kept as DB.replaced-<UTC time>; the restored log records an
    audit.restored entry, written as the operator, naming the audit entries it dropped. PostgreSQL is restored with
    pg_restore (docs/operations.md)."""
    from integrity.backup import restore

    actor = cli_actor()
    settings = load_settings()
    configure_logging(settings.log_level)
    report = restore(settings.database_url, source, force=force, actor=actor)
    lost = report.lost
    if as_json:
        emit_json(
            {
                "database": str(report.database),
                "from": str(report.source),
                "sha256": report.sha256,
                "backup_tree_size": report.backup_log.tree_size,
                "live_tree_size": report.live_tree_size,
                "lost": {"first": lost.first, "last": lost.last} if lost else None,
                "lost_unknown": report.lost_unknown,
                "kept_at": str(report.kept_at) if report.kept_at else None,
                "entry_seq": report.entry_seq,
            }
        )
        return
    _say(
        f"restored {report.database} from {report.source} ({report.backup_log.tree_size} audit entries; "
        f"entry {report.entry_seq} records the restore)"
    )
    if report.kept_at is not None:
        _say(f"the replaced database is kept as {report.kept_at}")
    if lost is not None:
        _say(f"dropped audit entries {lost} that only the replaced database holds")
    elif report.lost_unknown:
        _say("the replaced database could not be read: what it held is in the kept file only")
