"""Hostile input: each attack gets the clear refusal, within a time and a
memory bound, and writes nothing.

"Nothing written" is checked on the database itself: every table (the audit log's included)
has as many rows after the request as before it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import multiprocessing
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, table

from api.errors import PROBLEM_JSON, TYPE_PREFIX
from auth.scopes import SCOPES
from signing import pdf_sandbox
from signing.errors import MalformedPdf
from signing.pdf_sandbox import SandboxLimits, close_idle_children, validate_pdf_sandboxed
from tests.auth.support import STRONG, wire_accounts
from tests.conftest import DEMO_KEYS, REPO_ROOT, Service
from tests.signing.test_pdf_signing import NOW as PDF_NOW
from tests.signing.test_pdf_signing import signer_for, throwaway_pki, unsigned_pdf

PASSWD = "/etc/passwd"
PASSWD_MARK = "root:"  # the first line of /etc/passwd on every Linux
BOMB_SECONDS = 10.0  # wall clock, on a loaded 2-core box
SERVER_PEAK_BYTES = 64 * 1024 * 1024  # what a refused bomb may cost the serving process
RECEIPT = {
    "receiving_unit": {"code": "000.00.31.H29"},
    "procedure_code": "1.000.001",
    "procedure_name": "Cấp lại sổ bảo hiểm xã hội",
    "applicant": {"name": "Nguyễn Văn An", "id_number": "079300000001"},
    "official": {"name": "Lê Thị Bình", "title": "Cán bộ tiếp nhận"},
    "appointment_at": "2030-01-02",
}


# --- shared helpers ---------------------------------------------------------------------------


def _problem(response: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"].startswith(TYPE_PREFIX)
    if slug is not None:
        assert body["type"] == TYPE_PREFIX + slug, body
    return body


def _refused(response: Any) -> dict[str, Any]:
    """A 4xx problem: refused as the client's fault, never a 5xx."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    return _problem(response, response.status_code)


def _database_state(service: Service) -> tuple[dict[str, int], int]:
    engine = service.state.engine
    with engine.connect() as conn:
        counts = {
            name: conn.execute(select(func.count()).select_from(table(name))).scalar_one()
            for name in inspect(conn).get_table_names()
            if name != "alembic_version"
        }
    return counts, service.state.audit.size()


class _NothingWritten:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.counts, self.size = _database_state(service)

    def check(self, *, logged: frozenset[str] = frozenset()) -> None:
        """Nothing written; except, when named, the audit entries of the refusal itself (a
        refused credential is a security event)."""
        counts, size = _database_state(self.service)
        new = self.service.state.audit.entries(self.size, size) if size > self.size else []
        assert {e.action for e in new} <= logged, [e.action for e in new]
        strict = {t for t in counts if not (logged and t.startswith("audit_"))}
        assert {t: counts[t] for t in strict} == {t: self.counts[t] for t in strict}


_KEY_REFUSED = frozenset({"auth.apikey.refused"})


@pytest.fixture
def everything(service: Service) -> dict[str, str]:
    return service.auth(*sorted(SCOPES))


# --- PDFs -------------------------------------------------------------------------------------


