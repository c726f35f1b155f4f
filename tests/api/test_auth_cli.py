"""``users create|unlock|reset-mfa``: the operator is the OS login; unlocking and resetting MFA
need an administrator's TOTP code."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from api.cli_users import app
from tests.api.operator_support import Admin, as_operator, enrolled_admin
from tests.auth.support import STRONG
from tests.conftest import DEMO_KEYS, demo_settings

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for k, v in {"BHXH_DATABASE_URL": db_url, "BHXH_KEYS_DIR": str(DEMO_KEYS), "BHXH_LOG_LEVEL": "WARNING"}.items():
        monkeypatch.setenv(k, v)
    as_operator(monkeypatch, "ops1")
    return db_url


@pytest.fixture
def admin(cli_env: str) -> Admin:
    return enrolled_admin(cli_env)


def _audit(db_url: str) -> list:
    from integrity.app_state import build_state

    state = build_state(demo_settings(db_url))
    try:
        return state.audit.entries()
    finally:
        state.close()


def test_create_reads_the_password_from_stdin_and_audits_the_operator(cli_env: str) -> None:
    result = runner.invoke(
        app,
        [
            "create",
            "Alice",
            "--role",
            "officer",
            "--reason",
            "new officer",
            "--password-stdin",
            "--demo",
            "--json",
        ],
        input=STRONG + "\n",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"username": "alice", "role": "officer", "mfa_required": True}
    assert STRONG not in result.output
    [entry] = [e for e in _audit(cli_env) if e.action == "admin.user.created"]
    assert entry.actor == "operator:ops1" and entry.data["reason"] == "new officer"


def test_weak_password_is_exit_2_with_one_line(cli_env: str) -> None:
    result = runner.invoke(
        app,
        ["create", "bob", "--role", "citizen", "--reason", "walk-in", "--password-stdin", "--demo"],
        input="short\n",
    )
    assert result.exit_code == 2
    assert "at least 15 characters" in result.output and "Traceback" not in result.output


def test_unlock_and_reset_mfa(cli_env: str, admin: Admin) -> None:
    created = runner.invoke(
        app,
        ["create", "carol", "--role", "officer", "--reason", "new", "--password-stdin", "--demo"],
        input=STRONG + "\n",
    )
    assert created.exit_code == 0, created.output
    unlocked = runner.invoke(app, ["unlock", "carol", "--reason", "help desk", *admin.args(), "--demo", "--json"])
    assert unlocked.exit_code == 0 and json.loads(unlocked.stdout)["action"] == "unlocked", unlocked.output
    # Without --code the code is asked for, hidden.
    reset = runner.invoke(
        app, ["reset-mfa", "carol", "--reason", "phone lost", "--admin", "hoa", "--demo"], input=admin.code() + "\n"
    )
    assert reset.exit_code == 0, reset.output
    actions = {e.action: e for e in _audit(cli_env)}
    assert actions["admin.user.unlocked"].actor == "operator:ops1"
    assert actions["admin.user.unlocked"].data["admin"] == "user:hoa"
    assert actions["admin.user.mfa_reset"].data["reason"] == "phone lost"
    assert actions["admin.user.mfa_reset"].actor == "operator:ops1"


def test_unknown_user_and_missing_reason_are_exit_2(cli_env: str, admin: Admin) -> None:
    assert runner.invoke(app, ["unlock", "ghost", "--reason", "help desk", *admin.args(), "--demo"]).exit_code == 2
    # Refused before any code is checked: no code is spent.
    assert runner.invoke(app, ["unlock", "ghost", "--reason", "", "--admin", "hoa", "--demo"]).exit_code == 2
    assert runner.invoke(app, ["unlock", "ghost", "--admin", "hoa", "--demo"]).exit_code == 2
