"""TOTP codes from an independent client (Debian's ``oathtool``) are accepted."""

from __future__ import annotations

import subprocess

from sqlalchemy import Engine

from integrity.clock import FrozenClock
from tests.auth.support import ADDRESS, STRONG, make_accounts
from tests.tools import require_tool


def _oathtool() -> str:
    return require_tool("oathtool", "oathtool")


def _oath_code(secret_b32: str, clock: FrozenClock) -> str:
    when = clock().strftime("%Y-%m-%d %H:%M:%S UTC")
    out = subprocess.run(
        [_oathtool(), "--totp", "--base32", "--digits=6", "--time-step-size=30s", f"--now={when}", secret_b32],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return out.stdout.strip()


def test_oathtool_codes_enrol_and_log_in(engine: Engine) -> None:
    _oathtool()
    clock = FrozenClock()
    svc = make_accounts(engine, clock)
    try:
        svc.create_user("alice", STRONG, "officer", actor="user:root", reason="r")
        token = svc.login("alice", STRONG, address=ADDRESS).token
        assert token
        enrolment = svc.begin_totp_enrolment(token)
        svc.confirm_totp_enrolment(token, _oath_code(enrolment.secret_b32, clock))
        clock.advance(30)
        step1 = svc.login("alice", STRONG, address=ADDRESS)
        assert step1.mfa_token
        result = svc.complete_mfa(step1.mfa_token, code=_oath_code(enrolment.secret_b32, clock), address=ADDRESS)
        assert result.token and svc.authenticate_session(result.token) is not None
    finally:
        svc.audit.close()  # type: ignore[attr-defined]