def _pdf(objects: dict[int, bytes], *, root: int = 1) -> bytes:
    """A PDF with a classic cross-reference table over ``objects`` (number -> body)."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    size = max(objects) + 1
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number] if number in offsets else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, root, xref)
    return bytes(out)


def _catalog_with(entry: bytes) -> bytes:
    return _pdf(
        {1: b"<< /Type /Catalog /Pages 2 0 R /Bomb " + entry + b" >>", 2: b"<< /Type /Pages /Kids [] /Count 0 >>"}
    )


@lru_cache(maxsize=4)
def _inflating(mebibytes: int, unit: bytes = b"\0") -> bytes:
    """A zlib stream of ``mebibytes`` MiB of ``unit`` bytes, built without compressing them all:
    after a full flush deflate forgets its history, so every further MiB compresses to the
    same bytes and is repeated as such; the Adler-32 trailer is computed as usual."""
    chunk = unit * (1 << 20)
    deflate = zlib.compressobj(9)
    first = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeat = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(mebibytes):
        adler = zlib.adler32(chunk, adler)
    return first + repeat * (mebibytes - 1) + b"\x03\x00" + struct.pack(">I", adler)


def _flate_xref_bomb(mebibytes: int) -> bytes:
    """The cross-reference stream itself, which a reader must inflate first, is the bomb."""
    data = _inflating(mebibytes)
    head = b"%PDF-1.7\n"
    body = (
        b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    )
    xref_at = len(head) + len(body)
    xref = b"3 0 obj\n<< /Type /XRef /Size 4 /W [1 4 2] /Root 1 0 R /Filter /FlateDecode /Length %d >>\nstream\n" % len(
        data
    )
    return head + body + xref + data + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % xref_at


def _hex_string_bomb(mebibytes: int) -> bytes:
    """A hex string of ``mebibytes`` MiB in the catalog. Nothing is compressed, so no decode
    limit applies, and the reader takes it one digit at a time: about a CPU second per MiB."""
    return _catalog_with(b"<" + b"0" * (mebibytes << 20) + b">")


def _number_array_bomb(count: int) -> bytes:
    """An array of ``count`` numbers in the catalog: two bytes each on the wire, a Python object
    of tens of bytes each once read."""
    return _catalog_with(b"[" + b"0 " * count + b"]")


def _object_stream_bomb(mebibytes: int, declared: int = 10_000_000, unit: bytes = b"\0") -> bytes:
    """The catalog lives in an object stream declaring ten million objects, whose content
    inflates to ``mebibytes`` MiB of PDF whitespace that a reader scans byte by byte."""
    data = _inflating(mebibytes, unit)
    head = b"%PDF-1.7\n"
    objstm = (
        b"4 0 obj\n<< /Type /ObjStm /N %d /First 20 /Filter /FlateDecode /Length %d >>\nstream\n"
        % (declared, len(data))
        + data
        + b"\nendstream\nendobj\n"
    )
    xref_at = len(head) + len(objstm)
    rows = [(0, 0, 65535), (2, 4, 0), (2, 4, 1), (2, 4, 2), (1, len(head), 0), (1, xref_at, 0)]
    entries = b"".join(struct.pack(">BIH", *row) for row in rows)
    xref = b"5 0 obj\n<< /Type /XRef /Size 6 /W [1 4 2] /Root 1 0 R /Length %d >>\nstream\n" % len(entries)
    return head + objstm + xref + entries + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % xref_at


def _verify_pdf(service: Service, headers: dict[str, str], data: bytes) -> Any:
    return service.client.post(
        "/v1/receipts/verify", content=data, headers={**headers, "content-type": "application/pdf"}
    )


@pytest.fixture
def signed_receipt(service: Service, everything: dict[str, str]) -> bytes:
    issued = service.client.post("/v1/receipts", json=RECEIPT, headers=everything)
    assert issued.status_code == 201, issued.text
    pdf = service.client.get(issued.json()["pdf_url"], headers=everything)
    assert pdf.status_code == 200
    return pdf.content


def _truncations(pdf: bytes) -> dict[str, bytes]:
    eof = pdf.rindex(b"%%EOF")
    startxref = pdf.rindex(b"startxref")
    return {
        "empty": b"",
        "not-a-pdf": b'{"receipt": "000.00.31.H29-251123-0001"}',
        "header-only": b"%PDF-1.7\n%%EOF\n",
        "cut-in-half": pdf[: len(pdf) // 2],
        "cut-in-half-then-eof": pdf[: len(pdf) // 2] + b"\n%%EOF\n",
        "cut-before-eof": pdf[:eof],
        "middle-removed": pdf[:1000] + pdf[-3000:],
        "startxref-beyond-the-end": pdf[:startxref] + b"startxref\n99999999\n%%EOF\n",
        "body-of-zeros": b"%PDF-1.7\n" + bytes(4096) + b"\n%%EOF\n",
    }


def test_malformed_and_truncated_pdfs_are_unreadable_422_and_nothing_written(
    service: Service, everything: dict[str, str], signed_receipt: bytes, subtests: pytest.Subtests
) -> None:
    for case, data in _truncations(signed_receipt).items():
        with subtests.test(case=case):
            untouched = _NothingWritten(service)
            _problem(_verify_pdf(service, everything, data), 422, "unreadable-pdf")
            untouched.check()
    # The intact receipt still verifies: the refusals above are about the input, not the service.
    assert _verify_pdf(service, everything, signed_receipt).json()["issued_by_system"] is True


@dataclass(frozen=True)
class _Bomb:
    name: str
    build: Callable[[], bytes]
    stopped_by: str  # in the problem's detail: what refused it


PDF_BOMBS = [
    _Bomb("array-nested-100000-deep", lambda: _catalog_with(b"[" * 100_000 + b"]" * 100_000), "unreadable PDF"),
    _Bomb("array-nested-100000-deep-unclosed", lambda: _catalog_with(b"[" * 100_000), "unreadable PDF"),
    _Bomb(
        "dict-nested-100000-deep",
        lambda: _catalog_with(b"<< /A " * 100_000 + b"1" + b" >>" * 100_000),
        "unreadable PDF",
    ),
    # ~1 MiB on the wire, 1 GiB once inflated: pyHanko's own decode limits (0.38) refuse them
    # before the child's memory cap would.
    _Bomb("flate-xref-stream-1GiB", lambda: _flate_xref_bomb(1024), "PdfDecodeLimitError"),
    _Bomb("object-stream-10M-objects-1GiB", lambda: _object_stream_bomb(1024), "PdfDecodeLimitError"),
]


@pytest.mark.parametrize("bomb", PDF_BOMBS, ids=lambda b: b.name)
def test_pdf_bombs_are_refused_422_within_time_and_memory_bounds(
    service: Service, everything: dict[str, str], bomb: _Bomb
) -> None:
    data = bomb.build()
    assert len(data) < service.settings.max_body_bytes
    untouched = _NothingWritten(service)
    tracemalloc.start()
    started = time.monotonic()
    try:
        response = _verify_pdf(service, everything, data)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bomb.stopped_by in _problem(response, 422, "unreadable-pdf")["detail"]
    assert elapsed < BOMB_SECONDS, f"{bomb.name}: {elapsed:.1f} s"
    # The serving process never holds the inflated content; the request body is ~1 MiB.
    assert peak < SERVER_PEAK_BYTES, f"{bomb.name}: the server process peaked at {peak / 2**20:.0f} MiB"
    untouched.check()


def _sandbox_pids() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.name == "pdf-sandbox" and p.pid is not None}


def test_a_pdf_that_would_run_for_long_is_stopped_at_the_cpu_limit() -> None:
    # A 16 MiB hex string: fits the memory cap, and the reader's digit-by-digit scan of it
    # takes over ten CPU seconds; the child is killed after one.
    bomb = _hex_string_bomb(16)
    close_idle_children()
    started = time.monotonic()
    with pytest.raises(MalformedPdf, match="resource limits"):
        validate_pdf_sandboxed(
            bomb, trust_roots=[], expected_signers=[], at=datetime.now(UTC), limits=SandboxLimits(cpu_seconds=1)
        )
    assert time.monotonic() - started < BOMB_SECONDS
    assert not _sandbox_pids()


def test_a_pdf_check_that_outlives_the_wall_clock_limit_is_killed() -> None:
    bomb = _hex_string_bomb(16)
    close_idle_children()
    started = time.monotonic()
    with pytest.raises(MalformedPdf, match=r"within 0\.5 seconds"):
        validate_pdf_sandboxed(
            bomb,
            trust_roots=[],
            expected_signers=[],
            at=datetime.now(UTC),
            limits=SandboxLimits(cpu_seconds=60, wall_seconds=0.5),
        )
    assert time.monotonic() - started < BOMB_SECONDS
    assert not _sandbox_pids()


# --- the sandbox's children -------------------------------------------------------------------
# A child checks one PDF after another (a fork per check cost more than the check); these pin
# down what makes that safe: a child that failed is never reused, a dead one is replaced, each
# serves a bounded number of checks and holds none of the service's sockets.


@pytest.fixture(scope="module")
def genuine() -> tuple[bytes, dict[str, Any]]:
    pki = throwaway_pki()
    pdf = signer_for("signer").sign(unsigned_pdf(), signing_time=PDF_NOW)
    return pdf, {"trust_roots": [pki["ca"][1]], "expected_signers": [pki["signer"][1]], "at": PDF_NOW}


def _check_genuine(genuine: tuple[bytes, dict[str, Any]]) -> None:
    pdf, options = genuine
    verdict = validate_pdf_sandboxed(pdf, **options)
    assert (verdict.intact, verdict.valid, verdict.chain_trusted, verdict.expected_signer) == (True, True, True, True)


def test_one_child_checks_pdf_after_pdf_and_an_unreadable_one_does_not_cost_it(
    genuine: tuple[bytes, dict[str, Any]],
) -> None:
    close_idle_children()
    assert not _sandbox_pids()
    _check_genuine(genuine)
    child = _sandbox_pids()
    assert len(child) == 1
    with pytest.raises(MalformedPdf, match="unreadable PDF"):
        validate_pdf_sandboxed(b"%PDF-1.7\nno objects, no cross-reference table\n%%EOF\n", **genuine[1])
    _check_genuine(genuine)
    assert _sandbox_pids() == child


@pytest.mark.parametrize(
    ("bomb", "limits", "stopped_by"),
    [
        (lambda: _hex_string_bomb(16), SandboxLimits(cpu_seconds=1), "resource limits"),
        (lambda: _number_array_bomb(3_000_000), SandboxLimits(cpu_seconds=60, memory_bytes=32 << 20), "memory"),
    ],
    ids=["cpu-limit", "memory-limit"],
)
def test_a_child_stopped_at_a_limit_is_never_used_again(
    genuine: tuple[bytes, dict[str, Any]], bomb: Callable[[], bytes], limits: SandboxLimits, stopped_by: str
) -> None:
    close_idle_children()
    _check_genuine(genuine)
    (first,) = _sandbox_pids()
    with pytest.raises(MalformedPdf, match=stopped_by):
        validate_pdf_sandboxed(bomb(), **genuine[1], limits=limits)
    assert first not in _sandbox_pids()
    _check_genuine(genuine)
    assert len(_sandbox_pids()) == 1 and first not in _sandbox_pids()


_GROWN_HEAP_CHECK = """
import multiprocessing
from datetime import UTC, datetime
from signing.pdf_sandbox import SandboxLimits, validate_pdf_sandboxed
from tests.api.test_hostile_input import _number_array_bomb
verdict = validate_pdf_sandboxed(
    _number_array_bomb(100_000), trust_roots=[], expected_signers=[], at=datetime.now(UTC),
    limits=SandboxLimits(memory_bytes=64 << 20),
)
kept = [p for p in multiprocessing.active_children() if p.name == "pdf-sandbox"]
print(verdict.signature_found, len(kept), flush=True)
"""


def test_a_child_whose_heap_grew_answers_and_is_then_replaced() -> None:
    # 100,000 numbers grow the heap by about 30 MiB: within a 64 MiB allowance, past its quarter.
    # Checked from a fresh interpreter: a child forked from a process with a large heap can
    # reuse the free memory it inherited without mapping more, so "grown" depends on the
    # parent's history, and the suite's own process has a long one.
    finished = subprocess.run(
        [sys.executable, "-c", _GROWN_HEAP_CHECK],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["False", "0"], "the check answered, and a child with a grown heap was not kept"


def test_an_idle_child_killed_from_outside_is_replaced(genuine: tuple[bytes, dict[str, Any]]) -> None:
    close_idle_children()
    _check_genuine(genuine)
    (first,) = _sandbox_pids()
    os.kill(first, signal.SIGKILL)  # what the kernel's OOM killer does to an idle child
    deadline = time.monotonic() + 10
    while Path(f"/proc/{first}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the killed child did not die"
        time.sleep(0.01)
    _check_genuine(genuine)
    assert len(_sandbox_pids()) == 1 and first not in _sandbox_pids()


def test_a_child_is_replaced_after_its_quota_of_checks(
    genuine: tuple[bytes, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pdf_sandbox, "CHECKS_PER_CHILD", 2)
    close_idle_children()
    _check_genuine(genuine)
    first = _sandbox_pids()
    _check_genuine(genuine)
    assert not _sandbox_pids(), "the child was kept past its quota"
    _check_genuine(genuine)
    assert len(_sandbox_pids()) == 1 and not _sandbox_pids() & first


def test_a_child_holds_none_of_the_services_sockets(genuine: tuple[bytes, dict[str, Any]]) -> None:
    # Forked while the service listens: once the service closes its port, nobody may accept on it.
    close_idle_children()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        _check_genuine(genuine)
        assert _sandbox_pids()
    finally:
        listener.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


_EXITING_SERVICE = """
import signal, sys
from tests.signing.test_pdf_signing import NOW, signer_for, throwaway_pki, unsigned_pdf
from signing.pdf_sandbox import validate_pdf_sandboxed
signal.signal(signal.SIGTERM, lambda *_: None)  # as uvicorn does: a SIGTERM only notes a shutdown
pki = throwaway_pki()
pdf = signer_for("signer").sign(unsigned_pdf(), signing_time=NOW)
assert validate_pdf_sandboxed(pdf, trust_roots=[pki["ca"][1]], expected_signers=[pki["signer"][1]], at=NOW).valid
print("checked", flush=True)
sys.exit(0)  # without closing the idle child: the interpreter's exit must end it
"""


def test_a_process_that_exits_leaves_no_sandbox_child_and_does_not_wait_for_one() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", _EXITING_SERVICE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "checked"


def test_concurrent_checks_share_at_most_one_child_per_cpu(genuine: tuple[bytes, dict[str, Any]]) -> None:
    close_idle_children()
    with ThreadPoolExecutor(4) as clients:
        # Each client's failure is raised here, by list().
        list(clients.map(lambda _client: [_check_genuine(genuine) for _ in range(3)], range(4)))
    assert 1 <= len(_sandbox_pids()) <= (os.cpu_count() or 1)


# --- XML --------------------------------------------------------------------------------------

_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol;" if i == 1 else b"&lol%d;" % (i - 1)) * 10) for i in range(1, 10))
    + b"]><lolz>&lol9;</lolz>"
)
HOSTILE_XML = {
    "billion-laughs": _LAUGHS,
    "billion-laughs-utf16": _LAUGHS.decode().replace('"1.0"?>', '"1.0" encoding="UTF-16"?>', 1).encode("utf-16"),
    "xxe-file": b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://%s">]><r>&x;</r>' % PASSWD.encode(),
    # The byte check for "<!DOCTYPE" cannot see UTF-16; the parsed document's DTD is refused too.
    "xxe-file-utf16": (
        f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{PASSWD}">]><r>&x;</r>'
    ).encode("utf-16"),
    "xxe-parameter-entity": b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY %% p SYSTEM "file://%s"> %%p;]><r/>'
    % PASSWD.encode(),
    "external-dtd": b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "file://%s"><r/>' % PASSWD.encode(),
    "nested-100000-deep": b"<a>" * 100_000 + b"</a>" * 100_000,
}


def test_hostile_xml_is_refused_for_signing_and_nothing_written(
    service: Service, everything: dict[str, str], subtests: pytest.Subtests
) -> None:
    for case, document in HOSTILE_XML.items():
        with subtests.test(case=case):
            untouched = _NothingWritten(service)
            started = time.monotonic()
            response = service.client.post(
                "/v1/signatures",
                json={"format": "xml", "payload_b64": base64.b64encode(document).decode()},
                headers=everything,
            )
            assert time.monotonic() - started < BOMB_SECONDS
            _problem(response, 422, "invalid-xml")
            assert PASSWD_MARK not in response.text and "lollol" not in response.text
            untouched.check()


def test_hostile_xml_is_refused_for_verifying_and_its_content_never_echoed(
    service: Service, everything: dict[str, str], subtests: pytest.Subtests
) -> None:
    for case, document in HOSTILE_XML.items():
        with subtests.test(case=case):
            size = service.state.audit.size()
            response = service.client.post(
                "/v1/signatures/verify",
                json={"format": "xml", "signature": base64.b64encode(document).decode()},
                headers=everything,
            )
            verdict = _problem(response, 422, "malformed-signature")["verification"]
            assert verdict["sub_indication"] == "FORMAT_FAILURE" and verdict["valid"] is False
            assert PASSWD_MARK not in response.text and "lollol" not in response.text
            # The refused verification is logged as a verdict (one entry), nothing of the file in it.
            (entry,) = service.state.audit.entries(size, size + 1)
            assert entry.action.startswith("signature.") and PASSWD_MARK not in json.dumps(entry.data)


def test_xinclude_is_never_processed_when_signing(service: Service, everything: dict[str, str]) -> None:
    document = (
        b'<r xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="file://%s" parse="text"/></r>'
        % PASSWD.encode()
    )
    response = service.client.post(
        "/v1/signatures", json={"format": "xml", "payload_b64": base64.b64encode(document).decode()}, headers=everything
    )
    assert response.status_code == 200, response.text
    signed = base64.b64decode(response.json()["signature"])
    assert b"xi:include" in signed and PASSWD_MARK.encode() not in signed


def test_a_signature_referencing_a_local_file_is_not_followed(service: Service, everything: dict[str, str]) -> None:
    signed = service.client.post(
        "/v1/signatures",
        json={"format": "xml", "payload_b64": base64.b64encode(b"<doc><a>1</a></doc>").decode()},
        headers=everything,
    )
    document = base64.b64decode(signed.json()["signature"])
    assert b'URI=""' in document
    pointed = document.replace(b'URI=""', b'URI="file://%s"' % PASSWD.encode(), 1)
    response = service.client.post(
        "/v1/signatures/verify",
        json={"format": "xml", "signature": base64.b64encode(pointed).decode()},
        headers=everything,
    )
    assert response.status_code in (200, 422), response.text
    body = response.json()
    assert body.get("verification", body)["valid"] is False
    assert PASSWD_MARK not in response.text


# --- JSON bodies ------------------------------------------------------------------------------

JSON_ROUTES = ["/v1/admin/clients", "/v1/admin/users", "/v1/audit/events", "/v1/signatures", "/v1/auth/login"]
DEEP = 100_000
DEEP_JSON = {
    "unclosed-arrays": b"[" * DEEP,
    "closed-arrays": b"[" * DEEP + b"]" * DEEP,
    "objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "inside-a-valid-field": b'{"action": "ext.test-client.x.y", "data": {"d": ' + b"[" * DEEP + b"]" * DEEP + b"}}",
}


@pytest.mark.parametrize("shape", list(DEEP_JSON))
def test_deeply_nested_json_is_a_4xx_never_a_recursion_error(
    service: Service, everything: dict[str, str], shape: str, subtests: pytest.Subtests
) -> None:
    for route in JSON_ROUTES:
        with subtests.test(route=route):
            untouched = _NothingWritten(service)
            response = service.client.post(
                route, content=DEEP_JSON[shape], headers={**everything, "content-type": "application/json"}
            )
            _refused(response)
            untouched.check()


def test_json_nested_just_within_the_parser_limit_stays_readable(service: Service, everything: dict[str, str]) -> None:
    """An audit event nested as deep as the JSON parser accepts is refused or stored; if
    stored, reading, exporting and verifying the log afterwards still work."""
    depth = 900
    body = b'{"action": "ext.test-client.x.y", "data": {"d": ' + b"[" * depth + b"]" * depth + b"}}"
    answer = service.client.post(
        "/v1/audit/events", content=body, headers={**everything, "content-type": "application/json"}
    )
    assert answer.status_code in (201, 400, 413, 422), answer.text[:300]
    for path in ("/v1/audit/entries", "/v1/audit/export", "/v1/audit/report"):
        assert service.client.get(path, headers=everything).status_code == 200, path


NON_UTF8 = {
    "invalid-utf8-in-string": b'{"name": "\xff\xfe", "scopes": ["sign"]}',
    "overlong-utf8": b'{"name": "\xc0\xaf", "scopes": ["sign"]}',
    "latin1": b'{"name": "caf\xe9", "scopes": ["sign"]}',
    "lone-surrogate-escape": b'{"name": "\\ud800", "scopes": ["sign"]}',
    "nul-byte-escape": b'{"name": "a\\u0000b", "scopes": ["sign"]}',
}


def test_non_utf8_json_bodies_are_refused_and_nothing_written(
    service: Service, everything: dict[str, str], subtests: pytest.Subtests
) -> None:
    for case, content in NON_UTF8.items():
        with subtests.test(case=case):
            untouched = _NothingWritten(service)
            response = service.client.post(
                "/v1/admin/clients", content=content, headers={**everything, "content-type": "application/json"}
            )
            _refused(response)
            untouched.check()


def _string_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _string_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_paths(item, (*prefix, index))
    elif isinstance(value, str):
        yield prefix


def _replaced(value: Any, path: tuple[Any, ...], new: str) -> Any:
    changed = copy.deepcopy(value)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return changed


def _valid_bodies() -> dict[str, dict[str, Any]]:
    certificate = (DEMO_KEYS / "portal-exchange.crt.pem").read_text()
    return {
        "/v1/admin/clients": {"name": "client", "scopes": ["sign"]},
        "/v1/admin/users": {
            "username": "bob",
            "password": STRONG,
            "role": "citizen",
            "mfa_required": False,
            "reason": "why",
        },
        "/v1/admin/peers": {
            "name": "p1",
            "keyid": "k1",
            "key_pem": certificate,
            "routes": ["POST /gateway/p1/**"],
            "base_url": "http://127.0.0.1:9/",
        },
        "/v1/audit/events": {"action": "ext.test-client.a.b", "subject": "s", "data": {"k": "v"}, "pii": {"n": "v"}},
        "/v1/signatures": {"format": "jws", "payload_b64": "AA==", "key_id": "k"},
        "/v1/signatures/verify": {"format": "jws", "signature": "a.b.c", "payload_b64": "AA=="},
        "/v1/receipts": {
            **RECEIPT,
            "receiving_unit": {"code": "000.00.31.H29", "name": "n"},
            "applicant": {**RECEIPT["applicant"], "phone": "1", "address": "x"},
            "documents": [{"name": "d", "copies": 1, "original": True}],
        },
        "/v1/exchange/verify": {
            "method": "POST",
            "url": "http://x/y",
            "headers": {"content-type": "a", "signature": "x"},
            "body_b64": "AA==",
        },
        "/v1/auth/login": {"username": "bob", "password": "x", "device_token": "d"},
        "/v1/auth/mfa": {"mfa_token": "t", "code": "123456", "device_token": "d"},
        "/v1/admin/users/bob/unlock": {"reason": "why"},
        "/v1/admin/audit/pii/1/erase": {"reason": "why"},
    }


# NUL: PostgreSQL text columns refuse it outright. A lone surrogate: valid as a JSON escape,
# not encodable as UTF-8 (the database driver, the response body).
POISON = {"nul": r"a\u0000b", "lone-surrogate": r"a\ud800b"}  # JSON escapes, as sent on the wire


@pytest.mark.parametrize("route", list(_valid_bodies()))
def test_nul_or_a_lone_surrogate_in_any_string_field_is_never_a_5xx(
    service: Service, everything: dict[str, str], route: str, subtests: pytest.Subtests
) -> None:
    wire_accounts(service)
    body = _valid_bodies()[route]
    for path in _string_paths(body):
        for kind, escape in POISON.items():
            with subtests.test(field=".".join(map(str, path)), poison=kind):
                marker = "POISON-GOES-HERE"
                content = json.dumps(_replaced(body, path, marker)).replace(marker, escape)
                response = service.client.post(
                    route, content=content.encode(), headers={**everything, "content-type": "application/json"}
                )
                assert response.status_code < 500, (response.status_code, response.text[:300])
                if response.status_code >= 400:
                    _problem(response, response.status_code)


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/admin/peers/a%00b"),
        ("PATCH", "/v1/admin/peers/a%00b"),
        ("DELETE", "/v1/admin/peers/a%00b"),
        ("POST", "/v1/admin/clients/a%00b/revoke"),
        ("POST", "/v1/admin/users/a%00b/unlock"),
        ("GET", "/v1/receipts/a%00b"),
        ("GET", "/v1/receipts/a%00b/pdf"),
        ("GET", "/v1/admin/peers/portal%0A"),
    ],
)
def test_nul_or_newline_in_a_path_parameter_is_a_4xx(
    service: Service, everything: dict[str, str], method: str, path: str
) -> None:
    untouched = _NothingWritten(service)
    response = service.client.request(method, path, json={"reason": "why", "routes": []}, headers=everything)
    _refused(response)
    untouched.check()


def test_a_peer_name_with_a_trailing_newline_is_refused(service: Service, everything: dict[str, str]) -> None:
    body = {**_valid_bodies()["/v1/admin/peers"], "name": "portal\n"}
    untouched = _NothingWritten(service)
    _problem(service.client.post("/v1/admin/peers", json=body, headers=everything), 422, "exchange-invalid-peer")
    untouched.check()


def test_an_api_key_whose_client_id_holds_nul_is_refused_401(service: Service) -> None:
    key = service.api_key("sign")
    _, client_id, secret = key.split("_", 2)
    forged = f"bhxh_{client_id[:7]}\x00{client_id[8:]}_{secret}".encode("latin-1")
    untouched = _NothingWritten(service)
    status, answer, _, _ = _asgi(service.app, "GET", "/v1/admin/clients", [(b"authorization", b"Bearer " + forged)])
    assert status == 401 and answer[b"content-type"].startswith(PROBLEM_JSON.encode())
    untouched.check(logged=_KEY_REFUSED)


def test_a_body_over_the_limit_with_content_length_is_413_before_reading(db_url: str) -> None:
    svc = Service(db_url, max_body_bytes=64 * 1024)
    try:
        auth = svc.auth(*sorted(SCOPES))
        status, headers, _, pulls = _asgi(
            svc.app,
            "POST",
            "/v1/signatures",
            [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % (1 << 30)),
                (b"authorization", auth["Authorization"].encode()),
            ],
            _endless_json(),
        )
        assert status == 413 and pulls == 0
        assert headers[b"content-type"].startswith(PROBLEM_JSON.encode())
    finally:
        svc.close()


@pytest.mark.parametrize(
    "route, ctype",
    [
        ("/v1/signatures", b"application/json"),
        ("/v1/admin/clients", b"application/json"),
        ("/v1/auth/login", b"application/json"),
        ("/v1/receipts/verify", b"application/pdf"),
        ("/gateway/one-stop/v1/dossiers", b"application/json"),
    ],
)
def test_a_streamed_body_without_content_length_is_413_without_being_read_whole(
    db_url: str, route: str, ctype: bytes
) -> None:
    limit = 64 * 1024
    svc = Service(db_url, max_body_bytes=limit)
    try:
        wire_accounts(svc)
        auth = svc.auth(*sorted(SCOPES))
        untouched = _NothingWritten(svc)
        status, headers, body, pulls = _asgi(
            svc.app,
            "POST",
            route,
            [(b"content-type", ctype), (b"authorization", auth["Authorization"].encode())],
            _endless_json(),
        )
        assert status == 413, body[:300]
        assert headers[b"content-type"].startswith(PROBLEM_JSON.encode())
        # Chunks of 8 KiB: the limit is crossed at the 9th; an endless body is never drained.
        assert pulls <= limit // _CHUNK + 2, pulls
        untouched.check()
    finally:
        svc.close()


# --- headers ----------------------------------------------------------------------------------

_CHUNK = 8 * 1024


def _endless_json() -> Iterator[bytes]:
    yield b'{"format": "jws", "payload_b64": "'
    while True:
        yield b"A" * _CHUNK


def _asgi(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: Iterator[bytes] | None = None,
    raw_path: bytes | None = None,
) -> tuple[int, dict[bytes, bytes], bytes, int]:
    """One request through the raw ASGI interface, below any client library's header checks.
    Returns status, headers (all of them must be well-formed), body and how many body chunks
    the app pulled."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path or path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("203.0.113.9", 50000),
        "server": ("testserver", 80),
    }
    chunks = iter(body or ())
    pulls = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulls
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulls += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    response_headers = start.get("headers", [])
    for name, value in response_headers:
        assert b"\r" not in name + value and b"\n" not in name + value, (name, value)
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(response_headers), content, pulls


