"""An anonymous flood through the real app leaves a bounded number of audit entries: per
client address and minute, ``BHXH_REFUSAL_LOG_PER_MINUTE`` entries of their own and one
summary that counts the rest (integrity.refusal_log)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi.testclient import TestClient

from tests.auth.support import STRONG, wire_accounts
from tests.conftest import Service

LIMIT = 20  # the default of BHXH_REFUSAL_LOG_PER_MINUTE
SOURCES = ("192.0.2.10", "192.0.2.11", "192.0.2.12", "2001:db8::7")
ADMIN_ONLY = "/v1/admin/clients"
FORGED = "bhxh_0123456789abcdef_" + "A" * 43
DOSSIERS = "/gateway/one-stop/v1/dossiers"


def _from(service: Service, source: str) -> TestClient:
    return TestClient(service.app, raise_server_exceptions=False, client=(source, 40000))


def _entries(service: Service, after: int = 0) -> list[Any]:
    return service.state.audit.entries(after, after + 1_000)


def _head(service: Service) -> int:
    return service.state.audit.size()


def test_an_anonymous_flood_is_bounded_and_every_refusal_is_counted(service: Service) -> None:
    service.api_key("admin")  # a client exists, so the forged keys are looked up for real
    clients = {source: _from(service, source) for source in SOURCES}
    start = _head(service)
    sent: Counter[tuple[str, str]] = Counter()
    for i in range(2_000):
        source = SOURCES[(i // 2) % len(SOURCES)]
        if i % 2:
            response = clients[source].get(ADMIN_ONLY, headers={"Authorization": f"Bearer {FORGED}"})
            kind = "auth.apikey"
        else:
            response = clients[source].post(DOSSIERS, json={"n": i})  # unsigned
            kind = "exchange"
        assert response.status_code == 401, response.text
        sent[kind, source] += 1

    # Still in the same minute: only the entries of their own, LIMIT per source and kind.
    during = _entries(service, start)
    bound = len(SOURCES) * 2 * (LIMIT + 1)
    assert len(during) <= bound, f"2000 anonymous refusals wrote {len(during)} audit entries (bound {bound})"
    assert Counter(e.action for e in during) == {
        "auth.apikey.refused": len(SOURCES) * LIMIT,
        "exchange.rejected": len(SOURCES) * LIMIT,
    }, f"2000 anonymous refusals wrote {len(during)} audit entries"

    # The minute closes; the next refusal (from any address) writes the summaries.
    service.clock.advance(60)
    assert (
        _from(service, "198.51.100.1").get(ADMIN_ONLY, headers={"Authorization": f"Bearer {FORGED}"}).status_code == 401
    )
    after = _entries(service, start)
    summaries = [e for e in after if e.action.endswith("summarised")]
    assert len(after) <= bound + 1, f"2000 anonymous refusals wrote {len(after)} audit entries (bound {bound})"
    assert len(summaries) == len(SOURCES) * 2, f"{len(after)} entries, summaries: {[e.action for e in summaries]}"
    per_kind: Counter[str] = Counter()
    for entry in summaries:
        kind = entry.action.split(".refusals_summarised")[0].split(".rejections_summarised")[0]
        assert entry.data["logged_one_by_one"] == LIMIT and entry.subject == "address"
        assert sum(entry.data["reasons"].values()) == entry.data["count"]
        per_kind[kind] += entry.data["count"]
    assert per_kind == {
        "auth.apikey": sum(n - LIMIT for (k, _), n in sent.items() if k == "auth.apikey"),
        "exchange": sum(n - LIMIT for (k, _), n in sent.items() if k == "exchange"),
    }
    assert sum(per_kind.values()) + 2 * len(SOURCES) * LIMIT == 2_000
    # The summary keeps the address in the erasable personal data, not in the chained data.
    assert all("address" not in e.data and "source" not in e.data for e in summaries)
    print(f"2000 anonymous refusals from {len(SOURCES)} addresses -> {len(after) - 1} audit entries")


def test_a_gateway_refusal_after_the_minute_writes_the_summary(service: Service) -> None:
    client = _from(service, "192.0.2.70")
    for i in range(LIMIT + 3):
        assert client.post(DOSSIERS, json={"n": i}).status_code == 401
    start = _head(service)
    service.clock.advance(60)
    assert client.post(DOSSIERS, json={}).status_code == 401
    summary, entry = _entries(service, start)
    assert summary.action == "exchange.rejections_summarised" and summary.data["count"] == 3
    assert entry.action == "exchange.rejected" and entry.data["reason"] == summary.data["reasons"].popitem()[0]


def test_the_open_minute_is_summarised_at_shutdown(db_url: str) -> None:
    service = Service(db_url, refusal_log_per_minute=3)
    start = _head(service)
    client = _from(service, "192.0.2.50")
    for _ in range(10):
        assert client.get(ADMIN_ONLY, headers={"Authorization": f"Bearer {FORGED}"}).status_code == 401
    assert len(_entries(service, start)) == 3
    service.close()  # what the application's lifespan does at shutdown
    reopened = Service(db_url)
    try:
        after = _entries(reopened, start)
        (summary,) = [e for e in after if e.action == "auth.apikey.refusals_summarised"]
        assert summary.data["count"] == 7 and summary.data["reasons"] == {"unknown API key": 7}
        assert len(after) == 4, [e.action for e in after]
    finally:
        reopened.close()


def test_a_key_lacking_a_scope_does_not_use_up_the_anonymous_allowance(service: Service) -> None:
    # Only anonymous refusals are bounded: an authenticated caller's 403 names it.
    headers = service.auth("verify")
    for _ in range(LIMIT + 5):
        assert service.client.get(ADMIN_ONLY, headers=headers).status_code == 403
    start = _head(service)
    bad = {"Authorization": f"Bearer {FORGED}"}
    for _ in range(LIMIT):
        assert service.client.get(ADMIN_ONLY, headers=bad).status_code == 401
    assert [e.action for e in _entries(service, start)] == ["auth.apikey.refused"] * LIMIT


def test_logins_for_no_known_account_are_bounded_but_a_known_accounts_failures_are_not(db_url: str) -> None:
    service = Service(db_url, refusal_log_per_minute=2)
    try:
        wire_accounts(service)
        admin = service.auth("admin")
        created = service.client.post(
            "/v1/admin/users",
            json={"username": "alice", "password": STRONG, "role": "citizen", "reason": "new staff member"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        start = _head(service)
        client = _from(service, "192.0.2.60")
        for i in range(6):
            answer = client.post("/v1/auth/login", json={"username": f"nobody{i}", "password": "wrong password!"})
            assert answer.status_code == 401
        for i in range(4):
            answer = client.post("/v1/auth/login", json={"username": "alice", "password": f"wrong password {i}"})
            assert answer.status_code == 401
        during = _entries(service, start)
        reasons = Counter(e.data["reason"] for e in during if e.action == "auth.login.failed")
        assert reasons == {"unknown_user": 2, "bad_password": 4}, reasons
        service.clock.advance(60)
        service.state.refusals.flush_due()
        (summary,) = [e for e in _entries(service, start) if e.action == "auth.login.failures_summarised"]
        assert summary.data["count"] == 4 and summary.data["reasons"] == {"unknown_user": 4}
    finally:
        service.close()
