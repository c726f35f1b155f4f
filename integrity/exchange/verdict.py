"""What checking one exchanged message concluded, and the audit entry that says so.

Every reason a message can be refused for is a member of ``Reason``, listed once here: the
stable slugs of docs/exchange-profile.md §2 (the signature checks' slugs are those of the
``signing.errors`` classes that raise them, so the text exists in one place), written into the
audit log and returned by the verify API. The entry carries the message id, peer, keyid, route
pattern, body digest and reason, never the body or the raw URL (either may hold personal
data): the URL appears as its SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from integrity.exchange.logged_text import short
from integrity.exchange.peers import Peer
from integrity.exchange.routes import Route
from signing.errors import (
    ContentDigestMismatch,
    MalformedMessageSignature,
    MessageCreatedOutOfWindow,
    MessageKeyMismatch,
    MessageProfileViolation,
    MessageSignatureError,
    MessageSignatureExpired,
    MessageSignatureInvalid,
    MessageUnsigned,
    ReplayedMessage,
)
from signing.httpsig import HttpRequest, HttpResponse, VerifiedSignature, body_digest

MESSAGE_ID_HEX = 32

ACCEPTED_ACTION = "exchange.accepted"
# A message that passed every check but whose nonce was not recorded (the verify API without
# "consume"): a look at a message, not its delivery.
CHECKED_ACTION = "exchange.checked"
CONSUME_REFUSED_ACTION = "exchange.consume.refused"
REJECTED_ACTION = "exchange.rejected"
FORWARD_FAILED_ACTION = "exchange.forward.failed"


class Direction(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


class Reason(StrEnum):
    """Why a message was refused (docs/exchange-profile.md §2, in the order of the checks)."""

    # The gateway's raw-path checks, before the message is even verified (api/gateway_path.py).
    ENCODED_NAME = "encoded-name"
    DOT_SEGMENT = "dot-segment"
    EMPTY_SEGMENT = "empty-segment"
    AMBIGUOUS_PATH_BYTE = "ambiguous-path-byte"
    PATH_TOO_LONG = "path-too-long"
    # 1. the signature fields
    UNSIGNED = MessageUnsigned.reason
    MALFORMED_SIGNATURE = MalformedMessageSignature.reason
    PROFILE_VIOLATION = MessageProfileViolation.reason
    # 2. and 3. the registry: whose key, which route, which signer
    UNKNOWN_KEY = "unknown-key"
    ROUTE_NOT_ALLOWED = "route-not-allowed"
    UNEXPECTED_SIGNER = "unexpected-signer"
    # 4. to 7. the profile, the signature, the digest and the time window
    KEY_MISMATCH = MessageKeyMismatch.reason
    BAD_SIGNATURE = MessageSignatureInvalid.reason
    INVALID_SIGNATURE = MessageSignatureError.reason
    DIGEST_MISMATCH = ContentDigestMismatch.reason
    CREATED_OUT_OF_WINDOW = MessageCreatedOutOfWindow.reason
    EXPIRED = MessageSignatureExpired.reason
    # 8. the replay guard
    REPLAYED_NONCE = ReplayedMessage.reason

    @classmethod
    def of(cls, error: MessageSignatureError) -> Reason:
        """The reason a refusal raised by ``signing.httpsig`` stands for."""
        return cls(error.reason)


class ForwardFailure(StrEnum):
    """Why an accepted request was not delivered (``exchange.forward.failed``, §3)."""

    RATE_LIMITED = "rate-limited"
    UNKNOWN_DESTINATION = "unknown-destination"
    NO_BASE_URL = "no-base-url"
    GATEWAY_KEY_UNAVAILABLE = "gateway-key-unavailable"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    RESPONSE_TOO_LARGE = "response-too-large"


@dataclass(frozen=True)
class ExchangeVerdict:
    """The outcome of checking one message, as logged (``audit_seq``)."""

    message_id: str
    direction: Direction
    accepted: bool
    reason: Reason | None
    detail: str | None
    peer: str | None
    keyid: str | None
    route: str | None
    digest: str
    # None: an anonymous refusal past the per-source limit, counted in a summary entry
    # (integrity.refusal_log) instead of an entry of its own.
    audit_seq: int | None
    signature: VerifiedSignature | None = None
    # Whether the (keyid, nonce) pair had been recorded before this check; None when an
    # earlier check failed (the nonce of an unverified message means nothing).
    nonce_seen: bool | None = None

    @property
    def reasons(self) -> list[str]:
        return [] if self.accepted else [f"{self.reason}: {self.detail}" if self.detail else str(self.reason)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.accepted,
            "message_id": self.message_id,
            "direction": self.direction.value,
            "peer": self.peer,
            "keyid": self.keyid,
            "route": self.route,
            "digest": self.digest,
            "reason": self.reason.value if self.reason else None,
            "reasons": self.reasons,
            "nonce_seen": self.nonce_seen,
            "audit_seq": self.audit_seq,
        }


@dataclass(frozen=True)
class Seen:
    """What is known of a message before any check: computed from the bytes as received."""

    message_id: str
    direction: Direction
    digest: str
    method: str
    target_sha256: str
    target_uri: str
    status: int | None
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def of(cls, message: HttpRequest | HttpResponse) -> Seen:
        request = message.request if isinstance(message, HttpResponse) else message
        status = message.status if isinstance(message, HttpResponse) else None
        digest = body_digest(message.body)
        # Deterministic, so a replay carries the same id as the original it copies.
        h = hashlib.sha256()
        for part in (request.method, request.url, str(status or ""), message.header("Signature") or "", digest):
            h.update(part.encode("utf-8", "replace") + b"\n")
        return cls(
            message_id=h.hexdigest()[:MESSAGE_ID_HEX],
            direction=Direction.RESPONSE if status is not None else Direction.REQUEST,
            digest=digest,
            method=request.method,
            target_sha256=hashlib.sha256(request.url.encode("utf-8", "replace")).hexdigest(),
            target_uri=request.url,
            status=status,
            headers=message.headers,
            body=message.body,
        )


@dataclass(frozen=True)
class Checked:
    """A message after the checks that write nothing: refused (``reason``), or verified and
    waiting for its nonce to be recorded (``verified``)."""

    seen: Seen
    context: dict[str, Any]
    reason: Reason | None = None
    detail: str | None = None
    peer: Peer | None = None
    route: Route | None = None
    verified: VerifiedSignature | None = None
    keyid: str | None = None  # as the message names it (when no peer holds it, or before it verified)
    consume: bool = True  # record the nonce of a verified message (else only look it up)
    nonce_seen: bool | None = None

    @property
    def logged_keyid(self) -> str | None:
        if self.verified is not None:
            return self.verified.keyid
        return self.keyid if self.keyid is not None or self.peer is None else self.peer.keyid

    def replayed(self) -> Checked:
        return replace(
            self,
            verified=None,
            reason=Reason.REPLAYED_NONCE,
            detail="this keyid and nonce were already accepted",
            nonce_seen=True,
        )

    def verdict(self, seq: int | None) -> ExchangeVerdict:
        seen = self.seen
        return ExchangeVerdict(
            seen.message_id,
            seen.direction,
            self.verified is not None,
            self.reason,
            self.detail,
            self.peer.name if self.peer else None,
            self.logged_keyid,
            str(self.route) if self.route else None,
            seen.digest,
            seq,
            self.verified,
            False if self.verified is not None else self.nonce_seen,
        )

    def event(self) -> tuple[str, str, str, dict[str, Any]]:
        """``(actor, action, subject, data)`` of the audit entry: message id, peer, keyid, route
        pattern, digest and reason; never the body or the raw URL."""
        seen, peer, route = self.seen, self.peer, self.route
        data: dict[str, Any] = {
            "message_id": seen.message_id,
            "direction": seen.direction.value,
            "peer": peer.name if peer else None,
            "keyid": self.logged_keyid,
            "method": short(seen.method),
            "route": str(route) if route else None,
            "target_sha256": seen.target_sha256,
            "digest": seen.digest,
            **self.context,
        }
        if self.verified is None:
            data["reason"] = self.reason.value if self.reason else None
            data["detail"] = short(self.detail)
        actor = f"peer:{peer.name}" if peer else "system"
        return actor, self.action, seen.message_id, data

    @property
    def action(self) -> str:
        if self.verified is None:
            return REJECTED_ACTION
        return ACCEPTED_ACTION if self.consume else CHECKED_ACTION


def request_context(via: str, caller: str | None, consume: bool | None) -> dict[str, Any]:
    return {
        "via": via,
        **({"caller": caller} if caller else {}),
        **({"consume": consume} if consume is not None else {}),
    }


def response_context(response: HttpResponse, via: str, in_reply_to: str | None) -> dict[str, Any]:
    return {"via": via, "status": response.status, **({"in_reply_to": in_reply_to} if in_reply_to else {})}


def forward_failure_event(
    verdict: ExchangeVerdict, destination: str, reason: ForwardFailure, detail: str
) -> tuple[str, str, str, dict[str, Any]]:
    return (
        f"peer:{verdict.peer}",
        FORWARD_FAILED_ACTION,
        verdict.message_id,
        {
            "message_id": verdict.message_id,
            "peer": verdict.peer,
            "destination": destination,
            "route": verdict.route,
            "digest": verdict.digest,
            "reason": reason.value,
            "detail": short(detail),
        },
    )
