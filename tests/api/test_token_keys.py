"""Signing keys on a PKCS#11 token (SoftHSM2) through the service: generated on the token,
used by the HTTP API and by a second instance, erased from the token when retired or revoked;
token failures are clear errors and never leave a signature unlogged or a key half-made."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11.util.rsa import encode_rsa_public_key
from sqlalchemy import select
from typer.testing import CliRunner

from api import cli
from integrity.errors import ConfigurationError
from integrity.logs import configure_logging
from signing.algorithms import Algorithm
from signing.errors import ActiveKeyExists, TokenError
from signing.pkcs11 import KeyToken
from signing.tables import signing_keys
from tests.api.operator_support import enrolled_admin
from tests.conftest import DEMO_KEYS, Service, demo_keys_without, demo_settings
from tests.signing._pki import TestCa, pem
from tests.token_support import SoftToken

PAYLOAD = "Hồ sơ 000.00.31.H29-251206-0001".encode()
runner = CliRunner()


@pytest.fixture
def api(db_url: str, soft_token: SoftToken) -> Iterator[Service]:
    svc = Service(db_url, **soft_token.settings())
    yield svc
    svc.close()


def _private_objects(soft_token: SoftToken) -> set[bytes]:
    """The ids of the private keys on the token, read through the PKCS#11 API itself."""
    token = KeyToken.open(soft_token.module, soft_token.label, soft_token.pin)  # keeps the login alive
    try:
        library = pkcs11.lib(str(soft_token.module))
        with library.get_token(token_label=soft_token.label).open() as session:
            return {
                bytes(o[pkcs11.Attribute.ID])
                for o in session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY})
            }
    finally:
        token.close()


def _entries(svc: Service, action: str) -> list[Any]:
    audit = svc.state.audit
    return [e for e in audit.entries(0, audit.size()) if e.action == action]


def _sign(svc: Service, kid: str) -> Any:
    return svc.client.post(
        "/v1/signatures",
        json={"payload_b64": base64.b64encode(PAYLOAD).decode(), "format": "jws", "key_id": kid},
        headers=svc.auth("sign"),
    )


def _verify(svc: Service, token: str) -> Any:
    return svc.client.post(
        "/v1/signatures/verify",
        json={"format": "jws", "signature": token, "payload_b64": base64.b64encode(PAYLOAD).decode()},
        headers=svc.auth("verify"),
    )


def test_a_key_made_on_the_token_signs_for_every_instance_and_is_erased_when_retired(
    api: Service, db_url: str, soft_token: SoftToken
) -> None:
    record = api.state.signatures.generate_key(Algorithm.ES256, actor="user:admin", rotate=True, on_token=True)
    assert record.token_object_id is not None
    with api.state.engine.connect() as conn:
        row = conn.execute(select(signing_keys).where(signing_keys.c.kid == record.kid)).one()
    assert row.private_key_pem is None and row.token_object_id == record.token_object_id
    logged = _entries(api, "key.rotated")[-1]
    assert logged.data["pkcs11_object_id"] == record.token_object_id

    signed = _sign(api, record.kid)
    assert signed.status_code == 200, signed.text
    assert signed.json()["key_id"] == record.kid and signed.json()["alg"] == "ES256"
    # Another instance over the same database finds the key on the token by its object id.
    other = Service(db_url, **soft_token.settings())
    try:
        again = _sign(other, record.kid)
        assert again.status_code == 200, again.text
        assert _verify(other, signed.json()["signature"]).json()["valid"] is True
    finally:
        other.close()

    api.state.signatures.retire_key(record.kid, actor="user:admin")
    assert bytes.fromhex(record.token_object_id) not in _private_objects(soft_token)
    assert _verify(api, signed.json()["signature"]).json()["valid"] is True  # retired keys still verify
    refused = _sign(api, record.kid)
    assert refused.status_code == 409 and refused.json()["type"].endswith(":key-not-usable")


def test_readiness_reports_the_token_and_turns_503_when_it_stops_answering(api: Service) -> None:
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["key_token"]["status"] == "ok"
    token = api.state.signatures.token
    assert token is not None
    token.close()  # the token goes away under the running service
    gone = api.client.get("/readyz")
    assert gone.status_code == 503
    check = gone.json()["checks"]["key_token"]
    assert check["status"] == "fail" and check["reason"].startswith("unavailable")


