"""Every 401 of the real app names how to authenticate (RFC 9110 §15.5.2: a WWW-Authenticate
field with at least one challenge, §11.6.1).

The sweep takes its operations from the app's own OpenAPI description: each operation that
declares a 401 is called without credentials or, when it needs none to be called (a login, a
second factor), with wrong ones. The exchange gateway, refusing an unsigned message, also says
which signature it takes (RFC 9421 §5.1 ``Accept-Signature``)."""

from __future__ import annotations

import re
from typing import Any

import http_sf
import httpx
import pytest

from signing.httpsig import PROFILE_TAG, SIGNATURE_LABEL, HttpRequest, sign_request
from tests.api.exchange_support import demo_cert_pem, demo_signing_key, utc_now
from tests.conftest import Service

# auth-scheme and the realm auth-param (RFC 9110 §11.2, §11.5).
CHALLENGE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9!#$%&\'*+.^_`|~-]*)(?: +(?P<params>.*))?$")

# The operations that take credentials in the body: each with wrong ones, and the scheme its 401 names.
WRONG_CREDENTIALS: dict[tuple[str, str], tuple[dict[str, Any], str]] = {
    ("POST", "/v1/auth/login"): ({"username": "nobody", "password": "not the password"}, "Session"),
    ("POST", "/v1/auth/mfa"): ({"mfa_token": "not-an-mfa-token", "code": "000000"}, "Session"),
    ("POST", "/v1/auth/mfa/passkey/options"): ({"mfa_token": "not-an-mfa-token"}, "Session"),
    ("POST", "/v1/auth/mfa/passkey"): ({"mfa_token": "not-an-mfa-token", "credential": {}}, "Session"),
}
GATEWAY = "/gateway/{peer}/{path}"


def _challenge(response: httpx.Response) -> tuple[str, str]:
    """The scheme and parameters of the (single) challenge; fails when there is none."""
    assert response.status_code == 401, response.text
    field = response.headers.get("www-authenticate")
    assert field, f"401 without WWW-Authenticate: {response.request.method} {response.request.url.path}"
    match = CHALLENGE.fullmatch(field)
    assert match, field
    return match["scheme"], match["params"] or ""


def _operations(service: Service) -> list[tuple[str, str, bool]]:
    """(method, path, needs credentials) of every operation that declares a 401."""
    spec = service.client.get("/openapi.json").json()
    return [
        (method.upper(), path, bool(operation.get("security")))
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if "401" in operation.get("responses", {})
    ]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_operation_that_answers_401_sends_a_challenge(service: Service) -> None:
    operations = _operations(service)
    public = {(m, p) for m, p, secured in operations if not secured and p != GATEWAY}
    # A new operation taking credentials in its body needs its wrong-credentials case here.
    assert public == set(WRONG_CREDENTIALS), public ^ set(WRONG_CREDENTIALS)
    swept = 0
    for method, path, secured in operations:
        if path == GATEWAY:
            continue  # below: it takes signed messages, not credentials
        if secured:
            response = service.client.request(method, _concrete(path))
            expected = "Bearer"
        else:
            body, expected = WRONG_CREDENTIALS[(method, path)]
            response = service.client.request(method, path, json=body)
        scheme, params = _challenge(response)
        assert scheme == expected and 'realm="bhxh-integrity"' in params, (method, path, scheme, params)
        assert response.headers["content-type"].startswith("application/problem+json")
        swept += 1
    assert swept >= len(WRONG_CREDENTIALS) + 10  # the sweep did reach the scoped routes


def test_a_wrong_api_key_is_challenged_like_a_missing_one(service: Service) -> None:
    forged = {"Authorization": "Bearer bhxh_0123456789abcdef_" + "A" * 43}
    scheme, params = _challenge(service.client.get("/v1/admin/clients", headers=forged))
    assert (scheme, params) == ("Bearer", 'realm="bhxh-integrity"')


@pytest.mark.parametrize("with_body", [True, False], ids=["post", "get"])
def test_the_gateway_challenges_an_unsigned_message_and_names_the_signature_it_takes(
    service: Service, with_body: bool
) -> None:
    exchange = service.state.exchange
    exchange.peers.add(
        "portal", keyid="portal", key_pem=demo_cert_pem("portal-exchange"), routes=["* /gateway/one-stop/**"]
    )
    exchange.peers.add("one-stop", keyid="one-stop", key_pem=demo_cert_pem("one-stop-exchange"), routes=[])
    target = "/gateway/one-stop/v1/dossiers"
    if with_body:
        response = service.client.post(target, json={"ma_ho_so": "000.00.31.H29-251123-0001"})
    else:
        response = service.client.get(target)
    assert any((m, p) == ("POST", GATEWAY) for m, p, _ in _operations(service))
    scheme, params = _challenge(response)
    assert (scheme, params) == ("Signature", 'realm="bhxh-exchange"')
    assert response.json()["type"].endswith(":exchange-unauthenticated")
    requested = http_sf.parse(response.headers["accept-signature"].encode(), tltype="dictionary")
    components, parameters = requested[SIGNATURE_LABEL]
    covered = [name for name, _ in components]
    # content-type is asked for exactly when the message has one (docs/exchange-profile.md).
    body_fields = ["content-type"] if with_body else []
    assert covered == ["@method", "@target-uri", *body_fields, "content-digest"]
    assert parameters == {"created": True, "expires": True, "tag": PROFILE_TAG}


def test_a_peer_refused_its_route_gets_403_without_a_challenge(service: Service) -> None:
    exchange = service.state.exchange
    exchange.peers.add("portal", keyid="portal", key_pem=demo_cert_pem("portal-exchange"), routes=[])
    exchange.peers.add("one-stop", keyid="one-stop", key_pem=demo_cert_pem("one-stop-exchange"), routes=[])
    url = "http://testserver/gateway/one-stop/v1/dossiers"
    request = HttpRequest("POST", url, (("Content-Type", "application/json"),), b"{}")
    signed = sign_request(request, demo_signing_key("portal-exchange", "portal"), clock=utc_now).as_dict()
    response = service.client.post(url, headers={"Content-Type": "application/json", **signed}, content=b"{}")
    assert response.status_code == 403, response.text
    assert "www-authenticate" not in response.headers and "accept-signature" not in response.headers
