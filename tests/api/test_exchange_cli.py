"""``exchange peers add|list|update|remove`` and ``exchange nonces purge``: exit 0 done, 2 bad
input with one line on stderr; every registry change lands in the audit log."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from api.cli_exchange import app
from integrity.app_state import build_state
from tests.api.operator_support import Admin, as_operator, enrolled_admin
from tests.conftest import DEMO_KEYS, demo_settings

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BHXH_DATABASE_URL", db_url)
    monkeypatch.setenv("BHXH_KEYS_DIR", str(DEMO_KEYS))
    monkeypatch.setenv("BHXH_LOG_LEVEL", "WARNING")
    as_operator(monkeypatch)
    return db_url


@pytest.fixture
def hoa(cli_env: str) -> Admin:
    """An administrator whose TOTP codes confirm registry changes; minh is a second one."""
    return enrolled_admin(cli_env, "hoa")


@pytest.fixture
def minh(cli_env: str) -> Admin:
    return enrolled_admin(cli_env, "minh")


def _run(*args: str) -> object:
    return runner.invoke(app, [*args, "--demo"])


def _actions(db_url: str) -> list[str]:
    state = build_state(demo_settings(db_url))
    try:
        return [e.action for e in state.audit.entries(0, 10_000)]
    finally:
        state.close()


def test_peer_lifecycle_from_the_command_line(cli_env: str, hoa: Admin, minh: Admin) -> None:
    added = _run(
        "peers",
        "add",
        "portal",
        "--keyid",
        "portal",
        "--key",
        str(DEMO_KEYS / "portal-exchange.crt.pem"),
        "--route",
        "POST /gateway/one-stop/v1/dossiers",
        "--route",
        "GET /gateway/one-stop/v1/dossiers/*",
        "--base-url",
        "http://127.0.0.1:8081",
        *hoa.args(),
        "--json",
    )
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["routes"] == [
        "POST /gateway/one-stop/v1/dossiers",
        "GET /gateway/one-stop/v1/dossiers/*",
    ]

    listed = _run("peers", "list", "--json")
    assert [p["name"] for p in json.loads(listed.stdout)] == ["portal"]

    updated = _run("peers", "update", "portal", "--no-base-url", *hoa.args(), "--json")
    assert updated.exit_code == 0 and json.loads(updated.stdout)["base_url"] is None

    removed = _run("peers", "remove", "portal", *minh.args(), "--json")
    assert removed.exit_code == 0 and json.loads(removed.stdout) == {"removed": "portal"}
    assert json.loads(_run("peers", "list", "--json").stdout) == []

    assert [a for a in _actions(cli_env) if a.startswith("exchange.")] == [
        "exchange.peer.added",
        "exchange.peer.updated",
        "exchange.peer.removed",
    ]


def test_a_key_rotation_with_an_overlap_from_the_command_line(cli_env: str, hoa: Admin, minh: Admin) -> None:
    portal = str(DEMO_KEYS / "portal-exchange.crt.pem")
    added = _run("peers", "add", "portal", "--keyid", "portal", "--key", portal, *hoa.args())
    assert added.exit_code == 0, added.output
    rotated = _run(
        "peers",
        "update",
        "portal",
        "--key",
        str(DEMO_KEYS / "gateway-exchange.crt.pem"),
        "--keyid",
        "portal-2",
        "--overlap",
        "3600",
        *hoa.args(),
    )
    assert rotated.exit_code == 0, rotated.output
    assert "previous keyid=portal" in rotated.stdout and "accepted until" in rotated.stdout
    shown = json.loads(_run("peers", "list", "--json").stdout)[0]
    assert (shown["keyid"], shown["previous_keyid"]) == ("portal-2", "portal")
    ended = _run("peers", "update", "portal", "--end-overlap", *minh.args(), "--json")
    assert ended.exit_code == 0 and json.loads(ended.stdout)["previous_keyid"] is None


@pytest.mark.parametrize(
    "args",
    [
        ["peers", "add", "portal", "--keyid", "portal", "--key", "/nonexistent.pem"],
        ["peers", "add", "portal", "--keyid", "portal", "--key", str(DEMO_KEYS / "passphrase.txt")],
        [
            "peers",
            "add",
            "portal",
            "--keyid",
            "portal",
            "--key",
            str(DEMO_KEYS / "portal-exchange.crt.pem"),
            "--route",
            "FETCH /x",
        ],
        ["peers", "remove", "nobody"],
        ["peers", "update", "nobody", "--no-routes"],
        ["peers", "update", "nobody", "--overlap", "60"],
    ],
    ids=["missing-file", "not-a-key", "bad-route", "remove-unknown", "update-unknown", "overlap-unknown"],
)
def test_bad_input_exits_2_with_one_line(cli_env: str, hoa: Admin, args: list[str]) -> None:
    result = _run(*args, *hoa.args())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not [a for a in _actions(cli_env) if a.startswith("exchange.")]


def test_nonces_purge_reports_a_count(cli_env: str) -> None:
    result = _run("nonces", "purge", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"purged": 0}
