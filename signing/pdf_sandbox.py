"""Validation of untrusted PDFs in a child process with memory and CPU limits.

A PDF from outside can be a bomb for any parser: a FlateDecode stream that inflates a few
megabytes into gigabytes (pyHanko inflates a whole stream with one ``zlib.decompress``), an
object stream declaring millions of objects over inflated whitespace that the reader then
scans byte by byte, structures nested past the recursion limit. Bounding each such path
inside a third-party parser is whack-a-mole; a separate process bounds all of them at once:
its address space is capped (``RLIMIT_AS``), its CPU time is capped (``RLIMIT_CPU``), and the
parent stops waiting after a wall-clock limit and kills it. Whatever the child hits, the
caller gets ``MalformedPdf`` (an unreadable PDF), never a crash, a hang or an exhausted host.

The child is a ``fork`` of the caller: a few milliseconds, with pyHanko already imported.
(``forkserver`` and ``spawn`` re-run the main module in every child on Python 3.11, which
costs more than the check.) The child only parses bytes and answers over a pipe: it touches
no database connection, logs nothing, and leaves with ``os._exit`` (multiprocessing's), so
nothing it inherited from the caller's other threads is used or flushed.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from cryptography import x509

from signing.errors import MalformedPdf
from signing.pdf import PdfSignatureVerdict, _check_pdf_shape, validate_pdf

# A signed receipt validates in well under a second of CPU; a hundredfold margin for a slow or
# loaded host is still far below what a bomb would take.
UNTRUSTED_PDF_CPU_SECONDS = 5
UNTRUSTED_PDF_WALL_SECONDS = 30.0
# What the check may add to the child's address space (a receipt needs a few tens of MiB).
UNTRUSTED_PDF_MEMORY_BYTES = 256 * 1024 * 1024
# At most one child per CPU at a time: concurrent bombs then cost at most that many times the
# memory cap, and the others wait their turn instead of starving the service.
_CHILDREN = threading.BoundedSemaphore(os.cpu_count() or 1)


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = UNTRUSTED_PDF_CPU_SECONDS
    wall_seconds: float = UNTRUSTED_PDF_WALL_SECONDS
    memory_bytes: int = UNTRUSTED_PDF_MEMORY_BYTES

    def __post_init__(self) -> None:
        if self.cpu_seconds < 1 or self.wall_seconds <= 0 or self.memory_bytes < 1:
            raise ValueError("sandbox limits must be positive")


@dataclass(frozen=True)
class _Job:
    data: bytes
    trust_roots: Sequence[x509.Certificate]
    expected_signers: Sequence[x509.Certificate]
    timestamp_trust_roots: Sequence[x509.Certificate] | None
    at: datetime
    limits: SandboxLimits


def validate_pdf_sandboxed(
    data: bytes,
    *,
    trust_roots: Sequence[x509.Certificate],
    expected_signers: Sequence[x509.Certificate],
    at: datetime,
    timestamp_trust_roots: Sequence[x509.Certificate] | None = None,
    limits: SandboxLimits = SandboxLimits(),
) -> PdfSignatureVerdict:
    """``signing.pdf.validate_pdf`` for bytes from outside, run under ``limits``.

    Raises ``MalformedPdf`` for input that is not a readable PDF, and also when checking it
    would take more memory or time than the limits allow.
    """
    _check_pdf_shape(data)  # the cheap refusals need no process
    job = _Job(data, trust_roots, expected_signers, timestamp_trust_roots, at, limits)
    with _CHILDREN:
        return _check(job)


def _check(job: _Job) -> PdfSignatureVerdict:
    limits = job.limits
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_check_in_child, args=(sender, job), name="pdf-sandbox", daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(limits.wall_seconds):
            raise MalformedPdf(f"the PDF could not be checked within {limits.wall_seconds:g} seconds")
        try:
            kind, payload = receiver.recv()
        except EOFError:
            # The child died without an answer: killed at its CPU limit, out of memory where
            # MemoryError could not be raised, or the parser crashed (its traceback is on
            # stderr). Either way the input is refused; nothing of the service is at stake.
            raise MalformedPdf("the PDF could not be checked within the resource limits") from None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()
    if kind == "verdict":
        return payload  # type: ignore[no-any-return]
    raise MalformedPdf(payload)


def _apply_limits(limits: SandboxLimits) -> None:
    # Past the soft CPU limit the kernel sends SIGXCPU, whose default action dumps core: none.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    if sys.platform.startswith("linux"):
        # The cap is on top of what the forked interpreter already maps.
        with open("/proc/self/statm", encoding="ascii") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = mapped + limits.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _check_in_child(sender: Connection, job: _Job) -> None:
    _apply_limits(job.limits)
    message: tuple[str, Any]
    try:
        verdict = validate_pdf(
            job.data,
            trust_roots=job.trust_roots,
            expected_signers=job.expected_signers,
            at=job.at,
            timestamp_trust_roots=job.timestamp_trust_roots,
        )
        message = ("verdict", verdict)
    except MalformedPdf as exc:
        message = ("malformed", str(exc))
    except MemoryError:
        message = ("malformed", "the PDF needs more memory to check than allowed")
    sender.send(message)
    sender.close()


__all__ = [
    "UNTRUSTED_PDF_CPU_SECONDS",
    "UNTRUSTED_PDF_MEMORY_BYTES",
    "UNTRUSTED_PDF_WALL_SECONDS",
    "SandboxLimits",
    "validate_pdf_sandboxed",
]
