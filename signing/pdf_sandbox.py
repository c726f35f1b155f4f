"""Validation of untrusted PDFs in a child process with memory and CPU limits.

A PDF from outside can be a bomb for any parser: a FlateDecode stream that inflates a few
megabytes into gigabytes (pyHanko inflates a whole stream with one ``zlib.decompress``), an
object stream declaring millions of objects over inflated whitespace that the reader then
scans byte by byte, structures nested past the recursion limit. Bounding each such path
inside a third-party parser is whack-a-mole; a separate process bounds all of them at once:
for each check its address space is capped (``RLIMIT_AS``), its CPU time is capped
(``RLIMIT_CPU``), and the parent stops waiting after a wall-clock limit and kills it. Whatever
the child hits, the caller gets ``MalformedPdf`` (an unreadable PDF), never a crash, a hang or
an exhausted host.

The children are ``fork``s of the caller, with pyHanko already imported. (``forkserver`` and
``spawn`` re-run the main module in every child on Python 3.11, which costs more than the
check.) A child checks one PDF after another, up to ``CHECKS_PER_CHILD``, and is then replaced:
a fresh fork for every check cost more CPU than the check itself (copy-on-write faults and cold
caches: ~41 ms of child CPU for a receipt that validates in ~24 ms in a warm process). A child
that was killed, ran out of memory or timed out is never reused. The child only parses bytes
and answers over a pipe: it touches no database connection, logs nothing, and leaves with
``os._exit`` (multiprocessing's), so nothing it inherited from the caller's other threads is
used or flushed.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import resource
import signal
import stat
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signing.errors import MalformedPdf
from signing.pdf import PdfSignatureVerdict, _check_pdf_shape, validate_pdf

# A signed receipt validates in well under a second of CPU; a hundredfold margin for a slow or
# loaded host is still far below what a bomb would take.
UNTRUSTED_PDF_CPU_SECONDS = 5
UNTRUSTED_PDF_WALL_SECONDS = 30.0
# What one check may add to the child's address space (a receipt needs a few tens of MiB).
UNTRUSTED_PDF_MEMORY_BYTES = 256 * 1024 * 1024
# A child is replaced after this many checks: what it grew (caches, a fragmented heap) and the
# parent's pages it still holds from the time of its fork stay bounded.
CHECKS_PER_CHILD = 200
# At most one child per CPU at a time: concurrent bombs then cost at most that many times the
# memory cap, and the others wait their turn instead of starving the service.
_CHILDREN = threading.BoundedSemaphore(os.cpu_count() or 1)
_CHILD_NAME = "pdf-sandbox"


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
    """What crosses the pipe: certificates as DER (cryptography's objects do not pickle)."""

    data: bytes
    trust_roots: tuple[bytes, ...]
    expected_signers: tuple[bytes, ...]
    timestamp_trust_roots: tuple[bytes, ...] | None
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
    job = _Job(
        data,
        _ders(trust_roots),
        _ders(expected_signers),
        None if timestamp_trust_roots is None else _ders(timestamp_trust_roots),
        at,
        limits,
    )
    with _CHILDREN:
        return _check(job)


def close_idle_children() -> None:
    """Stop the children waiting for work (at shutdown; the next check forks a new one)."""
    while (child := _POOL.take_idle()) is not None:
        child.stop()


def _ders(certificates: Sequence[x509.Certificate]) -> tuple[bytes, ...]:
    return tuple(c.public_bytes(Encoding.DER) for c in certificates)


class _Child:
    """One sandbox process and the parent's end of its pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self.checks = 0
        # No other sandbox fork between the pipe's creation and the close of the child's end
        # here: a sibling holding that end would keep the parent from seeing this child die.
        with _FORKING:
            self.conn, theirs = context.Pipe(duplex=True)
            self.process: BaseProcess = context.Process(target=_serve, args=(theirs,), name=_CHILD_NAME, daemon=True)
            self.process.start()
            theirs.close()

    def ask(self, job: _Job) -> tuple[str, Any, bool]:
        """Send ``job`` and wait for the answer (what was found, and whether the child is worn
        out); the child is stopped unless it answered."""
        self.checks += 1
        answered = False
        try:
            self.conn.send(job)
            if not self.conn.poll(job.limits.wall_seconds):
                raise MalformedPdf(f"the PDF could not be checked within {job.limits.wall_seconds:g} seconds")
            try:
                answer: tuple[str, Any, bool] = self.conn.recv()
            except EOFError:
                # The child died without an answer: killed at its CPU limit, out of memory where
                # MemoryError could not be raised, or the parser crashed (its traceback is on
                # stderr). Either way the input is refused; nothing of the service is at stake.
                raise MalformedPdf("the PDF could not be checked within the resource limits") from None
            answered = True
            return answer
        finally:
            if not answered:
                self.stop()

    def stop(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


class _Pool:
    """Idle children, shared by the threads of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Child] = []

    def take_idle(self) -> _Child | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def give_back(self, child: _Child) -> None:
        if child.checks >= CHECKS_PER_CHILD:
            child.stop()
            return
        with self._lock:
            self._idle.append(child)

    def clear(self) -> None:
        # In a new child: its siblings belong to the parent. No lock: another of the parent's
        # threads may have held it at the fork, and nobody in the child would release it.
        self._idle.clear()