_INJECTION = b"x\r\nSet-Cookie: injected=1\r\nX-Injected: 1"


def test_cr_lf_in_request_headers_never_reaches_a_response_header(service: Service, subtests: pytest.Subtests) -> None:
    auth = service.auth(*sorted(SCOPES))["Authorization"].encode()
    for header in (b"x-request-id", b"authorization", b"idempotency-key", b"content-type", b"accept"):
        with subtests.test(header=header.decode()):
            headers = {b"authorization": auth, b"content-type": b"application/json"}
            headers[header] = headers.get(header, b"v") + _INJECTION
            untouched = _NothingWritten(service)
            status, answer, body, _ = _asgi(
                service.app, "POST", "/v1/receipts", list(headers.items()), iter([b'{"procedure_code": "x"}'])
            )
            assert 400 <= status < 500, (status, body[:300])
            assert answer[b"content-type"].startswith(PROBLEM_JSON.encode())
            assert b"injected" not in b"".join(k + v for k, v in answer.items()).lower()
            assert answer[b"x-request-id"] != headers.get(b"x-request-id")
            untouched.check(logged=_KEY_REFUSED if header == b"authorization" else frozenset())


def test_cr_lf_in_the_path_never_reaches_a_response_header(service: Service) -> None:
    auth = service.auth(*sorted(SCOPES))["Authorization"].encode()
    status, answer, _, _ = _asgi(
        service.app,
        "GET",
        "/v1/receipts/x\r\nSet-Cookie: injected=1/pdf",
        [(b"authorization", auth)],
        raw_path=b"/v1/receipts/x%0D%0ASet-Cookie:%20injected=1/pdf",
    )
    assert 400 <= status < 500
    assert b"injected" not in b"".join(k + v for k, v in answer.items()).lower()


