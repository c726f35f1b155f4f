"""Every command whose output a machine reads takes ``--json``, and what it prints then is JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from api.cli import app
from tests.conftest import DEMO_KEYS

runner = CliRunner()
# They serve HTTP until stopped: nothing on standard output for a machine to read.
SERVERS = {"serve", "exchange gateway", "witness serve"}


def _commands(command: Any, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    if hasattr(command, "commands"):
        found: dict[str, Any] = {}
        for name, sub in command.commands.items():
            found.update(_commands(sub, (*prefix, name)))
        return found
    return {" ".join(prefix): command}


def test_every_command_but_the_servers_takes_json() -> None:
    commands = _commands(typer.main.get_command(app))
    assert {"clients create", "clients revoke", "keys init", "keys install-cert", "audit export"} <= set(commands)
    without = {name for name, cmd in commands.items() if not any("--json" in p.opts for p in cmd.params)}
    assert without == SERVERS


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BHXH_DATABASE_URL", db_url)
    monkeypatch.setenv("BHXH_KEYS_DIR", str(DEMO_KEYS))
    monkeypatch.setenv("BHXH_LOG_LEVEL", "WARNING")


def test_clients_create_and_revoke_take_json(cli_env: None) -> None:
    created = runner.invoke(app, ["clients", "create", "portal", "--scopes", "sign", "--demo", "--json"])
    assert created.exit_code == 0, created.output
    issued = json.loads(created.stdout)
    assert set(issued) == {"client_id", "api_key", "scopes"}
    revoked = runner.invoke(app, ["clients", "revoke", issued["client_id"], "--demo", "--json"])
    assert revoked.exit_code == 0, revoked.output
    shown = json.loads(revoked.stdout)
    assert shown["client_id"] == issued["client_id"] and shown["name"] == "portal" and shown["revoked_at"]
    # Without --json the revocation is a sentence for people.
    again = runner.invoke(app, ["clients", "create", "other", "--scopes", "sign", "--demo"])
    other = json.loads(again.stdout)["client_id"]
    text = runner.invoke(app, ["clients", "revoke", other, "--demo"])
    assert text.exit_code == 0 and text.stdout.startswith(f"revoked {other}")


def test_audit_export_json_reports_the_file_and_refuses_without_out(cli_env: None, tmp_path: Path) -> None:
    assert runner.invoke(app, ["init", "--demo"]).exit_code == 0
    out = tmp_path / "log.ndjson"
    result = runner.invoke(app, ["audit", "export", "--demo", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["out"] == str(out) and shown["lines"] == len(out.read_text().splitlines()) > 0
    refused = runner.invoke(app, ["audit", "export", "--demo", "--json"])
    assert refused.exit_code == 2 and "--json needs --out" in refused.stderr and refused.stdout == ""


def test_dev_pki_takes_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "dev-pki", "--out", str(tmp_path / "pki"), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["demo"] is True and str(tmp_path / "pki" / "ca.crt.pem") in shown["files"]
