"""Signatures per second through the HTTP API, beside bare ``cryptography`` Ed25519 signing of
the same payloads measured in the same run.

Figures (32 concurrent clients, keep-alive, against `bhxh-integrity serve` on 127.0.0.1 that
this script starts, 1 worker unless ``--workers``):
  * bare Ed25519 signatures/s (one thread, ``cryptography``)             — baseline for batch
  * GET /healthz requests/s (the trivial endpoint, same server)          — baseline for single
  * POST /v1/signatures (JWS, Ed25519 key, 256-byte payload) requests/s, p50, p99
  * POST /v1/signatures/batch (N items per call) signatures/s, p50, p99 per call
Targets: batch ≥ 50% of bare Ed25519; single ≥ 70% of the trivial endpoint.

Then where the time goes, measured in the same run:
  * a second server on one worker, ``signing_floor.py`` (this folder; never part of the
    service), serves probe routes that peel ``POST /v1/signatures`` apart: the same body and
    response models with no work, plus the API-key check, plus the JWS signature without its
    audit entry; each is a share of that server's own /healthz;
  * in this process, one thread, no HTTP: the JWS signatures alone, the audit entries alone
    (``record_many`` of the batch size) and ``sign_batch`` (both), each a share of bare signing.

The load comes from ``wrk`` (Debian package ``wrk``) when installed, else from Python threads.

    .venv/bin/python bench/bench_signing.py [--seconds 10] [--clients 32] [--batch 100] [--database-url URL]
                                      [--workers N]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from integrity.rate_limits import DEFAULT_LIMITS  # noqa: E402

# A throughput run measures the service, not its rate limits: budgets far above any load here.
RATE_LIMITS_OFF = {
    "BHXH_RATE_LIMITS": json.dumps(dict.fromkeys(DEFAULT_LIMITS, "1000000/second")),
    "BHXH_RATE_LIMIT_PER_ADDRESS": "1000000/second",
}

PAYLOAD_BYTES = 256
# The probe server's routes (signing_floor.py) in the order each adds one step, then the real route.
PROBE_STEPS = {
    "/floor/parse": "same body + response models, no work",
    "/floor/auth": "+ API-key check",
    "/floor/sign": "+ JWS signature, no audit entry",
    "/v1/signatures": "+ audit entry (the real route)",
}
DEMO_KEYS = REPO / "keys.example"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "BHXH_DATABASE_URL": database_url,
        "BHXH_KEYS_DIR": str(DEMO_KEYS),
        "BHXH_DEMO": "1",
        "BHXH_LOG_LEVEL": "WARNING",
        "BHXH_CHECKPOINT_EVERY": "100000",
        **RATE_LIMITS_OFF,
    }


# --- set-up (parent) -------------------------------------------------------------------------------


def setup(database_url: str) -> tuple[str, str]:
    """Migrate, create an API client with the sign scope and an Ed25519 signing key."""
    os.environ.update(_env(database_url))
    from integrity.app_state import build_state
    from integrity.migrate import upgrade
    from integrity.settings import Settings
    from signing.algorithms import Algorithm
    from signing.errors import UnknownKey

    settings = Settings()
    state = build_state(settings)
    try:
        upgrade(state.engine)
        state.audit.ensure_genesis()
        api_key = state.clients.create("bench", ["sign", "verify"]).api_key
        service = state.signatures
        try:
            kid = service.keystore.active(Algorithm.ED25519).kid
        except UnknownKey:
            kid = service.generate_key(Algorithm.ED25519, actor="system").kid
    finally:
        state.close()
    return api_key, kid


def in_process(database_url: str, kid: str, payloads: list[bytes], seconds: float) -> dict[str, float]:
    """Items/s on one thread without HTTP: JWS signing alone, audit entries alone, both."""
    from integrity.app_state import build_state
    from integrity.settings import Settings
    from integrity.signatures import SignRequest, payload_digest
    from signing import jws

    state = build_state(Settings())
    try:
        key = state.signatures.keystore.signing_key(kid)
        clock = state.signatures.clock
        events = [
            (
                "client:bench",
                "signature.created",
                payload_digest(p),
                {"format": "jws", "key_id": kid, "alg": "Ed25519", "detached": False, "bytes": len(p)},
                None,
            )
            for p in payloads
        ]
        requests = [SignRequest("jws", p, False, kid) for p in payloads]

        def rate(step: Callable[[], object]) -> float:
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                step()
                done += len(payloads)
            return done / (time.perf_counter() - start)

        return {
            "jws": rate(lambda: [jws.sign(key, p, signed_at=clock()) for p in payloads]),
            "audit": rate(lambda: state.audit.record_many(events)),
            "both": rate(lambda: state.signatures.sign_batch(requests, actor="client:bench")),
        }
    finally:
        state.close()


def start_server(argv: list[str], database_url: str, port: int) -> tuple[subprocess.Popen[bytes], str]:
    env = {**_env(database_url), "PYTHONPATH": os.pathsep.join([str(REPO / "bench"), str(REPO)])}
    server = subprocess.Popen(argv, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
    except BaseException:
        stop_server(server)
        raise
    return server, base


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(timeout=30)


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


# --- load ------------------------------------------------------------------------------------------


def bare_ed25519(payloads: list[bytes], seconds: float) -> float:
    key = Ed25519PrivateKey.generate()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for p in payloads:
            key.sign(p)
        done += len(payloads)
    return done / (time.perf_counter() - start)


_LATENCY = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(
    url: str, seconds: int, clients: int, method: str, body: str | None, headers: dict[str, str], tmp: Path
) -> dict[str, float]:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        (tmp / "body.json").write_text(body)
        lines.append(f'local f = io.open("{tmp / "body.json"}", "rb"); wrk.body = f:read("*a"); f:close()')
    for name, value in headers.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    (tmp / "script.lua").write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(tmp / "script.lua"), url],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: float(v) * _UNIT[u] for p, v, u in _LATENCY.findall(out)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rate,
        "p50_ms": lat.get("50", float("nan")),
        "p99_ms": lat.get("99", float("nan")),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def run_threads(
    url: str, seconds: int, clients: int, method: str, body: str | None, headers: dict[str, str], tmp: Path
) -> dict[str, float]:
    latencies: list[float] = []
    bad = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine: list[float] = []
        with httpx.Client(headers=headers, timeout=30) as client:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                response = client.request(method, url, content=body)
                mine.append((time.perf_counter() - t0) * 1000)
                if response.status_code >= 300:
                    bad[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "non_2xx": float(bad[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100, help="items per batch call (≤ 1000)")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the service")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-signing-") as tmpdir:
        tmp = Path(tmpdir)
        database_url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
        api_key, kid = setup(database_url)
        load = run_wrk if shutil.which("wrk") else run_threads
        payloads = [os.urandom(PAYLOAD_BYTES) for _ in range(args.batch)]
        auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        single_body = json.dumps(
            {"format": "jws", "payload_b64": base64.b64encode(payloads[0]).decode(), "key_id": kid}
        )
        batch_body = json.dumps(
            {"items": [{"format": "jws", "payload_b64": base64.b64encode(p).decode(), "key_id": kid} for p in payloads]}
        )

        def post(path: str, body: str) -> dict[str, float]:
            return load(base + path, args.seconds, args.clients, "POST", body, auth, tmp)

        # The service exactly as deployed: `bhxh-integrity serve` (uvicorn, the app factory).
        port = _free_port()
        server, base = start_server(
            [
                str(Path(sys.executable).parent / "bhxh-integrity"),
                "serve",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            database_url,
            port,
        )
        try:
            # Warm up (first requests pay imports, connection pools, JIT-free caches).
            with httpx.Client(headers=auth, timeout=60) as client:
                for _ in range(20):
                    assert client.post(base + "/v1/signatures", content=single_body).status_code == 200
                check = client.post(base + "/v1/signatures/batch", content=batch_body)
                assert check.status_code == 200, check.text

            bare = bare_ed25519(payloads, min(args.seconds, 5))
            trivial = load(base + "/healthz", args.seconds, args.clients, "GET", None, {}, tmp)
            single = post("/v1/signatures", single_body)
            batch = post("/v1/signatures/batch", batch_body)
        finally:
            stop_server(server)

        # Where a single signature's time goes: the probe server (signing_floor.py), on one
        # worker whatever --workers says: 1/rate is then the time one request takes.
        port = _free_port()
        server, base = start_server(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "signing_floor:app_factory",
                "--factory",
                "--port",
                str(port),
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            database_url,
            port,
        )
        try:
            with httpx.Client(headers=auth, timeout=60) as client:
                for path in PROBE_STEPS:
                    for _ in range(20):
                        response = client.post(base + path, content=single_body)
                        assert response.status_code == 200, (path, response.text)
            floor_trivial = load(base + "/healthz", args.seconds, args.clients, "GET", None, {}, tmp)
            floors = {path: post(path, single_body) for path in PROBE_STEPS}
        finally:
            stop_server(server)

        stages = in_process(database_url, kid, payloads, min(args.seconds, 5))

    batch_sigs = batch["rps"] * args.batch
    backend = (args.database_url or "sqlite").split(":", 1)[0]
    print(
        f"bench_signing: {args.clients} clients, {args.seconds}s per run, payload {PAYLOAD_BYTES} B, "
        f"batch {args.batch}, load {'wrk' if shutil.which('wrk') else 'python threads'}, database {backend}, "
        f"{args.workers} server worker(s), {os.cpu_count()} CPUs"
    )
    print(f"  bare Ed25519 sign (cryptography, 1 thread)   {bare:10.0f} sig/s   (baseline)")
    print(
        f"  GET /healthz (trivial endpoint)              {trivial['rps']:10.0f} req/s  p50 {trivial['p50_ms']:.2f} ms  p99 {trivial['p99_ms']:.2f} ms"
    )
    print(
        f"  POST /v1/signatures (JWS Ed25519)            {single['rps']:10.0f} sig/s  p50 {single['p50_ms']:.2f} ms  p99 {single['p99_ms']:.2f} ms"
        f"  = {single['rps'] / trivial['rps']:.0%} of trivial (target ≥ 70%)"
    )
    print(
        f"  POST /v1/signatures/batch x{args.batch:<5}          {batch_sigs:10.0f} sig/s  p50 {batch['p50_ms']:.2f} ms  p99 {batch['p99_ms']:.2f} ms per call"
        f"  = {batch_sigs / bare:.0%} of bare Ed25519 (target ≥ 50%)"
    )
    print(
        "  where a single signature's time goes (probe server, signing_floor.py, 1 worker; share of its own /healthz):"
    )
    print(f"    GET /healthz                                 {floor_trivial['rps']:10.0f} req/s")
    # With every client waiting on a busy server, 1/rate is the server's time per request, so the
    # step from one probe to the next is what that stage adds to a request.
    previous = 1e6 / floor_trivial["rps"]
    for path, label in PROBE_STEPS.items():
        took = 1e6 / floors[path]["rps"]
        print(
            f"    {label:44s} {floors[path]['rps']:10.0f} req/s  = {floors[path]['rps'] / floor_trivial['rps']:.0%}"
            f"  (+{took - previous:.0f} µs/request)"
        )
        previous = took
    print(
        f"    the 70% target leaves {(1 / 0.7 - 1) * 1e6 / floor_trivial['rps']:.0f} µs/request beyond /healthz for all of the above"
    )
    print("  where a batch item's time goes (this process, 1 thread, no HTTP; share of bare Ed25519):")
    for name, label in (
        ("jws", "JWS signatures alone"),
        ("audit", f"audit entries alone (record_many of {args.batch})"),
        ("both", "sign_batch: both, one transaction"),
    ):
        print(
            f"    {label:44s} {stages[name]:10.0f} items/s = {stages[name] / bare:.0%}  ({1e6 / stages[name]:.1f} µs/item)"
        )
    print(
        f"    the 50% target leaves {2e6 / bare:.1f} µs/item, bare signing ({1e6 / bare:.1f} µs) included, for all of the above and HTTP"
    )
    failures = trivial["non_2xx"] + single["non_2xx"] + batch["non_2xx"] + floor_trivial["non_2xx"]
    failures += sum(f["non_2xx"] for f in floors.values())
    if failures:
        print(f"  WARNING: {failures:.0f} responses were not 2xx")


if __name__ == "__main__":
    main()
