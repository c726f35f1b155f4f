"""Audit log benchmarks against their targets, each figure beside a raw baseline from the same run.

1. Durable appends/s through ``AuditService.record`` with 1 and 16 concurrent callers, on
   SQLite and PostgreSQL, beside raw INSERTs of the same rows (one commit per row from 1 and
   16 threads, and batched 1,000 rows per commit).
2. Verification entries/s of a 1,000,000-entry export (written by the real exporter from a
   real database), beside bare hashlib (SHA-256 of every line's bytes), with the verifier's
   peak RSS (measured in a child process that does nothing else).
3. Inclusion-proof latency (server time: the service call) at 1,000,000 entries, beside a raw
   primary-key SELECT of one entry.
4. Checkpoint-to-quorum latency with three local witnesses (real ``witness serve`` processes on
   127.0.0.1, quorum 2): from a checkpoint signed to the quorum of verified cosignatures stored,
   beside one bare add-checkpoint HTTP round trip to one of those witnesses.

    .venv/bin/python bench/bench_audit.py                  # everything (several minutes)
    .venv/bin/python bench/bench_audit.py --entries 200000 --backends sqlite
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from sqlalchemy import Engine  # noqa: E402

from audit import store  # noqa: E402
from audit.store import PendingEvent  # noqa: E402
from integrity.audit_service import AuditService  # noqa: E402
from integrity.clock import system_clock  # noqa: E402
from integrity.db import make_engine  # noqa: E402
from integrity.migrate import upgrade  # noqa: E402

PG_ADMIN = os.environ.get("BHXH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
KEY_NAME = "bhxh-integrity/audit/bench"
RAW_COLUMNS = "seq, ts, actor, action, subject, data, pii, prev, hash"
ACTIONS = ("receipt.issued", "signature.created", "auth.login.failed", "exchange.accepted")


def _line(label: str, value: float, unit: str, baseline_label: str = "", baseline: float | None = None) -> None:
    text_ = f"  {label:<46} {value:>12,.1f} {unit}"
    if baseline is not None:
        ratio = value / baseline if baseline else float("inf")
        text_ += f"   | {baseline_label:<34} {baseline:>12,.1f} {unit}   ratio {ratio:.2f}"
    print(text_, flush=True)


@contextmanager
def _database(backend: str, workdir: Path, name: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / (name + '.db')}"
        return
    dbname = f"bhxh_bench_{name}_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{dbname}"')
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN)
    try:
        yield f"postgresql+psycopg://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:{info.get('port', '5432')}/{dbname}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _service(engine: Engine) -> AuditService:
    return AuditService(
        engine,
        clock=system_clock,
        log_id="bench",
        checkpoint_key=Ed25519PrivateKey.generate(),
        checkpoint_key_name=KEY_NAME,
        checkpoint_every=1000,
        checkpoint_seconds=60,
    )


def _record_rate(svc: AuditService, callers: int, per_caller: int) -> float:
    def work(n: int) -> None:
        for i in range(per_caller):
            svc.record(f"client:c{n}", ACTIONS[i % 4], f"000.00.31.H29-251123-{i:04d}", {"n": i, "ok": True})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(callers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return callers * per_caller / (time.perf_counter() - start)


def _raw_rows(engine: Engine, count: int) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT {RAW_COLUMNS} FROM audit_entries ORDER BY seq LIMIT {count}").all()
    return [tuple(r) for r in rows]


def _raw_table(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_raw")
        conn.exec_driver_sql(
            "CREATE TABLE bench_raw (seq BIGINT PRIMARY KEY, ts VARCHAR(32) NOT NULL, actor VARCHAR(210) NOT NULL, "
            "action VARCHAR(100) NOT NULL, subject VARCHAR(500) NOT NULL, data TEXT NOT NULL, pii VARCHAR(64), "
            "prev VARCHAR(64) NOT NULL, hash VARCHAR(64) NOT NULL)"
        )


def _raw_insert_rate(engine: Engine, rows: list[tuple], threads: int, per_commit: int) -> float:
    """Durable INSERTs of the same rows through the same engine, ``per_commit`` rows per commit."""
    _raw_table(engine)
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO bench_raw ({RAW_COLUMNS}) VALUES ({', '.join([mark] * 9)})"
    shares = [rows[i::threads] for i in range(threads)]

    def work(share: list[tuple]) -> None:
        with engine.connect() as conn:
            for start in range(0, len(share), per_commit):
                with conn.begin():
                    conn.exec_driver_sql(sql, share[start : start + per_commit])

    workers = [threading.Thread(target=work, args=(s,)) for s in shares]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(rows) / (time.perf_counter() - start)


def bench_appends(backend: str, workdir: Path, single: int, per_caller: int) -> None:
    print(f"\n[appends, {backend}] durable (SQLite synchronous=FULL; PostgreSQL synchronous_commit=on)", flush=True)
    with _database(backend, workdir, "appends") as url:
        engine = make_engine(url, pool_size=20)
        upgrade(engine)
        svc = _service(engine)
        try:
            one = _record_rate(svc, 1, single)
            sixteen = _record_rate(svc, 16, per_caller)
        finally:
            svc.close()
        rows = _raw_rows(engine, single + 16 * per_caller)
        raw_one = _raw_insert_rate(engine, rows[:single], 1, 1)
        raw_sixteen = _raw_insert_rate(engine, rows[single:], 16, 1)
        raw_batched = _raw_insert_rate(engine, rows, 1, 1000)
        engine.dispose()
    _line("record(), 1 caller", one, "entries/s", "raw INSERT, 1 thread, commit/row", raw_one)
    _line(
        "record(), 16 callers (group commit)", sixteen, "entries/s", "raw INSERT, 16 threads, commit/row", raw_sixteen
    )
    _line("record(), 16 callers (group commit)", sixteen, "entries/s", "raw INSERT batched 1000/commit", raw_batched)


def _bulk_load(engine: Engine, entries: int, batch: int = 5000) -> float:
    """The real append path (store.append: chain, leaf hashes, stored subtrees), big batches."""
    cache = store.FrontierCache()
    start = time.perf_counter()
    done = 0
    while done < entries:
        size = min(batch, entries - done)
        events = [
            PendingEvent.of(
                "client:portal",
                ACTIONS[(done + i) % 4],
                f"000.00.31.H29-251123-{(done + i) % 10000:04d}",
                {"n": done + i, "ok": True},
            )
            for i in range(size)
        ]
        with engine.connect() as conn:
            with conn.begin():
                store.append(conn, events, system_clock, cache=cache)
            cache.committed()
        done += size
    return entries / (time.perf_counter() - start)


_VERIFY_CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
path, mode = Path(sys.argv[2]), sys.argv[3]
wall, cpu = time.perf_counter(), time.process_time()
if mode == "verify":
    from audit.export import verify_export
    report = verify_export(path, Path(sys.argv[4]).read_text())
    assert report.ok, report.faults
    count = report.entries_checked
else:
    import hashlib
    count = 0
    sha = hashlib.sha256
    with path.open("rb") as handle:
        for line in handle:
            sha(b"\x00" + line).hexdigest()
            count += 1
# VmHWM, not ru_maxrss: after fork+exec Linux carries the parent's peak into ru_maxrss.
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(count, time.perf_counter() - wall, time.process_time() - cpu, peak_kb)
"""


