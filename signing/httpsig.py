"""RFC 9421 HTTP Message Signatures: the BHXH portal ↔ one-stop exchange profile.

Pure functions: no database, no I/O; the time comes from the caller's clock. The signature
base, the Structured Fields and the cryptography are the `http-message-signatures` package's;
this module adds only what RFC 9421 §1.4 asks an application profile to fix (docs/exchange-profile.md):

* the covered components: a request covers ``@method``, ``@target-uri``, ``content-type`` and
  ``content-digest`` (RFC 9530, sha-256); a response covers ``@status``, ``content-type``,
  ``content-digest``, ``"@method";req`` and ``"@target-uri";req`` so that it proves which
  request it answers (RFC 9421 §2.4). ``content-type`` is required whenever the message has
  one (a bodiless GET or 204 has none, and there is nothing to cover);
* the parameters: ``created``, ``expires`` (at most ``MAX_LIFETIME_SECONDS`` after created),
  ``nonce`` (at least 128 random bits, base64url), ``keyid`` and ``tag="bhxh-exchange-v1"``;
* the algorithm: bound to the peer's key (RFC 9421 §3.2 step 6, §7.3.6), never read from the
  message; an ``alg`` parameter is tolerated only if it names the key's own algorithm.

Verification raises one exception per way a message can be bad (``signing.errors``); the
replay guard (the nonce store) is the caller's, because it needs a database.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeAlias

import http_sf
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

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

__all__ = [
    "DIGEST_ALGORITHM",
    "MAX_LIFETIME_SECONDS",
    "NONCE_BYTES",
    "PROFILE_TAG",
    "REQUEST_COMPONENTS",
    "RESPONSE_COMPONENTS",
    "SIGNATURE_LABEL",
    "ExchangeAlgorithm",
    "ExchangeSigningKey",
    "HttpRequest",
    "HttpResponse",
    "PeerKey",
    "SignatureHeaders",
    "SignatureParams",
    "VerifiedSignature",
    "accept_signature",
    "body_digest",
    "read_signature_params",
    "sign_request",
    "sign_response",
    "verify_request",
    "verify_response",
    "verify_signature",
]

PROFILE_TAG = "bhxh-exchange-v1"
SIGNATURE_LABEL = "bhxh"
# Bounded lifetime keeps the replay store small: a nonce need only be kept until it expires.
MAX_LIFETIME_SECONDS = 300
# RFC 9421 §7.2.2: a nonce must be unpredictable; 128 bits make a collision negligible.
NONCE_BYTES = 16
_MIN_NONCE_CHARS = 22  # base64url of 16 bytes, unpadded
_MAX_NONCE_CHARS = 128
_NONCE_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_MAX_KEYID_CHARS = 128
DIGEST_ALGORITHM = "sha-256"
MIN_RSA_BITS = 2048

REQUEST_COMPONENTS: tuple[str, ...] = ("@method", "@target-uri", "content-type", "content-digest")
RESPONSE_COMPONENTS: tuple[str, ...] = (
    "@status",
    "content-type",
    "content-digest",
    '"@method";req',
    '"@target-uri";req',
)
# Covered only when the message has the field; every other profile component is mandatory.
_CONDITIONAL_FIELD = "content-type"
# Replaced, never reused, when a message is (re)signed: a forwarded message gets fresh ones.
_SIGNATURE_FIELDS = frozenset({"signature", "signature-input", "content-digest"})

Clock: TypeAlias = Callable[[], datetime]
HeaderPairs: TypeAlias = tuple[tuple[str, str], ...]
_Component: TypeAlias = tuple[str, frozenset[tuple[str, Any]]]


class ExchangeAlgorithm(StrEnum):
    """RFC 9421 §3.3 algorithms this profile accepts, each bound to one key type."""

    ED25519 = "ed25519"
    ECDSA_P256_SHA256 = "ecdsa-p256-sha256"
    ECDSA_P384_SHA384 = "ecdsa-p384-sha384"
    # RSA signs with RSASSA-PSS only (Circular 15/2025/TT-BKHCN); rsa-v1_5 and HMAC are refused.
    RSA_PSS_SHA512 = "rsa-pss-sha512"


_ALGORITHM_CLASSES: dict[ExchangeAlgorithm, type[algorithms.HTTPSignatureAlgorithm]] = {
    ExchangeAlgorithm.ED25519: algorithms.ED25519,
    ExchangeAlgorithm.ECDSA_P256_SHA256: algorithms.ECDSA_P256_SHA256,
    ExchangeAlgorithm.ECDSA_P384_SHA384: algorithms.ECDSA_P384_SHA384,
    ExchangeAlgorithm.RSA_PSS_SHA512: algorithms.RSA_PSS_SHA512,
}

_PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _algorithm_for(public_key: object) -> ExchangeAlgorithm:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ExchangeAlgorithm.ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return ExchangeAlgorithm.ECDSA_P256_SHA256
        if isinstance(public_key.curve, ec.SECP384R1):
            return ExchangeAlgorithm.ECDSA_P384_SHA384
        raise UnsupportedExchangeKey(f"elliptic curve {public_key.curve.name} is not allowed (P-256 or P-384)")
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise UnsupportedExchangeKey(f"RSA keys under {MIN_RSA_BITS} bits are refused")
        return ExchangeAlgorithm.RSA_PSS_SHA512
    raise UnsupportedExchangeKey(
        f"{type(public_key).__name__} is not an exchange key: use Ed25519, ECDSA P-256/P-384 or RSA-PSS ≥ 2048"
    )


def _check_keyid(keyid: str) -> str:
    if not keyid or len(keyid) > _MAX_KEYID_CHARS or not keyid.isascii() or not keyid.isprintable():
        raise UnsupportedExchangeKey("a keyid must be 1–128 printable ASCII characters")
    return keyid


@dataclass(frozen=True)
class PeerKey:
    """A peer's verification key; its algorithm is derived from the key once, here."""

    keyid: str
    public_key: _PublicKey
    algorithm: ExchangeAlgorithm
    certificate: x509.Certificate | None = None

    @classmethod
    def from_public_key(cls, keyid: str, public_key: object, certificate: x509.Certificate | None = None) -> PeerKey:
        algorithm = _algorithm_for(public_key)
        # _algorithm_for refused every key that is not an exchange public key.
        return cls(_check_keyid(keyid), public_key, algorithm, certificate)  # type: ignore[arg-type]

    @classmethod
    def from_pem(cls, keyid: str, pem: bytes) -> PeerKey:
        """From a PEM X.509 certificate or a PEM SubjectPublicKeyInfo."""
        if b"-----BEGIN CERTIFICATE-----" in pem:
            try:
                cert = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise UnsupportedExchangeKey("not a readable PEM X.509 certificate") from exc
            return cls.from_public_key(keyid, cert.public_key(), cert)
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise UnsupportedExchangeKey("not a PEM public key or certificate") from exc
        return cls.from_public_key(keyid, key)

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def certificate_pem(self) -> str | None:
        if self.certificate is None:
            return None
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class ExchangeSigningKey:
    """Our own signing key for the exchange (a ``keyid`` and the private key)."""

    keyid: str
    private_key: _PrivateKey = field(repr=False)
    algorithm: ExchangeAlgorithm

    @classmethod
    def from_private_key(cls, keyid: str, private_key: object) -> ExchangeSigningKey:
        public = getattr(private_key, "public_key", None)
        if public is None:
            raise UnsupportedExchangeKey(f"{type(private_key).__name__} is not a private key")
        # _algorithm_for refused every key whose public half is not an exchange key.
        return cls(_check_keyid(keyid), private_key, _algorithm_for(public()))  # type: ignore[arg-type]

    def peer_key(self) -> PeerKey:
        return PeerKey.from_public_key(self.keyid, self.private_key.public_key())


