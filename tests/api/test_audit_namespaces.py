"""The log's namespaces belong to the service: a client with ``audit:append`` writes only under
``ext.<its name>.`` and always as itself; an erasure marker counts only when the service wrote
it naming the approving admin and the reason. Through the real routes and CLI, on both back
ends."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.cli_audit import app as audit_cli
from audit.entry import Entry
from audit.export import verify_export
from audit.tables import audit_pii
from audit.verify_report import Fault
from integrity.app_state import AppState, build_state
from tests.api.operator_support import OPERATOR_LOGIN, Admin, enrolled_admin
from tests.auth.support import STRONG, wire_accounts
from tests.conftest import DEMO_KEYS, Service, demo_settings

NAME = "dvc-portal"
OWN = f"ext.{NAME}."


class Caller:
    def __init__(self, service: Service, name: str = NAME, scopes: tuple[str, ...] = ("audit:append",)) -> None:
        issued = service.state.clients.create(name, list(scopes))
        self.service = service
        self.actor = f"client:{issued.client.client_id}"
        self.headers = {"Authorization": f"Bearer {issued.api_key}"}

    def post(self, body: dict[str, Any]) -> Any:
        return self.service.client.post("/v1/audit/events", json=body, headers=self.headers)


@pytest.fixture
def portal(service: Service) -> Caller:
    return Caller(service)


def _problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:bhxh-integrity:problem:{slug}"
    return body


def _new_entries(service: Service, since: int) -> list[Entry]:
    return service.state.audit.entries(since, service.state.audit.size())


# ------------------------------------------------------------------ the append route


@pytest.mark.parametrize(
    "body",
    [
        {
            "action": "audit.pii.erased",
            "subject": "audit:0",
            "data": {"seq": 0, "reason": "r", "approved_by": "user:a"},
        },
        {"action": "auth.login.succeeded", "subject": "alice", "data": {"method": "totp"}},
        {"action": "admin.user.unlocked", "subject": "alice"},
        {"action": "ext.otherclient.x", "subject": "s"},
        {"action": "ext.dvc-portalx.y", "subject": "s"},  # a longer name sharing the prefix
        {"action": "ext.dvc.portal.y", "subject": "s"},
        {"action": "exchange.accepted", "subject": "s"},
    ],
    ids=["erasure-marker", "auth-event", "admin-event", "other-client", "prefix-of-a-name", "dotted-name", "exchange"],
)
def test_an_action_outside_the_own_namespace_is_refused_403_and_only_the_refusal_is_logged(
    service: Service, portal: Caller, body: dict[str, Any]
) -> None:
    before = service.state.audit.size()
    problem = _problem(portal.post(body), 403, "audit-namespace-reserved")
    assert OWN in problem["detail"] and problem["allowed_prefix"] == OWN
    # The event itself is not written; the service logs the refusal under its own name.
    new = _new_entries(service, before)
    assert len(new) == 1
    refusal = new[0]
    assert (refusal.actor, refusal.action, refusal.subject) == ("system", "audit.append.refused", portal.actor)
    assert refusal.data == {
        "reason": "reserved-namespace",
        "client": NAME,
        "action": body["action"],
        "allowed_prefix": OWN,
    }
    assert refusal.pii is None  # nothing of the refused event's subject, data or personal data


@pytest.mark.parametrize(
    "action",
    [f"{OWN}Bad", f"{OWN}a b", f"{OWN}a/b", f"{OWN}ý", f"{OWN}a.", f"{OWN}a..b", f"{OWN}x\n", OWN + "a" * 100],
    ids=["capital", "space", "slash", "non-ascii", "trailing-dot", "empty-segment", "newline", "too-long"],
)
def test_an_action_with_a_bad_character_is_refused_422_and_nothing_is_written(
    service: Service, portal: Caller, action: str
) -> None:
    before = service.state.audit.size()
    problem = _problem(portal.post({"action": action, "subject": "s"}), 422, "validation-error")
    assert problem["errors"][0]["loc"] == ["body", "action"]
    assert service.state.audit.size() == before


def test_a_caller_chosen_actor_is_refused_422_and_nothing_is_written(service: Service, portal: Caller) -> None:
    before = service.state.audit.size()
    for actor in ("alice", "user:alice", "system", portal.actor):
        for action in ("auth.login.succeeded", f"{OWN}dossier.received"):
            response = portal.post({"action": action, "subject": "alice", "actor": actor})
            problem = _problem(response, 422, "validation-error")
            assert "actor is not accepted" in problem["detail"]
    assert service.state.audit.size() == before


def test_an_event_in_the_own_namespace_is_written_as_the_authenticated_client(service: Service, portal: Caller) -> None:
    response = portal.post({"action": f"{OWN}dossier.received", "subject": "000.00.31.H29-251123-0001"})
    assert response.status_code == 201, response.text
    seq = response.json()["seq"]
    assert response.json()["actor"] == portal.actor
    stored = service.state.audit.entry(seq)
    assert (stored.actor, stored.action) == (portal.actor, f"{OWN}dossier.received")
    # Another client of the same scope gets its own namespace, not this one.
    other = Caller(service, "otherclient")
    assert other.post({"action": "ext.otherclient.x", "subject": "s"}).status_code == 201
    _problem(other.post({"action": f"{OWN}dossier.received", "subject": "s"}), 403, "audit-namespace-reserved")


@pytest.mark.parametrize("name", ["Cổng DVC", "Portal", "dvc.portal", "-portal", "p" * 41])
def test_a_client_whose_name_cannot_be_a_namespace_cannot_append(service: Service, name: str) -> None:
    caller = Caller(service, name)
    before = service.state.audit.size()
    problem = _problem(caller.post({"action": "ext.portal.x", "subject": "s"}), 403, "audit-namespace-reserved")
    assert repr(name) in problem["detail"] and problem["allowed_prefix"] is None
    new = _new_entries(service, before)
    assert [(e.actor, e.action, e.data["reason"]) for e in new] == [
        ("system", "audit.append.refused", "client-name-unusable")
    ]


# ------------------------------------------------------------------ "My security"


def _events_table(html: str) -> str:
    match = re.search(r'<table id="events">.*?</table>', html, re.S)
    assert match
    return match.group(0)


def test_a_client_cannot_put_events_on_a_persons_security_page(service: Service, portal: Caller) -> None:
    accounts = wire_accounts(service)
    accounts.create_user("alice", STRONG, "citizen", actor="user:root", reason="new account")
    browser = TestClient(service.app, base_url="https://testserver", follow_redirects=False)
    try:
        login = browser.get("/login?lang=en")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf
        signed = browser.post("/login", data={"csrf": csrf.group(1), "username": "alice", "password": STRONG})
        assert signed.status_code == 303 and signed.headers["location"] == "/account/security"
        page = browser.get("/account/security")
        assert page.status_code == 200 and "Signed in" in page.text
        shown = _events_table(page.text)
        forged = [
            {"action": "auth.login.succeeded", "subject": "alice", "data": {"method": "FORGED-BY-CLIENT"}},
            {"action": "auth.mfa.disabled", "subject": "alice", "data": {"reason": "FORGED-BY-CLIENT"}},
            {"action": "admin.user.unlocked", "subject": "alice", "data": {"reason": "FORGED-BY-CLIENT"}},
        ]
        for body in forged:
            _problem(portal.post(body), 403, "audit-namespace-reserved")
        # The client's own events about alice are allowed, and stay off her page.
        own = {"action": f"{OWN}auth.login.succeeded", "subject": "alice", "data": {"method": "FORGED-BY-CLIENT"}}
        assert portal.post(own).status_code == 201
        after = browser.get("/account/security").text
        assert _events_table(after) == shown and "FORGED-BY-CLIENT" not in after
    finally:
        browser.close()


# ------------------------------------------------------------------ erasure markers


def _pii_rows(service: Service) -> int:
    with service.state.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_pii)).scalar_one())


def _export(service: Service, tmp_path: Path, *, include_pii: bool) -> Path:
    admin = service.auth("audit:read", "admin")
    response = service.client.get(f"/v1/audit/export?include_pii={str(include_pii).lower()}", headers=admin)
    assert response.status_code == 200
    path = tmp_path / f"export-{include_pii}.ndjson"
    path.write_bytes(response.content)
    return path


FORGED_MARKERS = {
    "by-a-client": ("client:0123456789abcdef", {"approved_by": "user:admin", "reason": "subject request"}),
    "by-a-person": ("user:mallory", {"approved_by": "user:admin", "reason": "subject request"}),
    "no-approver": ("system", {"reason": "subject request"}),
    "service-approves-itself": ("system", {"approved_by": "system", "reason": "subject request"}),
    "no-reason": ("system", {"approved_by": "user:admin"}),
    "blank-reason": ("system", {"approved_by": "user:admin", "reason": "  "}),
}


@pytest.mark.parametrize("forged", list(FORGED_MARKERS))
def test_an_export_with_a_forged_erasure_marker_fails_offline_verification_at_the_erased_entry(
    service: Service, portal: Caller, tmp_path: Path, forged: str
) -> None:
    kept = portal.post({"action": f"{OWN}receipt.issued", "subject": "r1", "pii": {"name": "Lê Thị E"}}).json()["seq"]
    seq = portal.post({"action": f"{OWN}receipt.issued", "subject": "r2", "pii": {"name": "Đỗ Văn D"}}).json()["seq"]
    actor, extra = FORGED_MARKERS[forged]
    # A marker no route can write any more (an insider's, or an old caller's), and the data gone.
    service.state.audit.record(actor, "audit.pii.erased", f"audit:{seq}", {"seq": seq, **extra})
    with service.state.engine.begin() as conn:
        conn.execute(audit_pii.delete().where(audit_pii.c.seq == seq))
    vkeys = service.client.get("/v1/audit/public-key").text

    report = verify_export(_export(service, tmp_path, include_pii=True), vkeys)
    assert not report.ok and report.pii_erased == 0 and report.pii_checked == 1
    assert [(f.kind, f.seq) for f in report.faults] == [(Fault.PII_MISMATCH, seq)], report.faults
    assert kept != seq
    live = service.client.get("/v1/audit/report", headers=service.auth("audit:read")).json()
    assert live["ok"] is False and live["fault"] == "pii_mismatch" and live["first_bad_seq"] == seq
    # Without personal data in the export nothing can be checked, but the marker is not counted.
    plain = verify_export(_export(service, tmp_path, include_pii=False), vkeys)
    assert plain.pii_erased == 0 and plain.pii_unavailable == 2


def test_an_erasure_over_http_is_the_services_marker_naming_the_admin_and_verifies(
    service: Service, portal: Caller, tmp_path: Path
) -> None:
    seq = portal.post({"action": f"{OWN}receipt.issued", "subject": "r", "pii": {"name": "Đỗ Văn D"}}).json()["seq"]
    admin = Caller(service, "admin-console", ("admin",))
    response = service.client.post(
        f"/v1/admin/audit/pii/{seq}/erase", json={"reason": "data subject request"}, headers=admin.headers
    )
    assert response.status_code == 200
    marker = service.state.audit.entry(response.json()["erasure_seq"])
    assert (marker.actor, marker.action) == ("system", "audit.pii.erased")
    assert marker.data == {"seq": seq, "approved_by": admin.actor, "reason": "data subject request"}
    report = verify_export(
        _export(service, tmp_path, include_pii=True), service.client.get("/v1/audit/public-key").text
    )
    assert report.ok and report.pii_erased == 1


# ------------------------------------------------------------------ the erase-pii command


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str | None]:
    return {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_KEYS_DIR": str(DEMO_KEYS),
        "BHXH_DEMO": "1",
        "BHXH_LOG_LEVEL": "ERROR",
        "LOGNAME": OPERATOR_LOGIN,  # the OS login the command records
        "SUDO_USER": None,
    }


@pytest.fixture
def state(db_url: str) -> Iterator[AppState]:
    st = build_state(demo_settings(db_url))
    st.audit.ensure_genesis()
    st.accounts.create_user("an", STRONG, "officer", actor="operator:setup", reason="officer")
    yield st
    st.close()


@pytest.fixture
def hoa(db_url: str, state: AppState) -> Admin:
    return enrolled_admin(db_url, "hoa")


def _run(env: dict[str, str | None], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(audit_cli, list(args), env=env)
    return result.exit_code, result.output


def _personal_entry(state: AppState) -> int:
    return state.audit.record("client:0123456789abcdef", f"{OWN}receipt.issued", "r", {}, {"name": "Hồ Văn B"})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reason", "data subject request"], "--approved-by"),
        (["--approved-by", "hoa"], "--reason"),
        (["--approved-by", "nobody", "--code", "123456", "--reason", "data subject request"], "no account 'nobody'"),
        (["--approved-by", "an", "--code", "123456", "--reason", "data subject request"], "only an administrator"),
        (["--approved-by", "hoa", "--reason", "   "], "needs a reason"),
        (["--approved-by", "hoa", "--reason", "data subject request"], "TOTP code of the administrator 'hoa'"),
        (["--approved-by", "hoa", "--code", "12345", "--reason", "data subject request"], "wrong or already used"),
    ],
    ids=["no-approver", "no-reason", "unknown-approver", "approver-not-admin", "blank-reason", "no-code", "wrong-code"],
)
def test_erase_pii_needs_an_admin_approver_and_a_reason_else_nothing_is_erased(
    env: dict[str, str | None], state: AppState, hoa: Admin, args: list[str], message: str
) -> None:
    seq = _personal_entry(state)
    before = state.audit.size()
    with state.engine.connect() as conn:
        personal = conn.execute(select(audit_pii.c.seq)).scalars().all()
    code, out = _run(env, "erase-pii", str(seq), *args)
    assert code == 2 and message in " ".join(out.split()), out
    # Nothing is erased; a wrong code is the one thing logged (and counted on hoa's lockout).
    logged = [e.action for e in state.audit.entries(before, state.audit.size())]
    assert logged == (["auth.operator.refused"] if "--code" in args and "hoa" in args else [])
    with state.engine.connect() as conn:
        assert conn.execute(select(audit_pii.c.seq)).scalars().all() == personal and seq in personal


def test_a_genuine_erasure_by_the_cli_verifies_offline(
    env: dict[str, str | None], state: AppState, hoa: Admin, tmp_path: Path
) -> None:
    seq = _personal_entry(state)
    confirm = ["--approved-by", "Hoa", "--code", hoa.code()]
    code, out = _run(env, "erase-pii", str(seq), *confirm, "--reason", "data subject request", "--json")
    assert code == 0, out
    marker = state.audit.entry(json.loads(out)["erasure_seq"])
    # Written by the operator at the shell, naming the admin whose code confirmed it.
    assert (marker.actor, marker.action) == (f"operator:{OPERATOR_LOGIN}", "audit.pii.erased")
    assert marker.data == {"seq": seq, "approved_by": "user:hoa", "reason": "data subject request"}
    path = tmp_path / "export.ndjson"
    assert _run(env, "export", "--include-pii", "--out", str(path))[0] == 0
    report = verify_export(path, (DEMO_KEYS / "audit-log.vkey").read_text())
    assert report.ok and report.pii_erased == 1 and report.entries_checked == state.audit.size()
    code, out = _run(env, "verify", "--export", str(path), "--public-key", str(DEMO_KEYS / "audit-log.vkey"), "--json")
    assert code == 0 and json.loads(out)["pii"]["erased"] == 1


def test_the_erase_pii_help_names_the_approver_and_the_reason(env: dict[str, str | None]) -> None:
    code, out = _run(env, "erase-pii", "--help")
    assert code == 0 and "--approved-by" in out and "--reason" in out and "administrator" in out
