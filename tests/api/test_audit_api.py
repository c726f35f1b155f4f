"""The audit HTTP API on both back ends: appending events (validated), reads, checkpoint,
proofs, the streamed export verified offline, the report, and erasure of personal data."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from audit import merkle
from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.export import verify_export
from tests.conftest import DEMO_KEYS, Service

# The namespace of the clients ``Service.auth`` creates (all named "test-client").
OWN = "ext.test-client."


@pytest.fixture
def api(service: Service) -> Service:
    return service


def _post(api: Service, body: object, *scopes: str, raw: bytes | None = None, headers: dict | None = None) -> object:
    headers = headers or api.auth(*(scopes or ("audit:append",)))
    if raw is not None:
        return api.client.post("/v1/audit/events", content=raw, headers={**headers, "Content-Type": "application/json"})
    return api.client.post("/v1/audit/events", json=body, headers=headers)


def test_public_key_is_served_without_authentication(api: Service) -> None:
    response = api.client.get("/v1/audit/public-key")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert response.text.splitlines()[0] == (DEMO_KEYS / "audit-log.vkey").read_text().strip()


def test_other_systems_append_events_under_their_own_actor(api: Service) -> None:
    response = _post(
        api,
        {
            "action": "ext.test-client.dossier.received",
            "subject": "000.00.31.H29-251123-0001",
            "data": {"channel": "portal"},
            "pii": {"name": "Phạm Thị C"},
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["actor"].startswith("client:")
    read = api.client.get(
        f"/v1/audit/entries?start={body['seq']}&end={body['seq'] + 1}", headers=api.auth("audit:read")
    )
    entry = read.json()["entries"][0]
    assert entry["action"] == "ext.test-client.dossier.received" and entry["actor"] == body["actor"]
    assert entry["pii"] and "Phạm" not in read.text


@pytest.mark.parametrize(
    "body",
    [
        {"action": "Dossier.Received", "subject": "x"},
        {"action": "nodots", "subject": "x"},
        {"action": OWN + "a.b", "subject": "x", "actor": "system"},
        {"action": OWN + "a.b", "subject": "x", "extra": 1},
        {"action": OWN + "a.b", "subject": "x", "pii": ["not", "an", "object"]},
        {"action": OWN + "a.b", "subject": "x", "data": "text"},
        {"subject": "x"},
        {"action": OWN + "a.b", "subject": "x", "data": {"big": "x" * 20_000}},
        {"action": OWN + "a.b", "subject": "x", "pii": {}},
    ],
    ids=[
        "uppercase",
        "undotted",
        "actor-field",
        "unknown-field",
        "pii-list",
        "data-text",
        "no-action",
        "data-over-limit",
        "empty-pii",
    ],
)
def test_invalid_events_are_refused_with_422_and_nothing_is_written(api: Service, body: dict) -> None:
    headers = api.auth("audit:append")  # creating the client is itself logged
    before = api.state.audit.size()
    response = _post(api, body, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert api.state.audit.size() == before


def test_oversized_event_is_refused_with_413(api: Service) -> None:
    raw = json.dumps({"action": OWN + "a.b", "subject": "x", "data": {"pad": "x" * 70_000}}).encode()
    response = _post(api, None, raw=raw)
    assert response.status_code == 413


def test_appending_needs_the_append_scope(api: Service) -> None:
    assert api.client.post("/v1/audit/events", json={"action": OWN + "a.b"}).status_code == 401
    assert _post(api, {"action": OWN + "a.b"}, "audit:read").status_code == 403


def test_reads_need_the_read_scope(api: Service) -> None:
    for path in (
        "/v1/audit/entries",
        "/v1/audit/checkpoint",
        "/v1/audit/export",
        "/v1/audit/report",
        "/v1/audit/proofs/inclusion?seq=0",
        "/v1/audit/proofs/consistency?first=0",
    ):
        assert api.client.get(path).status_code == 401, path
        assert api.client.get(path, headers=api.auth("audit:append")).status_code == 403, path


def test_checkpoint_and_proofs_verify_with_the_public_key(api: Service) -> None:
    headers = api.auth("audit:read")
    assert api.client.get("/v1/audit/checkpoint", headers=headers).status_code == 404
    for i in range(9):
        _post(api, {"action": OWN + "signature.created", "subject": f"m{i}"})
    api.state.audit.checkpoint_now()
    note = api.client.get("/v1/audit/checkpoint", headers=headers)
    assert note.status_code == 200 and note.headers["content-type"].startswith("text/plain")
    signed = SignedCheckpoint.from_text(note.text)
    keys = [VerifierKey.from_text(k) for k in api.client.get("/v1/audit/public-key").text.splitlines()]
    signed.verify(keys)
    proof = api.client.get(f"/v1/audit/proofs/inclusion?seq=3&size={signed.size}", headers=headers).json()
    leaf = bytes.fromhex(api.state.audit.entry(3).hash)
    merkle.verify_inclusion(leaf, 3, signed.size, [bytes.fromhex(p) for p in proof["path"]], signed.root_hash)
    _post(api, {"action": OWN + "signature.created", "subject": "later"})
    later = api.client.get(f"/v1/audit/proofs/consistency?first={signed.size}", headers=headers).json()
    merkle.verify_consistency(
        signed.size,
        later["second"],
        signed.root_hash,
        bytes.fromhex(later["second_root"]),
        [bytes.fromhex(p) for p in later["path"]],
    )
    bad = api.client.get(f"/v1/audit/proofs/inclusion?seq=999&size={signed.size}", headers=headers)
    assert bad.status_code == 422


def test_streamed_export_verifies_offline(api: Service, tmp_path: Path) -> None:
    for i in range(5):
        _post(api, {"action": OWN + "receipt.issued", "subject": f"r{i}", "pii": {"id_number": f"07912345678{i}"}})
    api.state.audit.checkpoint_now()
    response = api.client.get("/v1/audit/export", headers=api.auth("audit:read"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    assert "079123456780" not in response.text
    path = tmp_path / "export.ndjson"
    path.write_bytes(response.content)
    vkeys = api.client.get("/v1/audit/public-key").text
    report = verify_export(path, vkeys)
    assert report.ok and report.entries_checked == api.state.audit.size()


def test_fresh_export_is_anchored_to_its_last_entry_without_a_prior_checkpoint(api: Service, tmp_path: Path) -> None:
    headers = api.auth("audit:read")
    for i in range(3):
        api.state.audit.record("system", "receipt.issued", f"r{i}")
    response = api.client.get("/v1/audit/export", headers=headers)
    path = tmp_path / "export.ndjson"
    path.write_bytes(response.content)
    last = SignedCheckpoint.from_text(json.loads(response.content.splitlines()[-1])["checkpoint"])
    report = verify_export(path, api.client.get("/v1/audit/public-key").text)
    assert report.ok and report.verified_tree_size == report.entries_checked == last.size


def test_report_says_not_verified_while_entries_are_past_the_last_checkpoint(api: Service) -> None:
    headers = api.auth("audit:read")
    api.state.audit.checkpoint_now()
    api.state.audit.record("system", "receipt.issued", "after the checkpoint")
    size = api.state.audit.size()
    data = api.client.get("/v1/audit/report?format=json", headers=headers).json()
    assert data["ok"] is False and data["verdict"] == "not_verified" and data["fault"] == "unanchored"
    assert data["unanchored"]["last"] == size - 1 and data["anchored"]["entries"] < size
    page = api.client.get("/v1/audit/report?format=html", headers=headers).text
    assert "KẾT LUẬN: CHƯA XÁC MINH" in page and "KẾT LUẬN: TOÀN VẸN" not in page
    assert "not covered by any trusted checkpoint" in page


def test_export_with_personal_data_needs_admin_and_is_logged(api: Service) -> None:
    _post(api, {"action": OWN + "receipt.issued", "subject": "r", "pii": {"id_number": "079123456789"}})
    assert api.client.get("/v1/audit/export?include_pii=true", headers=api.auth("audit:read")).status_code == 403
    response = api.client.get("/v1/audit/export?include_pii=true", headers=api.auth("audit:read", "admin"))
    assert response.status_code == 200 and "079123456789" in response.text
    assert any(e.action == "audit.exported" for e in api.state.audit.entries())


def test_report_in_json_and_html(api: Service) -> None:
    for i in range(4):
        _post(api, {"action": OWN + "login.failed", "subject": f"user{i}"})
    headers = api.auth("audit:read")  # creating the client is itself logged: before the checkpoint
    api.state.audit.checkpoint_now()
    data = api.client.get("/v1/audit/report?format=json", headers=headers).json()
    assert data["ok"] is True and data["origin"] == "bhxh-integrity/audit/bhxh-vss-main"
    assert data["verdict"] == "verified" and data["anchored"]["entries"] == api.state.audit.size()
    assert any(row["action"] == OWN + "login.failed" and row["count"] == 4 for row in data["actions_per_day"])
    html = api.client.get("/v1/audit/report?format=html", headers=headers)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    page = html.text
    assert "KẾT LUẬN: TOÀN VẸN" in page and "<svg" in page and OWN + "login.failed" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no external assets
    assert api.client.get("/v1/audit/report?format=pdf", headers=headers).status_code == 422


def test_report_page_keeps_its_style_sheet_under_the_page_policy(api: Service) -> None:
    """The HTML report is one self-contained file with an inline style sheet: the policy it is
    served under admits exactly that sheet by its hash (CSP Level 3), and no inline style
    attribute or script, so the verdict box keeps its colours in a browser that enforces it."""
    headers = api.auth("audit:read")
    api.state.audit.checkpoint_now()
    answer = api.client.get("/v1/audit/report?format=html", headers=headers)
    policy = answer.headers["content-security-policy"]
    blocks = re.findall(r"<style>(.*?)</style>", answer.text, re.DOTALL)
    assert blocks, "the report carries its style sheet inline"
    style_src = next(d for d in policy.split(";") if d.strip().startswith("style-src")).split()
    digests = {"'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'" for b in blocks}
    assert digests <= set(style_src) and "'unsafe-inline'" not in style_src
    assert "script-src 'self'" in policy and "<script" not in answer.text and " style=" not in answer.text
    # A changed sheet would no longer match: the hash is of these exact bytes.
    tampered = "'sha256-" + base64.b64encode(hashlib.sha256(blocks[0].encode() + b" ").digest()).decode() + "'"
    assert tampered not in style_src


def test_erasing_personal_data_is_an_admin_action(api: Service) -> None:
    seq = _post(api, {"action": OWN + "receipt.issued", "subject": "r", "pii": {"name": "Đỗ Văn D"}}).json()["seq"]
    path = f"/v1/admin/audit/pii/{seq}/erase"
    assert api.client.post(path, json={"reason": "subject request"}, headers=api.auth("audit:read")).status_code == 403
    response = api.client.post(path, json={"reason": "subject request"}, headers=api.auth("admin"))
    assert response.status_code == 200 and response.json()["seq"] == seq
    again = api.client.post(path, json={"reason": "subject request"}, headers=api.auth("admin"))
    assert again.status_code == 409
    assert api.client.post(path, json={"reason": "x", "more": 1}, headers=api.auth("admin")).status_code == 422
    headers = api.auth("audit:read")
    api.state.audit.checkpoint_now()
    data = api.client.get("/v1/audit/report", headers=headers).json()
    assert data["ok"] is True and data["pii"]["erased"] == 1


@pytest.mark.parametrize("query", ["start=28694961996245663744", "start=0&end=99999999999999999999"])
def test_out_of_range_numbers_are_422_not_500(api: Service, query: str) -> None:
    response = api.client.get(f"/v1/audit/entries?{query}", headers=api.auth("audit:read"))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
