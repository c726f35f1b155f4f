"""Independent checks: a receipt signed with the demo one-stop key validates with pyHanko's
command line against the demo CA, and poppler's ``pdfsig`` calls the signature valid.

Neither tool is the gate in production (``pdfsig`` also calls a page-replacing update "valid",
shown below); they prove that what we write is standard PAdES that others read the same way.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signing.pdf import PdfSigner
from tests.signing.test_pdf_signing import flip_byte_in_signed_range, replace_page_content, unsigned_pdf
from tests.tools import require_tool

DEMO = Path(__file__).resolve().parents[2] / "keys.example"


def _tool(name: str, package: str) -> str:
    # pyHanko's command line is installed into this virtual environment, which may not be on PATH.
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else require_tool(name, package)


@lru_cache(maxsize=1)
def _demo_signed() -> bytes:
    passphrase = (DEMO / "passphrase.txt").read_bytes().strip()
    key = serialization.load_pem_private_key((DEMO / "one-stop-signing.key.pem").read_bytes(), passphrase)
    cert = x509.load_pem_x509_certificate((DEMO / "one-stop-signing.crt.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((DEMO / "ca.crt.pem").read_bytes())
    return PdfSigner(key, cert, [ca]).sign(unsigned_pdf(), signing_time=datetime.now(UTC))  # type: ignore[arg-type]


@pytest.fixture
def receipt_file(tmp_path: Path) -> Path:
    path = tmp_path / "receipt.pdf"
    path.write_bytes(_demo_signed())
    return path


def _pyhanko_validate(path: Path) -> subprocess.CompletedProcess[str]:
    cli = _tool("pyhanko", "pip package pyhanko-cli")
    return subprocess.run(
        [cli, "sign", "validate", "--trust", str(DEMO / "ca.crt.pem"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _pdfsig(path: Path) -> str:
    tool = _tool("pdfsig", "poppler-utils")
    return subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False).stdout


def test_pyhanko_cli_accepts_demo_receipt_as_intact_trusted_untouched(receipt_file: Path) -> None:
    result = _pyhanko_validate(receipt_file)
    assert result.returncode == 0, result.stderr
    assert "INTACT:TRUSTED,UNTOUCHED" in result.stdout


def test_pyhanko_cli_rejects_a_flipped_byte(tmp_path: Path) -> None:
    path = tmp_path / "flipped.pdf"
    path.write_bytes(flip_byte_in_signed_range(_demo_signed()))
    result = _pyhanko_validate(path)
    assert result.returncode != 0
    assert "INTACT:TRUSTED,UNTOUCHED" not in result.stdout


def test_pdfsig_reports_the_demo_receipt_signature_valid(receipt_file: Path) -> None:
    report = _pdfsig(receipt_file)
    assert "Signature Validation: Signature is Valid." in report
    assert "Signature Type: ETSI.CAdES.detached" in report
    assert "Total document signed" in report


def test_pdfsig_rejects_a_flipped_byte(tmp_path: Path) -> None:
    path = tmp_path / "flipped.pdf"
    path.write_bytes(flip_byte_in_signed_range(_demo_signed()))
    assert "Signature is Valid." not in _pdfsig(path)


def test_pdfsig_alone_misses_a_page_replacing_update(tmp_path: Path) -> None:
    # Why pdfsig is never the only gate (docs/receipts.md): it still says "valid" here,
    # only noting that the signature no longer covers the whole file.
    path = tmp_path / "replaced.pdf"
    path.write_bytes(replace_page_content(_demo_signed()))
    report = _pdfsig(path)
    assert "Signature is Valid." in report
    assert "Total document signed" not in report
