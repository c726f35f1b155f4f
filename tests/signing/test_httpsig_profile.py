"""The BHXH exchange profile over RFC 9421: what a signer emits and every way the verifier
refuses a message (one exception class per reason)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import http_sf
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from http_message_signatures import HTTPMessageSigner, algorithms

from signing.errors import (
    ContentDigestMismatch,
    MalformedMessageSignature,
    MessageCreatedOutOfWindow,
    MessageKeyMismatch,
    MessageProfileViolation,
    MessageSignatureExpired,
    MessageSignatureInvalid,
    MessageUnsigned,
    UnsupportedExchangeKey,
)
from signing.httpsig import (
    MAX_LIFETIME_SECONDS,
    PROFILE_TAG,
    ExchangeAlgorithm,
    ExchangeSigningKey,
    HttpRequest,
    HttpResponse,
    PeerKey,
    body_digest,
    read_signature_params,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)

DEMO = Path(__file__).resolve().parents[2] / "keys.example"
SKEW = 300
URL = "http://gateway.bhxh.test:8000/gateway/one-stop/v1/dossiers?unit=000.00.31.H29"
BODY = '{"ho_so": "Đăng ký tham gia BHXH tự nguyện"}'.encode()


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 11, 23, 9, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture(scope="module")
def ed_key() -> ExchangeSigningKey:
    return ExchangeSigningKey.from_private_key("portal", ed25519.Ed25519PrivateKey.generate())


def _request(body: bytes = BODY, **headers: str) -> HttpRequest:
    fields = {"Content-Type": "application/json", "Accept": "application/json"}
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    return HttpRequest("POST", URL, fields, body)


def _signed(key: ExchangeSigningKey, clock: _Clock, request: HttpRequest | None = None, **kw: Any) -> HttpRequest:
    request = request or _request()
    return request.with_headers(sign_request(request, key, clock=clock, **kw).as_dict())


def _params(message: HttpRequest | HttpResponse) -> dict[str, Any]:
    return http_sf.parse(message.header("Signature-Input").encode(), tltype="dictionary")["bhxh"][1]


# --- what the signer emits ------------------------------------------------------------------


def test_signed_request_verifies_and_reports_its_covered_parameters(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    verified = verify_request(_signed(ed_key, clock), ed_key.peer_key(), clock=clock, skew_seconds=SKEW)
    assert verified.keyid == "portal"
    assert verified.algorithm is ExchangeAlgorithm.ED25519
    assert verified.tag == PROFILE_TAG
    assert verified.created == clock.now
    assert verified.expires == clock.now + timedelta(seconds=MAX_LIFETIME_SECONDS)
    assert verified.content_digest == body_digest(BODY)
    assert verified.components == ('"@method"', '"@target-uri"', '"content-type"', '"content-digest"')


def test_signature_input_carries_the_profile_parameters_and_no_alg(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    params = _params(_signed(ed_key, clock))
    assert set(params) == {"created", "expires", "nonce", "keyid", "tag"}
    assert params["expires"] - params["created"] == MAX_LIFETIME_SECONDS
    assert params["tag"] == PROFILE_TAG


def test_each_signature_gets_a_fresh_nonce_of_at_least_128_bits(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    nonces = {_params(_signed(ed_key, clock))["nonce"] for _ in range(20)}
    assert len(nonces) == 20
    for nonce in nonces:
        assert len(base64.urlsafe_b64decode(nonce + "==")) * 8 >= 128


def test_content_digest_is_rfc9530_sha256_of_the_body(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    signed = _signed(ed_key, clock)
    assert signed.header("Content-Digest") == body_digest(BODY)
    assert signed.header("Content-Digest").startswith("sha-256=:")


def test_resigning_replaces_an_earlier_signature_and_digest(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    other = ExchangeSigningKey.from_private_key("gateway", ed25519.Ed25519PrivateKey.generate())
    twice = _signed(other, clock, _signed(ed_key, clock))
    assert read_signature_params(twice).keyid == "gateway"
    verify_request(twice, other.peer_key(), clock=clock, skew_seconds=SKEW)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(65537, 2048),
    ],
    ids=["ecdsa-p256", "ecdsa-p384", "rsa-pss-2048"],
)
def test_every_allowed_key_type_round_trips(make: Any, clock: _Clock) -> None:
    key = ExchangeSigningKey.from_private_key("one-stop", make())
    verify_request(_signed(key, clock), key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_bodiless_get_without_content_type_round_trips(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    get = HttpRequest("GET", URL, {"Accept": "application/json"})
    signed = get.with_headers(sign_request(get, ed_key, clock=clock).as_dict())
    verified = verify_request(signed, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)
    assert '"content-type"' not in verified.components
    assert verified.content_digest == body_digest(b"")


def test_demo_exchange_certificate_and_key_make_a_working_pair(clock: _Clock) -> None:
    passphrase = (DEMO / "passphrase.txt").read_bytes().strip()
    private = serialization.load_pem_private_key((DEMO / "portal-exchange.key.pem").read_bytes(), passphrase)
    signer = ExchangeSigningKey.from_private_key("portal", private)
    peer = PeerKey.from_pem("portal", (DEMO / "portal-exchange.crt.pem").read_bytes())
    assert peer.certificate is not None and peer.algorithm is ExchangeAlgorithm.ED25519
    verify_request(_signed(signer, clock), peer, clock=clock, skew_seconds=SKEW)


# --- refusals: tampering ----------------------------------------------------------------------


def test_tampered_body_is_a_digest_mismatch(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    signed = _signed(ed_key, clock)
    tampered = HttpRequest(signed.method, signed.url, signed.headers, BODY.replace("tự nguyện".encode(), b"bat buoc"))
    with pytest.raises(ContentDigestMismatch):
        verify_request(tampered, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_tampered_body_with_a_recomputed_digest_breaks_the_signature(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    signed = _signed(ed_key, clock)
    body = b'{"ho_so": "forged"}'
    forged = HttpRequest(signed.method, signed.url, signed.headers, body).with_headers(
        {"Content-Digest": body_digest(body)}
    )
    with pytest.raises(MessageSignatureInvalid):
        verify_request(forged, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.with_headers({"Content-Type": "text/plain"}),
        lambda r: HttpRequest("PUT", r.url, r.headers, r.body),
        lambda r: HttpRequest(r.method, r.url.replace("one-stop", "portal"), r.headers, r.body),
        lambda r: HttpRequest(r.method, r.url.replace("H29", "H30"), r.headers, r.body),
        lambda r: HttpRequest(r.method, r.url.replace("gateway.bhxh.test", "evil.test"), r.headers, r.body),
    ],
    ids=["content-type", "method", "path", "query", "authority"],
)
def test_changed_covered_component_breaks_the_signature(change: Any, ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    with pytest.raises(MessageSignatureInvalid):
        verify_request(change(_signed(ed_key, clock)), ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_changed_uncovered_header_does_not_matter(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    changed = _signed(ed_key, clock).with_headers({"Accept": "text/html", "Via": "1.1 proxy"})
    verify_request(changed, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_content_type_added_after_signing_a_get_is_a_profile_violation(
    ed_key: ExchangeSigningKey, clock: _Clock
) -> None:
    get = HttpRequest("GET", URL, {})
    signed = get.with_headers(sign_request(get, ed_key, clock=clock).as_dict()).with_headers(
        {"Content-Type": "text/csv"}
    )
    with pytest.raises(MessageProfileViolation, match="content-type"):
        verify_request(signed, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_signature_of_another_key_with_the_same_keyid_is_invalid(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    impostor = ExchangeSigningKey.from_private_key("portal", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(MessageSignatureInvalid):
        verify_request(_signed(impostor, clock), ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_keyid_of_another_peer_is_a_key_mismatch(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    other = ExchangeSigningKey.from_private_key("one-stop", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(MessageKeyMismatch):
        verify_request(_signed(ed_key, clock), other.peer_key(), clock=clock, skew_seconds=SKEW)


# --- refusals: time ---------------------------------------------------------------------------


def test_created_older_than_the_skew_is_out_of_window(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    signed = _signed(ed_key, clock)
    clock.advance(SKEW + 1)
    with pytest.raises(MessageCreatedOutOfWindow):
        verify_request(signed, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_created_further_ahead_than_the_skew_is_out_of_window(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    signed = _signed(ed_key, clock)
    clock.advance(-(SKEW + 1))
    with pytest.raises(MessageCreatedOutOfWindow):
        verify_request(signed, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_created_within_the_skew_is_accepted(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    signed = _signed(ed_key, clock)
    clock.advance(-(SKEW - 1))
    verify_request(signed, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_expired_signature_is_refused(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    signed = _signed(ed_key, clock, lifetime_seconds=30)
    clock.advance(31)
    with pytest.raises(MessageSignatureExpired):
        verify_request(signed, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_signer_refuses_a_lifetime_over_the_profile_limit(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    with pytest.raises(MessageProfileViolation):
        sign_request(_request(), ed_key, clock=clock, lifetime_seconds=MAX_LIFETIME_SECONDS + 1)


# --- refusals: profile and format (messages crafted with the bare library) -----------------------


def _craft(key: ExchangeSigningKey, clock: _Clock, request: HttpRequest | None = None, **options: Any) -> HttpRequest:
    request = request or _request()
    wire = SimpleNamespace(method=request.method, url=request.url, headers=dict(request.headers))
    sign_options: dict[str, Any] = {
        "key_id": key.keyid,
        "created": clock.now,
        "expires": clock.now + timedelta(seconds=60),
        "nonce": "n" * 22,
        "label": "bhxh",
        "tag": PROFILE_TAG,
        "include_alg": False,
        "covered_component_ids": ("@method", "@target-uri", "content-type", "content-digest"),
        "body": request.body,
    }
    sign_options.update(options)

    class _Resolver:
        def resolve_private_key(self, key_id: str) -> object:
            return key.private_key

    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Resolver()).sign(wire, **sign_options)  # type: ignore[arg-type]
    return HttpRequest(request.method, request.url, wire.headers, request.body)


def test_crafted_message_following_the_profile_is_accepted(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    verify_request(_craft(ed_key, clock), ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"covered_component_ids": ("@method", "content-type", "content-digest")}, "@target-uri"),
        ({"covered_component_ids": ("@method", "@target-uri", "content-type"), "body": None}, "content-digest"),
        ({"covered_component_ids": ("@target-uri", "content-type", "content-digest")}, "@method"),
        ({"nonce": None}, "nonce"),
        ({"nonce": "short-nonce"}, "nonce"),
        ({"nonce": "n" * 21 + "!"}, "nonce"),
        ({"expires": None}, "expires"),
        ({"expires": datetime(2025, 11, 23, 9, 35, 1, tzinfo=UTC)}, "expires"),
    ],
    ids=["no-target-uri", "no-digest", "no-method", "no-nonce", "short-nonce", "bad-nonce", "no-expires", "too-long"],
)
def test_message_off_the_profile_is_refused(
    options: dict[str, Any], match: str, ed_key: ExchangeSigningKey, clock: _Clock
) -> None:
    with pytest.raises(MessageProfileViolation, match=match):
        verify_request(_craft(ed_key, clock, **options), ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_signature_without_the_profile_tag_counts_as_unsigned(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    with pytest.raises(MessageUnsigned):
        verify_request(_craft(ed_key, clock, tag="other-app"), ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_alg_naming_the_keys_own_algorithm_is_tolerated(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    verify_request(_craft(ed_key, clock, include_alg=True), ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_sha512_only_content_digest_is_a_profile_violation(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    digest = f"sha-512=:{base64.b64encode(hashlib.sha512(BODY).digest()).decode()}:"
    crafted = _craft(ed_key, clock, _request(Content_Digest=digest), body=None, use_existing_digest=True)
    with pytest.raises(MessageProfileViolation, match="sha-256"):
        verify_request(crafted, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_unsigned_message_is_refused_as_unsigned(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    with pytest.raises(MessageUnsigned):
        verify_request(_request(), ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


@pytest.mark.parametrize(
    "fields",
    [
        {"Signature-Input": "bhxh=(", "Signature": "bhxh=:AAAA:"},
        {"Signature-Input": 'bhxh=("@method");keyid="portal"'},
        {"Signature-Input": 'bhxh=("@method");tag="bhxh-exchange-v1"', "Signature": "other=:AAAA:"},
        {"Signature-Input": 'bhxh="not-a-list";tag="bhxh-exchange-v1"', "Signature": "bhxh=:AAAA:"},
    ],
    ids=["unparsable", "no-signature-field", "label-mismatch", "not-inner-list"],
)
def test_malformed_signature_fields_are_refused(
    fields: dict[str, str], ed_key: ExchangeSigningKey, clock: _Clock
) -> None:
    with pytest.raises(MalformedMessageSignature):
        verify_request(_request().with_headers(fields), ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


def test_two_signatures_claiming_the_profile_are_refused(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    signed = _signed(ed_key, clock)
    doubled = signed.with_headers(
        {
            "Signature-Input": signed.header("Signature-Input")
            + ", "
            + signed.header("Signature-Input").replace("bhxh=", "dup=", 1),
            "Signature": signed.header("Signature") + ", " + signed.header("Signature").replace("bhxh=", "dup=", 1),
        }
    )
    with pytest.raises(MessageProfileViolation, match="more than one"):
        verify_request(doubled, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


# --- responses ---------------------------------------------------------------------------------


def _response(
    request: HttpRequest, status: int = 201, body: bytes = b'{"ma_ho_so": "000.00.31.H29-251123-0001"}'
) -> HttpResponse:
    return HttpResponse(status, {"Content-Type": "application/json"}, body, request)


def _signed_response(key: ExchangeSigningKey, clock: _Clock, response: HttpResponse) -> HttpResponse:
    return response.with_headers(sign_response(response, key, clock=clock).as_dict())


def test_signed_response_verifies_and_covers_the_request(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    one_stop = ExchangeSigningKey.from_private_key("one-stop", ed25519.Ed25519PrivateKey.generate())
    response = _signed_response(one_stop, clock, _response(_request()))
    verified = verify_response(response, one_stop.peer_key(), clock=clock, skew_seconds=SKEW)
    assert set(verified.components) >= {'"@status"', '"@method";req', '"@target-uri";req', '"content-digest"'}


@pytest.mark.parametrize(
    "change",
    [
        lambda r: HttpResponse(200, r.headers, r.body, r.request),
        lambda r: HttpResponse(
            r.status, r.headers, r.body, HttpRequest("POST", URL.replace("dossiers", "receipts"), (), b"")
        ),
        lambda r: HttpResponse(r.status, r.headers, r.body, HttpRequest("DELETE", URL, (), b"")),
        lambda r: r.with_headers({"Content-Type": "text/html"}),
    ],
    ids=["status", "answers-another-target", "answers-another-method", "content-type"],
)
def test_response_changed_or_replayed_to_another_request_fails(change: Any, clock: _Clock) -> None:
    one_stop = ExchangeSigningKey.from_private_key("one-stop", ed25519.Ed25519PrivateKey.generate())
    response = _signed_response(one_stop, clock, _response(_request()))
    with pytest.raises(MessageSignatureInvalid):
        verify_response(change(response), one_stop.peer_key(), clock=clock, skew_seconds=SKEW)


def test_tampered_response_body_is_a_digest_mismatch(clock: _Clock) -> None:
    one_stop = ExchangeSigningKey.from_private_key("one-stop", ed25519.Ed25519PrivateKey.generate())
    r = _signed_response(one_stop, clock, _response(_request()))
    with pytest.raises(ContentDigestMismatch):
        verify_response(
            HttpResponse(r.status, r.headers, b'{"ma_ho_so": "forged"}', r.request),
            one_stop.peer_key(),
            clock=clock,
            skew_seconds=SKEW,
        )


def test_request_signature_does_not_pass_as_a_response_signature(ed_key: ExchangeSigningKey, clock: _Clock) -> None:
    signed = _signed(ed_key, clock)
    response = HttpResponse(200, signed.headers, signed.body, signed)
    with pytest.raises(MessageProfileViolation):
        verify_response(response, ed_key.peer_key(), clock=clock, skew_seconds=SKEW)


# --- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: rsa.generate_private_key(65537, 1024),
        lambda: ec.generate_private_key(ec.SECP521R1()),
        ed448.Ed448PrivateKey.generate,
    ],
    ids=["rsa-1024", "p-521", "ed448"],
)
def test_key_outside_the_profile_is_refused(make: Any) -> None:
    private = make()
    with pytest.raises(UnsupportedExchangeKey):
        PeerKey.from_public_key("peer", private.public_key())
    with pytest.raises(UnsupportedExchangeKey):
        ExchangeSigningKey.from_private_key("peer", private)


@pytest.mark.parametrize("keyid", ["", "x" * 129, "bad\nid", "khóa"])
def test_unusable_keyid_is_refused(keyid: str) -> None:
    with pytest.raises(UnsupportedExchangeKey):
        PeerKey.from_public_key(keyid, ed25519.Ed25519PrivateKey.generate().public_key())


def test_garbage_pem_is_refused() -> None:
    with pytest.raises(UnsupportedExchangeKey):
        PeerKey.from_pem("portal", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(UnsupportedExchangeKey):
        PeerKey.from_pem("portal", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