def test_non_utf8_bytes_in_headers_are_a_4xx_never_a_500(service: Service, subtests: pytest.Subtests) -> None:
    auth = service.auth(*sorted(SCOPES))["Authorization"].encode()
    for header in (b"authorization", b"idempotency-key", b"x-request-id", b"content-type", b"host"):
        with subtests.test(header=header.decode()):
            headers = {b"authorization": auth, b"content-type": b"application/json", b"host": b"testserver"}
            headers[header] = headers.get(header, b"v") + b"\xff\xfe\xc0\xaf"
            untouched = _NothingWritten(service)
            status, answer, body, _ = _asgi(service.app, "POST", "/v1/receipts", list(headers.items()), iter([b"{}"]))
            assert 400 <= status < 500, (status, body[:300])
            assert answer[b"content-type"].startswith(PROBLEM_JSON.encode())
            untouched.check(logged=_KEY_REFUSED if header == b"authorization" else frozenset())


# --- usernames --------------------------------------------------------------------------------

ALICE = "alice"
SAME_AS_ALICE = {
    "fullwidth": "ａｌｉｃｅ",
    "uppercase": "ALICE",
    "mathematical-bold": "𝐚𝐥𝐢𝐜𝐞",
    "circled-compatibility": "ⓐⓛⓘⓒⓔ",
    "surrounding-spaces": "  alice ",
}


