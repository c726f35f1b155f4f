"""Trusted time for checkpoints: RFC 3161 time-stamp requests, the service's check of a TSA's
answer, and the auditor's check of a stored token.

A checkpoint's token is the TSA's TimeStampResp (RFC 3161 §2.4.2) kept as it was received:
rfc3161-client verifies a response, not a bare token, and the response is the token with its
status in front. The message imprint is SHA-256 of the checkpoint note as the log signed it
(its text and the log's own signature lines). An export appends witness cosignature lines to
that note, so the auditor looks for the imprint among the note and the note cut after each of
its signature lines, and then verifies the token over that text: the TSA's signature must chain
to a root the auditor trusts, its certificate must carry the critical id-kp-timeStamping usage.
ASN.1 is never read by hand here: every field comes from rfc3161-client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    TimeStampResponse,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from audit.checkpoint import SignedCheckpoint
from audit.errors import MalformedCheckpoint, TimestampInvalid
from audit.verify_report import Fault, FaultReport, TimestampCheck, TimestampStatus

QUERY_TYPE = "application/timestamp-query"  # RFC 3161 §3.4
REPLY_TYPE = "application/timestamp-reply"
SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
# A response carries the TSA's certificates; anything near this size is not a time-stamp.
MAX_RESPONSE_BYTES = 64 * 1024
TIMESTAMP_KEY = "timestamp"  # the member of an export's checkpoint line that carries it


@dataclass(frozen=True)
class TimestampRequest:
    """A TimeStampReq over one note: its DER, the nonce to expect back and the imprint."""

    der: bytes
    nonce: int
    digest: bytes


@dataclass(frozen=True)
class Timestamp:
    """A TSA's answer over a note: the TimeStampResp DER as received, and what it says."""

    der: bytes
    gen_time: datetime
    tsa: str


def request_for(note: str) -> TimestampRequest:
    """A TimeStampReq over SHA-256 of ``note``, with a nonce and asking for the TSA's certificate
    (certReq), so that the token carries what an auditor needs to build the chain."""
    data = note.encode()
    built = TimestampRequestBuilder().data(data).hash_algorithm(HashAlgorithm.SHA256).cert_request(cert_request=True)
    request = built.nonce(nonce=True).build()
    nonce = request.nonce
    if nonce is None:  # asked for above: the library always sets one
        raise TimestampInvalid("the time-stamp request has no nonce")
    return TimestampRequest(request.as_bytes(), nonce, hashlib.sha256(data).digest())


def accept_response(request: TimestampRequest, der: bytes) -> Timestamp:
    """The service's check of a TSA's answer to ``request`` before it is stored: granted, our
    nonce, our imprint (RFC 3161 §2.4.2). Whose signature it is, is the auditor's to judge
    against the roots they trust. Raises TimestampInvalid."""
    try:
        return _accept(request, der)
    except ValueError as exc:  # a part the library could not read (no token, no signed data)
        raise TimestampInvalid(f"unreadable time-stamp response: {exc}") from None


def _accept(request: TimestampRequest, der: bytes) -> Timestamp:
    response = _decode(der)
    status = PKIStatus(response.status)
    if status is not PKIStatus.GRANTED:
        detail = "; ".join(response.status_string) or status.name
        raise TimestampInvalid(f"the TSA did not grant the time-stamp ({detail})")
    info = response.tst_info
    if info.nonce != request.nonce:
        raise TimestampInvalid("the TSA's answer carries another nonce")
    _require_sha256(response)
    if info.message_imprint.message != request.digest:
        raise TimestampInvalid("the TSA's answer is over another message")
    return Timestamp(der, _utc(info.gen_time), signer_name(response))


def timestamped_texts(note: str) -> list[str]:
    """The texts a checkpoint's token may cover: the note as exported, then the note cut after
    each of its signature lines (longest first, at least one line kept). Witness cosignatures
    are appended after the log signed and timestamped its note."""
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        return [note]
    head, lines = note[: split + 2], note[split + 2 : -1].split("\n")
    return [note] + [head + "".join(line + "\n" for line in lines[:k]) for k in range(len(lines) - 1, 0, -1)]


def load_roots(pem: bytes) -> list[x509.Certificate]:
    """The TSA trust roots of a PEM file (one or more certificates). Raises TimestampInvalid."""
    try:
        roots = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TimestampInvalid("not a PEM certificate file") from None
    return roots


