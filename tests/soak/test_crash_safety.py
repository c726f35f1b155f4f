"""Crash safety (``make soak``): a real service process takes concurrent audit
appends and receipt issues over HTTP and is killed with SIGKILL at random moments. After each
restart an auditor's check proves that the chain and tree verify (consistently with the
checkpoint kept before the kill), that every operation a client saw acknowledged is there with
the content it was acknowledged with, and that dossier codes neither repeat nor skip.

Figures are printed as one line per back end; ``SOAK_KILLS`` and ``SOAK_SEED`` override the
number of kills (20) and the random seed (printed, so a failing run can be replayed).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from integrity.app_state import build_state
from tests.conftest import demo_settings
from tests.soak.support import (
    UNITS,
    AckedEvent,
    AckedReceipt,
    CheckResult,
    ServerProcess,
    admin_state,
    audit_cli_verify,
    check_events,
    check_log,
    check_receipts,
    prepare_database,
    receipt_body,
)

pytestmark = pytest.mark.soak

KILLS = int(os.environ.get("SOAK_KILLS", "20"))
AUDIT_WORKERS = 6
RECEIPT_WORKERS = 2
# Seconds the service runs between a restart (ready) and the next kill.
UP_SECONDS = (0.3, 2.5)
REQUEST_TIMEOUT = 60.0
RETRY_PAUSE = 0.05
# Checkpoints often, so that kills also land while one is being signed.
SERVER_ENV = {"BHXH_CHECKPOINT_EVERY": "64", "BHXH_CHECKPOINT_SECONDS": "1"}


class Load:
    """Client threads that append and issue until stopped, remembering what was acknowledged.

    An append whose answer never came (the connection died) is "in doubt": it may or may not
    have been written, and is not retried. A receipt in doubt is retried with the same
    Idempotency-Key until it is answered, as a careful client would do."""

    def __init__(self, base_url: str, api_key: str, seed: int) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.seed = seed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.events: list[AckedEvent] = []
        self.receipts: list[AckedReceipt] = []
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._appender, args=(i,), name=f"append-{i}", daemon=True)
            for i in range(AUDIT_WORKERS)
        ] + [
            threading.Thread(target=self._issuer, args=(i,), name=f"issue-{i}", daemon=True)
            for i in range(RECEIPT_WORKERS)
        ]
        self.actor = ""

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT * 2)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not finish"

    def acknowledged(self) -> tuple[list[AckedEvent], list[AckedReceipt]]:
        with self.lock:
            return list(self.events), list(self.receipts)

    def _count(self, what: str, detail: str | None = None) -> None:
        with self.lock:
            self.counts[what] += 1
            if detail is not None and len(self.errors) < 20:
                self.errors.append(detail)

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=REQUEST_TIMEOUT)

    def _appender(self, worker: int) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        with self._client() as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                data = {"worker": worker, "n": n, "tag": f"{rng.getrandbits(64):016x}"}
                body = {"action": "ext.soak-client.appended", "subject": f"w{worker}-{n}", "data": data}
                try:
                    response = client.post("/v1/audit/events", json=body)
                except httpx.ConnectError:
                    self._count("append refused (service down)")
                    time.sleep(RETRY_PAUSE)
                    continue
                except httpx.TransportError:
                    self._count("append in doubt")
                    time.sleep(RETRY_PAUSE)
                    continue
                if response.status_code != 201:
                    self._count(f"append answered {response.status_code}", response.text[:300])
                    continue
                out = response.json()
                with self.lock:
                    self.actor = out["actor"]
                    self.events.append(AckedEvent(out["seq"], out["actor"], body["action"], body["subject"], data))

    def _issuer(self, worker: int) -> None:
        with self._client() as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                key = uuid.uuid4().hex
                body = receipt_body(worker * 100_000 + n, UNITS[n % len(UNITS)])
                doubted = False
                deadline = time.monotonic() + REQUEST_TIMEOUT * 2
                # Retried with the same key until answered, even after stop (the service is up then).
                while time.monotonic() < deadline:
                    try:
                        response = client.post("/v1/receipts", json=body, headers={"Idempotency-Key": key})
                    except httpx.ConnectError:
                        time.sleep(RETRY_PAUSE)
                        continue
                    except httpx.TransportError:
                        if not doubted:
                            self._count("receipt in doubt (retried with its Idempotency-Key)")
                            doubted = True
                        time.sleep(RETRY_PAUSE)
                        continue
                    if response.status_code == 201:
                        out = response.json()
                        if response.headers.get("Idempotent-Replayed") == "true":
                            self._count("receipt answered from its Idempotency-Key after a kill")
                        with self.lock:
                            self.receipts.append(AckedReceipt(out["code"], out["sha256"], out["audit_seq"], key))
                    else:
                        self._count(f"receipt answered {response.status_code}", response.text[:300])
                    break
                else:
                    self._count("receipt never answered", key)


@pytest.mark.timeout(1800)
def test_acknowledged_operations_survive_kill_9_at_random_moments(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = db_url.split(":", 1)[0].split("+", 1)[0]
    seed = int(os.environ.get("SOAK_SEED", str(random.SystemRandom().randrange(1 << 30))))
    rng = random.Random(seed)
    prepare_database(db_url)
    with admin_state(db_url) as admin:
        api_key = admin.clients.create("soak-client", ["audit:append", "receipts:issue"]).api_key
    server = ServerProcess(db_url, tmp_path / "server.log", **SERVER_ENV)
    auditor = build_state(demo_settings(db_url))
    load = Load(server.url, api_key, seed)
    rounds: list[CheckResult] = []
    ready_times: list[float] = []
    trusted = None
    began = time.monotonic()
    try:
        server.start()
        ready_times.append(server.wait_ready())
        load.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(*UP_SECONDS))
            server.kill()
            events, issued = load.acknowledged()  # everything acknowledged before the kill
            server.start()
            ready_times.append(server.wait_ready())
            result = CheckResult()
            check_log(auditor, result, trusted)
            check_events(auditor, events, result)
            check_receipts(auditor, issued, result)
            trusted = result.checkpoint or trusted
            rounds.append(result)
        time.sleep(1.0)
        load.finish()
        events, issued = load.acknowledged()
        final = CheckResult()
        check_log(auditor, final, trusted)
        check_events(auditor, events, final)
        registry = check_receipts(auditor, issued, final)
    finally:
        load.stop.set()
        server.stop()
        auditor.close()
    operator = audit_cli_verify(db_url)

    lost = final.lost + sum(r.lost for r in rounds)
    problems = [p for r in [*rounds, final] for p in r.problems]
    acked = len(events) + len(issued)
    line = (
        f"crash-safety[{backend}]: kills={server.starts - 1} acknowledged={acked} "
        f"(appends={len(events)} receipts={len(issued)}) lost={lost} "
        f"in-doubt appends={load.counts['append in doubt']} "
        f"receipts retried={load.counts['receipt in doubt (retried with its Idempotency-Key)']} "
        f"log size={final.tree_size} registered receipts={final.receipts} "
        f"restart-to-ready max={max(ready_times):.2f}s wall={time.monotonic() - began:.0f}s seed={seed}"
    )
    with capsys.disabled():
        print("\n" + line)
        if load.counts:
            print(f"crash-safety[{backend}]: client outcomes {dict(load.counts)}")
    assert server.starts - 1 == KILLS
    assert lost == 0, problems
    assert not problems, problems
    assert operator["exit_code"] == 0 and operator.get("ok", True), operator
    # No 5xx, no refusal other than a dead connection: the service answered 201 or nothing.
    answered = {k: v for k, v in load.counts.items() if "answered 5" in k or "answered 4" in k or "never" in k}
    assert not answered, (answered, load.errors)
    # Each Idempotency-Key produced one receipt, and no receipt exists that no client holds.
    assert len({r.idempotency_key for r in issued}) == len(issued)
    assert sorted(registry) == sorted(r.code for r in issued)
    assert len(events) > KILLS * 10 and len(issued) > KILLS, "the load was too light to prove anything"
