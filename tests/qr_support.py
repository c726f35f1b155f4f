"""QR codes read back as a phone would read them: poppler draws the page, zbar decodes the code."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.tools import require_tool


def qr_text(png: Path) -> str:
    """What the QR code in the image ``png`` says."""
    return subprocess.run(
        [require_tool("zbarimg", "zbar-tools"), "-q", "--raw", str(png)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def pdf_qr_text(pdf: bytes, workdir: Path) -> str:
    """What the QR code on the page of ``pdf`` says, the page drawn at 150 dpi in ``workdir``."""
    (workdir / "slip.pdf").write_bytes(pdf)
    subprocess.run(
        [
            require_tool("pdftoppm", "poppler-utils"),
            "-png",
            "-r",
            "150",
            "-singlefile",
            str(workdir / "slip.pdf"),
            str(workdir / "page"),
        ],
        check=True,
        timeout=60,
    )
    return qr_text(workdir / "page.png")