def test_a_token_failure_while_signing_is_a_503_and_nothing_is_logged_as_signed(
    api: Service, soft_token: SoftToken
) -> None:
    record = api.state.signatures.generate_key(
        Algorithm.PS256, actor="user:admin", rotate=True, rsa_bits=2048, on_token=True
    )
    assert record.token_object_id is not None
    soft_token.erase(record.token_object_id)
    before = len(_entries(api, "signature.created"))
    log = io.StringIO()
    configure_logging("INFO", log)
    try:
        response = _sign(api, record.kid)
    finally:
        configure_logging("INFO")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith(":key-token-unavailable")
    assert record.token_object_id not in response.text and soft_token.label not in response.text
    assert len(_entries(api, "signature.created")) == before
    # The operator's log has the reason that the caller did not get.
    [line] = [json.loads(x) for x in log.getvalue().splitlines() if '"service_unavailable"' in x]
    assert line["problem"] == "key-token-unavailable"
    assert "signing failed" in line["detail"] and soft_token.label in line["detail"]


def test_generating_on_the_token_beside_an_active_key_is_refused_and_leaves_no_object(
    api: Service, soft_token: SoftToken
) -> None:
    first = api.state.signatures.generate_key(Algorithm.ED25519, actor="user:admin", rotate=True, on_token=True)
    objects = _private_objects(soft_token)
    with pytest.raises(ActiveKeyExists):
        api.state.signatures.generate_key(Algorithm.ED25519, actor="user:admin", on_token=True)
    assert _private_objects(soft_token) == objects
    api.state.signatures.revoke_key(first.kid, actor="user:admin")
    assert bytes.fromhex(first.token_object_id or "") not in _private_objects(soft_token)


def test_an_instance_without_the_token_or_with_a_wrong_pin_stops_with_a_clear_error(
    api: Service, db_url: str, soft_token: SoftToken, tmp_path: Path
) -> None:
    api.state.signatures.generate_key(Algorithm.ES256, actor="user:admin", rotate=True, on_token=True)
    with pytest.raises(TokenError, match="held on a PKCS#11 token: configure BHXH_PKCS11_MODULE"):
        Service(db_url)
    (tmp_path / "wrong-pin").write_text("000000\n")
    with pytest.raises(ConfigurationError, match="PIN of token 'bhxh-test-token' is wrong"):
        Service(db_url, **{**soft_token.settings(), "pkcs11_pin_file": tmp_path / "wrong-pin"})
    with pytest.raises(ConfigurationError, match="BHXH_PKCS11_TOKEN_LABEL must name the token"):
        Service(db_url, pkcs11_module=soft_token.module)
    with pytest.raises(ConfigurationError, match="cannot read the PKCS#11 PIN file"):
        Service(db_url, **{**soft_token.settings(), "pkcs11_pin_file": tmp_path / "absent"})
    assert demo_settings(db_url).pkcs11_module is None  # the default: no token


def test_without_a_token_configured_on_token_generation_is_refused_and_nothing_stored(service: Service) -> None:
    before = service.state.signatures.list_keys()
    with pytest.raises(TokenError, match="no PKCS#11 token is configured"):
        service.state.signatures.generate_key(Algorithm.ES256, actor="user:admin", rotate=True, on_token=True)
    assert service.state.signatures.list_keys() == before
    assert service.client.get("/readyz").json()["checks"].get("key_token") is None


def _cli(*args: str) -> Any:
    return runner.invoke(cli.app, list(args))


@pytest.fixture
def cli_env(db_url: str, soft_token: SoftToken, monkeypatch: pytest.MonkeyPatch) -> SoftToken:
    for key, value in {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_KEYS_DIR": str(DEMO_KEYS),
        "BHXH_LOG_LEVEL": "WARNING",
        **soft_token.env(),
    }.items():
        monkeypatch.setenv(key, value)
    return soft_token


