"""HTTP behaviour of /v1/auth and /v1/admin/users (docs/api.md)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import Depends

from api.deps import Principal
from api.routes.auth import require_step_up
from integrity.accounts import AccountService
from tests.auth.support import STRONG, rfc6238, secret_from_uri, step_of, wire_accounts

PROBLEM = "application/problem+json"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def svc(service: Any) -> Any:
    service.accounts = wire_accounts(service)
    return service


def _create(svc: Any, username: str = "alice", role: str = "officer", password: str = STRONG, **extra: Any) -> Any:
    return svc.client.post(
        "/v1/admin/users",
        json={"username": username, "password": password, "role": role, "reason": "new staff member", **extra},
        headers=svc.auth("admin"),
    )


def _login(svc: Any, username: str = "alice", password: str = STRONG, **extra: Any) -> Any:
    return svc.client.post("/v1/auth/login", json={"username": username, "password": password, **extra})


def _enrol(svc: Any, username: str = "alice") -> tuple[bytes, list[str], str]:
    assert _create(svc, username).status_code == 201
    first = _login(svc, username).json()
    assert first["enrolment_required"] is True
    enrol = svc.client.post("/v1/auth/totp/enroll", headers=_bearer(first["token"]))
    assert enrol.status_code == 200, enrol.text
    secret = secret_from_uri(enrol.json()["otpauth_uri"])
    done = svc.client.post(
        "/v1/auth/totp/confirm", json={"code": rfc6238(secret, step_of(svc.clock))}, headers=_bearer(first["token"])
    )
    assert done.status_code == 200, done.text
    svc.clock.advance(30)
    return secret, done.json()["recovery_codes"], done.json()["token"]


def _mfa_session(svc: Any, secret: bytes, username: str = "alice") -> str:
    step1 = _login(svc, username).json()
    assert step1 == {"mfa_required": True, "mfa_token": step1["mfa_token"], "enrolment_required": False}
    step2 = svc.client.post(
        "/v1/auth/mfa", json={"mfa_token": step1["mfa_token"], "code": rfc6238(secret, step_of(svc.clock))}
    )
    assert step2.status_code == 200, step2.text
    return step2.json()["token"]


def test_full_flow_login_enrol_logout_login_with_mfa(svc: Any) -> None:
    created = _create(svc)
    assert created.status_code == 201 and created.json()["username"] == "alice" and created.json()["mfa_required"]
    first = _login(svc).json()
    me = svc.client.get("/v1/auth/me", headers=_bearer(first["token"])).json()
    assert me["session_kind"] == "enrol" and me["mfa_enabled"] is False
    enrol = svc.client.post("/v1/auth/totp/enroll", headers=_bearer(first["token"])).json()
    assert enrol["otpauth_uri"].startswith("otpauth://totp/") and enrol["qr_svg"].startswith("<svg")
    secret = secret_from_uri(enrol["otpauth_uri"])
    done = svc.client.post(
        "/v1/auth/totp/confirm", json={"code": rfc6238(secret, step_of(svc.clock))}, headers=_bearer(first["token"])
    ).json()
    assert len(done["recovery_codes"]) == 10 and done["token"] != first["token"]
    assert svc.client.get("/v1/auth/me", headers=_bearer(first["token"])).status_code == 401
    assert svc.client.post("/v1/auth/logout", headers=_bearer(done["token"])).status_code == 204
    assert svc.client.get("/v1/auth/me", headers=_bearer(done["token"])).status_code == 401
    svc.clock.advance(30)
    token = _mfa_session(svc, secret)
    me = svc.client.get("/v1/auth/me", headers=_bearer(token)).json()
    assert me["mfa_enabled"] and me["session_kind"] == "full" and me["step_up_valid"] and not me["recovery_code_used"]
    events = svc.client.get("/v1/auth/events", headers=_bearer(token)).json()
    assert events[0]["action"] == "auth.login.succeeded"


def test_wrong_password_and_unknown_user_get_identical_401(svc: Any) -> None:
    _create(svc, "citizen1", "citizen")
    wrong = _login(svc, "citizen1", "not the right password")
    unknown = _login(svc, "nobody-here", "not the right password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.headers["content-type"] == unknown.headers["content-type"] == PROBLEM
    assert wrong.json() == unknown.json()
    assert "detail" not in wrong.json()


def test_locked_account_gives_429_with_retry_after_whatever_the_password(svc: Any) -> None:
    _create(svc, "citizen1", "citizen")
    for i in range(5):
        assert _login(svc, "citizen1", f"wrong password {i}").status_code == 401
    right = _login(svc, "citizen1", STRONG)
    wrong = _login(svc, "citizen1", "wrong once more")
    assert right.status_code == wrong.status_code == 429
    assert right.json() == wrong.json()
    assert right.headers.get("retry-after") == wrong.headers.get("retry-after") == "30"


def test_session_token_changes_at_login(svc: Any) -> None:
    _create(svc, "citizen1", "citizen")
    first = _login(svc, "citizen1").json()["token"]
    second = _login(svc, "citizen1").json()["token"]
    assert first != second and first.startswith("ses_")


def _operations(svc: Any) -> list[tuple[str, str]]:
    svc.app.openapi_schema = None
    paths = svc.app.openapi()["paths"]
    return [(m.upper(), p) for p, ops in paths.items() for m in ops if m in {"get", "post", "put", "patch", "delete"}]


# Bodies that pass validation, so that a refusal can only come from the token (a session route
# checks the session after the body; an empty body would be refused as invalid first).
_VALID_BODIES: dict[str, dict[str, Any]] = {
    "/v1/auth/totp/confirm": {"code": "000000"},
    "/v1/auth/password": {"current_password": STRONG, "new_password": STRONG + "x"},
    "/v1/auth/step-up/passkey": {"credential": {}},
    "/v1/me/passkeys": {"credential": {}, "name": "laptop"},
    "/v1/me/passkeys/{passkey_id}": {"name": "laptop"},
}


def test_half_logged_in_token_is_refused_on_every_route(svc: Any) -> None:
    secret, _, _ = _enrol(svc)
    mfa_token = _login(svc).json()["mfa_token"]
    _create(svc, "bob")
    enrol_only = _login(svc, "bob").json()["token"]
    guarded = 0
    for method, template in _operations(svc):
        if template in {"/v1/auth/login", "/v1/auth/mfa"}:
            continue
        path = re.sub(r"\{[^}]+\}", "alice", template)
        anonymous = svc.client.request(method, path, json={})
        if anonymous.status_code not in (401, 403):
            continue  # an open route (health, JWKS …): nothing to bypass
        guarded += 1
        body = _VALID_BODIES.get(template, {})
        with_mfa_token = svc.client.request(method, path, headers=_bearer(mfa_token), json=body)
        assert with_mfa_token.status_code in (401, 403), (method, path, with_mfa_token.status_code)
        if not template.startswith("/v1/auth/"):  # an enrolment session may enrol, see itself, log out
            with_enrol = svc.client.request(method, path, headers=_bearer(enrol_only), json=body)
            assert with_enrol.status_code in (401, 403), (method, path, with_enrol.status_code)
    assert guarded >= 10
    # The MFA token still works for what it is for, once.
    ok = svc.client.post("/v1/auth/mfa", json={"mfa_token": mfa_token, "code": rfc6238(secret, step_of(svc.clock))})
    assert ok.status_code == 200


def test_session_of_an_admin_person_reaches_admin_routes(svc: Any) -> None:
    _create(svc, "root", "admin", mfa_required=False)
    token = _login(svc, "root").json()["token"]
    created = svc.client.post(
        "/v1/admin/users",
        json={"username": "citizen9", "password": STRONG, "role": "citizen", "reason": "walk-in registration"},
        headers=_bearer(token),
    )
    assert created.status_code == 201
    accounts: AccountService = svc.accounts
    [entry] = [e for e in accounts.audit.entries() if e.action == "admin.user.created" and e.subject == "citizen9"]  # type: ignore[attr-defined]
    assert entry.actor == "user:root" and entry.data["reason"] == "walk-in registration"


def test_admin_routes_need_the_admin_scope(svc: Any) -> None:
    _create(svc, "citizen1", "citizen")
    token = _login(svc, "citizen1").json()["token"]
    body = {"username": "x1", "password": STRONG, "role": "citizen", "reason": "trying"}
    assert svc.client.post("/v1/admin/users", json=body, headers=_bearer(token)).status_code == 403
    assert svc.client.post("/v1/admin/users", json=body).status_code == 401
    assert svc.client.post("/v1/admin/users", json=body, headers=svc.auth("sign")).status_code == 403


def test_admin_unlock_and_mfa_reset(svc: Any) -> None:
    secret, _, _ = _enrol(svc)
    token = _mfa_session(svc, secret)
    for i in range(5):
        _login(svc, "alice", f"attacker guess {i}")
    assert _login(svc).status_code == 429
    unlock = svc.client.post(
        "/v1/admin/users/alice/unlock", json={"reason": "help desk call"}, headers=svc.auth("admin")
    )
    assert unlock.status_code == 200
    assert _login(svc).json()["mfa_required"] is True
    reset = svc.client.post("/v1/admin/users/Alice/mfa/reset", json={"reason": "phone lost"}, headers=svc.auth("admin"))
    assert reset.status_code == 200
    assert svc.client.get("/v1/auth/me", headers=_bearer(token)).status_code == 401
    assert _login(svc).json()["enrolment_required"] is True
    missing = svc.client.post("/v1/admin/users/ghost/unlock", json={"reason": "whatever"}, headers=svc.auth("admin"))
    assert missing.status_code == 404
    no_reason = svc.client.post("/v1/admin/users/alice/unlock", json={}, headers=svc.auth("admin"))
    assert no_reason.status_code == 422


def test_weak_password_problem_names_the_rule(svc: Any) -> None:
    answer = _create(svc, "citizen1", "citizen", password="password")
    assert answer.status_code == 422 and answer.json()["rule"] == "min_length"
    answer = _create(svc, "officer1", "officer", password="password")
    assert answer.status_code == 422 and answer.json()["rule"] == "blocklist"
    assert _create(svc, "citizen1", "citizen").status_code == 201
    assert _create(svc, "CITIZEN1", "citizen").status_code == 409


def test_require_step_up_guards_a_sensitive_route(svc: Any) -> None:
    @svc.app.post("/test/sign-personal")
    def _sign(principal: Principal = Depends(require_step_up)) -> dict[str, str]:
        return {"signer": principal.actor}

    secret, _, _ = _enrol(svc)
    token = _mfa_session(svc, secret)
    assert svc.client.post("/test/sign-personal", headers=_bearer(token)).json() == {"signer": "user:alice"}
    svc.clock.advance(301)
    late = svc.client.post("/test/sign-personal", headers=_bearer(token))
    assert late.status_code == 401 and late.json()["type"].endswith("step-up-required")
    assert "insufficient_user_authentication" in late.headers["www-authenticate"]
    stepped = svc.client.post(
        "/v1/auth/step-up", json={"code": rfc6238(secret, step_of(svc.clock))}, headers=_bearer(token)
    )
    assert stepped.status_code == 200
    assert svc.client.post("/test/sign-personal", headers=_bearer(token)).status_code == 401  # rotated away
    assert svc.client.post("/test/sign-personal", headers=_bearer(stepped.json()["token"])).status_code == 200
    assert svc.client.post("/test/sign-personal", headers=svc.auth("sign")).status_code == 401


def test_recovery_code_use_is_flagged_on_me(svc: Any) -> None:
    _, codes, _ = _enrol(svc)
    step1 = _login(svc).json()
    answer = svc.client.post("/v1/auth/mfa", json={"mfa_token": step1["mfa_token"], "recovery_code": codes[2]})
    me = svc.client.get("/v1/auth/me", headers=_bearer(answer.json()["token"])).json()
    assert me["recovery_code_used"] is True and me["recovery_codes_left"] == 9
    again = svc.client.post(
        "/v1/auth/mfa", json={"mfa_token": _login(svc).json()["mfa_token"], "recovery_code": codes[2]}
    )
    assert again.status_code == 401


def test_unknown_fields_and_oversized_secrets_are_refused(svc: Any) -> None:
    assert svc.client.post("/v1/auth/login", json={"username": "a", "password": "b", "admin": True}).status_code == 422
    assert svc.client.post("/v1/auth/login", json={"username": "a", "password": "x" * 2000}).status_code == 422
