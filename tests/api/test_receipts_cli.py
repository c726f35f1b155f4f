"""``receipts issue`` and ``receipts verify FILE.pdf``: exit 0 issued/verified, 1 not issued by
the system, 2 bad input with one line on stderr."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli_receipts import app
from tests.api.operator_support import demo_cli_env
from tests.signing.test_pdf_signing import flip_byte_in_signed_range, replace_page_content

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    demo_cli_env(monkeypatch, db_url)


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    path = tmp_path / "request.json"
    path.write_text(
        json.dumps(
            {
                "receiving_unit": {"code": "000.00.31.H29", "name": "Bảo hiểm xã hội Thành phố Hồ Chí Minh"},
                "procedure_code": "1.001234",
                "procedure_name": "Giải quyết hưởng chế độ ốm đau",
                "applicant": {"name": "Nguyễn Thị Ánh Tuyết", "id_number": "079190001234"},
                "official": {"name": "Đặng Văn Lợi", "title": "Chuyên viên"},
                "appointment_at": (date.today() + timedelta(days=5)).isoformat(),
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    return path


def _issue(request_file: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["issue", str(request_file), "--out", str(out), "--demo", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_issue_writes_the_signed_pdf_and_verify_exits_0(cli_env: None, request_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "receipt.pdf"
    issued = _issue(request_file, out)
    assert issued["code"].startswith("000.00.31.H29-") and issued["code"].endswith("-0001")
    assert out.read_bytes().startswith(b"%PDF-")
    verified = runner.invoke(app, ["verify", str(out), "--demo", "--json"])
    assert verified.exit_code == 0, verified.output
    verdict = json.loads(verified.stdout)
    assert verdict["issued_by_system"] is True and verdict["code"] == issued["code"]
    human = runner.invoke(app, ["verify", str(out), "--demo"])
    assert human.exit_code == 0 and "ISSUED BY THE SYSTEM" in human.stdout


def test_verify_exits_1_for_a_modified_receipt_and_gives_reasons(
    cli_env: None, request_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "receipt.pdf"
    _issue(request_file, out)
    forged = tmp_path / "forged.pdf"
    forged.write_bytes(replace_page_content(out.read_bytes()))
    result = runner.invoke(app, ["verify", str(forged), "--demo", "--json"])
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)
    assert verdict["issued_by_system"] is False
    assert {r["code"] for r in verdict["reasons"]} == {"modified_after_signing", "hash_mismatch"}
    human = runner.invoke(app, ["verify", str(forged), "--demo"])
    assert human.exit_code == 1
    assert "NOT ISSUED BY THE SYSTEM" in human.stdout and "sửa đổi sau khi ký" in human.stdout


def test_verify_exits_1_for_a_byte_flipped_in_the_signed_range_and_calls_the_signature_not_valid(
    cli_env: None, request_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "receipt.pdf"
    _issue(request_file, out)
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(flip_byte_in_signed_range(out.read_bytes()))
    result = runner.invoke(app, ["verify", str(damaged), "--demo", "--json"])
    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)
    assert verdict["signature"]["intact"] is False and verdict["signature"]["valid"] is False
    assert verdict["issued_by_system"] is False
    assert "signature_not_intact" in {r["code"] for r in verdict["reasons"]}
    human = runner.invoke(app, ["verify", str(damaged), "--demo"])
    assert human.exit_code == 1 and "NOT ISSUED BY THE SYSTEM" in human.stdout


@pytest.mark.parametrize("content", [b"not a pdf", b"", b"%PDF-1.7\n%%EOF"], ids=["text", "empty", "header-only"])
def test_verify_exits_2_with_one_line_for_unreadable_input(cli_env: None, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pdf"
    path.write_bytes(content)
    result = runner.invoke(app, ["verify", str(path), "--demo"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    # One error line (the demo-mode warning is a JSON log line of its own).
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "PDF" in errors[0]


def test_verify_exits_2_for_a_missing_file(cli_env: None, tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", str(tmp_path / "nope.pdf"), "--demo"])
    assert result.exit_code == 2 and "cannot read" in result.stderr


def test_issue_with_the_same_idempotency_key_reuses_the_code(cli_env: None, request_file: Path, tmp_path: Path) -> None:
    first = _issue(request_file, tmp_path / "a.pdf", "--idempotency-key", "batch-7")
    again = _issue(request_file, tmp_path / "b.pdf", "--idempotency-key", "batch-7")
    assert again["code"] == first["code"] and again["replayed"] is True
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "invalid receipt request"),
        (json.dumps({"procedure_code": "x"}), "invalid receipt request"),
    ],
)
def test_issue_exits_2_for_a_bad_request_file(cli_env: None, tmp_path: Path, payload: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(payload, encoding="utf-8")
    result = runner.invoke(app, ["issue", str(path), "--demo"])
    assert result.exit_code == 2 and message in result.stderr


def test_issue_exits_2_for_an_unknown_unit(cli_env: None, request_file: Path, tmp_path: Path) -> None:
    data = json.loads(request_file.read_text(encoding="utf-8"))
    data["receiving_unit"] = {"code": "000.00.99.X99"}
    request_file.write_text(json.dumps(data), encoding="utf-8")
    result = runner.invoke(app, ["issue", str(request_file), "--demo"])
    assert result.exit_code == 2 and "not in the configured list" in result.stderr
