"""PostgreSQL: the role the service runs as (BHXH_DB_SERVICE_ROLE) holds on each table exactly
what integrity/db_grants.py decides, the real service does its work connected as that role, and
the role can add evidence but never change or remove it. A bad setting stops ``migrate``
with one clear error and leaves the database as it was."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from integrity.db import make_engine
from integrity.db_grants import SERVICE_RIGHTS, SERVICE_ROLE_ENV, Right
from integrity.errors import SetupError
from integrity.migrate import upgrade
from signing.httpsig import HttpRequest, sign_request
from tests.api.exchange_support import demo_cert_pem, demo_signing_key, utc_now
from tests.auth.support import STRONG
from tests.conftest import Service

POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
OPERATIONS_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
PEER_URL = "https://one-stop.bhxh.internal/v1/dossiers"


@pytest.fixture
def role(engine: Engine) -> Iterator[str]:
    """A fresh role with no rights at all (NOLOGIN: the tests reach it with SET ROLE)."""
    name = f"bhxh_svc_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{name}" NOLOGIN'))
    yield name
    with engine.begin() as conn:
        conn.execute(text(f'DROP OWNED BY "{name}"'))  # its grants in this database
        conn.execute(text(f'DROP ROLE "{name}"'))


def _can(conn: Any, role: str, table: str, privilege: str) -> bool:
    query = text("SELECT has_table_privilege(:r, :t, :p)")
    return bool(conn.execute(query, {"r": role, "t": table, "p": privilege}).scalar_one())


def _as_role(db_url: str, role: str) -> str:
    # libpq's ``options``: the session starts as SET ROLE would leave it.
    return f"{db_url}?options=-c%20role%3D{role}"


@POSTGRESQL
def test_migrate_gives_the_service_role_exactly_its_rights_on_every_table(
    engine: Engine, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SERVICE_ROLE_ENV, role)
    assert upgrade(engine) == []  # nothing pending: the rights are (re)applied all the same
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert tables == set(SERVICE_RIGHTS), tables ^ set(SERVICE_RIGHTS)  # a line per table, none stale
        for table in sorted(tables):
            held = {p for p in TABLE_PRIVILEGES if _can(conn, role, table, p)}
            assert held == {str(r) for r in SERVICE_RIGHTS[table]}, table
        for sequence in inspect(conn).get_sequence_names():
            query = text("SELECT has_sequence_privilege(:r, :s, 'USAGE'), has_sequence_privilege(:r, :s, 'UPDATE')")
            assert tuple(conn.execute(query, {"r": role, "s": sequence}).one()) == (True, False), sequence
    # The evidence tables are append-only for the service.
    for table in ("audit_entries", "audit_checkpoints", "receipts", "receipt_pdfs", "exchange_archive"):
        assert SERVICE_RIGHTS[table] == {Right.SELECT, Right.INSERT}


def _exercise(svc: Service) -> dict[str, Any]:
    """Work of every kind the service does, through its routes, as the role."""
    admin = svc.auth("admin")  # creating the API client itself writes api_clients and the log
    signed = svc.client.post(
        "/v1/signatures",
        json={"payload_b64": base64.b64encode(b"to sign").decode(), "format": "jws"},
        headers=svc.auth("sign"),
    )
    assert signed.status_code == 200, signed.text

    receipt = {
        "receiving_unit": {"code": "000.00.31.H29", "name": "Bảo hiểm xã hội Thành phố Hồ Chí Minh"},
        "procedure_code": "1.001234",
        "procedure_name": "Giải quyết hưởng chế độ ốm đau",
        "applicant": {"name": "Nguyễn Thị Ánh Tuyết", "id_number": "079190001234"},
        "documents": [{"name": "Tờ khai", "copies": 1, "original": True}],
        "official": {"name": "Đặng Văn Lợi", "title": "Chuyên viên"},
        "appointment_at": (date.today() + timedelta(days=7)).isoformat(),
    }
    issuer = {**svc.auth("receipts:issue"), "Idempotency-Key": uuid.uuid4().hex}
    issued = svc.client.post("/v1/receipts", json=receipt, headers=issuer)
    assert issued.status_code == 201, issued.text
    assert svc.client.post("/v1/receipts", json=receipt, headers=issuer).json()["code"] == issued.json()["code"]
    code = issued.json()["code"]
    revoked = svc.client.post(f"/v1/receipts/{code}/revocation", json={"reason": "issued_in_error"}, headers=issuer)
    assert revoked.status_code == 201, revoked.text

    user = {"username": "lan", "password": STRONG, "role": "citizen", "reason": "service role check"}
    assert svc.client.post("/v1/admin/users", json=user, headers=admin).status_code == 201
    wrong = svc.client.post("/v1/auth/login", json={"username": "lan", "password": "not the password"})
    assert wrong.status_code == 401
    login = svc.client.post("/v1/auth/login", json={"username": "lan", "password": STRONG})
    assert login.status_code == 200, login.text
    session = {"Authorization": f"Bearer {login.json()['token']}"}
    assert svc.client.post("/v1/auth/totp/enroll", headers=session).status_code == 200
    assert svc.client.post("/v1/auth/logout", headers=session).status_code == 204
    unlock = svc.client.post("/v1/admin/users/lan/unlock", json={"reason": "service role check"}, headers=admin)
    assert unlock.status_code == 200, unlock.text

    peer = {"name": "portal", "keyid": "portal", "key_pem": demo_cert_pem("portal-exchange"), "routes": []}
    assert svc.client.post("/v1/admin/peers", json=peer, headers=admin).status_code == 201
    routes = {"routes": ["POST /v1/dossiers"]}
    assert svc.client.patch("/v1/admin/peers/portal", json=routes, headers=admin).status_code == 200
    message = HttpRequest("POST", PEER_URL, {"Content-Type": "application/json"}, b"{}")
    fields = {
        "Content-Type": "application/json",
        **sign_request(message, demo_signing_key("portal-exchange", "portal"), clock=utc_now).as_dict(),
    }
    delivery = {"method": "POST", "url": PEER_URL, "headers": fields, "body_b64": base64.b64encode(b"{}").decode()}
    consumer = svc.auth("verify", "exchange:consume")
    accepted = svc.client.post("/v1/exchange/verify", json={**delivery, "consume": True}, headers=consumer)
    assert accepted.json()["valid"] is True, accepted.text
    assert svc.client.delete("/v1/admin/peers/portal", headers=admin).status_code == 200

    event = {"action": "ext.test-client.dossier.received", "subject": code, "data": {}, "pii": {"name": "Lan"}}
    appended = svc.client.post("/v1/audit/events", json=event, headers=svc.auth("audit:append"))
    assert appended.status_code == 201, appended.text
    seq = appended.json()["seq"]
    erased = svc.client.post(f"/v1/admin/audit/pii/{seq}/erase", json={"reason": "asked by the person"}, headers=admin)
    assert erased.status_code == 200, erased.text
    svc.state.audit.checkpoint_now()
    return {"seq": seq, "code": code}


@POSTGRESQL
def test_the_service_does_its_work_as_its_role_and_cannot_change_evidence(
    db_url: str, engine: Engine, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SERVICE_ROLE_ENV, role)
    upgrade(engine)
    svc = Service(_as_role(db_url, role))
    try:
        with svc.state.engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == role
        done = _exercise(svc)
        assert svc.state.audit.verify().ok
        refused = (
            f"UPDATE audit_entries SET subject = 'changed' WHERE seq = {done['seq']}",
            f"DELETE FROM audit_entries WHERE seq = {done['seq']}",
            "TRUNCATE audit_entries CASCADE",
            "DELETE FROM audit_checkpoints",
            "UPDATE audit_tree_nodes SET hash = hash",
            f"UPDATE receipts SET code = code WHERE code = '{done['code']}'",
            "DELETE FROM receipt_pdfs",
            "DELETE FROM receipt_revocations",
            "UPDATE exchange_archive SET body = body",
            "DELETE FROM exchange_archive",
            "DELETE FROM signing_keys",
            "ALTER TABLE audit_entries DISABLE TRIGGER ALL",
        )
        with svc.state.engine.connect() as conn:
            for statement in refused:
                with pytest.raises(DBAPIError) as caught, conn.begin():
                    conn.execute(text(statement))
                message = str(caught.value)
                assert "permission denied" in message or "must be owner" in message, statement
        assert svc.state.audit.verify().ok
    finally:
        svc.close()


@POSTGRESQL
def test_an_unknown_role_stops_migrate_and_leaves_the_database_empty(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"bhxh_grant_{uuid.uuid4().hex[:8]}"
    server = engine.url.set(database="postgres").render_as_string(hide_password=False).replace("+psycopg", "")
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    fresh = make_engine(engine.url.set(database=name).render_as_string(hide_password=False))
    try:
        monkeypatch.setenv(SERVICE_ROLE_ENV, "no_such_role_here")
        with pytest.raises(SetupError, match="names no role"):
            upgrade(fresh)
        with fresh.connect() as conn:
            assert inspect(conn).get_table_names() == []  # the migrations rolled back with the grants
    finally:
        fresh.dispose()
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@POSTGRESQL
def test_the_owner_itself_or_a_table_without_rights_is_refused_and_nothing_changes(
    engine: Engine, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine.connect() as conn:
        owner = conn.execute(text("SELECT current_user")).scalar_one()
    monkeypatch.setenv(SERVICE_ROLE_ENV, owner)
    with pytest.raises(SetupError, match="the role running the migration"):
        upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE scratch_notes (id integer)"))
    monkeypatch.setenv(SERVICE_ROLE_ENV, role)
    with pytest.raises(SetupError, match="scratch_notes"):
        upgrade(engine)
    with engine.connect() as conn:
        assert not any(_can(conn, role, t, "SELECT") for t in ("audit_entries", "users", "scratch_notes"))


def test_the_operations_guide_lists_the_rights_the_code_grants() -> None:
    """docs/operations.md shows operators each table's rights: the table must be the code's."""
    shown: dict[str, set[str]] = {}
    for line in OPERATIONS_GUIDE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or "`SELECT`" not in cells[1]:
            continue
        rights = set(re.findall(r"`([A-Z]+)`", cells[1]))
        for table in re.findall(r"`([a-z_]+)`", cells[0]):
            shown[table] = rights
    assert shown == {table: {str(r) for r in rights} for table, rights in SERVICE_RIGHTS.items()}
