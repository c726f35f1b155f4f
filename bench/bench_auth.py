"""Login throughput and latency with 20 concurrent clients, beside bare argon2id verifies/s
measured in the same run with the same parameters (m=19 MiB, t=2, p=1) and the same
concurrency. Target: logins/s ÷ verifies/s ≥ 0.8 (the service adds little beyond the hash).

Two figures: the use case (``AccountService.login`` from 20 threads) and the whole HTTP path
(uvicorn in a child process on 127.0.0.1, 20 client threads with keep-alive connections).

    .venv/bin/python bench/bench_auth.py [--seconds 8] [--clients 20] [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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

import argon2  # noqa: E402
import httpx  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from auth.errors import UsernameTaken  # noqa: E402
from auth.passwords import ARGON2_MEMORY_KIB, ARGON2_PARALLELISM, ARGON2_TIME_COST  # noqa: E402
from integrity.accounts import AccountService  # noqa: E402
from integrity.audit_service import AuditService  # noqa: E402
from integrity.clock import system_clock  # noqa: E402
from integrity.db import make_engine  # noqa: E402
from integrity.migrate import upgrade  # noqa: E402
from integrity.rate_limits import DEFAULT_LIMITS  # noqa: E402

# A throughput run measures the service, not its rate limits: budgets far above any load here.
RATE_LIMITS_OFF = {
    "BHXH_RATE_LIMITS": json.dumps(dict.fromkeys(DEFAULT_LIMITS, "1000000/second")),
    "BHXH_RATE_LIMIT_PER_ADDRESS": "1000000/second",
}

PASSWORD = "correct horse battery staple"
TARGET_RATIO = 0.8


def _run(clients: int, seconds: float, work: Callable[[int], None]) -> tuple[int, list[float]]:
    """Call ``work(client)`` in a loop from ``clients`` threads for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            work(i)
            latencies[i].append(time.perf_counter() - started)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    begun = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begun
    flat = [x for per in latencies for x in per]
    return int(len(flat) / elapsed), flat


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _line(name: str, rate: int, lat: list[float], base: int) -> None:
    ratio = rate / base if base else float("nan")
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"{name:<34} {rate:>6}/s   p50 {statistics.median(lat) * 1000:7.1f} ms   p99 {_pct(lat, 0.99):7.1f} ms"
        f"   ratio {ratio:4.2f} (target ≥ {TARGET_RATIO}) {verdict}"
    )


def _baseline(clients: int, seconds: float) -> tuple[int, list[float]]:
    # argon2-cffi itself, with our parameters but none of our code (no concurrency bound).
    bare = argon2.PasswordHasher(
        time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM, type=argon2.Type.ID
    )
    stored = bare.hash(PASSWORD)
    return _run(clients, seconds, lambda _i: bare.verify(stored, PASSWORD))


class _ServiceBench:
    """AccountService.login from many threads, on its own database."""

    def __init__(self, url: str, clients: int) -> None:
        self.engine = make_engine(url, pool_size=clients)
        upgrade(self.engine)
        self.audit = AuditService(
            self.engine,
            clock=system_clock,
            log_id="bench",
            checkpoint_key=Ed25519PrivateKey.generate(),
            checkpoint_key_name="bench",
            checkpoint_every=100_000,
            checkpoint_seconds=3600,
        )
        self.accounts = AccountService(self.engine, system_clock, self.audit, secrets_key=os.urandom(32))
        for i in range(clients):
            with contextlib.suppress(UsernameTaken):
                self.accounts.create_user(f"svc{i}", PASSWORD, "citizen", actor="system", reason="bench")
        self.clients = clients

    def login(self, i: int) -> None:
        if not self.accounts.login(f"svc{i}", PASSWORD, address=f"198.51.100.{i}").token:
            raise RuntimeError("login failed")

    def close(self) -> None:
        self.audit.close()
        self.engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SERVER = """
import sys, uvicorn
sys.path.insert(0, {repo!r})
from api.app import create_app
from api import web
from api.routes import auth as auth_routes, admin_users
from integrity.accounts import build_account_service
from integrity.app_state import build_state
from integrity.db import make_engine
from integrity.migrate import upgrade
from integrity.logs import configure_logging
from integrity.settings import Settings
from auth.errors import UsernameTaken
settings = Settings()
# As `serve` does: log lines at BHXH_LOG_LEVEL on stderr. Unconfigured, structlog prints every
# access line to stdout, a pipe nobody reads after READY: it fills and the server blocks.
configure_logging(settings.log_level)
engine = make_engine(settings.database_url)
upgrade(engine)
engine.dispose()
state = build_state(settings)
accounts = state.accounts
for i in range({clients}):
    try:
        accounts.create_user(f"http{{i}}", {password!r}, "citizen", actor="system", reason="bench")
    except UsernameTaken:
        pass
app = create_app(state=state)
app.openapi_schema = None
if "/v1/auth/login" not in app.openapi()["paths"]:
    app.include_router(auth_routes.router)
print("READY", flush=True)
uvicorn.run(app, host="127.0.0.1", port={port}, log_config=None, access_log=False)
"""


