"""What the PostgreSQL role the service runs as may do to each table (``BHXH_DB_SERVICE_ROLE``).

The tables belong to an owner role, the one that runs ``bhxh-integrity migrate``; the service
connects as another role that holds on each table only the statements its code runs there.
Evidence is SELECT and INSERT only: the audit log (whose triggers also refuse UPDATE and DELETE
to every role), the receipts with their PDFs and revocations, the exchange archive. Whoever
holds the service's credentials can add evidence, never change or remove it. Personal data in
the log may be deleted (erasure, docs/audit-log.md §6); state that the code updates (accounts,
sessions, counters, keys' states, peers) gets what its updates and purges need.

Every table of the schema has a line here: ``migrate`` stops (nothing applied) when it meets a
table whose rights were never decided, rather than leave the service without access or with
more than it needs. Rights are applied after every ``migrate`` while the setting is present,
so they follow the schema, and they are applied whole: REVOKE ALL, then GRANT.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Connection, inspect, text

from integrity.errors import SetupError

SERVICE_ROLE_ENV = "BHXH_DB_SERVICE_ROLE"


class Right(StrEnum):
    SELECT = "SELECT"
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


APPEND = frozenset({Right.SELECT, Right.INSERT})
EDIT = frozenset({Right.SELECT, Right.INSERT, Right.UPDATE})  # UPDATE, or INSERT … ON CONFLICT DO UPDATE
PURGE = frozenset({Right.SELECT, Right.INSERT, Right.DELETE})
MUTABLE = frozenset(Right)

SERVICE_RIGHTS: dict[str, frozenset[Right]] = {
    # Alembic's record of the schema version: /readyz and every command compare it with the code.
    "alembic_version": frozenset({Right.SELECT}),
    # audit/: the log, append-only; its personal data is erased by DELETE.
    "audit_entries": APPEND,
    "audit_tree_nodes": APPEND,
    "audit_checkpoints": APPEND,
    "audit_keys": APPEND,
    "audit_pii": PURGE,
    "audit_cosignatures": APPEND,
    "audit_checkpoint_timestamps": APPEND,
    "audit_witness_sizes": EDIT,  # the size each witness last cosigned
    "audit_rollbacks": EDIT,  # findings, acknowledged once by UPDATE (its triggers refuse the rest)
    # auth/: API clients are revoked by UPDATE; accounts and their factors change and go.
    "api_clients": EDIT,
    "users": EDIT,
    "sessions": EDIT,
    "mfa_challenges": EDIT,
    "totp_credentials": MUTABLE,
    "recovery_codes": MUTABLE,
    "login_throttle": MUTABLE,
    "passkey_credentials": MUTABLE,
    "passkey_challenges": MUTABLE,
    # signing/: a key's state changes (retired, revoked); a key is never removed.
    "signing_keys": EDIT,
    "signature_activations": EDIT,  # spent by one conditional UPDATE
    # receipts: evidence, but for the day's sequence and the idempotency keys' answers.
    "receipts": APPEND,
    "receipt_pdfs": APPEND,
    "receipt_revocations": APPEND,
    "receipt_sequences": EDIT,
    "receipt_idempotency_keys": EDIT,
    # exchange: the peer registry is edited (and locked while a keyid is checked, which needs
    # UPDATE or DELETE); nonces are purged once expired; the archive is evidence.
    "exchange_peers": MUTABLE,
    "exchange_nonces": PURGE,
    "exchange_archive": APPEND,
}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def grant_statements(role: str, tables: list[str], sequences: list[str]) -> list[str]:
    """REVOKE ALL then GRANT, for ``role`` on ``tables`` (each must have a line in
    SERVICE_RIGHTS) and USAGE on ``sequences`` (the identity columns an INSERT draws from)."""
    who = _quoted(role)
    statements = [f"REVOKE ALL ON TABLE {', '.join(map(_quoted, tables))} FROM {who}"]
    for table in tables:
        rights = ", ".join(sorted(SERVICE_RIGHTS[table]))
        statements.append(f"GRANT {rights} ON TABLE {_quoted(table)} TO {who}")
    if sequences:
        listed = ", ".join(map(_quoted, sequences))
        statements += [f"REVOKE ALL ON SEQUENCE {listed} FROM {who}", f"GRANT USAGE ON SEQUENCE {listed} TO {who}"]
    return statements


def check_service_role(conn: Connection, role: str) -> None:
    """Raise SetupError unless ``role`` exists and is not the role running the migration (which
    owns the tables). Checked before any migration runs: the audit migrations grant to it too."""
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
    if exists is None:
        raise SetupError(f"{SERVICE_ROLE_ENV}={role!r} names no role of this PostgreSQL server: create it first")
    if conn.execute(text("SELECT current_user")).scalar_one() == role:
        raise SetupError(
            f"{SERVICE_ROLE_ENV}={role!r} is the role running the migration, which owns the tables: "
            "the service must run as another role"
        )


def apply_service_grants(conn: Connection, role: str) -> None:
    """Give ``role`` (see ``check_service_role``) exactly its rights on every table of the
    current schema. Raises SetupError, having granted nothing, for a table SERVICE_RIGHTS does
    not list."""
    inspector = inspect(conn)
    tables = sorted(inspector.get_table_names())
    undecided = [t for t in tables if t not in SERVICE_RIGHTS]
    if undecided:
        raise SetupError(
            f"no service-role rights are defined for table(s) {', '.join(undecided)} (integrity/db_grants.py)"
        )
    for statement in grant_statements(role, tables, sorted(inspector.get_sequence_names())):
        conn.execute(text(statement))
