"""Revoking an issued receipt (POST /v1/receipts/{code}/revocation, ``receipts revoke``) on both
back ends: once, audited, with a reason from a fixed list; the registry record, the verdict
and the public check then say so. A refused revocation writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.cli_receipts import app as receipts_cli
from integrity.receipt_tables import receipt_revocations
from tests.api.test_receipt_check import _issue
from tests.api.test_receipts_api import body
from tests.api.test_receipts_cli import cli_env, request_file  # noqa: F401  (fixtures)
from tests.conftest import Service

runner = CliRunner()


@pytest.fixture
def api(service: Service) -> Service:
    return service


def _revocations(api: Service) -> int:
    with api.state.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(receipt_revocations)).scalar_one())


def _revoke(api: Service, code: str, reason: Any = "issued_in_error", *, headers: dict[str, str] | None = None) -> Any:
    # Pass headers made beforehand where the audit log is counted: making a key is logged too.
    headers = headers if headers is not None else api.auth("receipts:issue")
    return api.client.post(f"/v1/receipts/{code}/revocation", json={"reason": reason}, headers=headers)


def test_revocation_is_recorded_once_with_its_audit_entry(api: Service) -> None:
    code, pdf = _issue(api)
    answer = _revoke(api, code, "replaced")
    assert answer.status_code == 201, answer.text
    revoked = answer.json()
    assert revoked["code"] == code and revoked["reason"]["code"] == "replaced"
    assert revoked["reason"]["vi"] and revoked["reason"]["en"]
    entry = api.state.audit.entry(revoked["audit_seq"])
    assert entry.action == "receipt.revoked" and entry.subject == code
    assert entry.actor.startswith("client:") and entry.data["reason"] == "replaced"
    record = api.client.get(f"/v1/receipts/{code}", headers=api.auth("receipts:read")).json()
    assert record["revocation"]["reason"]["code"] == "replaced"
    verdict = api.client.post(
        "/v1/receipts/verify", content=pdf, headers={**api.auth("verify"), "Content-Type": "application/pdf"}
    ).json()
    # The system did issue it; the verdict says, besides, that it no longer stands.
    assert verdict["issued_by_system"] is True and verdict["revoked"] is True and verdict["valid"] is False
    assert verdict["revocation"]["reason"]["code"] == "replaced"
    assert [r["code"] for r in verdict["reasons"]] == ["receipt_revoked"]
    issuer = api.auth("receipts:issue")
    size = api.state.audit.size()
    again = _revoke(api, code, "issued_in_error", headers=issuer)
    assert again.status_code == 409 and again.json()["type"].endswith(":receipt-already-revoked")
    assert api.state.audit.size() == size and _revocations(api) == 1


def test_a_receipt_not_revoked_says_so_everywhere(api: Service) -> None:
    code, pdf = _issue(api)
    assert api.client.get(f"/v1/receipts/{code}", headers=api.auth("receipts:read")).json()["revocation"] is None
    verdict = api.client.post(
        "/v1/receipts/verify", content=pdf, headers={**api.auth("verify"), "Content-Type": "application/pdf"}
    ).json()
    assert verdict["revoked"] is False and verdict["revocation"] is None
    assert verdict["valid"] is True and verdict["issued_by_system"] is True and verdict["reasons"] == []


@pytest.mark.parametrize(
    ("code", "reason", "status", "slug"),
    [
        ("000.00.31.H29-261123-0042", "issued_in_error", 404, "receipt-not-found"),
        ("not-a-code", "issued_in_error", 422, "invalid-dossier-code"),
        (None, "because I said so", 422, "validation-error"),
        (None, None, 422, "validation-error"),
    ],
    ids=["unknown", "malformed", "free-text-reason", "no-reason"],
)
def test_refused_revocations_write_nothing(
    api: Service, code: str | None, reason: str | None, status: int, slug: str
) -> None:
    issued, _ = _issue(api)
    issuer = api.auth("receipts:issue")
    size = api.state.audit.size()
    answer = _revoke(api, code or issued, reason, headers=issuer)
    assert answer.status_code == status and answer.json()["type"].endswith(":" + slug), answer.text
    assert api.state.audit.size() == size and _revocations(api) == 0


def test_revoking_needs_the_issuing_scope(api: Service) -> None:
    code, _ = _issue(api)
    assert api.client.post(f"/v1/receipts/{code}/revocation", json={"reason": "replaced"}).status_code == 401
    assert _revoke(api, code, headers=api.auth("receipts:read")).status_code == 403
    assert _revocations(api) == 0


def test_the_cli_revokes_and_verify_reports_it(
    cli_env: None,  # noqa: F811
    request_file: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "receipt.pdf"
    issued = runner.invoke(receipts_cli, ["issue", str(request_file), "--out", str(out), "--demo", "--json"])
    assert issued.exit_code == 0, issued.output
    code = json.loads(issued.stdout)["code"]
    bad = runner.invoke(receipts_cli, ["revoke", code, "--reason", "lost", "--demo"])
    assert bad.exit_code == 2 and "issued_in_error" in bad.output
    done = runner.invoke(receipts_cli, ["revoke", code, "--reason", "dossier_withdrawn", "--demo", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["reason"] == "dossier_withdrawn"
    twice = runner.invoke(receipts_cli, ["revoke", code, "--reason", "dossier_withdrawn", "--demo"])
    assert twice.exit_code == 2 and "already revoked" in twice.output
    # A revoked receipt is no longer a valid one: exit 1, though the system did issue the file.
    human = runner.invoke(receipts_cli, ["verify", str(out), "--demo"])
    assert human.exit_code == 1, human.output
    assert "REVOKED" in human.stdout and "Người nộp đã rút hồ sơ." in human.stdout
    assert "ISSUED BY THE SYSTEM" not in human.stdout  # neither the "yes" nor the "not issued" line
    machine = runner.invoke(receipts_cli, ["verify", str(out), "--demo", "--json"])
    assert machine.exit_code == 1, machine.output
    verdict = json.loads(machine.stdout)
    assert (verdict["valid"], verdict["issued_by_system"], verdict["revoked"]) == (False, True, True)


def test_requests_without_the_form_items_keep_their_idempotency_fingerprint(api: Service) -> None:
    """A retry sent before the form items existed must still find its receipt: giving the
    defaults explicitly is the same request, giving another value is another one."""
    headers = {**api.auth("receipts:issue"), "Idempotency-Key": "form-items-1"}
    first = api.client.post("/v1/receipts", json=body(), headers=headers)
    same = api.client.post("/v1/receipts", json=body(dossier_sets=1, processing_working_days=True), headers=headers)
    assert first.status_code == same.status_code == 201 and same.headers["idempotent-replayed"] == "true"
    other = api.client.post("/v1/receipts", json=body(dossier_sets=2), headers=headers)
    assert other.status_code == 422 and other.json()["type"].endswith(":idempotency-key-reused")