class _HttpBench:
    """uvicorn in a child process on the loopback; one keep-alive client per thread."""

    def __init__(self, url: str, clients: int) -> None:
        port = _free_port()
        env = {
            **os.environ,
            "BHXH_DATABASE_URL": url,
            "BHXH_KEYS_DIR": str(REPO / "keys.example"),
            "BHXH_DEMO": "1",
            "BHXH_LOG_LEVEL": "WARNING",
            **RATE_LIMITS_OFF,
        }
        code = _SERVER.format(repo=str(REPO), clients=clients, password=PASSWORD, port=port)
        self.server = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        assert self.server.stdout is not None
        for line in self.server.stdout:  # start-up log lines (the demo-keys warning) come first
            if line.strip() == "READY":
                break
        else:
            raise RuntimeError("the bench server did not start")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        self.pool = [httpx.Client(base_url=base, timeout=30) for _ in range(clients)]

    def login(self, i: int) -> None:
        answer = self.pool[i].post("/v1/auth/login", json={"username": f"http{i}", "password": PASSWORD})
        if answer.status_code != 200:
            raise RuntimeError(f"login answered {answer.status_code}")

    def close(self) -> None:
        for client in self.pool:
            client.close()
        self.server.terminate()
        self.server.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved; medians are reported")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        url_svc = args.database_url or f"sqlite:///{tmp}/svc.db"
        url_http = args.database_url or f"sqlite:///{tmp}/http.db"
        print(
            f"bench_auth: {args.clients} concurrent clients, {args.rounds} interleaved rounds of {args.seconds:.0f} s, "
            f"{url_svc.split(':', 1)[0]}, {cpus} CPUs, argon2id m=19 MiB t=2 p=1"
        )
        svc = _ServiceBench(url_svc, args.clients)
        http = _HttpBench(url_http, args.clients)
        figures: dict[str, list[tuple[int, list[float]]]] = {}
        try:
            # Interleaved rounds: a neighbour's load hits the baseline and the service alike.
            for _ in range(args.rounds):
                for name, clients, work in (
                    (f"baseline: argon2id verify x{args.clients}", args.clients, None),
                    (f"baseline: argon2id verify x{cpus}", cpus, None),
                    ("AccountService.login (use case)", args.clients, svc.login),
                    ("POST /v1/auth/login (HTTP)", args.clients, http.login),
                ):
                    result = _baseline(clients, args.seconds) if work is None else _run(clients, args.seconds, work)
                    figures.setdefault(name, []).append(result)
        finally:
            svc.close()
            http.close()
        medians = {
            name: (int(statistics.median(r for r, _ in runs)), [x for _, lat in runs for x in lat])
            for name, runs in figures.items()
        }
        # The denominator is the better baseline: 20 threads of 19 MiB each can thrash the
        # caches, and a service that bounds its hashing should not be flattered by that.
        base = max(rate for name, (rate, _) in medians.items() if name.startswith("baseline"))
        for name, (rate, lat) in medians.items():
            if name.startswith("baseline"):
                print(
                    f"{name:<34} {rate:>6}/s   p50 {statistics.median(lat) * 1000:7.1f} ms   p99 {_pct(lat, 0.99):7.1f} ms"
                )
            else:
                _line(name, rate, lat, base)


if __name__ == "__main__":
    main()
