"""Lockout through the real routes: bursts released together at the end of a delay get one
evaluation and 429 with Retry-After for the rest, on /v1/auth and on the web pages' forms."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.auth.support import STRONG, CountingHasher, rfc6238, secret_from_uri, step_of, wire_accounts

BURST = 50
NEW_PASSWORD = "another long passphrase here"


@pytest.fixture
def svc(service: Any) -> Any:
    service.hasher = CountingHasher()
    service.accounts = wire_accounts(service, hasher=service.hasher)
    return service


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(svc: Any, username: str, role: str) -> None:
    created = svc.client.post(
        "/v1/admin/users",
        json={"username": username, "password": STRONG, "role": role, "reason": "new staff member"},
        headers=svc.auth("admin"),
    )
    assert created.status_code == 201, created.text


def _login(svc: Any, username: str, password: str) -> Any:
    return svc.client.post("/v1/auth/login", json={"username": username, "password": password})


def _burst(send: Callable[[int], Any], n: int = BURST) -> list[Any]:
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait(30)
        return send(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _one_401_rest_429(responses: list[Any], retry_after: str) -> None:
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] + [429] * (len(responses) - 1)
    assert {r.headers.get("retry-after") for r in responses if r.status_code == 429} == {retry_after}


def test_login_burst_at_the_end_of_a_delay_reaches_argon2_once(svc: Any) -> None:
    _create(svc, "citizen1", "citizen")
    for i in range(5):
        assert _login(svc, "citizen1", f"wrong password {i}").status_code == 401
    assert svc.hasher.verifications == 5
    svc.clock.advance(30)
    _one_401_rest_429(_burst(lambda i: _login(svc, "citizen1", f"burst guess {i:03d}")), "60")
    assert svc.hasher.verifications == 6
    right = _login(svc, "citizen1", STRONG)
    assert right.status_code == 429 and right.headers["retry-after"] == "60"
    assert svc.hasher.verifications == 6


def test_password_change_burst_reaches_argon2_once_and_the_right_password_waits(svc: Any) -> None:
    _create(svc, "citizen1", "citizen")
    token = _login(svc, "citizen1", STRONG).json()["token"]
    before = svc.hasher.verifications

    def change(current: str) -> Any:
        body = {"current_password": current, "new_password": NEW_PASSWORD}
        return svc.client.post("/v1/auth/password", json=body, headers=_bearer(token))

    for i in range(5):
        assert change(f"wrong current {i}").status_code == 401
    right = change(STRONG)
    assert right.status_code == 429 and right.headers["retry-after"] == "30"
    assert right.json()["type"].endswith("too-many-attempts")
    assert svc.hasher.verifications == before + 5
    svc.clock.advance(30)
    _one_401_rest_429(_burst(lambda i: change(f"burst guess {i:03d}")), "60")
    assert svc.hasher.verifications == before + 6
    # Nothing was changed: the old password still signs in once the delay is over.
    svc.clock.advance(60)
    assert _login(svc, "citizen1", STRONG).status_code == 200


def test_step_up_burst_checks_one_code(svc: Any) -> None:
    _create(svc, "alice", "officer")
    first = _login(svc, "alice", STRONG).json()["token"]
    enrol = svc.client.post("/v1/auth/totp/enroll", headers=_bearer(first)).json()
    secret = secret_from_uri(enrol["otpauth_uri"])
    done = svc.client.post(
        "/v1/auth/totp/confirm", json={"code": rfc6238(secret, step_of(svc.clock))}, headers=_bearer(first)
    )
    token = done.json()["token"]
    svc.clock.advance(30)

    def wrong() -> str:
        valid = {rfc6238(secret, step_of(svc.clock) + d) for d in (-1, 0, 1)}
        return next(c for c in ("000000", "111111", "222222") if c not in valid)

    def step_up(code: str) -> Any:
        return svc.client.post("/v1/auth/step-up", json={"code": code}, headers=_bearer(token))

    for _ in range(5):
        assert step_up(wrong()).status_code == 401
    assert step_up(rfc6238(secret, step_of(svc.clock))).status_code == 429
    svc.clock.advance(30)
    code = wrong()
    _one_401_rest_429(_burst(lambda _: step_up(code)), "60")
    reasons = [e.data["reason"] for e in svc.state.audit.entries() if e.action == "auth.mfa.stepup.failed"]
    assert reasons.count("bad_totp") == 6


def test_web_login_form_during_a_delay_answers_429_without_argon2(svc: Any) -> None:
    svc.accounts.create_user("alice", STRONG, "citizen", actor="user:root", reason="r")
    with TestClient(svc.app, base_url="https://testserver", follow_redirects=False) as browser:
        page = browser.get("/login?lang=en")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf

        def submit(password: str) -> Any:
            return browser.post("/login", data={"csrf": csrf.group(1), "username": "alice", "password": password})

        for i in range(5):
            assert submit(f"wrong password {i}").status_code == 401
        before = svc.hasher.verifications
        locked = submit(STRONG)
        assert locked.status_code == 429 and locked.headers["retry-after"] == "30"
        assert svc.hasher.verifications == before
