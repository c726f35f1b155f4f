"""Several service processes on ONE PostgreSQL database under mixed load:
audit appends, receipt issues, logins (good ones, and wrong passwords against a few accounts
from many source addresses), and RFC 9421 exchange messages, some of them delivered twice to
two different instances at once. Afterwards the database must show no fork and no gap in the
log, no repeated or skipped dossier code, lockout counters equal to the wrong attempts the
service evaluated, and each message accepted exactly once.

The soak run (4 instances, ``SOAK_SECONDS`` = 60 s) is ``make soak``; a short run (2 instances,
a few seconds) keeps the same checks in the normal suite.
"""

from __future__ import annotations

import base64
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from auth.lockout import account_key
from auth.tables import login_throttle
from integrity.app_state import AppState, build_state
from integrity.db import READ_ONLY
from signing.httpsig import HttpRequest, sign_request
from tests.api.exchange_support import demo_signing_key, utc_now
from tests.auth.support import STRONG
from tests.conftest import demo_settings
from tests.soak.support import (
    UNITS,
    AckedEvent,
    AckedReceipt,
    CheckResult,
    ServerProcess,
    admin_state,
    check_events,
    check_log,
    check_receipts,
    prepare_database,
    receipt_body,
)

PORTAL_KEY = demo_signing_key("portal-exchange", "portal")
EXCHANGE_URL = "https://one-stop.bhxh.internal/gateway/one-stop/v1/dossiers"
GOOD_USERS = ("nguoi-dung-1", "nguoi-dung-2")
VICTIMS = ("nan-nhan-1", "nan-nhan-2", "nan-nhan-3")
GHOST = "khong-ton-tai"  # no such account: its counter must be exact as well
WRONG_PASSWORD = "not the right password at all"
# Each wrong attempt comes from one of these loopback addresses (Linux routes 127/8 to lo),
# so the per-address limit does not stop the run while the per-account counters are tested.
ATTACK_ADDRESSES = [f"127.0.{b}.{c}" for b in (1, 2) for c in range(1, 251)]
DOUBLE_DELIVERY_EVERY = 3
REQUEST_TIMEOUT = 60.0


@dataclass
class Outcomes:
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: list[AckedEvent] = field(default_factory=list)
    receipts: list[AckedReceipt] = field(default_factory=list)
    wrong: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    good_logins: Counter[int] = field(default_factory=Counter)
    singles: Counter[str] = field(default_factory=Counter)  # "valid" / reason
    doubles: Counter[str] = field(default_factory=Counter)  # "one valid, one replayed" / otherwise
    unexpected: list[str] = field(default_factory=list)

    def odd(self, what: str) -> None:
        with self.lock:
            if len(self.unexpected) < 30:
                self.unexpected.append(what)


