"""Secret hygiene: every flow runs with logging at DEBUG, and nothing secret
or personal reaches any output; private keys, TOTP secrets, tokens and keys are never stored in
clear in any column of any table. Both back ends.

Output searched: the structlog stream, every stdlib log record (whatever logger, whatever
level), and everything written to file descriptors 1 and 2. Needles: passwords, the keystore
passphrase, TOTP secrets (base32, hex, base64) and codes, recovery codes, session, MFA and
device tokens, API keys, every private key (PEM body lines, PKCS#8 DER, raw key bytes and the
RSA private numbers, in base64, base64url and hex), and personal data (an applicant's name and
ID number, raw, NFD, percent-encoded and JSON-escaped ``\\uXXXX``).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from integrity.logs import configure_logging
from signing.algorithms import Algorithm
from signing.httpsig import HttpRequest, sign_request
from tests.api.exchange_support import demo_signing_key, utc_now
from tests.auth.support import rfc6238, secret_from_uri, step_of, wire_accounts
from tests.conftest import DEMO_KEYS, Service

PASSWORD = "violet staple orbit canyon 4821"
TYPO_PASSWORD = "violet staple orbit canyon 4812"  # a near miss, typed as a wrong password
APPLICANT = "Trần Thị Bích Ngọc"
APPLICANT_ID = "079301002468"
APPLICANT_PHONE = "0912345678"
LOGGED_PERSON = "Phạm Văn Đức Hùng"
LOGGED_PERSON_ID = "001203004567"
EXCHANGED_PERSON = "Lê Thị Hồng Nhung"
EXCHANGED_PERSON_ID = "038195007531"
EXCHANGE_URL = "https://one-stop.bhxh.internal/gateway/one-stop/v1/dossiers"
CODE_RE = r"(?<![0-9A-Za-z.]){}(?![0-9A-Za-z])"  # a 6-digit code, not the tail of a timestamp


@dataclass
class Needles:
    """What must never be seen: text needles (logs and text columns) and byte needles (blobs)."""

    secrets: dict[str, str] = field(default_factory=dict)  # label -> text
    raw: dict[str, bytes] = field(default_factory=dict)  # label -> bytes
    codes: dict[str, str] = field(default_factory=dict)  # 6-digit TOTP codes (searched with boundaries)
    personal: dict[str, str] = field(default_factory=dict)

    def secret(self, label: str, value: str | None) -> None:
        assert value, f"the flow must have produced {label}"
        self.secrets[label] = value

    def raw_bytes(self, label: str, value: bytes) -> None:
        self.raw[label] = value
        self.secrets[f"{label} (base64)"] = base64.b64encode(value).decode()
        self.secrets[f"{label} (base64url)"] = base64.urlsafe_b64encode(value).decode().rstrip("=")
        self.secrets[f"{label} (hex)"] = value.hex()

    def private_key(self, label: str, key: Any) -> None:
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.raw_bytes(f"{label} PKCS#8", der)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for i, line in enumerate(pem.decode().splitlines()[1:-1]):
            if len(line) >= 16:
                self.secrets[f"{label} PEM line {i}"] = line
        if isinstance(key, ed25519.Ed25519PrivateKey):
            self.raw_bytes(
                f"{label} raw",
                key.private_bytes(
                    serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
                ),
            )
        elif isinstance(key, rsa.RSAPrivateKey):
            numbers = key.private_numbers()
            for name in ("d", "p", "q", "dmp1", "dmq1", "iqmp"):
                value = getattr(numbers, name)
                self.raw_bytes(f"{label} {name}", value.to_bytes((value.bit_length() + 7) // 8, "big"))

    def person(self, label: str, value: str) -> None:
        self.personal[label] = value
        self.personal[f"{label} (NFD)"] = unicodedata.normalize("NFD", value)
        self.personal[f"{label} (percent-encoded)"] = quote(value)
        as_bytes = repr(value.encode())[2:-1]  # b'\\xe1\\xba…' as a library prints bytes
        self.personal[f"{label} (bytes repr)"] = as_bytes
        self.personal[f"{label} (bytes repr, JSON-escaped)"] = json.dumps(as_bytes)[1:-1]
        escaped = json.dumps(value)[1:-1]
        self.personal[f"{label} (JSON \\u escapes)"] = escaped
        self.personal[f"{label} (JSON \\u escapes, upper hex)"] = re.sub(
            r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), escaped
        )


@pytest.fixture
def output(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    caplog.set_level(logging.DEBUG)
    yield stream
    configure_logging("INFO")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if "json" in response.headers.get("content-type", "") else response


def _demo_private_keys(needles: Needles) -> None:
    passphrase = (DEMO_KEYS / "passphrase.txt").read_bytes().strip()
    needles.secret("keystore passphrase", passphrase.decode())
    for path in sorted(DEMO_KEYS.glob("*.key.pem")):
        key = serialization.load_pem_private_key(path.read_bytes(), passphrase)
        needles.private_key(path.name, key)
    secrets_key = (DEMO_KEYS / "secrets.key").read_text().strip()
    needles.secret("secrets.key", secrets_key)
    needles.raw_bytes("secrets.key", base64.b64decode(secrets_key))


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match
    return match.group(1)


def _run_every_flow(service: Service, needles: Needles) -> None:
    c = service.client
    clock = service.clock
    wire_accounts(service)

    # --- API keys: created over HTTP by an admin client, then used ----------------------------
    admin_key = service.api_key("admin", "audit:read")
    needles.secret("admin API key", admin_key)
    created = _ok(
        c.post(
            "/v1/admin/clients",
            json={
                "name": "portal",
                "scopes": ["sign", "verify", "receipts:issue", "receipts:read", "audit:append", "audit:read"],
            },
            headers=_bearer(admin_key),
        ),
        201,
    )
    api_key = created["api_key"]
    needles.secret("created API key", api_key)
    needles.secret("created API key secret part", api_key.split("_", 2)[2])
    client = _bearer(api_key)
    assert c.get("/v1/audit/entries?start=0", headers=client).status_code == 200
    assert c.get("/v1/audit/entries?start=0", headers=_bearer(api_key + "x")).status_code == 401  # a wrong key

    # --- login, TOTP enrolment, MFA login, recovery code, step-up -----------------------------
    needles.secret("password", PASSWORD)
    needles.secret("mistyped password", TYPO_PASSWORD)
    _ok(
        c.post(
            "/v1/admin/users",
            json={"username": "alice", "password": PASSWORD, "role": "officer", "reason": "new officer"},
            headers=_bearer(admin_key),
        ),
        201,
    )
    first = _ok(c.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD}))
    needles.secret("enrolment session token", first["token"])
    needles.secret("device token", first.get("device_token"))
    enrol = _ok(c.post("/v1/auth/totp/enroll", headers=_bearer(first["token"])))
    secret = secret_from_uri(enrol["otpauth_uri"])
    needles.secret("TOTP secret (base32)", enrol["secret"])
    needles.secret("TOTP secret (base32, lower)", enrol["secret"].lower())
    needles.secret("otpauth URI", enrol["otpauth_uri"])
    needles.raw_bytes("TOTP secret", secret)
    code = rfc6238(secret, step_of(clock))
    needles.codes["enrolment code"] = code
    done = _ok(c.post("/v1/auth/totp/confirm", json={"code": code}, headers=_bearer(first["token"])))
    needles.secret("session token after enrolment", done["token"])
    for i, recovery in enumerate(done["recovery_codes"]):
        needles.secret(f"recovery code {i}", recovery)
        needles.secret(f"recovery code {i} (no dashes)", recovery.replace("-", ""))
    assert c.post("/v1/auth/login", json={"username": "alice", "password": TYPO_PASSWORD}).status_code == 401
    assert c.post("/v1/auth/login", json={"username": PASSWORD, "password": PASSWORD}).status_code == 401
    assert c.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD, "x": 1}).status_code == 422
    clock.advance(30)
    step1 = _ok(c.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD}))
    needles.secret("MFA token", step1["mfa_token"])
    assert c.post("/v1/auth/mfa", json={"mfa_token": step1["mfa_token"], "code": "000001"}).status_code == 401
    code = rfc6238(secret, step_of(clock))
    needles.codes["login code"] = code
    session = _ok(c.post("/v1/auth/mfa", json={"mfa_token": step1["mfa_token"], "code": code}))
    needles.secret("MFA session token", session["token"])
    clock.advance(30)
    code = rfc6238(secret, step_of(clock))
    needles.codes["step-up code"] = code
    stepped = _ok(c.post("/v1/auth/step-up", json={"code": code}, headers=_bearer(session["token"])))
    needles.secret("stepped-up session token", stepped["token"])
    # Personal signing: an activation over a document with personal data, confirmed with a
    # code (the person's own key, generated and stored encrypted).
    service.state.signatures.generate_key(Algorithm.ED25519, actor="user:alice", owner="user:alice")
    document = base64.b64encode(f'{{"ho_ten": "{APPLICANT}"}}'.encode()).decode()
    asked = _ok(
        c.post(
            "/v1/me/signatures", json={"format": "jws", "document_b64": document}, headers=_bearer(stepped["token"])
        ),
        201,
    )
    clock.advance(30)
    code = rfc6238(secret, step_of(clock))
    needles.codes["signature activation code"] = code
    _ok(
        c.post(
            f"/v1/me/signatures/{asked['id']}/activate",
            json={"document_b64": document, "code": code},
            headers=_bearer(stepped["token"]),
        )
    )
    personal_key = service.state.signatures.keystore.active(Algorithm.ED25519, owner="user:alice").private_key
    needles.private_key("alice's personal key", personal_key)
    clock.advance(30)
    step2 = _ok(c.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD}))
    needles.secret("second MFA token", step2["mfa_token"])
    recovered = _ok(
        c.post("/v1/auth/mfa", json={"mfa_token": step2["mfa_token"], "recovery_code": done["recovery_codes"][0]})
    )
    needles.secret("session token after recovery", recovered["token"])
    me = _ok(c.get("/v1/auth/me", headers=_bearer(recovered["token"])))
    assert me["recovery_code_used"] is True
    _ok(c.post("/v1/auth/logout", headers=_bearer(recovered["token"])), 204)

    # --- the same through the web forms (cookies) ---------------------------------------------
    clock.advance(30)
    with TestClient(service.app, base_url="https://testserver", follow_redirects=False) as browser:
        page = browser.get("/login")
        signed = browser.post("/login", data={"csrf": _csrf(page.text), "username": "alice", "password": PASSWORD})
        assert signed.status_code == 303 and signed.headers["location"] == "/mfa"
        needles.secret("web MFA cookie", browser.cookies.get("__Host-bhxh_mfa"))
        challenge = browser.get("/mfa")
        code = rfc6238(secret, step_of(clock))
        needles.codes["web code"] = code
        in_ = browser.post("/mfa", data={"csrf": _csrf(challenge.text), "code": code})
        assert in_.status_code == 303 and in_.headers["location"] == "/account/security"
        needles.secret("web session cookie", browser.cookies.get("__Host-bhxh_session"))
        needles.secret("web CSRF token", browser.cookies.get("__Host-bhxh_csrf"))
        assert browser.get("/account/security").status_code == 200

    # --- signatures: JWS, CMS, XML over personal data -----------------------------------------
    needles.person("applicant", APPLICANT)
    needles.person("applicant ID", APPLICANT_ID)
    needles.person("applicant phone", APPLICANT_PHONE)
    dossier = f'{{"ho_ten": "{APPLICANT}", "so_cccd": "{APPLICANT_ID}"}}'.encode()
    xml = f"<HoSo><HoTen>{APPLICANT}</HoTen><SoCCCD>{APPLICANT_ID}</SoCCCD></HoSo>".encode()
    for fmt, payload, detached in (
        ("jws", dossier, False),
        ("jws", dossier, True),
        ("cms", dossier, True),
        ("xml", xml, False),
    ):
        signed = _ok(
            c.post(
                "/v1/signatures",
                json={
                    "format": fmt,
                    "payload_b64": base64.b64encode(payload).decode(),
                    "detached": detached if fmt == "jws" else False,
                },
                headers=client,
            )
        )
        body: dict[str, Any] = {"format": fmt, "signature": signed["signature"]}
        if fmt == "cms" or detached:
            body["payload_b64"] = base64.b64encode(payload).decode()
        assert _ok(c.post("/v1/signatures/verify", json=body, headers=client))["valid"] is True

    # --- receipts: issue, read, verify --------------------------------------------------------
    receipt = {
        "receiving_unit": {"code": "000.00.31.H29", "name": "Bảo hiểm xã hội Thành phố Hồ Chí Minh"},
        "procedure_code": "1.001234",
        "procedure_name": "Giải quyết hưởng chế độ ốm đau",
        "applicant": {
            "name": APPLICANT,
            "id_number": APPLICANT_ID,
            "phone": APPLICANT_PHONE,
            "address": "12 Nguyễn Huệ, Quận 1",
        },
        "official": {"name": "Đặng Văn Lợi", "title": "Chuyên viên"},
        "appointment_at": (date.today() + timedelta(days=7)).isoformat(),
    }
    issued = _ok(c.post("/v1/receipts", json=receipt, headers=client), 201)
    assert c.get(f"/v1/receipts/{issued['code']}", headers=client).status_code == 200
    pdf = c.get(f"/v1/receipts/{issued['code']}/pdf", headers=client).content
    verdict = _ok(c.post("/v1/receipts/verify", content=pdf, headers={**client, "Content-Type": "application/pdf"}))
    assert verdict["issued_by_system"] is True
    bad = {**receipt, "appointment_at": "not a date"}
    assert c.post("/v1/receipts", json=bad, headers=client).status_code == 422

    # --- exchange: a signed message carrying personal data ------------------------------------
    service.state.exchange.peers.seed_demo(DEMO_KEYS)
    needles.person("exchanged person", EXCHANGED_PERSON)
    needles.person("exchanged person ID", EXCHANGED_PERSON_ID)
    message = f'{{"ho_ten": "{EXCHANGED_PERSON}", "so_cccd": "{EXCHANGED_PERSON_ID}"}}'.encode()
    request = HttpRequest("POST", EXCHANGE_URL, {"Content-Type": "application/json"}, message)
    headers = {
        "Content-Type": "application/json",
        **sign_request(request, demo_signing_key("portal-exchange", "portal"), clock=utc_now).as_dict(),
    }
    payload = {
        "method": "POST",
        "url": EXCHANGE_URL,
        "headers": headers,
        "body_b64": base64.b64encode(message).decode(),
    }
    assert _ok(c.post("/v1/exchange/verify", json=payload, headers=client))["valid"] is True
    tampered = {**payload, "body_b64": base64.b64encode(message.replace(b"038", b"039")).decode()}
    assert _ok(c.post("/v1/exchange/verify", json=tampered, headers=client))["valid"] is False

    # --- audit: an event with personal data, read back, exported with it -----------------------
    needles.person("logged person", LOGGED_PERSON)
    needles.person("logged person ID", LOGGED_PERSON_ID)
    event = {
        "action": "ext.portal.dossier.received",
        "subject": issued["code"],
        "data": {"channel": "portal"},
        "pii": {"ho_ten": LOGGED_PERSON, "so_cccd": LOGGED_PERSON_ID},
    }
    seq = _ok(c.post("/v1/audit/events", json=event, headers=client), 201)["seq"]
    assert _ok(c.get(f"/v1/audit/entries?start={seq}&end={seq + 1}", headers=client))["entries"][0]["pii"]
    export = c.get("/v1/audit/export?include_pii=true", headers=_bearer(admin_key))
    assert export.status_code == 200 and LOGGED_PERSON in export.text  # it is in the answer, not in the logs
    assert c.get("/v1/audit/report?format=json", headers=client).status_code == 200


def _leaks(text: str, needles: Needles) -> list[str]:
    """One line per leak: what leaked, and the output line it is in with every needle masked
    (a failing run must not print the secrets again)."""
    patterns: dict[str, str] = {}
    for label, value in {**needles.secrets, **needles.personal}.items():
        patterns.setdefault(re.escape(value), label)
    for label, code in needles.codes.items():
        patterns.setdefault(CODE_RE.format(code), label)
    found = []
    for pattern, label in patterns.items():
        match = re.search(pattern, text)
        if match is None:
            continue
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.end())
        line = text[start : end if end >= 0 else len(text)]
        for other, other_label in patterns.items():
            line = re.sub(other, lambda _m, name=other_label: f"<{name}>", line)
        found.append(f"{label}: {line[:400]}")
    return found


def _stored_leaks(service: Service, needles: Needles) -> tuple[list[str], int]:
    """Search every text, binary and JSON value of every table for the secrets in clear."""
    meta = MetaData()
    meta.reflect(bind=service.state.engine)
    text_needles = needles.secrets
    byte_needles = {**{k: v.encode() for k, v in text_needles.items()}, **needles.raw}
    found: list[str] = []
    cells = 0
    with service.state.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for col, value in zip(table.columns, row, strict=True):
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        blob = bytes(value)
                        found += [f"{table.name}.{col.name}: {label}" for label, n in byte_needles.items() if n in blob]
                    elif isinstance(value, (str, dict, list)):
                        text = value if isinstance(value, str) else json.dumps(value)
                        found += [f"{table.name}.{col.name}: {label}" for label, n in text_needles.items() if n in text]
                    else:
                        continue
                    cells += 1
    return found, cells


def test_no_secret_or_personal_data_in_any_output_and_no_secret_stored_in_clear(
    service: Service, output: io.StringIO, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    needles = Needles()
    _demo_private_keys(needles)
    _run_every_flow(service, needles)

    captured = capfd.readouterr()
    records = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''} {getattr(r, 'stack_info', '') or ''}"
        for r in caplog.records
    )
    everything = f"{output.getvalue()}\n{records}\n{captured.out}\n{captured.err}"
    # The search must have had something to search: each flow left request lines at DEBUG.
    for route in (
        "/v1/auth/mfa",
        "/v1/auth/step-up",
        "/v1/signatures/verify",
        "/v1/receipts/verify",
        "/v1/exchange/verify",
        "/v1/audit/events",
        "/v1/admin/clients",
        "/mfa",
    ):
        assert f'"{route}"' in output.getvalue(), f"no log line for {route}"
    assert len(needles.secrets) > 100 and len(needles.codes) == 5 and len(needles.personal) >= 20
    leaks = _leaks(everything, needles)
    assert leaks == [], "\n".join(leaks)

    stored, cells = _stored_leaks(service, needles)
    assert cells > 100, "the database search must have read the stored rows"
    assert stored == []
