"""What a command reads as its input: a file, or standard input for ``-``, bounded in size so
that a wrong path (a disk image, a pipe that never ends) is refused rather than held in memory."""

from __future__ import annotations

import sys
from pathlib import Path

from api.cli_output import fail

MAX_INPUT_BYTES = 64 * 1024 * 1024


def read_input(path: Path) -> bytes:
    """The bytes of ``path`` (``-``: standard input); unreadable or too large is one line, exit 2."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with path.open("rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if len(data) > MAX_INPUT_BYTES:
        fail(f"{path} is larger than {MAX_INPUT_BYTES} bytes")
    return data