def verify_token(der: bytes, note: str, roots: Sequence[x509.Certificate]) -> Timestamp:
    """The auditor's check: the token is granted, over SHA-256 of the note as the log signed it,
    signed by a TSA whose certificate chains to one of ``roots`` and is a time-stamping
    certificate (critical EKU). Returns the time it states; raises TimestampInvalid."""
    if not roots:
        raise TimestampInvalid("no TSA root to verify the time-stamp against")
    try:
        return _verify(der, note, roots)
    except ValueError as exc:  # a part the library could not read (no token, no signed data)
        raise TimestampInvalid(f"unreadable time-stamp response: {exc}") from None


def _verify(der: bytes, note: str, roots: Sequence[x509.Certificate]) -> Timestamp:
    response = _decode(der)
    if PKIStatus(response.status) is not PKIStatus.GRANTED:
        raise TimestampInvalid("the time-stamp response is not a granted one")
    _require_sha256(response)
    imprint = response.tst_info.message_imprint.message
    if not any(hashlib.sha256(text.encode()).digest() == imprint for text in timestamped_texts(note)):
        raise TimestampInvalid("the time-stamp is over another text than this checkpoint")
    builder = VerifierBuilder()
    for root in roots:
        builder = builder.add_root_certificate(root)
    try:
        builder.build().verify(response, imprint)
    except VerificationError as exc:
        raise TimestampInvalid(f"the time-stamp does not verify: {exc}") from None
    return Timestamp(der, _utc(response.tst_info.gen_time), signer_name(response))


def signer_name(response: TimeStampResponse) -> str:
    """The subject of the certificate that signed the token (as the token names it), else the
    TSA name of the token info; informational."""
    signers = list(response.signed_data.signer_infos)
    if len(signers) == 1:
        for raw in response.signed_data.certificates:
            try:
                cert = x509.load_der_x509_certificate(raw)
            except ValueError:
                continue
            if cert.issuer == signers[0].issuer and cert.serial_number == signers[0].serial_number:
                return cert.subject.rfc4514_string()
    try:
        name = response.tst_info.name
    except ValueError:
        name = None
    return name.value.rfc4514_string() if isinstance(name, x509.DirectoryName) else "unnamed TSA"


def encode(der: bytes) -> str:
    return base64.b64encode(der).decode()


def check_timestamps(
    checkpoints: Sequence[tuple[str, object]],
    roots: Sequence[x509.Certificate] | None,
    *,
    require: bool = False,
) -> tuple[tuple[TimestampCheck, ...], tuple[FaultReport, ...]]:
    """Judge the token of each ``(note, token)`` of an export (token: the line's base64 value,
    None when absent). Without ``roots`` a token is only reported as not checked. A bad token is
    a ``timestamp_invalid`` fault; a missing one is a fault (``untimestamped``) only when
    ``require``."""
    checks: list[TimestampCheck] = []
    faults: list[FaultReport] = []
    for note, token in checkpoints:
        size = _size(note)
        if token is None:
            checks.append(TimestampCheck(size, TimestampStatus.MISSING))
            if require:
                faults.append(
                    FaultReport(Fault.UNTIMESTAMPED, None, f"checkpoint at size {size} has no time-stamp", size)
                )
            continue
        if roots is None:
            checks.append(TimestampCheck(size, TimestampStatus.UNCHECKED, detail="no TSA root given (--tsa-cert)"))
            continue
        try:
            der = _base64(token)
            stamp = verify_token(der, note, roots)
        except TimestampInvalid as exc:
            checks.append(TimestampCheck(size, TimestampStatus.INVALID, detail=str(exc)))
            faults.append(FaultReport(Fault.TIMESTAMP_INVALID, None, f"checkpoint at size {size}: {exc}", size))
            continue
        checks.append(TimestampCheck(size, TimestampStatus.TRUSTED, stamp.gen_time, stamp.tsa))
    return tuple(checks), tuple(faults)


def _base64(token: object) -> bytes:
    if not isinstance(token, str):
        raise TimestampInvalid("the time-stamp is not a base64 string")
    try:
        der = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise TimestampInvalid("the time-stamp is not valid base64") from None
    if not der:
        raise TimestampInvalid("the time-stamp is empty")
    return der


def _size(note: str) -> int | None:
    try:
        return SignedCheckpoint.from_text(note).size
    except MalformedCheckpoint:
        return None


def _decode(der: bytes) -> TimeStampResponse:
    if len(der) > MAX_RESPONSE_BYTES:
        raise TimestampInvalid("the time-stamp response is too large")
    try:
        return decode_timestamp_response(der)
    except ValueError as exc:
        raise TimestampInvalid(f"not an RFC 3161 time-stamp response: {exc}") from None


def _require_sha256(response: TimeStampResponse) -> None:
    if response.tst_info.message_imprint.hash_algorithm != SHA256_OID:
        raise TimestampInvalid("the time-stamp's imprint is not SHA-256")


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