def _create_user(service: Service, headers: dict[str, str], username: str) -> Any:
    return service.client.post(
        "/v1/admin/users",
        json={
            "username": username,
            "password": STRONG,
            "role": "citizen",
            "mfa_required": False,
            "reason": "service-input test",
        },
        headers=headers,
    )


def test_a_confusable_username_is_the_same_account_never_a_second_one(
    service: Service, everything: dict[str, str], subtests: pytest.Subtests
) -> None:
    wire_accounts(service)
    created = _create_user(service, everything, ALICE)
    assert created.status_code == 201 and created.json()["username"] == ALICE
    for variant, username in SAME_AS_ALICE.items():
        with subtests.test(variant=variant):
            untouched = _NothingWritten(service)
            _problem(_create_user(service, everything, username), 409, "username-taken")
            untouched.check()
            # The variant logs in to alice's account: one person, one account, one lockout counter.
            login = service.client.post("/v1/auth/login", json={"username": username, "password": STRONG})
            assert login.status_code == 200, login.text
            me = service.client.get("/v1/auth/me", headers={"Authorization": f"Bearer {login.json()['token']}"})
            assert me.json()["username"] == ALICE


def test_compatibility_forms_are_stored_normalised(service: Service, everything: dict[str, str]) -> None:
    wire_accounts(service)
    # "ﬁ" (U+FB01) is "fi" and "é" may arrive composed or as e + combining acute: NFKC makes one.
    first = _create_user(service, everything, "ﬁlé")
    assert first.status_code == 201 and first.json()["username"] == "filé"
    _problem(_create_user(service, everything, "file\u0301"), 409, "username-taken")


INVALID_USERNAMES = {
    "zero-width-space": "ali\u200bce",
    "right-to-left-override": "ali\u202ece",
    "soft-hyphen": "ali\u00adce",
    "fullwidth-at": "ａｌｉｃｅ＠ｅｘａｍｐｌｅ",
    "fullwidth-slash": "ａｌｉｃｅ／ｘ",
    "ideographic-space": "ali\u3000ce",
    "only-a-space": "\u3000",
    "65-characters": "x" * 65,
}


def test_usernames_hiding_invisible_or_forbidden_characters_are_refused(
    service: Service, everything: dict[str, str], subtests: pytest.Subtests
) -> None:
    wire_accounts(service)
    for case, username in INVALID_USERNAMES.items():
        with subtests.test(case=case):
            untouched = _NothingWritten(service)
            _problem(_create_user(service, everything, username), 422, "invalid-username")
            untouched.check()
