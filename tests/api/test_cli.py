"""The command line: init idempotence, clients, dev-pki, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from tests.conftest import DEMO_KEYS, REPO_ROOT

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"BHXH_DATABASE_URL": db_url, "BHXH_KEYS_DIR": str(DEMO_KEYS), "BHXH_LOG_LEVEL": "WARNING"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _run_main(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_init_is_idempotent_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BHXH_DATABASE_URL", f"sqlite:///{tmp_path}/fresh.db")
    monkeypatch.setenv("BHXH_KEYS_DIR", str(DEMO_KEYS))
    first = runner.invoke(app, ["init", "--demo", "--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["changed"] is True and any("migrations" in c for c in report["changes"])
    assert any(c.startswith("created the audit log") for c in report["changes"])
    # The log exists with its first signed checkpoint.
    checkpoint = runner.invoke(app, ["audit", "verify", "--json", "--demo"])
    assert checkpoint.exit_code == 0, checkpoint.output
    assert json.loads(checkpoint.stdout)["ok"] is True
    second = runner.invoke(app, ["init", "--demo"])
    assert second.exit_code == 0, second.output
    assert "already initialised: nothing changed" in second.stdout


def test_clients_create_prints_key_once_as_json_and_list_never_shows_it(cli_env: dict[str, str]) -> None:
    created = runner.invoke(app, ["clients", "create", "portal", "--scopes", "sign,verify", "--demo"])
    assert created.exit_code == 0, created.output
    issued = json.loads(created.stdout)
    assert set(issued) == {"client_id", "api_key", "scopes"} and issued["scopes"] == ["sign", "verify"]
    listed = runner.invoke(app, ["clients", "list", "--json", "--demo"])
    assert listed.exit_code == 0
    assert issued["api_key"] not in listed.stdout
    assert [c["client_id"] for c in json.loads(listed.stdout)] == [issued["client_id"]]
    revoked = runner.invoke(app, ["clients", "revoke", issued["client_id"], "--demo"])
    assert revoked.exit_code == 0
    assert json.loads(runner.invoke(app, ["clients", "list", "--json", "--demo"]).stdout)[0]["revoked_at"]


def test_bad_scope_exits_2_with_one_line_and_no_traceback(cli_env: dict[str, str]) -> None:
    result = _run_main(["clients", "create", "portal", "--scopes", "root", "--demo"], cli_env)
    assert result.returncode == 2
    assert "unknown scope" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_serve_refuses_demo_keys_without_demo_flag(cli_env: dict[str, str]) -> None:
    result = _run_main(["serve"], cli_env)
    assert result.returncode == 2
    assert "demonstration PKI" in result.stderr and "Traceback" not in result.stderr


def test_unknown_command_is_usage_error_2() -> None:
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_dev_pki_writes_a_pki_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    first = runner.invoke(app, ["keys", "dev-pki", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert (out / "NOT-FOR-PRODUCTION").exists() and (out / "one-stop-signing.key.pem").exists()
    before = (out / "ca.crt.pem").read_bytes()
    second = runner.invoke(app, ["keys", "dev-pki", "--out", str(out)])
    assert second.exit_code == 2
    assert (out / "ca.crt.pem").read_bytes() == before


def test_a_served_worker_freezes_its_start_up_heap(cli_env: dict[str, str]) -> None:
    # The uvicorn entry point (``serve`` and every worker) moves the start-up objects out of
    # the collector's generations, so full collections under load do not walk them.
    code = (
        "import gc; from api.asgi import app_factory; before = gc.get_freeze_count(); app_factory(); "
        "print(before, gc.get_freeze_count())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, **cli_env, "BHXH_DEMO": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    before, after = map(int, result.stdout.split())
    assert before == 0 and after > 10_000
