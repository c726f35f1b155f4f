"""CLI: sign / verify (exit 0 valid, 1 not valid, 2 bad input) and the keys commands; passphrases
come from files or environment variables only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwcrypto import jwk
from typer.testing import CliRunner

from api import cli_signing
from tests.api.operator_support import Admin, as_operator, enrolled_admin
from tests.conftest import DEMO_KEYS
from tests.signing._pki import openssl_cms_verify

runner = CliRunner()
PAYLOAD = "Tờ khai điện tử".encode()


def _root() -> typer.Typer:
    # Mounted the way the lead's CLI is asked to: sign/verify at the top, keys commands in "keys".
    root = typer.Typer()
    root.add_typer(cli_signing.app)
    keys = typer.Typer()
    keys.add_typer(cli_signing.keys_app)
    root.add_typer(keys, name="keys")
    return root


ROOT = _root()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_KEYS_DIR": str(DEMO_KEYS),
        "BHXH_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(key, value)
    as_operator(monkeypatch)


@pytest.fixture
def hoa(db_url: str, cli_env: None) -> Admin:
    """The administrator whose TOTP code confirms retiring, rotating or revoking a key."""
    return enrolled_admin(db_url, "hoa")


def _invoke(*args: str) -> object:
    return runner.invoke(ROOT, [*args, "--demo"])


def test_cli_cms_signature_verifies_with_openssl_and_with_verify(cli_env: None, tmp_path: Path) -> None:
    (tmp_path / "payload").write_bytes(PAYLOAD)
    signed = _invoke("sign", str(tmp_path / "payload"), "--format", "cms", "--out", str(tmp_path / "sig.der"), "--json")
    assert signed.exit_code == 0, signed.output
    assert json.loads(signed.stdout)["alg"] == "PS256"
    check = openssl_cms_verify(tmp_path, (tmp_path / "sig.der").read_bytes(), PAYLOAD, DEMO_KEYS / "ca.crt.pem")
    assert check.returncode == 0, check.stderr
    ok = _invoke(
        "verify", str(tmp_path / "sig.der"), "--format", "cms", "--payload", str(tmp_path / "payload"), "--json"
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["valid"] is True
    (tmp_path / "payload").write_bytes(PAYLOAD + b"!")
    bad = _invoke("verify", str(tmp_path / "sig.der"), "--format", "cms", "--payload", str(tmp_path / "payload"))
    assert bad.exit_code == 1
    assert "HASH_FAILURE" in bad.stdout and "Dữ liệu đã bị thay đổi" in bad.stdout


def test_cli_jws_round_trip_and_bad_input_exit_codes(cli_env: None, tmp_path: Path) -> None:
    (tmp_path / "payload").write_bytes(PAYLOAD)
    signed = _invoke("sign", str(tmp_path / "payload"), "--format", "jws", "--detached")
    assert signed.exit_code == 0, signed.output
    (tmp_path / "token").write_text(signed.stdout.strip())
    ok = _invoke("verify", str(tmp_path / "token"), "--payload", str(tmp_path / "payload"))
    assert ok.exit_code == 0, ok.output
    assert _invoke("sign", str(tmp_path / "payload"), "--format", "pgp").exit_code == 2
    assert _invoke("sign", str(tmp_path / "missing")).exit_code == 2
    assert _invoke("sign", str(tmp_path / "payload"), "--key-id", "nope").exit_code == 2
    assert _invoke("verify", str(tmp_path / "token")).exit_code == 1  # detached without payload: FORMAT_FAILURE


def test_keys_generate_rotate_retire_revoke_list(cli_env: None, db_url: str, hoa: Admin) -> None:
    first = _invoke("keys", "generate", "--alg", "Ed25519", "--json")
    assert first.exit_code == 0, first.output
    old = json.loads(first.stdout)["kid"]
    assert _invoke("keys", "generate", "--alg", "Ed25519").exit_code == 2  # one active per algorithm
    minh = enrolled_admin(db_url, "minh")  # two codes each: no wait for the next TOTP step
    rotated = _invoke("keys", "rotate", "--alg", "Ed25519", *minh.args(), "--json")
    assert rotated.exit_code == 0, rotated.output
    new = json.loads(rotated.stdout)["kid"]
    listed = {row["kid"]: row for row in json.loads(_invoke("keys", "list", "--json").stdout)}
    assert listed[old]["state"] == "retired" and listed[new]["state"] == "active"
    assert any(r["algorithm"] == "PS256" and r["certificate"] for r in listed.values())
    assert _invoke("keys", "retire", new, *hoa.args()).exit_code == 0
    no_zone = _invoke("keys", "revoke", old, "--at", "2020-01-01T00:00:00", "--admin", "hoa", "--code", "000000")
    assert no_zone.exit_code == 2  # refused before the code is checked
    revoked = _invoke("keys", "revoke", old, *hoa.args(), "--json")
    assert revoked.exit_code == 0 and json.loads(revoked.stdout)["state"] == "revoked"
    assert _invoke("keys", "revoke", old, *minh.args()).exit_code == 2
    assert _invoke("keys", "generate", "--alg", "HS256").exit_code == 2


def test_keys_import_reads_the_passphrase_from_a_file_or_the_environment(
    cli_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "key.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "wrong").write_text("nope\n")
    assert (
        _invoke("keys", "import", str(tmp_path / "key.pem"), "--passphrase-file", str(tmp_path / "wrong")).exit_code
        == 2
    )
    done = _invoke("keys", "import", str(tmp_path / "key.pem"), "--passphrase-file", str(tmp_path / "pw"), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["algorithm"] == "ES256"
    monkeypatch.setenv("KEY_PW", "s3cret")
    again = _invoke("keys", "import", str(tmp_path / "key.pem"), "--passphrase-env", "KEY_PW")
    assert again.exit_code == 2 and "already" in again.output


def _key_whose_kid_starts_with(prefix: str) -> ed25519.Ed25519PrivateKey:
    # The kid is the RFC 7638 thumbprint; jwcrypto computes it independently of the service.
    while True:
        private = ed25519.Ed25519PrivateKey.generate()
        if jwk.JWK.from_pyca(private.public_key()).thumbprint().startswith(prefix):
            return private


@pytest.mark.parametrize("prefix", ["-", "--"])
def test_a_kid_that_begins_with_a_dash_can_be_retired_and_revoked(
    cli_env: None, hoa: Admin, tmp_path: Path, prefix: str
) -> None:
    private = _key_whose_kid_starts_with(prefix)
    (tmp_path / "key.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    (tmp_path / "pw").write_text("s3cret\n")
    imported = _invoke(
        "keys", "import", str(tmp_path / "key.pem"), "--passphrase-file", str(tmp_path / "pw"), "--rotate", "--json"
    )
    assert imported.exit_code == 0, imported.output
    kid = json.loads(imported.stdout)["kid"]
    assert kid.startswith(prefix)
    retired = _invoke("keys", "retire", kid, *hoa.args(), "--json")
    assert retired.exit_code == 0, retired.output
    assert json.loads(retired.stdout)["kid"] == kid and json.loads(retired.stdout)["state"] == "retired"
    revoked = _invoke("keys", "revoke", kid, "--at", "2026-01-01T00:00:00Z", *hoa.args(), "--json")
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.stdout)["state"] == "revoked"
    mistyped = _invoke("keys", "retire", kid, "--admin", "hoa", "--code", "000000", "--jsno")
    assert mistyped.exit_code == 2 and "--jsno" in mistyped.output


def test_there_is_no_passphrase_option_on_the_command_line() -> None:
    options = {
        p.opts[0]
        for c in cli_signing.keys_app.registered_commands
        for p in typer.main.get_command_from_info(c, pretty_exceptions_short=True, rich_markup_mode=None).params
        if p.opts
    }
    assert "--passphrase" not in options and "--password" not in options