class MixedLoad:
    def __init__(self, urls: list[str], keys: dict[str, str], seed: int) -> None:
        self.urls = urls
        self.keys = keys
        self.seed = seed
        self.stop = threading.Event()
        self.out = Outcomes()
        workers = (
            [(self._appender, i) for i in range(4)]
            + [(self._issuer, i) for i in range(2)]
            + [(self._good_login, i) for i in range(len(GOOD_USERS))]
            + [(self._attacker, i) for i in range(3)]
            + [(self._exchanger, i) for i in range(2)]
        )
        self.threads = [threading.Thread(target=fn, args=(i,), daemon=True) for fn, i in workers]

    def run(self, seconds: float) -> None:
        for t in self.threads:
            t.start()
        time.sleep(seconds)
        self.stop.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT * 2)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not finish"

    def _client(self, scope: str | None = None, local_address: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[scope]}"} if scope else {}
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        return httpx.Client(headers=headers, timeout=REQUEST_TIMEOUT, transport=transport)

    def _appender(self, worker: int) -> None:
        rng = random.Random(self.seed + worker)
        with self._client("audit:append") as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                data = {"worker": worker, "n": n, "tag": f"{rng.getrandbits(64):016x}"}
                body = {"action": APPEND_ACTION, "subject": f"w{worker}-{n}", "data": data}
                response = client.post(rng.choice(self.urls) + "/v1/audit/events", json=body)
                if response.status_code != 201:
                    self.out.odd(f"append {response.status_code} {response.text[:200]}")
                    continue
                got = response.json()
                with self.out.lock:
                    self.out.events.append(AckedEvent(got["seq"], got["actor"], body["action"], body["subject"], data))

    def _issuer(self, worker: int) -> None:
        rng = random.Random(self.seed + 100 + worker)
        with self._client("receipts:issue") as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                key = uuid.uuid4().hex
                body = receipt_body(worker * 100_000 + n, UNITS[n % len(UNITS)])
                response = client.post(
                    rng.choice(self.urls) + "/v1/receipts", json=body, headers={"Idempotency-Key": key}
                )
                if response.status_code != 201:
                    self.out.odd(f"receipt {response.status_code} {response.text[:200]}")
                    continue
                got = response.json()
                with self.out.lock:
                    self.out.receipts.append(AckedReceipt(got["code"], got["sha256"], got["audit_seq"], key))

    def _good_login(self, worker: int) -> None:
        rng = random.Random(self.seed + 200 + worker)
        with self._client(local_address="127.0.0.2") as client:
            while not self.stop.is_set():
                body = {"username": GOOD_USERS[worker], "password": STRONG}
                response = client.post(rng.choice(self.urls) + "/v1/auth/login", json=body)
                with self.out.lock:
                    self.out.good_logins[response.status_code] += 1
                if response.status_code != 200 or not response.json().get("token"):
                    self.out.odd(f"good login {response.status_code} {response.text[:200]}")

    def _attacker(self, worker: int) -> None:
        rng = random.Random(self.seed + 300 + worker)
        while not self.stop.is_set():
            name = rng.choice((*VICTIMS, GHOST))
            with self._client(local_address=rng.choice(ATTACK_ADDRESSES)) as client:
                response = client.post(
                    rng.choice(self.urls) + "/v1/auth/login", json={"username": name, "password": WRONG_PASSWORD}
                )
            with self.out.lock:
                self.out.wrong[name][response.status_code] += 1
            if response.status_code not in (401, 429):
                self.out.odd(f"wrong password {response.status_code} {response.text[:200]}")
            time.sleep(rng.uniform(0, 0.02))

    def _exchanger(self, worker: int) -> None:
        rng = random.Random(self.seed + 400 + worker)
        with self._client("verify") as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                body = f'{{"ma_ho_so": "{worker}-{n}", "ho_ten": "Lê Văn C"}}'.encode()
                message = HttpRequest("POST", EXCHANGE_URL, {"Content-Type": "application/json"}, body)
                headers = {
                    "Content-Type": "application/json",
                    **sign_request(message, PORTAL_KEY, clock=utc_now).as_dict(),
                }
                payload = {
                    "method": "POST",
                    "url": EXCHANGE_URL,
                    "headers": headers,
                    "body_b64": base64.b64encode(body).decode(),
                    # The receiver records the nonce: that is what makes a second copy a replay.
                    "consume": True,
                }
                if n % DOUBLE_DELIVERY_EVERY:
                    verdict = self._verify(client, rng.choice(self.urls), payload)
                    with self.out.lock:
                        self.out.singles["valid" if verdict.get("valid") else str(verdict.get("reason"))] += 1
                    continue
                # The same message to two instances at the same moment: the replay guard is in
                # the database, so exactly one of them may accept it.
                first, second = rng.sample(self.urls, 2) if len(self.urls) > 1 else self.urls * 2
                answers: list[dict[str, Any]] = []
                twin = threading.Thread(target=self._verify_into, args=(answers, client, second, payload))
                twin.start()
                answers.append(self._verify(client, first, payload))
                twin.join()
                valid = sorted(bool(a.get("valid")) for a in answers)
                reasons = sorted(str(a.get("reason")) for a in answers)
                ok = valid == [False, True] and reasons == ["None", "replayed-nonce"]
                with self.out.lock:
                    self.out.doubles["one valid, one replayed" if ok else f"{valid} {reasons}"] += 1

    def _verify_into(
        self, answers: list[dict[str, Any]], client: httpx.Client, url: str, payload: dict[str, Any]
    ) -> None:
        answers.append(self._verify(client, url, payload))

    def _verify(self, client: httpx.Client, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = client.post(url + "/v1/exchange/verify", json=payload)
        if response.status_code != 200:
            self.out.odd(f"exchange verify {response.status_code} {response.text[:200]}")
            return {}
        return response.json()


def _audit_counts(state: AppState) -> Counter[tuple[str, str, str | None]]:
    """(action, subject, data.reason) → number of entries, over the whole log."""
    counts: Counter[tuple[str, str, str | None]] = Counter()
    start = 0
    while True:
        chunk = state.audit.entries(start)
        if not chunk:
            return counts
        for e in chunk:
            counts[(e.action, e.subject, e.data.get("reason"))] += 1
        start = chunk[-1].seq + 1


def _throttle_counters(state: AppState) -> dict[str, int]:
    with state.engine.connect().execution_options(**READ_ONLY) as conn:
        return {r.key: r.failures for r in conn.execute(select(login_throttle.c.key, login_throttle.c.failures))}


# A client appends only under ext.<its name>.; a name is lower-case letters, digits, hyphens.
APPEND_ACTION = "ext.soak-audit-append.appended"


# The exchanging client is the receiving system: it verifies and records the nonce.
_ALSO = {"verify": ("exchange:consume",)}


def _client_name(scope: str) -> str:
    return "soak-" + scope.replace(":", "-")


def run_instances(
    db_url: str, tmp_path: Path, instances: int, seconds: float, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = int(os.environ.get("SOAK_SEED", str(random.SystemRandom().randrange(1 << 30))))
    prepare_database(db_url)
    with admin_state(db_url) as admin:
        keys = {
            scope: admin.clients.create(_client_name(scope), [scope, *_ALSO.get(scope, ())]).api_key
            for scope in ("audit:append", "receipts:issue", "verify")
        }
        for name in (*GOOD_USERS, *VICTIMS):
            admin.accounts.create_user(name, STRONG, "citizen", actor="system", reason="multi-instance test")
    servers = [ServerProcess(db_url, tmp_path / f"server-{i}.log") for i in range(instances)]
    auditor = build_state(demo_settings(db_url))
    load = MixedLoad([s.url for s in servers], keys, seed)
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready()
        load.run(seconds)
    finally:
        load.stop.set()
        for s in servers:
            s.stop()
    try:
        out = load.out
        result = CheckResult()
        check_log(auditor, result, None)
        check_events(auditor, out.events, result)
        registry = check_receipts(auditor, out.receipts, result)
        counters = _throttle_counters(auditor)
        audit = _audit_counts(auditor)
    finally:
        auditor.close()

    wrong_sent = {name: sum(c.values()) for name, c in out.wrong.items()}
    counted = {name: out.wrong[name][401] for name in out.wrong}
    refused = {name: out.wrong[name][429] for name in out.wrong}
    accepted = sum(n for (action, _s, _r), n in audit.items() if action == "exchange.accepted")
    replays_logged = sum(
        n for (action, _s, reason), n in audit.items() if action == "exchange.rejected" and reason == "replayed-nonce"
    )
    line = (
        f"multi-instance[postgresql x{instances}, {seconds:.0f}s]: appends={len(out.events)} "
        f"receipts={len(out.receipts)} good logins={out.good_logins[200]} "
        f"wrong passwords sent={sum(wrong_sent.values())} (counted={sum(counted.values())}, "
        f"refused while locked={sum(refused.values())}) exchange single={sum(out.singles.values())} "
        f"double-delivered={sum(out.doubles.values())} log size={result.tree_size} "
        f"forks=0 gaps=0 problems={len(result.problems)} seed={seed}"
    )
    with capsys.disabled():
        print("\n" + line)

    assert not result.problems, result.problems
    assert not out.unexpected, out.unexpected
    # Lockout: every wrong attempt was answered 401 (evaluated and counted) or 429 (refused
    # during a delay, by design not counted); the database counters equal the 401s exactly,
    # and the log holds one entry per attempt with the matching reason.
    for name in (*VICTIMS, GHOST):
        assert counters.get(account_key(name), 0) == counted.get(name, 0), (name, counters, dict(out.wrong))
        assert counted.get(name, 0) + refused.get(name, 0) == wrong_sent.get(name, 0)
    for name in VICTIMS:
        assert audit[("auth.login.failed", name, "bad_password")] == counted.get(name, 0)
        assert audit[("auth.login.failed", name, "throttled_account")] == refused.get(name, 0)
    address_failures = sum(v for k, v in counters.items() if k.startswith("addr:"))
    assert address_failures == sum(counted.values())
    for name in GOOD_USERS:
        assert account_key(name) not in counters
    assert out.good_logins and set(out.good_logins) == {200}
    # Exchange: every message once accepted; of each doubly delivered message, exactly one.
    assert set(out.singles) <= {"valid"} and set(out.doubles) <= {"one valid, one replayed"}, (out.singles, out.doubles)
    assert accepted == sum(out.singles.values()) + sum(out.doubles.values())
    assert replays_logged == sum(out.doubles.values())
    # Receipts: the registry holds exactly what the clients were given.
    assert sorted(registry) == sorted(r.code for r in out.receipts)
    assert out.events and out.receipts and sum(counted.values()) and out.singles


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_four_instances_on_one_postgresql_keep_log_codes_and_lockout_exact(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_instances(db_url, tmp_path, 4, float(os.environ.get("SOAK_SECONDS", "60")), capsys)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_instances_on_one_postgresql_keep_log_codes_and_lockout_exact(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_instances(db_url, tmp_path, 2, 5.0, capsys)
