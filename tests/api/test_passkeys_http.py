"""Passkeys over HTTP (docs/api.md): register, name, list and remove; a passkey as the second
factor at login and for step-up; the origin, the RP id, the challenge and the signature counter
checked; every failure counted on the account's lockout. Answers come from a software ES256
authenticator (tests/auth/passkey_support.py), verified by the service through py_webauthn."""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth.passkey_support import SoftAuthenticator, b64url, unb64url
from tests.auth.support import STRONG, rfc6238, secret_from_uri, step_of, wire_accounts
from tests.conftest import Service

RP_ID = "bhxh.example"
ORIGIN = "https://portal.bhxh.example"
PROBLEM = "application/problem+json"


@pytest.fixture
def svc(db_url: str) -> Any:
    service = Service(db_url, webauthn_rp_id=RP_ID, webauthn_origin=ORIGIN)
    wire_accounts(service)
    yield service
    service.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _login(svc: Any, username: str = "alice") -> str:
    step1 = svc.client.post("/v1/auth/login", json={"username": username, "password": STRONG})
    assert step1.status_code == 200 and step1.json()["mfa_required"], step1.text
    return str(step1.json()["mfa_token"])


def _enrolled(svc: Any, username: str = "alice") -> tuple[bytes, str]:
    """An account with TOTP; returns its secret and a session that has just passed it."""
    created = svc.client.post(
        "/v1/admin/users",
        json={"username": username, "password": STRONG, "role": "officer", "reason": "new staff member"},
        headers=svc.auth("admin"),
    )
    assert created.status_code == 201, created.text
    first = svc.client.post("/v1/auth/login", json={"username": username, "password": STRONG}).json()
    enrol = svc.client.post("/v1/auth/totp/enroll", headers=_bearer(first["token"])).json()
    secret = secret_from_uri(enrol["otpauth_uri"])
    done = svc.client.post(
        "/v1/auth/totp/confirm", json={"code": rfc6238(secret, step_of(svc.clock))}, headers=_bearer(first["token"])
    )
    assert done.status_code == 200, done.text
    svc.clock.advance(30)
    return secret, str(done.json()["token"])


def _register(svc: Any, token: str, name: str = "Điện thoại của Alice", **wrong: Any) -> tuple[SoftAuthenticator, Any]:
    device = SoftAuthenticator(RP_ID, ORIGIN)
    options = svc.client.post("/v1/me/passkeys/registration-options", headers=_bearer(token))
    assert options.status_code == 200, options.text
    answer = device.create(options.json()["public_key"], **wrong)
    return device, svc.client.post("/v1/me/passkeys", json={"credential": answer, "name": name}, headers=_bearer(token))


def _passkey_login(svc: Any, device: SoftAuthenticator, username: str = "alice", **wrong: Any) -> Any:
    mfa_token = _login(svc, username)
    options = svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": mfa_token})
    assert options.status_code == 200, options.text
    answer = device.get(options.json()["public_key"], **wrong)
    return svc.client.post("/v1/auth/mfa/passkey", json={"mfa_token": mfa_token, "credential": answer})


def _step_up(svc: Any, device: SoftAuthenticator, token: str, **wrong: Any) -> Any:
    options = svc.client.post("/v1/auth/step-up/passkey/options", headers=_bearer(token))
    assert options.status_code == 200, options.text
    answer = device.get(options.json()["public_key"], **wrong)
    return svc.client.post("/v1/auth/step-up/passkey", json={"credential": answer}, headers=_bearer(token))


def _events(svc: Any, token: str) -> list[dict[str, Any]]:
    answer = svc.client.get("/v1/auth/events", headers=_bearer(token))
    assert answer.status_code == 200
    return list(answer.json())


def _audit(svc: Any, action: str) -> list[dict[str, Any]]:
    """Every audit entry of ``action``, oldest first, from the audit log itself."""
    from sqlalchemy import select

    from audit.tables import audit_entries

    with svc.state.engine.connect() as conn:
        rows = conn.execute(
            select(audit_entries.c.subject, audit_entries.c.data)
            .where(audit_entries.c.action == action)
            .order_by(audit_entries.c.seq)
        ).all()
    import json

    return [{"subject": r.subject, **json.loads(r.data)} for r in rows]