_POOL = _Pool()
_FORKING = threading.Lock()


def _check(job: _Job) -> PdfSignatureVerdict:
    child = _POOL.take_idle()
    if child is not None and not child.process.is_alive():
        child.stop()
        child = None
    try:
        child = child or _Child()
        kind, payload, worn = child.ask(job)
    except (BrokenPipeError, ConnectionResetError):
        # An idle child that died since its last check (killed from outside); ``ask`` has
        # stopped it. A fresh child gets the job.
        child = _Child()
        kind, payload, worn = child.ask(job)
    if worn or kind == "exhausted":  # a heap not worth keeping
        child.stop()
    else:
        _POOL.give_back(child)
    if kind == "verdict":
        verdict: PdfSignatureVerdict = payload  # what the child answers a "verdict" with
        return verdict
    raise MalformedPdf(payload)


# --- in the child ---------------------------------------------------------------------------


def _serve(conn: Connection) -> None:
    _POOL.clear()
    _release_inherited(conn.fileno())
    # The parent's handlers (uvicorn's only note a shutdown) would let the child outlive a
    # SIGTERM, and the parent's exit waits for its children; Ctrl-C is the parent's to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Past the soft CPU limit the kernel sends SIGXCPU, whose default action dumps core: none.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    start = _mapped_bytes()
    while True:
        try:
            job: _Job = conn.recv()
        except EOFError:
            return  # the parent closed the pipe or exited
        _apply_limits(job.limits, start)
        kind, payload = _answer(job)
        # A heap grown by more than a quarter of the allowance would shrink the next checks'
        # room: the parent replaces the child instead (its answer stands).
        worn = _mapped_bytes() - start > job.limits.memory_bytes // 4
        conn.send((kind, payload, worn))


def _release_inherited(keep: int) -> None:
    """Let go of the parent's sockets and pipes. The child outlives many of the parent's
    connections: holding a copy of a listening socket would keep its port accepting after the
    parent closed it, and a copy of a pipe's or a sibling's end keeps its reader from seeing
    EOF. Each is replaced by /dev/null rather than closed, so that no object still naming the
    descriptor can close a number reused meanwhile."""
    if not os.path.isdir("/proc/self/fd"):
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd <= 2 or fd in (keep, null):
                continue
            try:
                mode = os.fstat(fd).st_mode
            except OSError:
                continue  # the directory's own descriptor, gone by now
            if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def _apply_limits(limits: SandboxLimits, start: int) -> None:
    """Limits for the next check: CPU on top of what the child has used so far, address space
    on top of what it mapped when it started. Only the soft limits move (an unprivileged
    process cannot raise a hard limit it lowered); the kernel enforces the soft ones: SIGXCPU,
    whose default action ends the process, and ENOMEM."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _set_soft(resource.RLIMIT_CPU, math.ceil(usage.ru_utime + usage.ru_stime) + limits.cpu_seconds)
    if start:
        _set_soft(resource.RLIMIT_AS, start + limits.memory_bytes)


def _mapped_bytes() -> int:
    """The address space mapped now (Linux; 0 elsewhere, where no memory cap is set)."""
    if not sys.platform.startswith("linux"):
        return 0
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _set_soft(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    resource.setrlimit(which, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _answer(job: _Job) -> tuple[str, Any]:
    try:
        verdict = validate_pdf(
            job.data,
            trust_roots=_certificates(job.trust_roots),
            expected_signers=_certificates(job.expected_signers),
            at=job.at,
            timestamp_trust_roots=None
            if job.timestamp_trust_roots is None
            else _certificates(job.timestamp_trust_roots),
        )
    except MalformedPdf as exc:
        return ("malformed", str(exc))
    except MemoryError:
        return ("exhausted", "the PDF needs more memory to check than allowed")
    return ("verdict", verdict)


@functools.lru_cache(maxsize=16)
def _certificates(ders: tuple[bytes, ...]) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_der_x509_certificate(der) for der in ders)


__all__ = [
    "CHECKS_PER_CHILD",
    "UNTRUSTED_PDF_CPU_SECONDS",
    "UNTRUSTED_PDF_MEMORY_BYTES",
    "UNTRUSTED_PDF_WALL_SECONDS",
    "SandboxLimits",
    "close_idle_children",
    "validate_pdf_sandboxed",
]
