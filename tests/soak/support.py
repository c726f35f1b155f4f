"""Test support for the crash-safety and multi-instance runs: real service processes
(``python -m uvicorn --factory api.asgi:app_factory``) on free loopback ports over a database of
the ``db_url`` fixture, and the read-only checks an auditor runs on that database afterwards.

Nothing here talks to the service in-process: load goes over HTTP, the checks read the database
through the public services of a separate ``AppState`` (which never appends).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, select

from audit import merkle
from audit.checkpoint import SignedCheckpoint
from audit.verify import Verdict
from integrity.app_state import AppState, build_state
from integrity.db import READ_ONLY
from integrity.rate_limits import DEFAULT_LIMITS
from integrity.receipt_tables import receipt_pdfs, receipt_sequences, receipts
from integrity.setup import initialise
from tests.conftest import DEMO_KEYS, REPO_ROOT, demo_settings
from tests.loopback import free_port

READY_TIMEOUT_SECONDS = 60.0
UNITS = (
    ("000.00.31.H29", "Bảo hiểm xã hội Thành phố Hồ Chí Minh"),
    ("000.00.00.G00", "Bảo hiểm xã hội Việt Nam"),
)


def prepare_database(db_url: str, **overrides: object) -> None:
    """What ``bhxh-integrity init --demo`` does: migrations (already applied by the fixture),
    the log's genesis entry and checkpoint, the demo exchange peers."""
    initialise(demo_settings(db_url, **overrides))


@contextmanager
def admin_state(db_url: str, **overrides: object) -> Iterator[AppState]:
    """A short-lived state to create clients and users (these append, so it is closed after)."""
    state = build_state(demo_settings(db_url, **overrides))
    try:
        yield state
    finally:
        state.close()


# A soak run measures the service, not its rate limits: budgets far above any load here.
RATE_LIMITS_OFF = {
    "BHXH_RATE_LIMITS": json.dumps(dict.fromkeys(DEFAULT_LIMITS, "1000000/second")),
    "BHXH_RATE_LIMIT_PER_ADDRESS": "1000000/second",
}


