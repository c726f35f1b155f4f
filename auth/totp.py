"""TOTP second factor (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps, ±1 step of drift).

The code arithmetic is pyotp's; what is ours is the storage: secrets encrypted at rest with
AES-GCM, bound to their user by the associated data, and the replay guard, which stores the
last accepted time step and accepts a newer one only through one conditional UPDATE, so two
concurrent uses of one code give exactly one success (RFC 6238 §5.2: "the verifier MUST NOT
accept the second attempt of the OTP after the successful validation has been issued").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, delete, insert, select, update

from auth.errors import EnrolmentNotStarted, SecretUnreadable
from auth.tables import totp_credentials

SECRET_BYTES = 20  # 160 bits, RFC 4226 §4 recommendation
DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1
ISSUER = "BHXH"
SECRET_KEY_BYTES = 32
_NONCE_BYTES = 12
_AAD_PREFIX = b"bhxh-integrity/totp-secret/v1|"
NO_STEP = -1


class SecretBox:
    """AES-256-GCM for secrets at rest; the user id is associated data, so a ciphertext copied
    onto another user's row does not decrypt."""

    def __init__(self, key: bytes) -> None:
        if len(key) != SECRET_KEY_BYTES:
            raise ValueError("the secrets key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, user_id: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, _AAD_PREFIX + user_id.encode())

    def open(self, sealed: bytes, user_id: str) -> bytes:
        if len(sealed) <= _NONCE_BYTES:
            raise SecretUnreadable("stored secret is truncated")
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _AAD_PREFIX + user_id.encode())
        except InvalidTag as exc:
            raise SecretUnreadable("stored secret failed authentication") from exc


@dataclass(frozen=True)
class Enrolment:
    """What the user needs to add the account to an authenticator app (shown once)."""

    secret_b32: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class TotpMatch:
    """Verdict of checking a code: the RFC 6238 time step it belongs to, or None."""

    step: int | None

    @property
    def ok(self) -> bool:
        return self.step is not None


def time_step(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def _b32(secret: bytes) -> str:
    return base64.b32encode(secret).decode().rstrip("=")


def _totp(secret: bytes) -> pyotp.TOTP:
    return pyotp.TOTP(_b32(secret), digits=DIGITS, digest=hashlib.sha1, interval=STEP_SECONDS)


def code_at(secret: bytes, step: int) -> str:
    return _totp(secret).generate_otp(step)


def match_code(secret: bytes, code: str, now: datetime) -> TotpMatch:
    """The step (now ±1) whose code equals ``code``; every candidate is compared in constant time."""
    candidate = code.strip().replace(" ", "")
    if len(candidate) != DIGITS or not candidate.isascii() or not candidate.isdigit():
        return TotpMatch(None)
    totp = _totp(secret)
    current = time_step(now)
    found: int | None = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), candidate):
            found = step  # the latest matching step wins; all are checked either way
    return TotpMatch(found)


def enrolment_for(secret: bytes, username: str, issuer: str = ISSUER) -> Enrolment:
    uri = _totp(secret).provisioning_uri(name=username, issuer_name=issuer)
    out = io.BytesIO()
    # A standalone SVG document (with its namespace), usable inline or as a data: image.
    segno.make(uri, error="m").save(
        out, kind="svg", scale=4, xmldecl=False, svgns=True, svgclass=None, lineclass=None, dark="#000", light="#fff"
    )
    return Enrolment(_b32(secret), uri, out.getvalue().decode())


# --- storage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TotpState:
    active: bool
    pending: bool
    last_step: int


def status(conn: Connection, user_id: str) -> TotpState:
    row = conn.execute(select(totp_credentials).where(totp_credentials.c.user_id == user_id)).first()
    if row is None:
        return TotpState(False, False, NO_STEP)
    m = row._mapping
    return TotpState(m["secret_ct"] is not None, m["pending_ct"] is not None, m["last_step"])


def start_enrolment(conn: Connection, box: SecretBox, user_id: str, secret: bytes, now: datetime) -> None:
    """Store ``secret`` as pending; the active secret (if any) keeps working until confirmed."""
    sealed = box.seal(secret, user_id)
    done = conn.execute(
        update(totp_credentials)
        .where(totp_credentials.c.user_id == user_id)
        .values(pending_ct=sealed, pending_created_at=now)
    ).rowcount
    if not done:
        conn.execute(
            insert(totp_credentials).values(
                user_id=user_id,
                secret_ct=None,
                confirmed_at=None,
                pending_ct=sealed,
                pending_created_at=now,
                last_step=NO_STEP,
            )
        )


def confirm_enrolment(conn: Connection, box: SecretBox, user_id: str, code: str, now: datetime) -> TotpMatch:
    """Activate the pending secret if ``code`` matches it. The confirming step becomes the
    replay floor, so the enrolment code cannot be used again to log in."""
    row = conn.execute(select(totp_credentials.c.pending_ct).where(totp_credentials.c.user_id == user_id)).first()
    if row is None or row.pending_ct is None:
        raise EnrolmentNotStarted("no TOTP enrolment is pending: start one first")
    pending = bytes(row.pending_ct)
    match = match_code(box.open(pending, user_id), code, now)
    if not match.ok:
        return match
    swapped = conn.execute(
        update(totp_credentials)
        .where(totp_credentials.c.user_id == user_id, totp_credentials.c.pending_ct == pending)
        .values(secret_ct=pending, pending_ct=None, pending_created_at=None, confirmed_at=now, last_step=match.step)
    ).rowcount
    # A concurrent confirmation with the same code already took it.
    return match if swapped == 1 else TotpMatch(None)


@dataclass(frozen=True)
class TotpVerdict:
    """Outcome of a login/step-up code: ``ok``, else ``reason`` for the audit log."""

    ok: bool
    reason: str | None = None
    step: int | None = None


def verify_and_consume(conn: Connection, box: SecretBox, user_id: str, code: str, now: datetime) -> TotpVerdict:
    row = conn.execute(select(totp_credentials.c.secret_ct).where(totp_credentials.c.user_id == user_id)).first()
    if row is None or row.secret_ct is None:
        return TotpVerdict(False, "totp_not_enrolled")
    match = match_code(box.open(bytes(row.secret_ct), user_id), code, now)
    if match.step is None:
        return TotpVerdict(False, "bad_totp")
    # The replay guard: one atomic compare-and-set. A code of this step or an earlier one
    # finds last_step >= step and updates nothing.
    taken = conn.execute(
        update(totp_credentials)
        .where(totp_credentials.c.user_id == user_id, totp_credentials.c.last_step < match.step)
        .values(last_step=match.step)
    ).rowcount
    if taken != 1:
        return TotpVerdict(False, "replayed_totp", match.step)
    return TotpVerdict(True, None, match.step)


def remove(conn: Connection, user_id: str) -> bool:
    """Forget the user's TOTP (admin reset); True if there was one."""
    return bool(conn.execute(delete(totp_credentials).where(totp_credentials.c.user_id == user_id)).rowcount)
