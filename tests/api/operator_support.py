"""For command-line tests: the OS login the commands record, and an administrator with TOTP whose
codes confirm the sensitive commands, computed the way an authenticator app does (RFC 6238)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from integrity.app_state import build_state
from integrity.clock import FrozenClock
from tests.auth.support import ADDRESS, STRONG, rfc6238, secret_from_uri
from tests.conftest import DEMO_KEYS, demo_settings

OPERATOR_LOGIN = "ops.tran"
STEP_SECONDS = 30


def demo_cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    """The environment a command reads, as the tests run it: this database, the demo keys, only
    warnings in the log, and the test client's address as the public base URL."""
    for name, value in {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_KEYS_DIR": str(DEMO_KEYS),
        "BHXH_LOG_LEVEL": "WARNING",
        "BHXH_PUBLIC_BASE_URL": "http://testserver",
    }.items():
        monkeypatch.setenv(name, value)


def as_operator(monkeypatch: pytest.MonkeyPatch, login: str = OPERATOR_LOGIN) -> str:
    """Run the commands as OS login ``login`` (getpass reads LOGNAME first); the actor they record."""
    monkeypatch.setenv("LOGNAME", login)
    monkeypatch.setenv("USER", login)
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.delenv("BHXH_ADMIN", raising=False)
    return f"operator:{login}"


@dataclass
class Admin:
    """An admin account with TOTP; ``code()`` gives a fresh code (of a later step each time)."""

    name: str
    secret: bytes
    last_step: int = field(default=-1)

    def code(self) -> str:
        now = int(time.time()) // STEP_SECONDS
        step = max(self.last_step + 1, now)
        if step > now + 1:  # the service accepts one step of drift: wait for the next step
            time.sleep(STEP_SECONDS - time.time() % STEP_SECONDS + 0.05)
        self.last_step = step
        return rfc6238(self.secret, step)

    def args(self) -> list[str]:
        return ["--admin", self.name, "--code", self.code()]


def enrolled_admin(db_url: str, name: str = "hoa", role: str = "admin") -> Admin:
    """Create ``name`` and enrol TOTP a few minutes in the past, so every current code is new."""
    clock = FrozenClock()
    clock.now -= timedelta(minutes=5)
    state = build_state(demo_settings(db_url), clock=clock)
    try:
        accounts = state.accounts
        accounts.create_user(name, STRONG, role, actor="operator:setup", reason="test administrator")
        first = accounts.login(name, STRONG, address=ADDRESS)
        assert first.token, "a new staff account gets an enrolment session"
        secret = secret_from_uri(accounts.begin_totp_enrolment(first.token).otpauth_uri)
        accounts.confirm_totp_enrolment(first.token, rfc6238(secret, int(clock().timestamp()) // STEP_SECONDS))
    finally:
        state.close()
    return Admin(name, secret)
