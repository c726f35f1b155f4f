"""The demonstration PKI is refused unless demo mode is on, and demo mode says so loudly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from integrity.app_state import build_state
from integrity.errors import ConfigurationError, DemoKeysRefused
from integrity.logs import configure_logging
from tests.conftest import DEMO_KEYS, demo_settings


def test_demo_keys_are_refused_without_demo_mode(tmp_path: Path) -> None:
    with pytest.raises(DemoKeysRefused, match="never be used in production"):
        build_state(demo_settings(f"sqlite:///{tmp_path}/x.db", demo=False))


def test_demo_mode_logs_a_loud_warning(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream)
    try:
        build_state(demo_settings(f"sqlite:///{tmp_path}/x.db")).close()
    finally:
        configure_logging("INFO")
    warnings = [json.loads(x) for x in stream.getvalue().splitlines() if "demo_keys_in_use" in x]
    assert warnings and warnings[0]["level"] == "warning"
    assert "INSECURE DEMO MODE" in warnings[0]["message"]


def test_wrong_passphrase_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    settings = demo_settings(f"sqlite:///{tmp_path}/x.db", keys_passphrase="wrong")
    with pytest.raises(ConfigurationError, match=r"audit-log\.key\.pem"):
        build_state(settings)


def test_missing_keys_dir_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        build_state(demo_settings(f"sqlite:///{tmp_path}/x.db", keys_dir=tmp_path / "nope"))


def test_demo_pki_files_are_all_present_and_encrypted() -> None:
    names = {p.name for p in DEMO_KEYS.iterdir()}
    for stem in ("ca", "one-stop-signing", "portal-exchange", "one-stop-exchange", "gateway-exchange"):
        assert {f"{stem}.crt.pem", f"{stem}.key.pem"} <= names
    assert {
        "audit-log.key.pem",
        "audit-log.pub.pem",
        "audit-log.vkey",
        "secrets.key",
        "passphrase.txt",
        "README.md",
    } <= names
    for key in DEMO_KEYS.glob("*.key.pem"):
        assert b"BEGIN ENCRYPTED PRIVATE KEY" in key.read_bytes()
    assert "NOT FOR PRODUCTION" in (DEMO_KEYS / "README.md").read_text()