def _pairs(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> HeaderPairs:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((str(k), str(v)) for k, v in items)


def _header(headers: HeaderPairs, name: str) -> str | None:
    """The combined value of every field line called ``name`` (RFC 9110 §5.3), or None."""
    lname = name.lower()
    values = [v.strip(" \t") for k, v in headers if k.lower() == lname]
    return ", ".join(values) if values else None


@dataclass(frozen=True)
class HttpRequest:
    """An HTTP request as the signer sent it or the verifier received it.

    ``url`` is the absolute target URI (RFC 9110 §7.1), percent-encoded as on the wire."""

    method: str
    url: str
    headers: HeaderPairs = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _pairs(self.headers))

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def with_headers(self, extra: Mapping[str, str]) -> HttpRequest:
        """A copy with the given fields set (any earlier lines of those names dropped)."""
        return HttpRequest(self.method, self.url, _replace(self.headers, extra), self.body)


@dataclass(frozen=True)
class HttpResponse:
    """An HTTP response together with the request it answers (for ``;req`` components)."""

    status: int
    headers: HeaderPairs
    body: bytes
    request: HttpRequest

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _pairs(self.headers))

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def with_headers(self, extra: Mapping[str, str]) -> HttpResponse:
        return HttpResponse(self.status, _replace(self.headers, extra), self.body, self.request)


