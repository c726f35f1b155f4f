"""No password, TOTP secret, code, recovery code or token in any log line or audit entry."""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Any

import pytest
from sqlalchemy import select

from audit.tables import audit_entries, audit_pii
from integrity.logs import configure_logging
from tests.auth.support import STRONG, rfc6238, secret_from_uri, step_of, wire_accounts

NEW_PASSWORD = "a completely different passphrase"


@pytest.fixture
def log_stream() -> Any:
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    yield stream
    configure_logging("INFO")


def _b(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_full_account_flow_leaves_no_secret_in_logs_or_audit(
    service: Any, log_stream: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wire_accounts(service)
    c = service.client
    admin = service.auth("admin")
    secrets: list[str] = [STRONG, NEW_PASSWORD, admin["Authorization"].split()[1]]
    c.post(
        "/v1/admin/users",
        json={"username": "alice", "password": STRONG, "role": "officer", "reason": "new"},
        headers=admin,
    )
    first = c.post("/v1/auth/login", json={"username": "alice", "password": STRONG}).json()
    enrol = c.post("/v1/auth/totp/enroll", headers=_b(first["token"])).json()
    secret = secret_from_uri(enrol["otpauth_uri"])
    enrol_code = rfc6238(secret, step_of(service.clock))
    done = c.post("/v1/auth/totp/confirm", json={"code": enrol_code}, headers=_b(first["token"])).json()
    secrets += [
        first["token"],
        first["device_token"],
        enrol["secret"],
        base64.b32encode(secret).decode(),
        enrol_code,
        done["token"],
        *done["recovery_codes"],
    ]
    c.post("/v1/auth/login", json={"username": "alice", "password": "wrong password typed"})
    c.post("/v1/auth/login", json={"username": STRONG, "password": STRONG})  # password typed in the name box
    service.clock.advance(30)
    step1 = c.post("/v1/auth/login", json={"username": "alice", "password": STRONG}).json()
    bad = c.post("/v1/auth/mfa", json={"mfa_token": step1["mfa_token"], "code": "000001"})
    code = rfc6238(secret, step_of(service.clock))
    session = c.post("/v1/auth/mfa", json={"mfa_token": step1["mfa_token"], "code": code}).json()
    assert bad.status_code == 401 and "token" in session
    secrets += [step1["mfa_token"], code, session["token"], session["device_token"]]
    step2 = c.post("/v1/auth/login", json={"username": "alice", "password": STRONG}).json()
    rec = c.post(
        "/v1/auth/mfa", json={"mfa_token": step2["mfa_token"], "recovery_code": done["recovery_codes"][0]}
    ).json()
    secrets += [step2["mfa_token"], rec["token"]]
    changed = c.post(
        "/v1/auth/password", json={"current_password": STRONG, "new_password": NEW_PASSWORD}, headers=_b(rec["token"])
    )
    assert changed.status_code == 200
    secrets.append(changed.json()["token"])
    c.get("/v1/auth/me", headers=_b(changed.json()["token"]))
    c.post("/v1/auth/logout", headers=_b(changed.json()["token"]))

    logs = log_stream.getvalue() + "\n".join(r.getMessage() for r in caplog.records)
    assert "/v1/auth/mfa" in logs, "the flow must have been logged"
    with service.state.engine.connect() as conn:
        audit = json.dumps([dict(r._mapping) for r in conn.execute(select(audit_entries))], default=str)
        pii = json.dumps([r.data for r in conn.execute(select(audit_pii))])
    assert "auth.recovery.used" in audit
    for needle in secrets:
        assert needle and needle not in logs, "a secret reached the logs"
        assert needle not in audit, "a secret reached the audit log"
    for needle in secrets:  # not even the password typed into the username box
        assert needle not in pii