def test_cli_generates_on_the_token_and_imports_a_key_the_hsm_officer_made(
    cli_env: SoftToken, db_url: str, tmp_path: Path
) -> None:
    hoa = enrolled_admin(db_url, "hoa")  # rotating and revoking a key need an administrator's code
    made = _cli("keys", "rotate", "--alg", "ES256", "--on-token", *hoa.args(), "--demo", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["storage"] == "pkcs11"

    # The officer's tools make a key pair with a label; a CA certifies it.
    officer = KeyToken.open(cli_env.module, cli_env.label, cli_env.pin)
    label, object_id = f"officer-{os.urandom(4).hex()}", os.urandom(8)
    try:
        library = pkcs11.lib(str(cli_env.module))
        with library.get_token(token_label=cli_env.label).open(rw=True) as session:
            public, _ = session.generate_keypair(pkcs11.KeyType.RSA, 2048, label=label, id=object_id, store=True)
            public_key = load_der_public_key(encode_rsa_public_key(public))
            # One it could hand out: refused, whatever its certificate.
            session.generate_keypair(
                pkcs11.KeyType.RSA,
                2048,
                label=f"{label}-open",
                id=object_id[::-1],
                store=True,
                private_template={pkcs11.Attribute.SENSITIVE: False, pkcs11.Attribute.EXTRACTABLE: True},
            )
        ca = TestCa.create()
        (tmp_path / "chain.pem").write_bytes(pem(ca.issue(public_key, "Officer Key")) + pem(ca.cert))
        (tmp_path / "other.pem").write_bytes(pem(ca.cert))
        before = _cli("keys", "list", "--demo", "--json").stdout
        mismatched = _cli("keys", "import-token", label, "--cert", str(tmp_path / "other.pem"), "--rotate", "--demo")
        assert mismatched.exit_code == 2 and "does not certify" in mismatched.output
        assert _cli("keys", "list", "--demo", "--json").stdout == before  # nothing stored, nothing retired
        imported = _cli(
            "keys", "import-token", label, "--cert", str(tmp_path / "chain.pem"), "--rotate", "--demo", "--json"
        )
        assert imported.exit_code == 0, imported.output
        row = json.loads(imported.stdout)
        assert row["storage"] == "pkcs11" and row["pkcs11_object_id"] == object_id.hex()
        assert "CN=Officer Key" in row["certificate"]["subject"]
        extractable = _cli("keys", "import-token", f"{label}-open", "--rotate", "--demo")
        assert extractable.exit_code == 2 and "extractable or not sensitive" in extractable.output
        absent = _cli("keys", "import-token", "no-such-label", "--demo")
        assert absent.exit_code == 2 and "no private key labelled 'no-such-label'" in absent.output
        listed = {r["kid"]: r for r in json.loads(_cli("keys", "list", "--demo", "--json").stdout)}
        assert listed[row["kid"]]["state"] == "active"
        assert _cli("keys", "revoke", row["kid"], *hoa.args(), "--demo").exit_code == 0
        assert object_id not in _private_objects(cli_env)
    finally:
        for leftover in (object_id, object_id[::-1]):  # whatever the test left, so later tests see a clean token
            officer.destroy(leftover.hex())
        officer.close()

    # The console entry point, without the token settings: one line on stderr and exit code 2.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BHXH_PKCS11_")}
    no_token = subprocess.run(
        [str(Path(sys.executable).with_name("bhxh-integrity")), "keys", "list", "--demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert no_token.returncode == 2, no_token.stderr
    assert "held on a PKCS#11 token: configure BHXH_PKCS11_MODULE" in no_token.stderr
    assert "Traceback" not in no_token.stderr


# --- the audit log's checkpoint key on the token ------------------------------------------------


def test_audit_checkpoints_are_signed_by_the_key_on_the_token(
    db_url: str, soft_token: SoftToken, tmp_path: Path
) -> None:
    from audit.checkpoint import SignedCheckpoint, VerifierKey

    label, public = soft_token.officer_key(Algorithm.ED25519, "checkpoint")
    svc = Service(
        db_url,
        keys_dir=demo_keys_without(tmp_path, "audit-log.key.pem"),
        checkpoint_key_label=label,
        **soft_token.settings(),
    )
    try:
        audit = svc.state.audit
        assert audit.ensure_genesis() is not None
        svc.state.clients.create("x", ["sign"])  # one more entry, then a checkpoint over it
        signed = audit.checkpoint_now()
        token_key = VerifierKey.from_public_key(audit.signer.name, public)
        assert audit.verifier_keys()[0] == token_key.to_text()
        assert SignedCheckpoint.from_text(signed.note).verify([token_key]) == (token_key,)
        file_key = VerifierKey.from_text((DEMO_KEYS / "audit-log.vkey").read_text().strip())
        assert file_key.to_text() != token_key.to_text()
        report = audit.verify()
        assert report.ok, report
        ready = svc.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["key_token"]["status"] == "ok"
    finally:
        svc.close()


@pytest.mark.parametrize(
    ("setting", "what", "file", "wrong", "refusal"),
    [
        (
            "checkpoint_key_label",
            "audit checkpoint key",
            "audit-log.key.pem",
            Algorithm.ES256,
            "is not Ed25519: checkpoints are C2SP signed notes",
        ),
        (
            "gateway_key_label",
            "gateway key",
            "gateway-exchange.key.pem",
            Algorithm.PS256,
            "is RSA: the gateway's token key must be Ed25519 or ECDSA P-256",
        ),
        (
            "receipt_key_label",
            "receipt key",
            "one-stop-signing.key.pem",
            Algorithm.ED25519,
            "must be RSA or ECDSA for PAdES receipts",
        ),
    ],
)
def test_a_wrong_token_key_label_stops_start_up_with_a_clear_error(
    db_url: str,
    soft_token: SoftToken,
    tmp_path: Path,
    setting: str,
    what: str,
    file: str,
    wrong: Algorithm,
    refusal: str,
) -> None:
    keys = demo_keys_without(tmp_path, file)
    wrong_label, _ = soft_token.officer_key(wrong, "wrong")
    with pytest.raises(ConfigurationError, match=refusal):
        Service(db_url, keys_dir=keys, **{setting: wrong_label}, **soft_token.settings())
    with pytest.raises(ConfigurationError, match=f"{what}: token .* holds no private key labelled 'nowhere'"):
        Service(db_url, keys_dir=keys, **{setting: "nowhere"}, **soft_token.settings())
    with pytest.raises(ConfigurationError, match=f"BHXH_{setting.upper()} names a token key: set BHXH_PKCS11_MODULE"):
        Service(db_url, keys_dir=keys, **{setting: "nowhere"})
    if setting == "gateway_key_label":
        # Without a label and without the file there is simply no gateway.
        no_gateway = Service(db_url, keys_dir=keys)
        assert no_gateway.state.exchange.gateway.key is None
        no_gateway.close()
    else:
        with pytest.raises(ConfigurationError, match=file):  # without a label the file is required
            Service(db_url, keys_dir=keys)


def test_a_log_moved_from_the_file_key_to_the_token_key_verifies_with_the_old_key_retired(
    db_url: str, soft_token: SoftToken, tmp_path: Path
) -> None:
    before = Service(db_url)  # checkpoints signed with the file key audit-log.key.pem
    try:
        before.state.audit.ensure_genesis()
        file_key = before.state.audit.verifier_keys()[0]
    finally:
        before.close()
    label, _ = soft_token.officer_key(Algorithm.ED25519, "checkpoint")
    keys = demo_keys_without(tmp_path, "audit-log.key.pem")
    retired = tmp_path / "retired.vkey"
    retired.write_text(file_key + "\n")

    moved = Service(db_url, keys_dir=keys, checkpoint_key_label=label, **soft_token.settings())
    try:
        moved.state.clients.create("x", ["sign"])
        moved.state.audit.checkpoint_now()
        # The file key's checkpoints are no longer trusted by this configuration…
        assert not moved.state.audit.verify().ok
    finally:
        moved.close()
    with_retired = Service(
        db_url, keys_dir=keys, checkpoint_key_label=label, checkpoint_retired_keys_file=retired, **soft_token.settings()
    )
    try:
        # …until the old key is named as retired: it verifies, and the token key signs.
        assert with_retired.state.audit.verifier_keys()[1] == file_key
        assert with_retired.state.audit.verify().ok
    finally:
        with_retired.close()
    retired.write_text("not a key\n")
    with pytest.raises(ConfigurationError, match="line 1: not a verifier key"):
        Service(
            db_url,
            keys_dir=keys,
            checkpoint_key_label=label,
            checkpoint_retired_keys_file=retired,
            **soft_token.settings(),
        )
