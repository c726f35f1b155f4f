"""The path to production, walked end to end with no demonstration key: ``keys init`` → a CA
(made here, standing in for the licensed CA) certifies its two CSRs, the receipt and the
data-message one → ``keys install-cert`` of each → ``init`` → ``serve`` (a real process) → an
API client → a data message signed by the data-message certificate and a receipt over HTTP →
``audit export`` → an auditor's ``audit verify`` with the .vkey from ``keys init``. On SQLite
and PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from typer.testing import CliRunner, Result

from api.cli import app
from tests.api.ca_support import TestCA, pem
from tests.conftest import DEMO_KEYS
from tests.loopback import free_port

runner = CliRunner()
PASSPHRASE = "the production passphrase of this walk"
READY_SECONDS = 60.0


@pytest.fixture
def production_env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a production instance: its own keys directory, no demo anything."""
    for name in list(os.environ):
        if name.startswith("BHXH_"):
            monkeypatch.delenv(name)
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    env = {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_KEYS_DIR": str(tmp_path / "keys"),
        "BHXH_KEYS_PASSPHRASE_FILE": str(passphrase_file),
        "BHXH_LOG_LEVEL": "WARNING",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _cli(*args: str) -> Result:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result


@pytest.fixture
def served(production_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Keys made, certified and installed, the store initialised, then `bhxh-integrity serve`."""
    keys = Path(production_env["BHXH_KEYS_DIR"])
    made = json.loads(_cli("keys", "init", "--out", str(keys), "--json").stdout)
    root = TestCA.root()
    issuing = root.subordinate()
    (tmp_path / "chain.pem").write_bytes(pem(issuing.cert, root.cert))
    # Both CSRs go to the CA; install-cert tells the two certificates apart by their key.
    assert made["csrs"] == [str(keys / "one-stop-signing.csr.pem"), str(keys / "institution-data-message.csr.pem")]
    installed: dict[str, x509.Certificate] = {}
    for name, csr in (("receipt", "one-stop-signing.csr.pem"), ("data", "institution-data-message.csr.pem")):
        cert = issuing.issue((keys / csr).read_bytes())
        (tmp_path / f"{name}.crt.pem").write_bytes(pem(cert))
        shown = _cli(
            "keys", "install-cert", str(tmp_path / f"{name}.crt.pem"), "--chain", str(tmp_path / "chain.pem"), "--json"
        )
        installed[json.loads(shown.stdout)["purpose"]] = cert
    assert x509.load_pem_x509_certificate((keys / "one-stop-signing.crt.pem").read_bytes()) == installed["receipt"]
    data_cert = x509.load_pem_x509_certificate((keys / "institution-data-message.crt.pem").read_bytes())
    assert data_cert == installed["data-message"]
    report = json.loads(_cli("init", "--json").stdout)
    assert any(change.startswith("created the audit log") for change in report["changes"])
    assert not (keys / "NOT-FOR-PRODUCTION").exists()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BHXH_")}
    env.update(production_env, BHXH_PUBLIC_BASE_URL=url, PYTHONUNBUFFERED="1")
    command = [str(Path(sys.executable).parent / "bhxh-integrity"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        # Run from elsewhere than the repository: nothing may come from keys.example/.
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, url, log)
        yield (
            url,
            {
                "verifier_key": made["verifier_key"],
                "vkey": str(keys / "audit-log.vkey"),
                "data_message_serial": format(data_cert.serial_number, "x"),
            },
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    assert b"INSECURE DEMO MODE" not in log.read_bytes()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}: {log.read_text()}")
            try:
                if client.get(url + "/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"serve was not ready within {READY_SECONDS} s: {log.read_text()}")


def _receipt() -> dict[str, object]:
    return {
        "receiving_unit": {"code": "000.00.31.H29", "name": "Bảo hiểm xã hội Thành phố Hồ Chí Minh"},
        "procedure_code": "1.001234",
        "procedure_name": "Giải quyết hưởng chế độ ốm đau",
        "applicant": {"name": "Nguyễn Thị Ánh Tuyết", "id_number": "079190001234"},
        "documents": [{"name": "Tờ khai đề nghị hưởng chế độ ốm đau", "copies": 1, "original": True}],
        "official": {"name": "Đặng Văn Lợi", "title": "Chuyên viên"},
        "appointment_at": (date.today() + timedelta(days=7)).isoformat(),
    }


def test_the_path_to_production_with_no_demo_key(served: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, made = served
    issued = json.loads(
        _cli("clients", "create", "portal", "--scopes", "sign,verify,receipts:issue,receipts:read", "--json").stdout
    )
    auth = {"Authorization": f"Bearer {issued['api_key']}"}
    with httpx.Client(base_url=url, headers=auth, timeout=60.0) as client:
        payload = "Hồ sơ đề nghị hưởng chế độ ốm đau".encode()
        signed = client.post(
            "/v1/signatures", json={"format": "cms", "payload_b64": base64.b64encode(payload).decode()}
        )
        assert signed.status_code == 200, signed.text
        assert signed.json()["alg"] == "PS256"
        checked = client.post(
            "/v1/signatures/verify",
            json={
                "format": "cms",
                "signature": signed.json()["signature"],
                "payload_b64": base64.b64encode(payload).decode(),
            },
        )
        assert checked.status_code == 200, checked.text
        verdict = checked.json()
        assert verdict["valid"] is True, verdict  # chains to the CA that install-cert put in ca.crt.pem
        # The signer is the data-message certificate install-cert put in place, never the receipt one.
        assert "BHXH Institution Data Message Signing" in verdict["signer"]["subject"]
        assert verdict["signer"]["serial"] == made["data_message_serial"]
        assert verdict["signer"]["purpose"] == "data-message"

        receipt = client.post("/v1/receipts", json=_receipt())
        assert receipt.status_code == 201, receipt.text
        pdf = client.get(receipt.json()["pdf_url"])
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        checked = client.post("/v1/receipts/verify", content=pdf.content, headers={"Content-Type": "application/pdf"})
        assert checked.status_code == 200, checked.text
        assert checked.json()["issued_by_system"] is True and checked.json()["signature"]["trusted_signer"] is True

    _cli("audit", "checkpoint", "--json")
    export = tmp_path / "audit.ndjson"
    exported = json.loads(_cli("audit", "export", "--out", str(export), "--json").stdout)
    assert exported["lines"] > 3
    text = export.read_text()
    assert "signature.created" in text and "receipt.issued" in text
    # The auditor needs nothing but the export and the verifier key that `keys init` printed.
    verified = runner.invoke(app, ["audit", "verify", "--export", str(export), "--public-key", made["vkey"], "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["ok"] is True
    # …and the export does not verify under another log's key (the demo one).
    other = runner.invoke(
        app, ["audit", "verify", "--export", str(export), "--public-key", str(DEMO_KEYS / "audit-log.vkey")]
    )
    assert other.exit_code == 1, other.output
