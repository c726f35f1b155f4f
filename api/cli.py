"""The ``bhxh-integrity`` command line (typer + rich). Commands are thin: parse, call
``integrity``, render. Exit codes: 0 done or verified, 1 verification failed, 2 bad usage or input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from api.cli_operator import cli_actor
from api.cli_output import EXIT_USAGE, console, emit_json, fail, print_error
from api.cli_state import DEMO_KEYS_DIR, load_settings, open_state, run_server
from audit.errors import AuditError
from auth.errors import AuthError
from integrity.devpki import generate
from integrity.errors import IntegrityError
from integrity.logs import configure_logging
from signing.errors import SigningError

if TYPE_CHECKING:
    from integrity.app_state import AppState

app = typer.Typer(
    name="bhxh-integrity",
    help="Security and integrity layer between the BHXH portal and the one-stop system.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="Keys and certificates.", no_args_is_help=True)
clients_app = typer.Typer(help="API clients (other BHXH systems).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(clients_app, name="clients")

DemoOption = Annotated[
    bool, typer.Option("--demo", help="use the demonstration PKI of keys.example/ (NOT FOR PRODUCTION)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@app.command()
def init(demo: DemoOption = False, as_json: JsonOption = False) -> None:
    """Migrate the database, create the audit log and load the keys (idempotent)."""
    from integrity.setup import initialise

    actor = cli_actor()
    settings = load_settings(demo)
    configure_logging(settings.log_level)
    report = initialise(settings, actor=actor)
    if as_json:
        emit_json({"changed": report.changed, "changes": list(report.changes)})
    elif report.changed:
        for change in report.changes:
            console.print(f"[green]✓[/] {change}")
    else:
        console.print("already initialised: nothing changed")


@app.command()
def migrate(as_json: JsonOption = False) -> None:
    """Apply pending database migrations."""
    from integrity.db import make_engine
    from integrity.migrate import upgrade

    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        applied = upgrade(engine)
    finally:
        engine.dispose()
    if as_json:
        emit_json({"applied": applied})
    else:
        console.print(f"applied: {', '.join(applied)}" if applied else "schema is current: nothing to apply")


@app.command()
def serve(
    demo: DemoOption = False,
    host: Annotated[str | None, typer.Option(help="bind address (BHXH_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (BHXH_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (BHXH_WORKERS)")] = None,
) -> None:
    """Serve the HTTP API."""
    run_server("api.asgi:app_factory", demo=demo, host=host, port=port, workers=workers, check=_witness_at_start)


def _witness_at_start(state: AppState) -> None:
    """With witnesses configured, sign a checkpoint and ask them before serving: a log restored
    to an older state is then found rolled back before its first append (docs/operations.md)."""
    state.audit.witness_now()


@keys_app.command("dev-pki")
def dev_pki(
    out: Annotated[Path, typer.Option(help="directory to write the demo PKI into")] = DEMO_KEYS_DIR,
    force: Annotated[bool, typer.Option(help="overwrite an existing demo PKI")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a demonstration PKI (NOT FOR PRODUCTION) for tests and demos."""
    if (out / "ca.crt.pem").exists() and not force:
        fail(f"{out} already holds a PKI; pass --force to overwrite it")
    try:
        written = generate(out, now=datetime.now(UTC))
    except OSError as exc:
        fail(f"cannot write the demo PKI to {out}: {exc.strerror}")
    if as_json:
        emit_json({"out": str(out), "files": [str(p) for p in written], "demo": True})
        return
    console.print(f"wrote {len(written)} files to {out} [bold red](NOT FOR PRODUCTION)[/]")


@clients_app.command("create")
def clients_create(
    name: str,
    scopes: Annotated[str, typer.Option(help="comma-separated scopes, e.g. sign,verify")],
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Create an API client; prints {"client_id", "api_key"} once (only a hash is stored).
    The output is JSON with or without --json: the key is shown once and a script must catch it."""
    del as_json  # accepted like on every command a machine reads; JSON is the only output
    actor = cli_actor()
    state = open_state(demo)
    try:
        issued = state.clients.create(name, scopes, actor=actor)
    finally:
        state.close()
    emit_json({"client_id": issued.client.client_id, "api_key": issued.api_key, "scopes": sorted(issued.client.scopes)})


@clients_app.command("list")
def clients_list(demo: DemoOption = False, as_json: JsonOption = False) -> None:
    """List API clients (never their keys)."""
    state = open_state(demo)
    try:
        clients = state.clients.list()
    finally:
        state.close()
    rows = [
        {
            "client_id": c.client_id,
            "name": c.name,
            "scopes": sorted(c.scopes),
            "created_at": c.created_at.isoformat(),
            "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
        }
        for c in clients
    ]
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("client id", "name", "scopes", "state")
    for c in clients:
        table.add_row(c.client_id, c.name, ",".join(sorted(c.scopes)), "revoked" if c.revoked_at else "active")
    console.print(table)


@clients_app.command("revoke")
def clients_revoke(client_id: str, demo: DemoOption = False, as_json: JsonOption = False) -> None:
    """Revoke an API client's key; takes effect at once."""
    actor = cli_actor()
    state = open_state(demo)
    try:
        client = state.clients.revoke(client_id, actor=actor)
    finally:
        state.close()
    if as_json:
        revoked_at = client.revoked_at.isoformat() if client.revoked_at else None
        emit_json({"client_id": client.client_id, "name": client.name, "revoked_at": revoked_at})
        return
    console.print(f"revoked {client.client_id} ({client.name})")


def _mount_domain_commands() -> None:
    """The domain modules own their commands; they are mounted here, at import time of the CLI."""
    from api import (
        cli_audit,
        cli_backup,
        cli_exchange,
        cli_keys,
        cli_personal,
        cli_receipts,
        cli_signing,
        cli_users,
        cli_witness,
    )

    app.registered_commands.extend(cli_signing.app.registered_commands)  # sign, verify
    app.registered_commands.extend(cli_personal.app.registered_commands)  # sign-personal
    app.registered_commands.extend(cli_backup.app.registered_commands)  # backup, restore
    keys_app.registered_commands.extend(cli_signing.keys_app.registered_commands)
    keys_app.registered_commands.extend(cli_keys.keys_app.registered_commands)  # init, install-cert
    app.add_typer(cli_audit.app, name="audit")
    app.add_typer(cli_receipts.app, name="receipts")
    app.add_typer(cli_users.app, name="users")
    app.add_typer(cli_exchange.app, name="exchange")
    app.add_typer(cli_witness.app, name="witness")


_mount_domain_commands()


def main() -> None:
    """Console entry point, the one place where errors become ``error: …`` on stderr and exit
    code 2: domain errors, and set-up errors (settings, keys, a database that is unsupported,
    unreachable or not initialised), which are ConfigurationErrors."""
    try:
        app()
    except (IntegrityError, AuthError, AuditError, SigningError) as exc:
        print_error(str(exc))
        raise SystemExit(EXIT_USAGE) from None
