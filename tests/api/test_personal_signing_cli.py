"""A person's key and signature from the command line: ``keys generate|import-token --owner``
make personal keys on the token for an existing account (listed with their owner);
``sign-personal`` signs only with that person's fresh TOTP code and logs the OS login as the
operator. Refusals are one line on stderr, exit 2, and nothing signed. Both back ends."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner, Result

from api import cli
from integrity.personal_signing import ACTION_REFUSED, ACTION_SIGNED
from signing.algorithms import Algorithm
from signing.purposes import KeyPurpose
from tests.api.operator_support import enrolled_admin
from tests.api.personal_support import DEMO_CA, LETTER, enrol, entries, personal_certificate, token_key
from tests.auth.support import rfc6238, wire_accounts
from tests.conftest import DEMO_KEYS, Service
from tests.signing._pki import run_openssl
from tests.token_support import SoftToken

runner = CliRunner()
LAN = "Nguyễn Thị Lan"
OS_LOGIN = "vanthu"


@pytest.fixture
def svc(db_url: str, soft_token: SoftToken, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """The service over the database the commands use (for accounts and the audit log), and the
    commands' environment: the same database, the demo keys, the token, an OS login."""
    for key, value in {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_KEYS_DIR": str(DEMO_KEYS),
        "BHXH_LOG_LEVEL": "WARNING",
        "LOGNAME": OS_LOGIN,
        "USER": OS_LOGIN,
        **soft_token.env(),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SUDO_USER", raising=False)
    service = Service(db_url, **soft_token.settings())
    wire_accounts(service)
    yield service
    service.close()


def _cli(*args: str, stdin: str | None = None) -> Result:
    return runner.invoke(cli.app, [*args, "--demo"], input=stdin)


def _refused(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[-1], lines[-1]


def _keys(svc: Service) -> dict[str, Any]:
    listed = _cli("keys", "list", "--json")
    assert listed.exit_code == 0, listed.output
    return {row["kid"]: row for row in json.loads(listed.stdout)}


def test_personal_keys_are_made_on_the_token_for_an_existing_person_and_listed_with_their_owner(
    svc: Service, soft_token: SoftToken
) -> None:
    enrol(svc, "lan")
    before = _keys(svc)
    _refused(_cli("keys", "generate", "--alg", "ES256", "--owner", "ghost", "--on-token"), "no account 'ghost'")
    _refused(_cli("keys", "generate", "--alg", "ES256", "--owner", "lan"), "--on-token")
    _refused(
        _cli("keys", "generate", "--alg", "ES256", "--owner", "lan", "--on-token", "--purpose", "receipt"),
        "personal key",
    )
    assert _keys(svc) == before
    made = _cli("keys", "generate", "--alg", "ES256", "--owner", "lan", "--on-token", "--json")
    assert made.exit_code == 0, made.output
    row = json.loads(made.stdout)
    assert row["owner"] == "user:lan" and row["purpose"] == "personal" and row["storage"] == "pkcs11"
    assert _keys(svc)[row["kid"]]["owner"] == "user:lan"
    table = _cli("keys", "list")
    assert "user:lan" in table.stdout
    logged = [e for e in entries(svc, "key.generated") if e.subject == f"key:{row['kid']}"]
    assert logged[0].data["owner"] == "user:lan" and logged[0].actor == f"operator:{OS_LOGIN}"


def test_rotating_a_persons_key_waits_for_an_administrators_code(
    svc: Service, soft_token: SoftToken, db_url: str
) -> None:
    enrol(svc, "lan")
    hoa = enrolled_admin(db_url, "hoa")
    old = json.loads(_cli("keys", "generate", "--alg", "ES256", "--owner", "lan", "--on-token", "--json").stdout)
    rotate = ("keys", "rotate", "--alg", "ES256", "--owner", "lan", "--on-token")
    before = _keys(svc)
    no_admin = _cli(*rotate)  # the same usage error as `keys retire` without --admin
    assert no_admin.exit_code == 2 and "--admin" in no_admin.output and "Traceback" not in no_admin.output
    wrong = rfc6238(hoa.secret, hoa.last_step + 1000)  # a code of no step near now
    _refused(_cli(*rotate, "--admin", "hoa", "--code", wrong), "keys rotate refused", "wrong or already used")
    assert _keys(svc) == before  # no key made on the token, none retired
    made = _cli(*rotate, *hoa.args(), "--json")
    assert made.exit_code == 0, made.output
    new = json.loads(made.stdout)
    assert (new["owner"], new["purpose"], new["storage"]) == ("user:lan", "personal", "pkcs11")
    keys = _keys(svc)
    assert keys[old["kid"]]["state"] == "retired" and keys[new["kid"]]["state"] == "active"
    [rotated] = [e for e in entries(svc, "key.rotated") if e.subject == f"key:{new['kid']}"]
    assert rotated.actor == f"operator:{OS_LOGIN}" and rotated.data["approved_by"] == "user:hoa"


def test_a_token_key_is_imported_with_the_certificate_issued_to_the_person(
    svc: Service, soft_token: SoftToken, tmp_path: Path
) -> None:
    enrol(svc, "lan")
    label, chain, _ = token_key(soft_token, LAN)
    without_cert = _cli("keys", "import-token", label, "--owner", "lan")
    _refused(without_cert, "certificate")
    # A certificate marked for the institution's data messages is not a person's.
    other_label, public_key = soft_token.officer_key(Algorithm.ES256, "marked")
    marked = tmp_path / "marked.pem"
    marked.write_bytes(
        personal_certificate(public_key, LAN, KeyPurpose.DATA_MESSAGE).public_bytes(serialization.Encoding.PEM)
    )
    _refused(_cli("keys", "import-token", other_label, "--owner", "lan", "--cert", str(marked)), "data-message")
    imported = _cli("keys", "import-token", label, "--owner", "lan", "--cert", str(chain), "--json")
    assert imported.exit_code == 0, imported.output
    row = json.loads(imported.stdout)
    assert row["owner"] == "user:lan" and row["purpose"] == "personal" and LAN in row["certificate"]["subject"]


def test_sign_personal_needs_the_persons_code_and_logs_the_operator(
    svc: Service, soft_token: SoftToken, tmp_path: Path
) -> None:
    lan = enrol(svc, "lan")
    label, chain, _ = token_key(soft_token, LAN)
    assert _cli("keys", "import-token", label, "--owner", "lan", "--cert", str(chain)).exit_code == 0
    letter = tmp_path / "thu.txt"
    letter.write_bytes(LETTER)

    wrong = f"{(int(lan.code(svc.clock)) + 1) % 1_000_000:06d}"
    refused = _cli("sign-personal", str(letter), "--user", "lan", "--format", "cms", "--code", wrong)
    _refused(refused, "not signed")
    assert not Path(f"{letter}.p7s").exists() and entries(svc, ACTION_SIGNED) == []
    assert entries(svc, ACTION_REFUSED)[-1].data["reason"] == "second_factor_failed"
    no_code = _cli("sign-personal", str(letter), "--user", "lan", "--format", "cms")  # no terminal, no --code
    _refused(no_code, "--code")

    signed = _cli(
        "sign-personal", str(letter), "--user", "lan", "--format", "cms", "--json", stdin=lan.code(svc.clock) + "\n"
    )
    assert signed.exit_code == 0, signed.output
    body = json.loads(signed.stdout)
    out = Path(body["out"])
    assert out == Path(f"{letter}.p7s") and out.read_bytes()
    [entry] = entries(svc, ACTION_SIGNED)
    assert entry.actor == "user:lan" and entry.data["operator"] == OS_LOGIN and entry.data["channel"] == "cli"
    assert entry.data["digest"] == "sha256:" + hashlib.sha256(LETTER).hexdigest()
    checked = run_openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", str(out), "-content", str(letter),
        "-CAfile", str(DEMO_CA), "-out", "/dev/null", cwd=tmp_path,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_sign_personal_refuses_an_unknown_person_and_a_person_without_a_key(svc: Service, tmp_path: Path) -> None:
    lan = enrol(svc, "lan")
    letter = tmp_path / "thu.txt"
    letter.write_bytes(LETTER)
    _refused(_cli("sign-personal", str(letter), "--user", "ghost", "--code", "123456"), "no account")
    _refused(
        _cli("sign-personal", str(letter), "--user", "lan", "--code", lan.code(svc.clock)), "no active personal key"
    )
    assert entries(svc, ACTION_SIGNED) == []
