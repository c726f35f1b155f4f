"""Receipts: issued per second end to end (code → render → PAdES sign → audit → register, one
transaction) with concurrent clients, and verifications per second, each beside its raw
baseline measured in the same run (pyHanko signing alone of the same PDF; pyHanko validation
alone of the same signed PDF).

Run: .venv/bin/python bench/bench_receipts.py [--backend postgresql|sqlite] [--receipts 400]
Targets: >= 40 issued/s with 8 clients on the 2-core machine, >= 60 verified/s.

Clients are spread over processes (like uvicorn workers or several instances: Python threads
share one core for pure-Python work) and, by default, over receiving units: a unit's daily
sequence is one locked row, so issuing for ONE unit is serial by design (``--units 1`` shows it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PG_ADMIN_DSN = os.environ.get("BHXH_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DEMO_KEYS = REPO / "keys.example"


@dataclass(frozen=True)
class Setup:
    url: str
    units_file: str
    units: tuple[str, ...]


def _settings(setup: Setup):  # type: ignore[no-untyped-def]
    from integrity.settings import Settings

    return Settings(
        database_url=setup.url,
        keys_dir=DEMO_KEYS,
        demo=True,
        log_level="ERROR",
        units_file=Path(setup.units_file),
        public_base_url="http://bench.local",
    )


def _request(unit: str):  # type: ignore[no-untyped-def]
    from integrity.receipts import Applicant, Official, ReceiptRequest
    from signing.receipt_pdf import SlipDocument

    return ReceiptRequest(
        unit_code=unit,
        procedure_code="1.001234",
        procedure_name="Giải quyết hưởng chế độ ốm đau",
        applicant=Applicant("Nguyễn Thị Ánh Tuyết", "079190001234", "0901234567", "12 Lê Lợi, Quận 1, TP. Hồ Chí Minh"),
        official=Official("Đặng Văn Lợi", "Chuyên viên"),
        appointment_at=date.today() + timedelta(days=7),
        documents=(
            SlipDocument("Tờ khai đề nghị hưởng chế độ ốm đau", 1, True),
            SlipDocument("Giấy ra viện", 1, False),
        ),
    )


def _worker(setup: Setup, threads: int, per_thread: int, units: list[str], start: mp.Barrier, out: mp.Queue) -> None:
    from integrity.app_state import build_state
    from integrity.logs import configure_logging

    configure_logging("ERROR")
    settings = _settings(setup)
    state = build_state(settings)
    receipts = state.receipts
    latencies: list[float] = []
    lock = threading.Lock()

    def client(unit: str) -> None:
        for _ in range(per_thread):
            t0 = time.perf_counter()
            receipts.issue(_request(unit), issued_by="client:bench")  # an error ends the run (count checked)
            with lock:
                latencies.append(time.perf_counter() - t0)

    # Warm up (imports, fonts, pools) before the clock starts.
    receipts.issue(_request(units[0]), issued_by="client:bench")
    pool = [threading.Thread(target=client, args=(units[i % len(units)],)) for i in range(threads)]
    start.wait()
    cpu0 = time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((latencies, time.process_time() - cpu0))
    state.close()


def _verify_worker(setup: Setup, threads: int, pdfs: list[bytes], start: mp.Barrier, out: mp.Queue) -> None:
    from integrity.app_state import build_state
    from integrity.logs import configure_logging

    configure_logging("ERROR")
    settings = _settings(setup)
    state = build_state(settings)
    receipts = state.receipts
    assert receipts.verify(pdfs[0]).issued_by_system
    ok = 0
    lock = threading.Lock()

    def client(chunk: list[bytes]) -> None:
        nonlocal ok
        for pdf in chunk:
            verdict = receipts.verify(pdf)
            with lock:
                ok += verdict.issued_by_system

    pool = [threading.Thread(target=client, args=(pdfs[i::threads],)) for i in range(threads)]
    start.wait()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(ok)
    state.close()


def _run_parallel(target, processes: int, args_for) -> tuple[float, list]:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(processes + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), start, out)) for i in range(processes)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    results = [out.get() for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a bench worker failed (exit {p.exitcode})")
    return elapsed, results


def _baselines(count: int) -> dict[str, float]:
    """Raw pyHanko: sign the same rendered PDF with the same pre-parsed key; validate the result."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from signing.pdf import PdfSigner, validate_pdf
    from signing.receipt_pdf import ReceiptRenderer, ReceiptSlip, SlipDocument

    passphrase = (DEMO_KEYS / "passphrase.txt").read_bytes().strip()
    key = serialization.load_pem_private_key((DEMO_KEYS / "one-stop-signing.key.pem").read_bytes(), passphrase)
    cert = x509.load_pem_x509_certificate((DEMO_KEYS / "one-stop-signing.crt.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((DEMO_KEYS / "ca.crt.pem").read_bytes())
    signer = PdfSigner(key, cert, [ca])  # type: ignore[arg-type]
    renderer = ReceiptRenderer()
    slip = ReceiptSlip(
        code="000.00.31.H29-261123-0001",
        unit_code="000.00.31.H29",
        unit_name="Bảo hiểm xã hội Thành phố Hồ Chí Minh",
        procedure_code="1.001234",
        procedure_name="Giải quyết hưởng chế độ ốm đau",
        applicant_name="Nguyễn Thị Ánh Tuyết",
        applicant_id_number="079190001234",
        official_name="Đặng Văn Lợi",
        official_title="Chuyên viên",
        received_at=datetime.now(UTC),
        appointment_at=date.today() + timedelta(days=7),
        verify_url="http://bench.local/v1/receipts/000.00.31.H29-261123-0001",
        documents=(
            SlipDocument("Tờ khai đề nghị hưởng chế độ ốm đau", 1, True),
            SlipDocument("Giấy ra viện", 1, False),
        ),
    )
    pdf = renderer.render(slip)
    now = datetime.now(UTC)
    signed = signer.sign(pdf, signing_time=now)
    t0 = time.perf_counter()
    for _ in range(count):
        renderer.render(slip)
    render_s = (time.perf_counter() - t0) / count
    t0 = time.perf_counter()
    for _ in range(count):
        signer.sign(pdf, signing_time=now)
    sign_s = (time.perf_counter() - t0) / count
    t0 = time.perf_counter()
    for _ in range(count):
        validate_pdf(signed, trust_roots=[ca], expected_signers=[cert], at=now)
    validate_s = (time.perf_counter() - t0) / count
    return {"render_ms": render_s * 1000, "sign_ms": sign_s * 1000, "validate_ms": validate_s * 1000}


def _prepare(backend: str, units: int, workdir: Path) -> tuple[Setup, str | None]:
    from integrity.db import make_engine
    from integrity.migrate import upgrade

    codes = [f"000.00.{31 + i:02d}.H29" for i in range(units)]
    units_file = workdir / "units.json"
    units_file.write_text(
        json.dumps(
            [{"code": c, "name": f"Bảo hiểm xã hội đơn vị {i + 1}"} for i, c in enumerate(codes)], ensure_ascii=False
        ),
        encoding="utf-8",
    )
    dbname = None
    if backend == "postgresql":
        import psycopg

        dbname = f"bench_receipts_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{dbname}"')
        base = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
        url = f"postgresql+psycopg://{base.get('user', 'postgres')}@{base.get('host', '127.0.0.1')}:{base.get('port', '5432')}/{dbname}"
    else:
        url = f"sqlite:///{workdir / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    from integrity.app_state import build_state

    setup = Setup(url, str(units_file), tuple(codes))
    state = build_state(_settings(setup))
    state.audit.ensure_genesis()
    state.close()
    return setup, dbname


def _drop(dbname: str | None) -> None:
    if dbname is None:
        return
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--receipts", type=int, default=400, help="receipts to issue in the timed run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (threads over all processes)")
    parser.add_argument("--processes", type=int, default=max(1, min(os.cpu_count() or 1, 4)), help="service processes")
    parser.add_argument("--units", type=int, default=8, help="receiving units the clients spread over")
    parser.add_argument("--baseline", type=int, default=60, help="iterations of each raw baseline")
    args = parser.parse_args()
    if args.clients % args.processes:
        parser.error("--clients must be a multiple of --processes")
    threads = args.clients // args.processes
    per_thread = max(1, args.receipts // args.clients)

    print(
        f"== receipts bench: backend={args.backend} clients={args.clients} processes={args.processes} units={args.units}"
    )
    base = _baselines(args.baseline)
    sign_rate = 1000 / base["sign_ms"]
    validate_rate = 1000 / base["validate_ms"]
    print(
        f"baseline  render alone        {base['render_ms']:7.2f} ms/receipt  ({1000 / base['render_ms']:6.1f}/s, 1 thread)"
    )
    print(f"baseline  pyHanko sign alone  {base['sign_ms']:7.2f} ms/receipt  ({sign_rate:6.1f}/s, 1 thread)")
    print(f"baseline  pyHanko validate    {base['validate_ms']:7.2f} ms/receipt  ({validate_rate:6.1f}/s, 1 thread)")

    with tempfile.TemporaryDirectory() as tmp:
        setup, dbname = _prepare(args.backend, args.units, Path(tmp))
        try:
            units = list(setup.units)
            elapsed, results = _run_parallel(
                _worker,
                args.processes,
                lambda i: (setup, threads, per_thread, units[i * threads : (i + 1) * threads] or units),
            )
            latencies = [x for chunk, _cpu in results for x in chunk]
            cpu_ms = sum(cpu for _chunk, cpu in results) * 1000 / max(1, len(latencies))
            if len(latencies) != per_thread * args.clients:
                raise SystemExit(
                    f"only {len(latencies)} of {per_thread * args.clients} receipts were issued: see the errors above"
                )
            issued_rate = len(latencies) / elapsed
            latencies.sort()
            p50 = statistics.median(latencies) * 1000
            p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
            print(
                f"issued    end to end          {issued_rate:7.1f} receipts/s  ({len(latencies)} in {elapsed:.2f} s; "
                f"p50 {p50:.0f} ms, p95 {p95:.0f} ms)  ratio to raw signing x{issued_rate / sign_rate:.2f}  "
                f"target >= 40/s: {'PASS' if issued_rate >= 40 else 'FAIL'}"
            )
            # Load-independent view: service CPU per receipt (the database's own CPU not included).
            print(
                f"issued    service CPU         {cpu_ms:7.2f} ms/receipt  (render + sign baseline {base['render_ms'] + base['sign_ms']:.2f} ms)"
            )

            from sqlalchemy import select

            from integrity.db import make_engine
            from integrity.receipt_tables import receipt_pdfs

            engine = make_engine(setup.url)
            with engine.connect() as conn:
                pdfs = [bytes(p) for p in conn.execute(select(receipt_pdfs.c.pdf).limit(args.receipts)).scalars()]
            engine.dispose()
            elapsed, results = _run_parallel(
                _verify_worker, args.processes, lambda i: (setup, threads, pdfs[i :: args.processes])
            )
            verified_rate = len(pdfs) / elapsed
            assert sum(results) == len(pdfs), "a genuine receipt failed verification"
            print(
                f"verified  end to end          {verified_rate:7.1f} receipts/s  ({len(pdfs)} in {elapsed:.2f} s)  "
                f"ratio to raw validation x{verified_rate / validate_rate:.2f}  "
                f"target >= 60/s: {'PASS' if verified_rate >= 60 else 'FAIL'}"
            )
        finally:
            _drop(dbname)


if __name__ == "__main__":
    main()
