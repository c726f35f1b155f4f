"""The exchange as deployed: the service speaks plain HTTP behind a TLS terminator.

A real nginx terminates TLS with a server certificate issued here by the demo CA and passes
requests to a real ``bhxh-integrity serve --demo`` process that trusts it
(``BHXH_TRUSTED_PROXIES``); the README's client example, run as written, goes through the
gateway to a stand-in one-stop system and back. And a sender that is not a trusted proxy cannot
move the target URI with forwarding fields: the service, called directly, keeps its configured
or connection origin."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from signing.httpsig import HttpRequest, HttpResponse, sign_request, verify_response
from tests.api.exchange_support import (
    DEMO,
    PASSPHRASE,
    LoopbackServer,
    StandIn,
    demo_cert_pem,
    demo_peer_key,
    demo_signing_key,
    utc_now,
)
from tests.api.operator_support import enrolled_admin
from tests.loopback import free_port
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "bhxh-integrity")
PORTAL_KEY = demo_signing_key("portal-exchange", "portal")
ONE_STOP_KEY = demo_signing_key("one-stop-exchange", "one-stop")
GATEWAY_PEER_KEY = demo_peer_key("gateway-exchange", "gateway")
DOSSIER = {"thu_tuc": "1.000.001", "ho_ten": "Phạm Văn D", "so_dinh_danh": "079300000002"}
READY_SECONDS = 60.0


@pytest.fixture
def one_stop() -> Iterator[tuple[StandIn, LoopbackServer]]:
    stand_in = StandIn("one-stop", ONE_STOP_KEY, GATEWAY_PEER_KEY)
    server = LoopbackServer(stand_in.app())
    yield stand_in, server
    server.stop()


# --- behind nginx ---------------------------------------------------------------------------------


def _server_certificate(directory: Path) -> tuple[Path, Path]:
    """A TLS server certificate for 127.0.0.1 issued by the demo CA; returns (chain, key)."""
    ca_key = serialization.load_pem_private_key((DEMO / "ca.key.pem").read_bytes(), PASSPHRASE)
    ca_cert = x509.load_pem_x509_certificate((DEMO / "ca.crt.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BHXH gateway (test)")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    chain, key_file = directory / "server.crt.pem", directory / "server.key.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, key_file


def _nginx_conf(prefix: Path, port: int, upstream: int, chain: Path, key: Path) -> Path:
    temp = {name: prefix / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host:$server_port;
        }}
    }}
}}
"""
    )
    return conf


