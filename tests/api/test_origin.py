"""``api.origin``: the external origin a request's target URI is checked against, from a trusted
proxy's forwarding fields, BHXH_PUBLIC_BASE_URL, or the connection, and from nobody else."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api.origin import ExternalOrigin
from integrity.settings import Settings

PROXY = "10.0.0.5"
TRUSTED = Settings(trusted_proxies=["10.0.0.0/24", "::1"])


def _scope(headers: dict[str, str] | list[tuple[str, str]], client: str = PROXY) -> dict[str, Any]:
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {
        "type": "http",
        "scheme": "http",
        "server": ("10.0.0.9", 8000),
        "client": (client, 40000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in [("Host", "10.0.0.9:8000"), *pairs]],
        "path": "/gateway/one-stop/v1/dossiers",
        "raw_path": b"/gateway/one-stop/v1/d%C6%A1n",
        "query_string": b"q=1",
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "http://10.0.0.9:8000"),
        ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.bhxh.test"}, "https://gw.bhxh.test"),
        ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.bhxh.test:443"}, "https://gw.bhxh.test"),
        ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.bhxh.test:8443"}, "https://gw.bhxh.test:8443"),
        ({"X-Forwarded-Proto": "HTTPS"}, "https://10.0.0.9:8000"),
        ({"X-Forwarded-Host": "evil.test, gw.bhxh.test", "X-Forwarded-Proto": "https"}, "https://gw.bhxh.test"),
        ({"Forwarded": 'for=192.0.2.7;proto=https;host="gw.bhxh.test:8443"'}, "https://gw.bhxh.test:8443"),
        ({"Forwarded": "For=192.0.2.7;Proto=https;Host=gw.bhxh.test"}, "https://gw.bhxh.test"),
        # Two proxies of ours: the element written by the one facing the sender counts, and an
        # element the sender wrote before it does not.
        (
            {"Forwarded": "host=evil.test;proto=http, for=192.0.2.7;host=gw.bhxh.test;proto=https, for=10.0.0.4"},
            "https://gw.bhxh.test",
        ),
        # The proxy set one family and passed the sender's other family on: they disagree.
        (
            {"Forwarded": "host=evil.test", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.bhxh.test"},
            "http://10.0.0.9:8000",
        ),
        ({"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "gw.bhxh.test"}, "http://10.0.0.9:8000"),
        ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.bhxh.test/evil"}, "http://10.0.0.9:8000"),
        ({"Forwarded": 'host="unterminated'}, "http://10.0.0.9:8000"),
    ],
    ids=[
        "none",
        "x-forwarded",
        "default-port-dropped",
        "other-port-kept",
        "proto-only",
        "list-last-value",
        "forwarded-quoted",
        "forwarded-case",
        "forwarded-chain",
        "families-disagree",
        "bad-proto",
        "bad-host",
        "malformed-forwarded",
    ],
)
def test_a_trusted_proxy_states_the_origin(headers: dict[str, str], expected: str) -> None:
    origin = ExternalOrigin.from_settings(TRUSTED)
    assert origin.target_uri(_scope(headers)) == expected + "/gateway/one-stop/v1/d%C6%A1n?q=1"


@pytest.mark.parametrize("client", ["192.0.2.7", "10.0.1.5", "testclient"])
def test_forwarding_fields_from_anyone_else_are_ignored(client: str) -> None:
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.test", "Forwarded": "proto=https;host=evil.test"}
    assert ExternalOrigin.from_settings(TRUSTED).origin(_scope(forged, client)) == "http://10.0.0.9:8000"
    configured = Settings(public_base_url="https://gw.bhxh.test:443/cong", trusted_proxies=["10.0.0.0/24"])
    assert ExternalOrigin.from_settings(configured).origin(_scope(forged, client)) == "https://gw.bhxh.test"


def test_the_public_base_url_applies_only_when_set() -> None:
    default = ExternalOrigin.from_settings(Settings())
    assert default.origin(_scope({})) == "http://10.0.0.9:8000"  # not the default http://127.0.0.1:8000
    configured = ExternalOrigin.from_settings(Settings(public_base_url="https://gw.bhxh.test/cong/"))
    # The target URI keeps the service's own path; links keep the base URL's path, as QR codes do.
    assert configured.target_uri(_scope({})) == "https://gw.bhxh.test/gateway/one-stop/v1/d%C6%A1n?q=1"
    assert configured.url(_scope({}), "/v1/receipts/X/pdf") == "https://gw.bhxh.test/cong/v1/receipts/X/pdf"


def test_an_ipv6_proxy_is_matched() -> None:
    scope = _scope({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "[2001:db8::1]:8443"}, client="::1")
    assert ExternalOrigin.from_settings(TRUSTED).origin(scope) == "https://[2001:db8::1]:8443"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, PROXY),
        ({"X-Forwarded-For": "198.51.100.7"}, "198.51.100.7"),
        # The sender's own entries come first; the proxy appends the address it saw.
        ({"X-Forwarded-For": "203.0.113.66, 198.51.100.7"}, "198.51.100.7"),
        # A second proxy of ours in front: the hop it received the request from counts.
        ({"X-Forwarded-For": "203.0.113.66, 198.51.100.7, 10.0.0.4"}, "198.51.100.7"),
        ({"Forwarded": "for=198.51.100.8"}, "198.51.100.8"),
        ({"Forwarded": 'for="[2001:DB8::7]:4711"'}, "2001:db8::7"),
        ({"Forwarded": "for=203.0.113.66, for=198.51.100.8;proto=https, for=10.0.0.4"}, "198.51.100.8"),
        ({"Forwarded": "for=198.51.100.8", "X-Forwarded-For": "198.51.100.8"}, "198.51.100.8"),
        # The two families disagree, or state no address: neither is believed.
        ({"Forwarded": "for=198.51.100.8", "X-Forwarded-For": "198.51.100.7"}, PROXY),
        ({"Forwarded": "for=unknown"}, PROXY),
        ({"Forwarded": "for=_hidden"}, PROXY),
        ({"X-Forwarded-For": "not-an-address"}, PROXY),
        ({"Forwarded": 'for="unterminated'}, PROXY),
    ],
    ids=[
        "none",
        "x-forwarded-for",
        "sender-entries-skipped",
        "two-proxies",
        "forwarded",
        "forwarded-ipv6",
        "forwarded-chain",
        "families-agree",
        "families-disagree",
        "unknown",
        "obfuscated",
        "not-an-address",
        "malformed-forwarded",
    ],
)
def test_a_trusted_proxy_states_the_senders_address(headers: dict[str, str], expected: str) -> None:
    assert ExternalOrigin.from_settings(TRUSTED).client_address(_scope(headers)) == expected


@pytest.mark.parametrize("client", ["192.0.2.7", "10.0.1.5", "testclient"])
def test_a_forged_sender_address_from_anyone_else_changes_nothing(client: str) -> None:
    forged = {"X-Forwarded-For": "198.51.100.7", "Forwarded": "for=198.51.100.7"}
    assert ExternalOrigin.from_settings(TRUSTED).client_address(_scope(forged, client)) == client


@pytest.mark.parametrize(
    "values",
    [{"trusted_proxies": ["not-an-address"]}, {"trusted_proxies": ["10.0.0.1/8"]}, {"public_base_url": "ftp://x"}],
    ids=["not-an-address", "host-bits-set", "not-http"],
)
def test_bad_origin_settings_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)
