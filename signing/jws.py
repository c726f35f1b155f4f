"""JWS (RFC 7515) compact signatures with joserfc: attached, or detached with an unencoded
payload (RFC 7797 ``b64: false``) so that large payloads are neither copied nor base64-grown.

The algorithm comes from the key named by ``kid``; the token's ``alg`` is only compared with
it. ``none``, HMAC with a public key and any other mismatch fail as SIG_CRYPTO_FAILURE. A JWS
signs the payload itself (there is no separate digest as in CMS or XMLDSig), so a changed
payload and a forged signature are the same finding: SIG_CRYPTO_FAILURE. The claimed signing
time travels in the protected header ``sigT`` (ETSI TS 119 182-1, JAdES).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.registry import HeaderParameter, is_str

from signing.algorithms import Algorithm, SignatureAlgorithm
from signing.errors import (
    FormatFailure,
    HashFailure,
    KeyNotUsable,
    NoSigningCertificate,
    SigCryptoFailure,
    VerificationFailure,
)
from signing.keystore import Keystore, SigningKey
from signing.pkcs11 import jws_signature
from signing.results import Signer, VerificationResult
from signing.trust import TrustPolicy

FORMAT = "jws"
SIGNING_TIME_HEADER = "sigT"  # JAdES claimed signing time, RFC 3339 UTC
MAX_HEADER_BYTES = 4096
MAX_SIGNATURE_BYTES = 2048  # base64url of an RSA-4096 signature is 683 bytes
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # hard ceiling; the service applies its own, lower limit
# RFC 9864 deprecates "EdDSA" for "Ed25519"; an Ed25519 key accepts both names, which cannot
# mean different things for it.
_ALIASES: dict[Algorithm, frozenset[str]] = {
    Algorithm.ED25519: frozenset({"Ed25519", "EdDSA"}),
    Algorithm.ES256: frozenset({"ES256"}),
    Algorithm.PS256: frozenset({"PS256"}),
}
_MAX_ALG_CHARS = 32
_EXTRA_HEADERS = {SIGNING_TIME_HEADER: HeaderParameter("Claimed signing time (JAdES)", is_str)}
_PARSE_ERRORS = (JoseError, ValueError, TypeError, AttributeError, KeyError, binascii.Error, UnicodeError)


def _registry(algorithms: frozenset[str], *, strict: bool) -> jws.JWSRegistry:
    registry = jws.JWSRegistry(
        header_registry=_EXTRA_HEADERS, algorithms=sorted(algorithms), strict_check_header=strict
    )
    registry.max_header_length = MAX_HEADER_BYTES
    registry.max_signature_length = MAX_SIGNATURE_BYTES
    registry.max_payload_length = MAX_PAYLOAD_BYTES
    return registry


_SIGN_REGISTRIES = {alg: _registry(frozenset({alg.value}), strict=True) for alg in Algorithm}
# RFC 7515 §4: header parameters that are not understood are ignored unless listed in "crit",
# so verification is not strict about unknown names (joserfc still enforces "crit").
_VERIFY_REGISTRIES = {alg: _registry(_ALIASES[alg], strict=False) for alg in Algorithm}
# Parsing only applies the size limits; the algorithm is checked later, against the key.
_PARSE_REGISTRY = _registry(frozenset(a.value for a in Algorithm), strict=False)


@dataclass(frozen=True)
class JwsSignature:
    token: str
    key_id: str
    algorithm: Algorithm
    signed_at: datetime
    detached: bool


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise FormatFailure(f"{SIGNING_TIME_HEADER} must be an RFC 3339 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FormatFailure(f"{SIGNING_TIME_HEADER} is not an RFC 3339 time") from exc
    if moment.tzinfo is None:
        raise FormatFailure(f"{SIGNING_TIME_HEADER} carries no time zone")
    return moment.astimezone(UTC)


def sign(key: SigningKey, payload: bytes, *, signed_at: datetime, detached: bool = False) -> JwsSignature:
    """Sign ``payload`` with ``key``. Detached tokens (``header..signature``) use RFC 7797
    ``b64: false``: the verifier needs the raw payload bytes beside the token.

    The signature itself is made by joserfc's algorithm object for the key; only the RFC 7515
    §7.1 concatenation is done here, around a protected header built once per key, second and
    form: joserfc's per-call header registry checks cost as much as an Ed25519 signature
    (bench/bench_signing.py), and this header is ours, not a caller's. Untrusted tokens are
    still parsed and checked by joserfc (``verify``); tests verify these tokens with joserfc
    and jwcrypto."""
    if not key.can_sign:
        raise KeyNotUsable(f"key {key.kid} is {key.state.value}: only the active key signs")
    key.check_signs_messages()
    protected = _protected_segment(key, _rfc3339(signed_at), detached)
    signing_input = protected + b"." + (payload if detached else _b64url(payload))
    signature = _b64url(_signature(key, signing_input))
    token = (protected + b".." + signature) if detached else (signing_input + b"." + signature)
    return JwsSignature(token.decode("ascii"), key.kid, key.algorithm, signed_at, detached)


# joserfc's algorithm objects, looked up once and checked against the sign registries' rules.
_ALGORITHMS = {alg: _SIGN_REGISTRIES[alg].get_alg(alg.value) for alg in Algorithm}


def _signature(key: SigningKey, signing_input: bytes) -> bytes:
    # joserfc reads a private JWK's fields before it signs, and a token key has none to read:
    # a token key makes the RFC 7518 signature value itself.
    on_token = jws_signature(key.private_key, signing_input)
    if on_token is not None:
        return on_token
    return bytes(_ALGORITHMS[key.algorithm].sign(signing_input, key.jose_key))


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=64)
def _protected_header(kid: str, alg: str, thumbprint: str | None, signing_time: str, detached: bool) -> bytes:
    header: dict[str, object] = {"alg": alg, "kid": kid, SIGNING_TIME_HEADER: signing_time}
    if thumbprint is not None:
        header["x5t#S256"] = thumbprint
    if detached:
        header["b64"] = False
        header["crit"] = ["b64"]
    _SIGN_REGISTRIES[Algorithm(alg)].check_header(header)
    return _b64url(json.dumps(header, separators=(",", ":")).encode())


def _protected_segment(key: SigningKey, signing_time: str, detached: bool) -> bytes:
    return _protected_header(key.kid, key.algorithm.value, _thumbprint(key.certificate), signing_time, detached)


@functools.lru_cache(maxsize=64)
def _thumbprint(certificate: x509.Certificate | None) -> str | None:
    if certificate is None:
        return None
    return _b64url(certificate.fingerprint(hashes.SHA256())).decode("ascii")


@dataclass
class _Facts:
    key_id: str | None = None
    signer: Signer | None = None
    signed_at: datetime | None = None
    algorithm: SignatureAlgorithm | None = None
    algorithm_identifier: str | None = None


def verify(
    token: str,
    keystore: Keystore,
    trust: TrustPolicy,
    *,
    now: datetime,
    payload: bytes | None = None,
) -> VerificationResult:
    """Verify a compact JWS. ``payload`` is required for a detached token; for an attached
    one it is optional and, when given, must equal the signed payload."""
    facts = _Facts()
    try:
        _verify(token, keystore, trust, now, payload, facts)
    except VerificationFailure as failure:
        return VerificationResult.failed(
            FORMAT,
            failure,
            key_id=facts.key_id,
            signer=facts.signer,
            signed_at=facts.signed_at,
            algorithm=facts.algorithm,
            algorithm_identifier=facts.algorithm_identifier,
        )
    return VerificationResult(
        format=FORMAT,
        sub_indication=None,
        key_id=facts.key_id,
        signer=facts.signer,
        signed_at=facts.signed_at,
        algorithm=facts.algorithm,
        algorithm_identifier=facts.algorithm_identifier,
    )


def _verify(
    token: str, keystore: Keystore, trust: TrustPolicy, now: datetime, payload: bytes | None, facts: _Facts
) -> None:
    value = token.strip().encode("ascii", errors="replace")
    if value.count(b".") != 2:
        raise FormatFailure("a compact JWS has exactly three dot-separated parts")
    detached = value.split(b".")[1] == b""
    if detached and payload is None:
        raise FormatFailure("the JWS is detached: the payload must be supplied")
    try:
        obj = jws.extract_compact(value, payload if detached else None, _PARSE_REGISTRY)
        header = obj.headers()
    except _PARSE_ERRORS as exc:
        raise FormatFailure(f"not a compact JWS: {exc}") from exc
    if not isinstance(header, dict):
        raise FormatFailure("the protected header is not a JSON object")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise NoSigningCertificate("the JWS names no key (kid)")
    facts.key_id = kid
    if SIGNING_TIME_HEADER in header:
        facts.signed_at = _parse_time(header[SIGNING_TIME_HEADER])
    key = keystore.find(kid)
    if key is None:
        raise NoSigningCertificate(f"unknown key {kid}")
    facts.algorithm = key.algorithm.signature_algorithm
    cert = key.certificate
    facts.signer = (
        Signer.from_certificate(cert, kid, key.purpose)
        if cert is not None
        else Signer(None, None, None, kid, key.purpose.value)
    )
    claimed = header.get("alg")
    # What the token says, for the caller to see; a name longer than any JWS name is not kept.
    facts.algorithm_identifier = claimed if isinstance(claimed, str) and len(claimed) <= _MAX_ALG_CHARS else None
    if claimed not in _ALIASES[key.algorithm]:
        # Never let the token choose: "none", HS256 keyed with our public key, RS256 for a PSS key…
        raise SigCryptoFailure(f"the token's alg {claimed!r} is not the key's algorithm {key.algorithm.value}")
    try:
        ok = jws.validate_compact(obj, key.jose_key, registry=_VERIFY_REGISTRIES[key.algorithm])
    except _PARSE_ERRORS as exc:
        raise FormatFailure(f"the JWS header is not acceptable: {exc}") from exc
    if not ok:
        raise SigCryptoFailure("the signature does not verify under the key")
    if not detached and payload is not None and obj.payload != payload:
        raise HashFailure("the signed payload differs from the data supplied")
    key.check_not_revoked_at(facts.signed_at)
    if cert is not None:
        trust.validate(cert, key.chain[1:], moment=now, signed_at=facts.signed_at)