def _cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([CLI, *args], check=False, env=env, cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def _wait_for(check: Any, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            if check():
                return
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} was not ready within {READY_SECONDS} s: {log.read_text(errors='replace')}")


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


@dataclass
class Deployed:
    url: str  # the TLS terminator, as the peers address it
    ca: Path


@pytest.fixture
def behind_nginx(tmp_path: Path, one_stop: tuple[StandIn, LoopbackServer]) -> Iterator[Deployed]:
    nginx = require_tool("nginx", "nginx")
    service_port, tls_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BHXH_")}
    env.update(
        BHXH_DATABASE_URL=f"sqlite:///{tmp_path / 'integrity.db'}",
        BHXH_KEYS_DIR=str(DEMO),
        BHXH_TRUSTED_PROXIES='["127.0.0.1"]',
        BHXH_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    _cli(env, "init", "--demo")
    hoa = enrolled_admin(env["BHXH_DATABASE_URL"], "hoa")  # a change of peer needs an administrator's code
    _cli(env, "exchange", "peers", "update", "one-stop", "--base-url", one_stop[1].url, *hoa.args(), "--demo")
    serve_log = tmp_path / "serve.log"
    with serve_log.open("wb") as out:
        service = subprocess.Popen(
            [CLI, "serve", "--demo", "--host", "127.0.0.1", "--port", str(service_port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    chain, key = _server_certificate(tmp_path)
    conf = _nginx_conf(prefix, tls_port, service_port, chain, key)
    nginx_log = prefix / "stderr.log"
    with nginx_log.open("wb") as out:
        proxy = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{service_port}/readyz", timeout=2).status_code == 200,
            service,
            serve_log,
            "serve",
        )
        _wait_for(lambda: _listening(tls_port), proxy, nginx_log, "nginx")
        yield Deployed(f"https://127.0.0.1:{tls_port}", DEMO / "ca.crt.pem")
    finally:
        _stop(proxy)
        _stop(service)


def _readme_client_example() -> str:
    """The Python example of README.md's exchange section, as printed there."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Portal ↔ one-stop exchange") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def _as_deployed(code: str, deployed: Deployed) -> str:
    """The example with this deployment's files, passphrase and address; nothing else changed."""
    replacements = {
        '"portal-exchange.key.pem"': repr(str(DEMO / "portal-exchange.key.pem")),
        '"gateway-exchange.crt.pem"': repr(str(DEMO / "gateway-exchange.crt.pem")),
        'b"…"': repr(PASSPHRASE),
        'cafile="ca.crt.pem"': f"cafile={str(deployed.ca)!r}",
        '"https://gateway.internal/': f'"{deployed.url}/',
    }
    for old, new in replacements.items():
        assert code.count(old) == 1, f"the README example no longer holds {old}"
        code = code.replace(old, new)
    return code


def test_the_readme_client_goes_through_the_gateway_behind_tls_both_ways(
    behind_nginx: Deployed, one_stop: tuple[StandIn, LoopbackServer]
) -> None:
    stand_in, _ = one_stop
    namespace: dict[str, Any] = {"dossier": DOSSIER}
    exec(compile(_as_deployed(_readme_client_example(), behind_nginx), "README.md", "exec"), namespace)
    response: httpx.Response = namespace["r"]
    assert response.status_code == 201, response.text
    # ExchangeAuth checked the gateway's answer, bound to the https:// request it signed.
    assert response.extensions["bhxh_exchange"].keyid == "gateway"
    assert response.json()["by"] == "one-stop" and json.loads(response.json()["echo"]) == DOSSIER
    (got,) = stand_in.received
    assert got["keyid"] == "gateway" and got["path"] == "/v1/dossiers" and json.loads(got["body"]) == DOSSIER


def test_behind_the_terminator_a_senders_own_forwarding_field_changes_nothing(
    behind_nginx: Deployed, one_stop: tuple[StandIn, LoopbackServer]
) -> None:
    """nginx sets X-Forwarded-Host itself, over whatever the sender put there; the sender's own
    Forwarded field, which nginx passes on, disagrees with it and is not believed either."""
    forged = "https://gateway.evil.example/gateway/one-stop/v1/dossiers"
    headers, body = _signed(forged)
    tls = ssl.create_default_context(cafile=str(behind_nginx.ca))
    with httpx.Client(verify=tls, timeout=30) as client:
        response = client.post(
            f"{behind_nginx.url}/gateway/one-stop/v1/dossiers",
            headers={
                **headers,
                "X-Forwarded-Host": "gateway.evil.example",
                "X-Forwarded-Proto": "https",
                "Forwarded": "proto=https;host=gateway.evil.example",
            },
            content=body,
        )
    assert response.status_code == 401 and response.json()["type"].endswith("exchange-unauthenticated")
    assert not one_stop[0].arrived


# --- called directly, from an address that is no trusted proxy ----------------------------------


def _signed(url: str) -> tuple[dict[str, str], bytes]:
    body = json.dumps(DOSSIER).encode()
    request = HttpRequest("POST", url, {"Content-Type": "application/json"}, body)
    return {"Content-Type": "application/json", **sign_request(request, PORTAL_KEY, clock=utc_now).as_dict()}, body


@dataclass
class Direct:
    server: LoopbackServer
    state: Any

    def rejected(self, reason: str) -> list[Any]:
        entries = self.state.audit.entries(0, 10_000)
        return [e for e in entries if e.action == "exchange.rejected" and e.data["reason"] == reason]


@pytest.fixture(params=["configured", "connection"])
def direct(
    request: pytest.FixtureRequest,
    db_url: str,
    one_stop: tuple[StandIn, LoopbackServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Direct]:
    """The service with a trusted proxy that is not this test's address (192.0.2.10), with
    BHXH_PUBLIC_BASE_URL set ("configured") or left to its default ("connection")."""
    from api.app import create_app
    from integrity.app_state import build_state
    from integrity.settings import Settings

    for name in list(os.environ):
        if name.startswith("BHXH_"):
            monkeypatch.delenv(name)
    values: dict[str, Any] = {"database_url": db_url, "keys_dir": DEMO, "demo": True, "trusted_proxies": ["192.0.2.10"]}
    if request.param == "configured":
        values["public_base_url"] = "https://gateway.bhxh.test"
    state = build_state(Settings(**values))
    state.exchange.peers.add(
        "portal", keyid="portal", key_pem=demo_cert_pem("portal-exchange"), routes=["POST /gateway/one-stop/v1/*"]
    )
    state.exchange.peers.add(
        "one-stop", keyid="one-stop", key_pem=demo_cert_pem("one-stop-exchange"), base_url=one_stop[1].url
    )
    state.exchange.peers.add("gateway", keyid="gateway", key_pem=demo_cert_pem("gateway-exchange"))
    server = LoopbackServer(create_app(state=state))
    try:
        yield Direct(server, state)
    finally:
        server.stop()
        state.close()


def test_forwarding_fields_from_an_untrusted_address_change_nothing(
    direct: Direct, one_stop: tuple[StandIn, LoopbackServer]
) -> None:
    own = direct.state.settings.public_base_url if "public_base_url" in direct.state.settings.model_fields_set else None
    origin = own or direct.server.url
    path = "/gateway/one-stop/v1/dossiers"
    forging = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "gateway.evil.example",
        "Forwarded": 'proto=https;host="gateway.evil.example"',
    }
    with httpx.Client(timeout=30) as client:
        # Signed over the forged host: refused as a bad signature, nothing forwarded.
        headers, body = _signed(f"https://gateway.evil.example{path}")
        refused = client.post(direct.server.url + path, headers={**headers, **forging}, content=body)
        assert refused.status_code == 401, refused.text
        assert len(direct.rejected("bad-signature")) == 1 and not one_stop[0].arrived

        # Signed over the configured (or connection) origin: the forged fields are ignored.
        headers, body = _signed(origin + path)
        signed = HttpRequest("POST", origin + path, headers, body)
        accepted = client.post(direct.server.url + path, headers={**headers, **forging}, content=body)
    assert accepted.status_code == 201, accepted.text
    answer = HttpResponse(accepted.status_code, tuple(accepted.headers.multi_items()), accepted.content, signed)
    assert verify_response(answer, GATEWAY_PEER_KEY, clock=utc_now, skew_seconds=300).keyid == "gateway"
    assert len(one_stop[0].received) == 1
