"""RFC 9421 Appendix B (and §2.4) test vectors through ``signing.httpsig``.

The vector file holds the RFC's published keys, messages and signatures. Each signature
the profile's algorithms support must verify with the algorithm bound to the key; one changed
byte of a covered component must make it fail; and the HMAC vector is refused because the
profile accepts no shared secrets."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from http_message_signatures import HTTPMessageSigner, algorithms

from signing.errors import MessageKeyMismatch, MessageSignatureInvalid, UnsupportedExchangeKey
from signing.httpsig import ExchangeAlgorithm, HttpRequest, HttpResponse, PeerKey, verify_signature

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "rfc9421_appendix_b.json").read_text())
SUPPORTED = [s for s in VECTORS["signatures"] if "public_pem" in VECTORS["keys"][s["keyid"]]]


def _request(name: str) -> HttpRequest:
    m = VECTORS["messages"][name]
    return HttpRequest(m["method"], m["url"], [tuple(h) for h in m["headers"]], m["body"].encode())


def _message(name: str, extra: list[tuple[str, str]] = ()) -> HttpRequest | HttpResponse:  # type: ignore[assignment]
    m = VECTORS["messages"][name]
    headers = [tuple(h) for h in m["headers"]] + list(extra)
    if "status" in m:
        return HttpResponse(m["status"], headers, m["body"].encode(), _request(m["request"]))
    return HttpRequest(m["method"], m["url"], headers, m["body"].encode())


def _signed(vector: dict[str, Any]) -> HttpRequest | HttpResponse:
    return _message(
        vector["message"], [("Signature-Input", vector["signature_input"]), ("Signature", vector["signature"])]
    )


def _key(keyid: str) -> PeerKey:
    return PeerKey.from_pem(keyid, VECTORS["keys"][keyid]["public_pem"].encode())


def test_every_supported_vector_is_exercised() -> None:
    assert {s["section"] for s in SUPPORTED} == {"B.2.1", "B.2.2", "B.2.3", "B.2.4", "B.2.6", "B.3", "2.4"}


@pytest.mark.parametrize("vector", SUPPORTED, ids=[s["section"] for s in SUPPORTED])
def test_published_signature_verifies_with_the_algorithm_bound_to_the_key(vector: dict[str, Any]) -> None:
    key = _key(vector["keyid"])
    assert key.algorithm.value == VECTORS["keys"][vector["keyid"]]["algorithm"]
    verified = verify_signature(_signed(vector), key)
    assert verified.keyid == vector["keyid"]
    assert verified.label == vector["label"]
    assert verified.algorithm is key.algorithm


@pytest.mark.parametrize("vector", SUPPORTED, ids=[s["section"] for s in SUPPORTED])
def test_one_flipped_signature_bit_fails(vector: dict[str, Any]) -> None:
    label, _, value = vector["signature"].partition("=")
    raw = bytearray(base64.b64decode(value.strip(":")))
    raw[len(raw) // 2] ^= 0x01
    tampered = dict(vector, signature=f"{label}=:{base64.b64encode(bytes(raw)).decode()}:")
    with pytest.raises(MessageSignatureInvalid):
        verify_signature(_signed(tampered), _key(vector["keyid"]))


def _covers(vector: dict[str, Any], component: str) -> bool:
    return f'"{component}"' in vector["signature_input"]


@pytest.mark.parametrize("vector", [s for s in SUPPORTED if _covers(s, "@authority")], ids=lambda s: s["section"])
def test_changed_authority_fails(vector: dict[str, Any]) -> None:
    message = _signed(vector)
    if isinstance(message, HttpResponse):
        moved = HttpRequest(
            message.request.method,
            message.request.url.replace("example.com", "example.org"),
            message.request.headers,
            message.request.body,
        )
        message = HttpResponse(message.status, message.headers, message.body, moved)
    else:
        message = HttpRequest(message.method, message.url.replace("example", "exampIe"), message.headers, message.body)
    with pytest.raises(MessageSignatureInvalid):
        verify_signature(message, _key(vector["keyid"]))


@pytest.mark.parametrize("vector", [s for s in SUPPORTED if _covers(s, "content-type")], ids=lambda s: s["section"])
def test_changed_covered_header_fails(vector: dict[str, Any]) -> None:
    message = _signed(vector).with_headers({"Content-Type": "application/xml"})
    with pytest.raises(MessageSignatureInvalid):
        verify_signature(message, _key(vector["keyid"]))


def test_b26_signature_is_reproduced_byte_for_byte_from_the_rfc_key() -> None:
    vector = next(s for s in SUPPORTED if s["section"] == "B.2.6")
    private = serialization.load_pem_private_key(VECTORS["keys"]["test-key-ed25519"]["private_pem"].encode(), None)
    assert (
        PeerKey.from_public_key("test-key-ed25519", private.public_key()).public_pem()
        == _key("test-key-ed25519").public_pem()
    )

    class _Resolver:
        def resolve_private_key(self, key_id: str) -> object:
            return private

    # The library's own signer over the vector's message: proves the file's key, message and
    # signature agree byte for byte (Ed25519 is deterministic), so the file has no typo.
    m = VECTORS["messages"]["test-request"]
    wire = SimpleNamespace(method=m["method"], url=m["url"], headers=dict(m["headers"]))
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Resolver()).sign(  # type: ignore[arg-type]
        wire,
        key_id="test-key-ed25519",
        created=datetime.fromtimestamp(1618884473, UTC),
        label="sig-b26",
        include_alg=False,
        covered_component_ids=("date", "@method", "@path", "@authority", "content-type", "content-length"),
        use_existing_digest=True,
    )
    assert wire.headers["Signature"] == vector["signature"]
    assert wire.headers["Signature-Input"] == vector["signature_input"]


def test_rsa_vector_checked_with_the_ed25519_key_is_a_key_mismatch() -> None:
    vector = next(s for s in SUPPORTED if s["section"] == "B.2.1")
    with pytest.raises(MessageKeyMismatch):
        verify_signature(_signed(vector), _key("test-key-ed25519"))


def test_rsa_vector_under_a_foreign_key_with_the_same_keyid_fails() -> None:
    vector = next(s for s in SUPPORTED if s["section"] == "B.2.3")
    impostor = PeerKey.from_pem("test-key-rsa-pss", VECTORS["keys"]["test-key-ed25519"]["public_pem"].encode())
    assert impostor.algorithm is ExchangeAlgorithm.ED25519
    with pytest.raises(MessageSignatureInvalid):
        verify_signature(_signed(vector), impostor)


def test_alg_parameter_naming_another_algorithm_is_refused() -> None:
    vector = next(s for s in SUPPORTED if s["section"] == "B.2.6")
    confused = dict(vector, signature_input=vector["signature_input"] + ';alg="hmac-sha256"')
    with pytest.raises(MessageSignatureInvalid):
        verify_signature(_signed(confused), _key("test-key-ed25519"))


def test_hmac_shared_secret_of_b25_is_not_an_exchange_key() -> None:
    secret = base64.b64decode(VECTORS["keys"]["test-shared-secret"]["secret_b64"])
    with pytest.raises(UnsupportedExchangeKey):
        PeerKey.from_public_key("test-shared-secret", secret)