def _child(mode: str, export: Path, vkey: Path) -> tuple[int, float, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _VERIFY_CHILD, str(REPO), str(export), mode, str(vkey)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), float(out[1]), float(out[2]), int(out[3]) / 1024


def bench_verify_and_proofs(backends: list[str], workdir: Path, entries: int, proofs: int) -> None:
    for backend in backends:
        print(f"\n[1M log, {backend}] loading {entries:,} entries through store.append …", flush=True)
        with _database(backend, workdir, "big") as url:
            engine = make_engine(url)
            upgrade(engine)
            load_rate = _bulk_load(engine, entries)
            svc = _service(engine)
            try:
                svc.maybe_checkpoint()  # one checkpoint per 1,000 entries, as configured
                _line("bulk load (5,000 entries/transaction)", load_rate, "entries/s")
                if backend == backends[0]:
                    export = workdir / "audit-export.ndjson"
                    vkey = workdir / "audit.vkey"
                    vkey.write_text("\n".join(svc.verifier_keys()) + "\n")
                    start = time.perf_counter()
                    with export.open("wb") as handle:
                        lines = svc.export(handle)
                    print(
                        f"  exported {lines:,} lines ({export.stat().st_size / 1e6:,.0f} MB) in "
                        f"{time.perf_counter() - start:,.1f} s",
                        flush=True,
                    )
                    _bench_verify(export, vkey)
                _bench_proofs(svc, engine, entries, proofs)
            finally:
                svc.close()
                engine.dispose()


def _bench_verify(export: Path, vkey: Path) -> None:
    n, wall, cpu, rss = _child("verify", export, vkey)
    bn, bwall, bcpu, brss = _child("hashlib", export, vkey)
    print(f"[verification of the export: {n:,} entries]", flush=True)
    _line("verify_export, wall", n / wall, "entries/s", "bare hashlib over the lines, wall", bn / bwall)
    _line("verify_export, CPU time", n / cpu, "entries/s", "bare hashlib over the lines, CPU", bn / bcpu)
    _line("verify_export, seconds for all entries", wall, "s")
    _line("verify_export, peak RSS", rss, "MB", "bare hashlib, peak RSS", brss)