def _replace(headers: HeaderPairs, extra: Mapping[str, str]) -> HeaderPairs:
    names = {k.lower() for k in extra}
    return tuple((k, v) for k, v in headers if k.lower() not in names) + tuple(extra.items())


@dataclass(frozen=True)
class SignatureHeaders:
    """The fields a signer adds: set all three, replacing any earlier ones."""

    content_digest: str
    signature_input: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            "Content-Digest": self.content_digest,
            "Signature-Input": self.signature_input,
            "Signature": self.signature,
        }


@dataclass(frozen=True)
class SignatureParams:
    """The profile signature's parameters as the message states them (not yet verified)."""

    label: str
    components: tuple[str, ...]
    keyid: str | None
    created: int | None
    expires: int | None
    nonce: str | None
    tag: str | None
    alg: str | None


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that verified with the peer's key; every field here is covered by it."""

    label: str
    keyid: str
    algorithm: ExchangeAlgorithm
    components: tuple[str, ...]
    created: datetime | None
    expires: datetime | None
    nonce: str | None
    tag: str | None
    content_digest: str | None


# --- adapters to the library's message interface ----------------------------------------


class _Fields:
    """Header view for the library: ordered field lines, writable so the signer can add its own."""

    def __init__(self, pairs: HeaderPairs) -> None:
        self._lines = list(pairs)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._lines))

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self._lines)

    def __getitem__(self, name: str) -> str:
        value = _header(tuple(self._lines), name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self._lines = [(k, v) for k, v in self._lines if k.lower() != name.lower()] + [(name, value)]

    def __delitem__(self, name: str) -> None:
        self._lines = [(k, v) for k, v in self._lines if k.lower() != name.lower()]


class _WireRequest:
    def __init__(self, request: HttpRequest, *, strip_signature: bool = False) -> None:
        self.method = request.method
        self.url = request.url
        pairs = request.headers
        if strip_signature:
            pairs = tuple((k, v) for k, v in pairs if k.lower() not in _SIGNATURE_FIELDS)
        self.headers = _Fields(pairs)


class _WireResponse:
    def __init__(self, response: HttpResponse, *, strip_signature: bool = False) -> None:
        self.status_code = response.status
        pairs = response.headers
        if strip_signature:
            pairs = tuple((k, v) for k, v in pairs if k.lower() not in _SIGNATURE_FIELDS)
        self.headers = _Fields(pairs)
        self.request = _WireRequest(response.request)


_Message: TypeAlias = HttpRequest | HttpResponse


def _wire(message: _Message, *, strip_signature: bool = False) -> _WireRequest | _WireResponse:
    if isinstance(message, HttpResponse):
        return _WireResponse(message, strip_signature=strip_signature)
    return _WireRequest(message, strip_signature=strip_signature)


class _OneKey(HTTPSignatureKeyResolver):
    """Resolves exactly one keyid; the caller picked the key before any crypto ran."""

    def __init__(self, keyid: str, public_key: object) -> None:
        self._keyid = keyid
        self._public = public_key

    def resolve_public_key(self, key_id: str) -> object:
        return self._public if key_id == self._keyid else None

    def resolve_private_key(self, key_id: str) -> object:
        raise MessageKeyMismatch("this resolver verifies only")


class _InjectedClockVerifier(HTTPMessageVerifier):
    """The library's verifier without its wall-clock checks: ``created`` and ``expires`` are
    checked afterwards against the caller's clock, so tests move time instead of sleeping and
    the reasons (stale, expired) stay distinct from a bad signature."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


# --- signing ------------------------------------------------------------------------------


def _now_seconds(clock: Clock) -> datetime:
    now = clock()
    if now.tzinfo is None:
        raise ValueError("the clock must return an aware datetime")
    return now.astimezone(UTC).replace(microsecond=0)


def _new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).rstrip(b"=").decode()


def _profile_components(message: _Message, profile: tuple[str, ...]) -> list[str]:
    present = message.header(_CONDITIONAL_FIELD) is not None
    return [c for c in profile if c != _CONDITIONAL_FIELD or present]


def accept_signature(request: HttpRequest) -> str:
    """The ``Accept-Signature`` field (RFC 9421 §5.1) asking for the profile's signature on
    ``request``: our label, the components it must cover, ``created`` and ``expires`` to be
    generated by the signer, and the profile's tag. The nonce, random, is the signer's own."""
    requested = {"created": True, "expires": True, "tag": PROFILE_TAG}
    member: dict[str, Any] = {SIGNATURE_LABEL: (_profile_components(request, REQUEST_COMPONENTS), requested)}
    return str(http_sf.ser(member))


def _sign(
    message: _Message,
    key: ExchangeSigningKey,
    profile: tuple[str, ...],
    *,
    clock: Clock,
    lifetime_seconds: int,
    nonce: str | None,
) -> SignatureHeaders:
    if not 0 < lifetime_seconds <= MAX_LIFETIME_SECONDS:
        raise MessageProfileViolation(f"a signature lives 1–{MAX_LIFETIME_SECONDS} s, not {lifetime_seconds}")
    nonce = _new_nonce() if nonce is None else _check_nonce(nonce)
    created = _now_seconds(clock)
    wire = _wire(message, strip_signature=True)
    algorithm = _ALGORITHM_CLASSES[key.algorithm]
    signer = HTTPMessageSigner(signature_algorithm=algorithm)
    try:
        prepared = signer.prepare(
            wire,
            key_id=key.keyid,
            created=created,
            expires=created + timedelta(seconds=lifetime_seconds),
            nonce=nonce,
            label=SIGNATURE_LABEL,
            tag=PROFILE_TAG,
            include_alg=False,  # the verifier takes the algorithm from our key, not the message
            covered_component_ids=_profile_components(message, profile),
            body=message.body,
        )
        raw = algorithm(private_key=key.private_key).sign(prepared.signature_base)
    except HTTPMessageSignaturesException as exc:
        raise MessageProfileViolation(f"cannot sign this message: {exc}") from exc
    # The library's prepare() builds and checks the base and the serialised parameters; its
    # apply() would build the base a second time, to catch a message changed between the two
    # calls, which cannot happen to our private copy. The fields are then one dictionary
    # member each: the fixed label token, and the raw signature as a byte sequence.
    return SignatureHeaders(
        wire.headers["Content-Digest"],
        f"{SIGNATURE_LABEL}={prepared.signature_params}",
        f"{SIGNATURE_LABEL}={http_sf.ser(raw)}",
    )


def sign_request(
    request: HttpRequest,
    key: ExchangeSigningKey,
    *,
    clock: Clock,
    lifetime_seconds: int = MAX_LIFETIME_SECONDS,
    nonce: str | None = None,
) -> SignatureHeaders:
    """Sign ``request`` under the profile; returns the three fields to set on it."""
    return _sign(request, key, REQUEST_COMPONENTS, clock=clock, lifetime_seconds=lifetime_seconds, nonce=nonce)


def sign_response(
    response: HttpResponse,
    key: ExchangeSigningKey,
    *,
    clock: Clock,
    lifetime_seconds: int = MAX_LIFETIME_SECONDS,
    nonce: str | None = None,
) -> SignatureHeaders:
    """Sign ``response``, bound to ``response.request`` by its method and target URI."""
    return _sign(response, key, RESPONSE_COMPONENTS, clock=clock, lifetime_seconds=lifetime_seconds, nonce=nonce)


# --- reading and verifying ------------------------------------------------------------------


def _parse_dictionary(value: str, field_name: str) -> dict[str, Any]:
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise MalformedMessageSignature(f"{field_name} is not a Structured Field dictionary") from exc
    if not isinstance(parsed, dict):
        raise MalformedMessageSignature(f"{field_name} is not a Structured Field dictionary")
    return parsed


def _component_text(name: Any, params: Mapping[str, Any]) -> str:
    try:
        return http_sf.ser((name, dict(params)))
    except (ValueError, TypeError) as exc:
        raise MalformedMessageSignature("a covered component identifier is not a Structured Field item") from exc


def _as_int(value: Any) -> int | None:
    # bool is an int in Python; a Structured Field boolean is not a timestamp.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def read_signature_params(message: _Message, *, tag: str | None = PROFILE_TAG) -> SignatureParams:
    """The parameters of the one signature carrying ``tag`` (or the only signature when
    ``tag`` is None), without verifying anything. Used to find the peer by ``keyid``."""
    raw_input = message.header("Signature-Input")
    raw_signature = message.header("Signature")
    if raw_input is None and raw_signature is None:
        raise MessageUnsigned("the message carries no Signature-Input or Signature field")
    if raw_input is None or raw_signature is None:
        raise MalformedMessageSignature("Signature-Input and Signature must both be present")
    return _params_from_fields(raw_input, raw_signature, tag)


# Memoised: the service, the profile check and the signature check each read the same fields;
# the result is immutable and the key is the exact field text.
@functools.lru_cache(maxsize=512)
def _params_from_fields(raw_input: str, raw_signature: str, tag: str | None) -> SignatureParams:
    inputs = _parse_dictionary(raw_input, "Signature-Input")
    signatures = _parse_dictionary(raw_signature, "Signature")
    if not inputs:
        raise MessageUnsigned("the Signature-Input field is empty")
    if set(inputs) != set(signatures):
        raise MalformedMessageSignature("Signature-Input and Signature name different labels")
    chosen: list[tuple[str, Any]] = []
    for label, member in inputs.items():
        if not isinstance(member, tuple) or len(member) != 2 or not isinstance(member[0], list):
            raise MalformedMessageSignature(f"Signature-Input member {label!r} is not an inner list")
        if tag is None or member[1].get("tag") == tag:
            chosen.append((label, member))
    if not chosen:
        raise MessageUnsigned(f"no signature with tag {tag!r}")
    if len(chosen) > 1:
        raise MessageProfileViolation("more than one signature claims the profile tag")
    label, (items, params) = chosen[0]
    components = tuple(_component_text(name, item_params) for name, item_params in items)
    return SignatureParams(
        label=label,
        components=components,
        keyid=_as_str(params.get("keyid")),
        created=_as_int(params.get("created")),
        expires=_as_int(params.get("expires")),
        nonce=_as_str(params.get("nonce")),
        tag=_as_str(params.get("tag")),
        alg=_as_str(params.get("alg")),
    )


@functools.lru_cache(maxsize=256)
def _identity(component: str) -> _Component:
    """Name and parameters, order-free (RFC 9421 §2: parameter order does not matter)."""
    text = component if component.startswith('"') else http_sf.ser(component)
    try:
        parsed = http_sf.parse(text.encode(), tltype="item")
    except (ValueError, TypeError) as exc:
        raise MalformedMessageSignature(f"bad component identifier {component!r}") from exc
    # An item parses to (bare item, parameters); the name of a component is a String item.
    if not isinstance(parsed, tuple):
        raise MalformedMessageSignature(f"bad component identifier {component!r}")
    name, params = parsed
    if not isinstance(name, str):
        raise MalformedMessageSignature(f"bad component identifier {component!r}")
    return name, frozenset(params.items())


def _check_nonce(nonce: str) -> str:
    if not _MIN_NONCE_CHARS <= len(nonce) <= _MAX_NONCE_CHARS or not set(nonce) <= _NONCE_ALPHABET:
        raise MessageProfileViolation("the nonce must be base64url carrying at least 128 bits")
    return nonce


def _check_profile(message: _Message, params: SignatureParams, profile: tuple[str, ...]) -> None:
    required = {_identity(c) for c in _profile_components(message, profile)}
    covered = {_identity(c) for c in params.components}
    missing = required - covered
    if missing:
        names = ", ".join(sorted(_component_text(n, dict(p)) for n, p in missing))
        raise MessageProfileViolation(f"the signature does not cover {names}")
    if params.keyid is None:
        raise MessageProfileViolation("the signature has no keyid")
    if params.tag != PROFILE_TAG:
        raise MessageProfileViolation(f"the signature's tag must be {PROFILE_TAG!r}")
    if params.created is None or params.expires is None:
        raise MessageProfileViolation("the signature must state created and expires")
    if not 0 < params.expires - params.created <= MAX_LIFETIME_SECONDS:
        raise MessageProfileViolation(f"expires must fall within {MAX_LIFETIME_SECONDS} s after created")
    if params.nonce is None:
        raise MessageProfileViolation("the signature has no nonce")
    _check_nonce(params.nonce)


def _timestamp(value: int | str | None) -> datetime | None:
    if not isinstance(value, int):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise MalformedMessageSignature("a signature timestamp is out of range") from exc


def verify_signature(message: _Message, key: PeerKey, *, tag: str | None = None) -> VerifiedSignature:
    """RFC 9421 §3.2 with the algorithm taken from ``key``: the one signature with ``tag``
    (or the only one) must verify over the components it covers. No profile, no clock: the
    building block of ``verify_request``/``verify_response`` and the check of the RFC vectors."""
    params = read_signature_params(message, tag=tag)
    if params.keyid != key.keyid:
        raise MessageKeyMismatch("the signature names another keyid than the peer's key")
    if params.alg is not None and params.alg != key.algorithm.value:
        # RFC 9421 §3.2 step 6: an alg that disagrees with the key's own algorithm fails.
        raise MessageSignatureInvalid("the alg parameter disagrees with the peer's key")
    verifier = _InjectedClockVerifier(
        signature_algorithm=_ALGORITHM_CLASSES[key.algorithm],
        key_resolver=_OneKey(key.keyid, key.public_key),
    )
    try:
        if tag is None:
            results = verifier.verify(_wire(message), max_age=None)
        else:
            results = verifier.verify(_wire(message), max_age=None, expect_tag=tag, expect_label=params.label)
    except InvalidSignature as exc:
        raise MessageSignatureInvalid(f"signature verification failed: {exc}") from exc
    except HTTPMessageSignaturesException as exc:
        raise MalformedMessageSignature(f"the signature cannot be checked: {exc}") from exc
    (result,) = results
    raw = result.parameters
    digest = next((v for k, v in result.covered_components.items() if k == '"content-digest"'), None)
    return VerifiedSignature(
        label=result.label,
        keyid=key.keyid,
        algorithm=key.algorithm,
        components=params.components,
        created=_timestamp(raw.get("created")),
        expires=_timestamp(raw.get("expires")),
        nonce=_as_str(raw.get("nonce")),
        tag=_as_str(raw.get("tag")),
        content_digest=digest,
    )


def _check_digest(signed_value: str | None, body: bytes) -> None:
    if signed_value is None:
        raise MessageProfileViolation("the signature does not cover content-digest")
    members = _parse_dictionary(signed_value, "Content-Digest")
    if DIGEST_ALGORITHM not in members:
        raise MessageProfileViolation(f"Content-Digest must carry {DIGEST_ALGORITHM} (RFC 9530)")
    try:
        # Every member must match, not just ours: a lying sha-512 next to a true sha-256 fails.
        ContentDigest.verify(signed_value, body)
    except InvalidSignature as exc:
        raise ContentDigestMismatch("Content-Digest does not match the body") from exc


def _check_time(verified: VerifiedSignature, *, clock: Clock, skew_seconds: int) -> None:
    now = clock()
    skew = timedelta(seconds=skew_seconds)
    assert verified.created is not None and verified.expires is not None  # the profile demands both
    if not now - skew <= verified.created <= now + skew:
        raise MessageCreatedOutOfWindow(
            f"created is {int((now - verified.created).total_seconds())} s from now (allowed ±{skew_seconds} s)"
        )
    if now > verified.expires:
        raise MessageSignatureExpired("the signature has expired")


def _verify_profile(
    message: _Message, key: PeerKey, profile: tuple[str, ...], *, clock: Clock, skew_seconds: int
) -> VerifiedSignature:
    params = read_signature_params(message)
    if params.keyid != key.keyid:
        raise MessageKeyMismatch("the signature names another keyid than the peer's key")
    _check_profile(message, params, profile)
    verified = verify_signature(message, key, tag=PROFILE_TAG)
    _check_digest(verified.content_digest, message.body)
    _check_time(verified, clock=clock, skew_seconds=skew_seconds)
    return verified


def verify_request(request: HttpRequest, key: PeerKey, *, clock: Clock, skew_seconds: int) -> VerifiedSignature:
    """The full profile check of a request, in order: profile (components, parameters),
    signature with the key's algorithm, Content-Digest against the body, then ``created``
    within ±``skew_seconds`` and ``expires`` not passed. Replay is the caller's check."""
    return _verify_profile(request, key, REQUEST_COMPONENTS, clock=clock, skew_seconds=skew_seconds)


def verify_response(response: HttpResponse, key: PeerKey, *, clock: Clock, skew_seconds: int) -> VerifiedSignature:
    """As ``verify_request``, for a response bound to ``response.request``."""
    return _verify_profile(response, key, RESPONSE_COMPONENTS, clock=clock, skew_seconds=skew_seconds)


def body_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` value (sha-256) of ``body``, as logged and compared."""
    return f"{DIGEST_ALGORITHM}=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"