def _list(svc: Any, token: str) -> list[dict[str, Any]]:
    answer = svc.client.get("/v1/me/passkeys", headers=_bearer(token))
    assert answer.status_code == 200, answer.text
    return list(answer.json())


# --- registration, names, list -----------------------------------------------------------


def test_register_name_list_and_sign_in_with_a_passkey(svc: Any) -> None:
    _, token = _enrolled(svc)
    options = svc.client.post("/v1/me/passkeys/registration-options", headers=_bearer(token)).json()["public_key"]
    assert options["rp"] == {"name": "BHXH", "id": RP_ID}
    assert options["user"]["name"] == "alice" and b"alice" not in unb64url(options["user"]["id"])
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none" and len(unb64url(options["challenge"])) == 32
    device = SoftAuthenticator(RP_ID, ORIGIN)
    answer = device.create(options)
    created = svc.client.post(
        "/v1/me/passkeys", json={"credential": answer, "name": "  Điện thoại  "}, headers=_bearer(token)
    )
    assert created.status_code == 201, created.text
    passkey = created.json()
    assert passkey["name"] == "Điện thoại" and passkey["transports"] == ["internal", "hybrid"]
    assert passkey["flagged_clone"] is False and passkey["last_used_at"] is None
    renamed = svc.client.patch(
        f"/v1/me/passkeys/{passkey['passkey_id']}", json={"name": "Khóa bảo mật"}, headers=_bearer(token)
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "Khóa bảo mật"
    assert [p["name"] for p in _list(svc, token)] == ["Khóa bảo mật"]
    # The next registration excludes the authenticator that already holds a passkey.
    again = svc.client.post("/v1/me/passkeys/registration-options", headers=_bearer(token)).json()["public_key"]
    assert [c["id"] for c in again["excludeCredentials"]] == [b64url(device.credential_id)]

    assert svc.client.post("/v1/auth/logout", headers=_bearer(token)).status_code == 204
    forged = svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": "mfa_" + "x" * 43})
    assert forged.status_code == 401 and forged.json()["type"].endswith(":invalid-credentials")
    mfa_token = _login(svc)
    request = svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": mfa_token}).json()["public_key"]
    assert request["rpId"] == RP_ID and request["userVerification"] == "preferred"
    assert [c["id"] for c in request["allowCredentials"]] == [b64url(device.credential_id)]
    signed = svc.client.post("/v1/auth/mfa/passkey", json={"mfa_token": mfa_token, "credential": device.get(request)})
    assert signed.status_code == 200, signed.text
    session = signed.json()["token"]
    me = svc.client.get("/v1/auth/me", headers=_bearer(session)).json()
    assert me["session_kind"] == "full" and me["step_up_valid"] is True
    events = _events(svc, session)
    assert events[0]["action"] == "auth.login.succeeded" and events[0]["data"]["method"] == "password+passkey"
    assert events[1]["action"] == "auth.passkey.used" and events[1]["data"]["purpose"] == "login"
    actions = [e["action"] for e in events]
    assert {"auth.passkey.registered", "auth.passkey.renamed"} <= set(actions)
    (listed,) = _list(svc, session)
    assert listed["last_used_at"] is not None
    # The name is personal data: in the erasable part of the entry, not in its data.
    registered = _audit(svc, "auth.passkey.registered")
    assert registered[0]["subject"] == "alice" and "name" not in registered[0]


def test_a_registration_answer_from_another_origin_or_rp_or_without_verification_stores_nothing(svc: Any) -> None:
    _, token = _enrolled(svc)
    for wrong, reason in (
        ({"origin": "https://portal.bhxh.example.evil.test"}, "passkey_wrong_origin"),
        ({"rp_id": "evil.test"}, "passkey_wrong_rp_id"),
        ({"uv": False}, "passkey_user_not_verified"),
    ):
        _, refused = _register(svc, token, **wrong)
        assert refused.status_code == 422 and refused.headers["content-type"] == PROBLEM, refused.text
        assert refused.json()["type"].endswith(":passkey-rejected")
        assert _audit(svc, "auth.passkey.registration_failed")[-1]["reason"] == reason
    assert _list(svc, token) == []


def test_a_registration_needs_totp_and_a_fresh_second_factor_and_one_use_of_its_challenge(svc: Any) -> None:
    created = svc.client.post(
        "/v1/admin/users",
        json={"username": "bob", "password": STRONG, "role": "officer", "reason": "new staff member"},
        headers=svc.auth("admin"),
    )
    assert created.status_code == 201
    enrol_only = svc.client.post("/v1/auth/login", json={"username": "bob", "password": STRONG}).json()["token"]
    refused = svc.client.post("/v1/me/passkeys/registration-options", headers=_bearer(enrol_only))
    assert refused.status_code == 401  # an enrolment-only session is no session here
    _, token = _enrolled(svc)
    device, first = _register(svc, token)
    assert first.status_code == 201
    # The same answer again: its challenge is spent.
    options = svc.client.post("/v1/me/passkeys/registration-options", headers=_bearer(token)).json()["public_key"]
    stale = device.create({**options, "challenge": b64url(b"\x00" * 32)})
    replay = svc.client.post("/v1/me/passkeys", json={"credential": stale, "name": "again"}, headers=_bearer(token))
    assert replay.status_code == 422
    assert _audit(svc, "auth.passkey.registration_failed")[-1]["reason"] == "passkey_challenge_unknown"
    # The same authenticator under a new challenge: already registered.
    twice = svc.client.post(
        "/v1/me/passkeys", json={"credential": device.create(options), "name": "again"}, headers=_bearer(token)
    )
    assert twice.status_code == 409 and twice.json()["type"].endswith(":passkey-already-registered")
    bad_name = svc.client.post(
        "/v1/me/passkeys", json={"credential": device.create(options), "name": "a\u0000b"}, headers=_bearer(token)
    )
    assert bad_name.status_code == 422 and bad_name.json()["type"].endswith(":invalid-passkey-name")
    svc.clock.advance(301)  # past the step-up window
    late = svc.client.post("/v1/me/passkeys/registration-options", headers=_bearer(token))
    assert late.status_code == 401 and late.json()["type"].endswith(":step-up-required")
    assert len(_list(svc, token)) == 1


# --- the second factor at login --------------------------------------------------------------


@pytest.mark.parametrize(
    ("wrong", "reason"),
    [
        ({"origin": "https://bhxh-portal.example"}, "passkey_wrong_origin"),
        ({"rp_id": "bhxh-portal.example"}, "passkey_wrong_rp_id"),
    ],
)
def test_an_assertion_for_another_origin_or_rp_id_is_refused(svc: Any, wrong: dict[str, str], reason: str) -> None:
    _, token = _enrolled(svc)
    device, _ = _register(svc, token)
    refused = _passkey_login(svc, device, **wrong)
    assert refused.status_code == 401 and refused.json()["type"].endswith(":invalid-credentials")
    assert "detail" not in refused.json()
    failed = _audit(svc, "auth.login.failed")[-1]
    assert failed["reason"] == reason and failed["stage"] == "mfa"
    assert _passkey_login(svc, device).status_code == 200


def test_a_replayed_assertion_is_refused_and_a_login_answer_is_no_step_up(svc: Any) -> None:
    _, token = _enrolled(svc)
    device, _ = _register(svc, token)
    mfa_token = _login(svc)
    options = svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": mfa_token}).json()["public_key"]
    answer = device.get(options)
    assert (
        svc.client.post("/v1/auth/mfa/passkey", json={"mfa_token": mfa_token, "credential": answer}).status_code == 200
    )
    # The same answer for a new login: its challenge was spent.
    again = _login(svc)
    svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": again})
    replay = svc.client.post("/v1/auth/mfa/passkey", json={"mfa_token": again, "credential": answer})
    assert replay.status_code == 401
    assert _audit(svc, "auth.login.failed")[-1]["reason"] == "passkey_challenge_unknown"
    # An answer to a login challenge, offered as a step-up: bound to its purpose, refused.
    fresh = _login(svc)
    login_options = svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": fresh}).json()["public_key"]
    crossed = svc.client.post(
        "/v1/auth/step-up/passkey", json={"credential": device.get(login_options)}, headers=_bearer(token)
    )
    assert crossed.status_code == 401
    assert _audit(svc, "auth.mfa.stepup.failed")[-1]["reason"] == "passkey_challenge_unknown"


def test_a_counter_that_goes_back_flags_the_passkey_as_cloned(svc: Any) -> None:
    _, token = _enrolled(svc)
    device, _ = _register(svc, token)
    assert _passkey_login(svc, device, count=5).status_code == 200
    # A forged answer with a low counter (bad signature) proves nothing and flags nothing.
    mfa_token = _login(svc)
    options = svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": mfa_token}).json()["public_key"]
    forged = device.get(options, count=2)
    forged["response"]["signature"] = b64url(unb64url(forged["response"]["signature"])[:-2] + b"\x00\x00")
    refused = svc.client.post("/v1/auth/mfa/passkey", json={"mfa_token": mfa_token, "credential": forged})
    assert refused.status_code == 401 and _audit(svc, "auth.passkey.clone_suspected") == []
    assert _list(svc, token)[0]["flagged_clone"] is False
    # A genuine signature with a counter not above 5: a second copy of the key signed.
    cloned = _passkey_login(svc, device, count=5)
    assert cloned.status_code == 401
    (suspected,) = _audit(svc, "auth.passkey.clone_suspected")
    assert suspected["stored_count"] == 5 and suspected["received_count"] == 5 and suspected["purpose"] == "login"
    assert _audit(svc, "auth.login.failed")[-1]["reason"] == "passkey_clone_suspected"
    assert _list(svc, token)[0]["flagged_clone"] is True
    # No longer offered: with no other passkey, a login cannot ask for one.
    alone = svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": _login(svc)})
    assert alone.status_code == 409
    # Refused from then on, whatever the counter, even answering a challenge meant for another.
    second, _ = _register(svc, token, name="Khóa thứ hai")
    mfa_token = _login(svc)
    options = svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": mfa_token}).json()["public_key"]
    assert [c["id"] for c in options["allowCredentials"]] == [b64url(second.credential_id)]
    late = device.get(options, count=50)
    assert svc.client.post("/v1/auth/mfa/passkey", json={"mfa_token": mfa_token, "credential": late}).status_code == 401
    assert _audit(svc, "auth.login.failed")[-1]["reason"] == "passkey_flagged_clone"


def test_an_authenticator_without_a_counter_is_not_taken_for_a_clone(svc: Any) -> None:
    _, token = _enrolled(svc)
    device = SoftAuthenticator(RP_ID, ORIGIN, counting=False)
    options = svc.client.post("/v1/me/passkeys/registration-options", headers=_bearer(token)).json()["public_key"]
    made = svc.client.post(
        "/v1/me/passkeys", json={"credential": device.create(options), "name": "synced"}, headers=_bearer(token)
    )
    assert made.status_code == 201
    for _ in range(3):
        assert _passkey_login(svc, device).status_code == 200
    assert _audit(svc, "auth.passkey.clone_suspected") == []


# --- step-up and removal -----------------------------------------------------------------------


def test_removal_needs_a_step_up_which_a_user_verifying_passkey_gives(svc: Any) -> None:
    _, token = _enrolled(svc)
    device, made = _register(svc, token)
    passkey_id = made.json()["passkey_id"]
    svc.clock.advance(301)
    refused = svc.client.delete(f"/v1/me/passkeys/{passkey_id}", headers=_bearer(token))
    assert refused.status_code == 401 and refused.json()["type"].endswith(":step-up-required")
    assert len(_list(svc, token)) == 1
    assert _audit(svc, "auth.passkey.removal_refused")[-1]["reason"] == "step_up_required"
    options = svc.client.post("/v1/auth/step-up/passkey/options", headers=_bearer(token)).json()["public_key"]
    assert options["userVerification"] == "required"
    unverified = svc.client.post(
        "/v1/auth/step-up/passkey", json={"credential": device.get(options, uv=False)}, headers=_bearer(token)
    )
    assert unverified.status_code == 401
    assert _audit(svc, "auth.mfa.stepup.failed")[-1]["reason"] == "passkey_user_not_verified"
    stepped = _step_up(svc, device, token)
    assert stepped.status_code == 200, stepped.text
    token = stepped.json()["token"]
    assert svc.client.get("/v1/auth/me", headers=_bearer(token)).json()["step_up_valid"] is True
    assert _audit(svc, "auth.mfa.stepup.succeeded")[-1]["method"] == "passkey"
    unknown = svc.client.delete("/v1/me/passkeys/" + "0" * 32, headers=_bearer(token))
    assert unknown.status_code == 404 and unknown.json()["type"].endswith(":passkey-not-found")
    assert svc.client.delete(f"/v1/me/passkeys/{passkey_id}", headers=_bearer(token)).status_code == 204
    assert _list(svc, token) == []
    assert _audit(svc, "auth.passkey.removed")[-1]["passkey_id"] == passkey_id
    # Gone: the login cannot ask for it any more.
    mfa_token = _login(svc)
    gone = svc.client.post("/v1/auth/mfa/passkey/options", json={"mfa_token": mfa_token})
    assert gone.status_code == 409 and gone.json()["type"].endswith(":mfa-not-enrolled")


def test_another_persons_passkey_is_neither_listed_renamed_removed_nor_accepted(svc: Any) -> None:
    _, alice = _enrolled(svc, "alice")
    _, bob = _enrolled(svc, "bob")
    device, made = _register(svc, alice)
    passkey_id = made.json()["passkey_id"]
    assert _list(svc, bob) == []
    assert (
        svc.client.patch(f"/v1/me/passkeys/{passkey_id}", json={"name": "mine"}, headers=_bearer(bob)).status_code
        == 404
    )
    assert svc.client.delete(f"/v1/me/passkeys/{passkey_id}", headers=_bearer(bob)).status_code == 404
    _register(svc, bob)
    # Alice's authenticator answering Bob's login challenge.
    assert _passkey_login(svc, device, "bob").status_code == 401
    assert _audit(svc, "auth.login.failed")[-1]["reason"] in {"passkey_unknown", "passkey_wrong_user"}


def test_an_admin_reset_of_the_second_factors_removes_the_passkeys(svc: Any) -> None:
    _, token = _enrolled(svc)
    _register(svc, token)
    reset = svc.client.post("/v1/admin/users/alice/mfa/reset", json={"reason": "lost phone"}, headers=svc.auth("admin"))
    assert reset.status_code == 200, reset.text
    assert _audit(svc, "admin.user.mfa_reset")[-1]["passkeys"] == 1
    first = svc.client.post("/v1/auth/login", json={"username": "alice", "password": STRONG}).json()
    assert first["enrolment_required"] is True  # TOTP again first; the passkey is gone


# --- lockout -------------------------------------------------------------------------------------


def test_passkey_failures_at_login_count_on_the_account_lockout(svc: Any) -> None:
    _, token = _enrolled(svc)
    device, _ = _register(svc, token)
    for _ in range(5):
        assert _passkey_login(svc, device, origin="https://phish.example").status_code == 401
    blocked = svc.client.post("/v1/auth/login", json={"username": "alice", "password": STRONG})
    assert blocked.status_code == 429 and blocked.headers["retry-after"] == "30"
    locked = _audit(svc, "auth.locked")
    assert [(e["subject"], e["failures"]) for e in locked] == [("alice", 5)]
    reasons = [e["reason"] for e in _audit(svc, "auth.login.failed")]
    assert reasons == ["passkey_wrong_origin"] * 5 + ["throttled_account"]


def test_a_right_passkey_during_a_delay_gets_429_and_is_never_checked(svc: Any) -> None:
    _, token = _enrolled(svc)
    device, _ = _register(svc, token)
    # Step-ups count on the account like codes: five wrong ones start a 30 s delay.
    for _ in range(5):
        assert _step_up(svc, device, token, uv=False).status_code == 401
    options = svc.client.post("/v1/auth/step-up/passkey/options", headers=_bearer(token)).json()["public_key"]
    right = device.get(options)
    blocked = svc.client.post("/v1/auth/step-up/passkey", json={"credential": right}, headers=_bearer(token))
    assert blocked.status_code == 429 and blocked.headers["retry-after"] == "30"
    assert _audit(svc, "auth.passkey.used") == []
    locked = _audit(svc, "auth.locked")
    assert locked and locked[-1]["subject"] == "alice" and locked[-1]["failures"] == 5
    # The delay over, the same answer is checked: its challenge was never spent.
    svc.clock.advance(31)
    passed = svc.client.post("/v1/auth/step-up/passkey", json={"credential": right}, headers=_bearer(token))
    assert passed.status_code == 200, passed.text
    assert passed.json()["token"] != token


def test_the_openapi_description_lists_the_passkey_routes(svc: Any) -> None:
    paths = svc.client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/me/passkeys",
        "/v1/me/passkeys/{passkey_id}",
        "/v1/auth/mfa/passkey",
        "/v1/auth/step-up/passkey",
    } <= set(paths)
    assert "429" in paths["/v1/auth/mfa/passkey"]["post"]["responses"]