def _bench_proofs(svc: AuditService, engine: Engine, size: int, count: int) -> None:
    rng = random.Random(7)
    seqs = [rng.randrange(size) for _ in range(count)]
    latencies = []
    for seq in seqs:
        start = time.perf_counter()
        svc.inclusion_proof(seq, size)
        latencies.append((time.perf_counter() - start) * 1000)
    raw = []
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    for seq in seqs:
        start = time.perf_counter()
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT hash FROM audit_entries WHERE seq = {mark}", (seq,)).one()
        raw.append((time.perf_counter() - start) * 1000)
    print(f"[inclusion proof at {size:,} entries, {len(seqs)} random seqs, {engine.dialect.name}]", flush=True)
    _line(
        "inclusion_proof median",
        statistics.median(latencies),
        "ms",
        "raw PK SELECT of one entry, median",
        statistics.median(raw),
    )
    _line(
        "inclusion_proof p95",
        sorted(latencies)[int(len(latencies) * 0.95)],
        "ms",
        "raw PK SELECT, p95",
        sorted(raw)[int(len(raw) * 0.95)],
    )


def _start_witness(directory: Path, log_vkey: Path, port: int) -> subprocess.Popen[bytes]:
    import httpx

    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", "from api.cli import main; main()", "witness", "serve"),
            *("--dir", str(directory), "--log", str(log_vkey), "--host", "127.0.0.1", "--port", str(port)),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"witness on port {port} did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_witnessing(backend: str, workdir: Path, rounds: int) -> None:
    import httpx

    from audit.witness import AddCheckpoint
    from integrity.witness_service import init_witness
    from integrity.witnessing import Witness, Witnessing

    print(f"\n[witnessing, {backend}] three local witness processes, quorum 2, {rounds} checkpoints", flush=True)
    procs: list[subprocess.Popen[bytes]] = []
    with _database(backend, workdir, "witness") as url:
        engine = make_engine(url)
        upgrade(engine)
        svc = _service(engine)
        log_vkey = workdir / f"bench-{backend}.vkey"
        log_vkey.write_text(svc.signer.verifier.to_text() + "\n")
        witnesses = []
        try:
            for n in (1, 2, 3):
                directory = workdir / f"witness-{backend}-{n}"
                keys = init_witness(directory, f"witness{n}.bench/w")
                port = _free_port()
                procs.append(_start_witness(directory, log_vkey, port))
                witnesses.append(Witness(keys[0].name, f"http://127.0.0.1:{port}", keys))
            witnessing = Witnessing(engine, witnesses, quorum=2, timeout=10, clock=system_clock)
            quorum_ms, bare_ms = [], []
            with httpx.Client(timeout=10) as client:
                for i in range(rounds):
                    svc.record_many([("system", ACTIONS[j % 4], f"round-{i}-{j}", {"j": j}, None) for j in range(10)])
                    signed = svc.checkpoint_now()
                    # The round starts as the checkpoint commit wakes it; it times its own quorum.
                    result = witnessing.witness_latest()
                    if result is None or result.quorum_seconds is None:
                        raise SystemExit(f"no quorum at checkpoint {signed.tree_size}: {result}")
                    quorum_ms.append(result.quorum_seconds * 1000)
                    # Baseline: the same checkpoint again to the first witness (old = its size,
                    # empty proof): its verification, two signatures and fsync, over HTTP.
                    body = AddCheckpoint(signed.tree_size, (), signed.parsed()).to_body()
                    start = time.perf_counter()
                    answer = client.post(witnesses[0].url + "/add-checkpoint", content=body)
                    bare_ms.append((time.perf_counter() - start) * 1000)
                    if answer.status_code != 200:
                        raise SystemExit(f"bare add-checkpoint answered {answer.status_code}: {answer.text}")
            witnessing.close()
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
            svc.close()
            engine.dispose()
    _line(
        "checkpoint-to-quorum median",
        statistics.median(quorum_ms),
        "ms",
        "bare add-checkpoint, median",
        statistics.median(bare_ms),
    )
    _line(
        "checkpoint-to-quorum p95",
        sorted(quorum_ms)[int(len(quorum_ms) * 0.95)],
        "ms",
        "bare add-checkpoint, p95",
        sorted(bare_ms)[int(len(bare_ms) * 0.95)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--entries", type=int, default=1_000_000, help="size of the big log (verification, proofs)")
    parser.add_argument("--single", type=int, default=1_000, help="appends by the single caller")
    parser.add_argument("--per-caller", type=int, default=1_000, help="appends by each of the 16 callers")
    parser.add_argument("--proofs", type=int, default=200)
    parser.add_argument("--skip-appends", action="store_true")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--witness-rounds", type=int, default=50, help="checkpoints sent to three local witnesses")
    parser.add_argument("--skip-witness", action="store_true")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    print(f"bench_audit: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        workdir = Path(tmp)
        if not args.skip_appends:
            for backend in backends:
                bench_appends(backend, workdir, args.single, args.per_caller)
        if not args.skip_big:
            bench_verify_and_proofs(backends, workdir, args.entries, args.proofs)
        if not args.skip_witness:
            for backend in backends:
                bench_witnessing(backend, workdir, args.witness_rounds)


if __name__ == "__main__":
    main()