def server_env(db_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BHXH_")}
    env.update(
        {
            "BHXH_DATABASE_URL": db_url,
            "BHXH_DEMO": "1",
            "BHXH_KEYS_DIR": str(DEMO_KEYS),
            "BHXH_LOG_LEVEL": "WARNING",
            "BHXH_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            **RATE_LIMITS_OFF,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class ServerProcess:
    """One service instance: a uvicorn process that can be started, killed with SIGKILL and
    started again on the same port (uvicorn binds with SO_REUSEADDR)."""

    def __init__(self, db_url: str, log_path: Path, *, port: int | None = None, **env: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._env = server_env(db_url, self.port, **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "api.asgi:app_factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--timeout-graceful-shutdown",
                    "3",
                ],
                cwd=REPO_ROOT,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Seconds until /readyz answered 200."""
        assert self.proc is not None
        began = time.monotonic()
        deadline = began + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the service exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    if client.get(self.url + "/readyz").status_code == 200:
                        return time.monotonic() - began
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service was not ready within {timeout} s; see {self.log_path}")
                time.sleep(0.05)

    def kill(self) -> None:
        """kill -9: no shutdown handler, no flush, no rollback by the process itself."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


def receipt_body(n: int, unit: tuple[str, str] = UNITS[0]) -> dict[str, Any]:
    return {
        "receiving_unit": {"code": unit[0], "name": unit[1]},
        "procedure_code": "1.001234",
        "procedure_name": "Giải quyết hưởng chế độ ốm đau",
        "applicant": {"name": f"Nguyễn Thị Ánh Tuyết {n}", "id_number": f"0791900{n:05d}"[-12:]},
        "documents": [{"name": "Tờ khai đề nghị hưởng chế độ ốm đau", "copies": 1, "original": True}],
        "official": {"name": "Đặng Văn Lợi", "title": "Chuyên viên"},
        "appointment_at": (date.today() + timedelta(days=7)).isoformat(),
    }


# --- what the clients saw acknowledged ----------------------------------------------------------


@dataclass(frozen=True)
class AckedEvent:
    seq: int
    actor: str
    action: str
    subject: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class AckedReceipt:
    code: str
    sha256: str
    audit_seq: int
    idempotency_key: str


# --- the auditor's checks -----------------------------------------------------------------------


@dataclass
class CheckResult:
    problems: list[str] = field(default_factory=list)
    lost: int = 0
    tree_size: int = 0
    receipts: int = 0
    checkpoint: SignedCheckpoint | None = None

    def fail(self, message: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(message)


def _snapshot(state: AppState) -> Connection:
    conn = state.engine.connect()
    if conn.dialect.name == "postgresql":
        return conn.execution_options(isolation_level="REPEATABLE READ", **READ_ONLY)
    return conn.execution_options(**READ_ONLY)


def check_log(state: AppState, result: CheckResult, trusted: SignedCheckpoint | None) -> None:
    """The chain and tree verify, consistently with the checkpoint the auditor kept earlier.
    Entries appended since the last checkpoint are not anchored yet: expected under load."""
    report = state.audit.verify(trusted_checkpoint=trusted)
    if report.verdict is Verdict.FAILED:
        result.fail(f"log verification failed: {[(f.kind, f.seq, f.detail) for f in report.faults][:5]}")
        return
    size = report.entries_checked
    result.tree_size = size
    # The stored tree nodes (used for proofs) agree with the root recomputed from the entries.
    proof = state.audit.inclusion_proof(size - 1, size)
    if proof.root_hash.hex() != report.root_hash:
        result.fail(f"stored tree root at size {size} differs from the recomputed root")
    merkle.verify_inclusion(proof.leaf_hash, size - 1, size, proof.path, proof.root_hash)
    latest = state.audit.latest_checkpoint()
    if latest is not None:
        result.checkpoint = latest.parsed()


def check_events(state: AppState, acked: Iterable[AckedEvent], result: CheckResult) -> None:
    """Every acknowledged append is present at its seq with the content the client sent."""
    wanted = sorted(acked, key=lambda e: e.seq)
    seen_seqs: set[int] = set()
    for event in wanted:
        if event.seq in seen_seqs:
            result.fail(f"two acknowledged appends got seq {event.seq} (a fork)")
        seen_seqs.add(event.seq)
    by_seq: dict[int, Any] = {}
    if wanted:
        start = wanted[0].seq
        stop = wanted[-1].seq + 1
        while start < stop:
            chunk = state.audit.entries(start, stop)
            if not chunk:
                break
            by_seq.update((e.seq, e) for e in chunk)
            start = chunk[-1].seq + 1
    for event in wanted:
        entry = by_seq.get(event.seq)
        if entry is None or (entry.actor, entry.action, entry.subject, dict(entry.data)) != (
            event.actor,
            event.action,
            event.subject,
            dict(event.data),
        ):
            result.lost += 1
            result.fail(f"acknowledged append seq {event.seq} ({event.subject}) is missing or changed")


def check_receipts(state: AppState, acked: Iterable[AckedReceipt], result: CheckResult) -> dict[str, str]:
    """Codes contiguous from 1 within each unit's day, never repeated; every acknowledged receipt
    registered with its hash, its PDF hashing to it and its audit entry naming it. Returns the
    registry (code → sha256)."""
    with _snapshot(state) as conn, conn.begin():
        rows = conn.execute(
            select(
                receipts.c.code,
                receipts.c.unit_code,
                receipts.c.receipt_day,
                receipts.c.sequence,
                receipts.c.sha256,
                receipts.c.audit_seq,
            )
        ).all()
        counters = {(r.unit_code, r.receipt_day): r.last_value for r in conn.execute(select(receipt_sequences))}
        acked_list = list(acked)
        pdfs = (
            {
                r.code: hashlib.sha256(bytes(r.pdf)).hexdigest()
                for r in conn.execute(
                    select(receipt_pdfs.c.code, receipt_pdfs.c.pdf).where(
                        receipt_pdfs.c.code.in_([a.code for a in acked_list])
                    )
                )
            }
            if acked_list
            else {}
        )
    result.receipts = len(rows)
    registry = {r.code: r.sha256 for r in rows}
    if len(registry) != len(rows):
        result.fail("a receipt code is registered twice")
    per_day: dict[tuple[str, Any], list[int]] = defaultdict(list)
    for r in rows:
        per_day[(r.unit_code, r.receipt_day)].append(r.sequence)
        if not r.code.endswith(f"-{r.sequence:04d}") or not r.code.startswith(r.unit_code):
            result.fail(f"code {r.code} does not carry its unit and sequence {r.sequence}")
    for key in set(per_day) | set(counters):
        ordered = sorted(per_day.get(key, []))
        if ordered != list(range(1, len(ordered) + 1)):
            result.fail(f"sequences of {key} skip or repeat: {_gaps(ordered)}")
        if counters.get(key) != len(ordered):
            result.fail(f"the counter of {key} is {counters.get(key)} but {len(ordered)} receipts are registered")
    audit_seqs = [r.audit_seq for r in rows]
    if len(set(audit_seqs)) != len(audit_seqs):
        result.fail("two receipts share an audit entry")
    by_seq = {r.audit_seq: r for r in rows}
    entries = {e.seq: e for s in _chunks(sorted(by_seq)) for e in _entries_at(state, s)}
    for seq, r in by_seq.items():
        entry = entries.get(seq)
        if (
            entry is None
            or entry.action != "receipt.issued"
            or entry.subject != r.code
            or entry.data.get("sha256") != r.sha256
        ):
            result.fail(f"receipt {r.code}: its audit entry {seq} does not record it")
    for ack in acked_list:
        if registry.get(ack.code) != ack.sha256 or pdfs.get(ack.code) != ack.sha256:
            result.lost += 1
            result.fail(f"acknowledged receipt {ack.code} is missing, or its hash or PDF changed")
    return registry


def _gaps(ordered: list[int]) -> str:
    missing = sorted(set(range(1, (ordered[-1] if ordered else 0) + 1)) - set(ordered))
    repeated = sorted({s for s in ordered if ordered.count(s) > 1})
    return f"missing {missing[:10]}, repeated {repeated[:10]}"


def _chunks(seqs: list[int], size: int = 500) -> Iterator[list[int]]:
    for i in range(0, len(seqs), size):
        yield seqs[i : i + size]


def _entries_at(state: AppState, seqs: list[int]) -> list[Any]:
    if not seqs:
        return []
    wanted = set(seqs)
    out: list[Any] = []
    start = seqs[0]
    while start <= seqs[-1]:
        chunk = state.audit.entries(start, seqs[-1] + 1)
        if not chunk:
            break
        out.extend(e for e in chunk if e.seq in wanted)
        start = chunk[-1].seq + 1
    return out


def audit_cli_verify(db_url: str) -> dict[str, Any]:
    """``bhxh-integrity audit verify --json`` in its own process: the operator's view."""
    import json

    env = server_env(db_url, 0)
    cli = str(Path(sys.executable).with_name("bhxh-integrity"))
    # Verified means anchored: the operator signs a checkpoint over the final log first.
    subprocess.run(
        [cli, "audit", "checkpoint", "--demo"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=300, check=True
    )
    done = subprocess.run(
        [cli, "audit", "verify", "--json", "--demo"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"audit verify exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}")
    out = json.loads(done.stdout)
    out["exit_code"] = done.returncode
    return out
