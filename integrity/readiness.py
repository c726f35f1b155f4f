"""Whether this instance can do its work now (``GET /readyz``): each check is ok, warn or fail,
with a reason; any failure makes the instance not ready (503), so a load balancer stops
sending it traffic. A warning (a certificate close to its end) keeps it ready.

- ``database``: a round trip to the database; ``schema``: no migration pending;
- ``certificate:<purpose>:<key id>``: each certificate the service signs with (the receipt
  certificate and every active service key of the keystore that has one) has started and not
  expired (RFC 5280 §4.1.2.5); it warns ``BHXH_CERTIFICATE_WARN_DAYS`` before its end. The days
  left are also the gauge ``bhxh_certificate_days_left``;
- ``key_token``: when a PKCS#11 token is configured, it answers and this process is still
  logged in to it;
- ``audit_writer``: the audit log's group committer is running and no caller has waited on it
  longer than ``BHXH_AUDIT_WRITER_STALL_SECONDS`` (every acknowledged request waits for it).

The endpoint is unauthenticated: reasons name no token label or object id; a certificate is
named by its key id and purpose, which the JWKS publishes anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from integrity.audit_writer import WriterHealth
from integrity.metrics import CERTIFICATE_DAYS_LEFT
from integrity.migrate import pending
from signing.keystore import SERVICE_OWNER, KeyState, SigningKey, key_id_for
from signing.pkcs11 import KeyToken, TokenHealth
from signing.purposes import KeyPurpose

SECONDS_PER_DAY = 86_400


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    status: CheckStatus
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status.value, "reason": self.reason}


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, Check]

    @property
    def ready(self) -> bool:
        return all(c.status is not CheckStatus.FAIL for c in self.checks.values())

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {name: check.as_dict() for name, check in self.checks.items()}

    def failures(self) -> str:
        """One line naming every failed check and why."""
        return "; ".join(f"{name}: {c.reason}" for name, c in self.checks.items() if c.status is CheckStatus.FAIL)


@dataclass(frozen=True)
class SigningCertificate:
    """A certificate the service signs with, named as the JWKS names its key."""

    key: str  # the key id, the keystore's ``kid``
    purpose: KeyPurpose
    certificate: x509.Certificate

    @property
    def check_name(self) -> str:
        return f"certificate:{self.purpose.value}:{self.key}"

    def days_left(self, now: datetime) -> float:
        return (self.certificate.not_valid_after_utc - now).total_seconds() / SECONDS_PER_DAY


def signing_certificates(receipt: x509.Certificate, keystore: Iterable[SigningKey]) -> list[SigningCertificate]:
    """The receipt certificate (its key may be on the token, outside the keystore) and the
    certificate of every active key of the service's own in the keystore; people's keys are
    theirs to renew and do not make the service unready."""
    receipt_key = key_id_for(receipt.public_key())
    found = {receipt_key: SigningCertificate(receipt_key, KeyPurpose.RECEIPT, receipt)}
    for key in keystore:
        if key.state is KeyState.ACTIVE and key.owner == SERVICE_OWNER and key.certificate is not None:
            found.setdefault(key.kid, SigningCertificate(key.kid, key.purpose, key.certificate))
    return sorted(found.values(), key=lambda c: (c.purpose.value, c.key))


def certificate_check(cert: SigningCertificate, now: datetime, warn_days: int) -> Check:
    certificate = cert.certificate
    not_after = certificate.not_valid_after_utc
    if now < certificate.not_valid_before_utc:
        return Check(CheckStatus.FAIL, f"not valid before {certificate.not_valid_before_utc.isoformat()}")
    if now >= not_after:
        return Check(CheckStatus.FAIL, f"expired at {not_after.isoformat()}")
    days = cert.days_left(now)
    if days < warn_days:
        return Check(CheckStatus.WARN, f"expires in {days:.1f} days, at {not_after.isoformat()}: renew it")
    return Check(CheckStatus.OK, f"valid until {not_after.isoformat()} ({days:.0f} days)")


_published_lock = threading.Lock()
_published: set[tuple[str, str]] = set()


def publish_certificate_days(certificates: Iterable[SigningCertificate], now: datetime) -> None:
    """Set ``bhxh_certificate_days_left{key, purpose}`` for these certificates, and drop the
    series of certificates no longer used (a rotated key)."""
    with _published_lock:
        current: set[tuple[str, str]] = set()
        for cert in certificates:
            labels = (cert.key, cert.purpose.value)
            CERTIFICATE_DAYS_LEFT.labels(*labels).set(round(cert.days_left(now), 3))
            current.add(labels)
        for gone in _published - current:
            CERTIFICATE_DAYS_LEFT.remove(*gone)
        _published.clear()
        _published.update(current)


def database_checks(engine: Engine) -> dict[str, Check]:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        todo = pending(engine)
    except (SQLAlchemyError, OSError) as exc:
        return {"database": Check(CheckStatus.FAIL, f"unreachable: {type(exc).__name__}")}
    schema = (
        Check(CheckStatus.FAIL, "migrations pending: run `bhxh-integrity migrate`")
        if todo
        else Check(CheckStatus.OK, "all migrations applied")
    )
    return {"database": Check(CheckStatus.OK, "reachable"), "schema": schema}


def token_check(token: KeyToken) -> Check:
    health = token.check()
    if health is TokenHealth.LOGGED_IN:
        return Check(CheckStatus.OK, health.value)
    if health is TokenHealth.LOGGED_OUT:
        return Check(CheckStatus.FAIL, "logged out: no token key can sign; restart the instance to log in again")
    return Check(CheckStatus.FAIL, "unavailable: the token does not answer")


def writer_check(health: WriterHealth, stall_seconds: float) -> Check:
    if not health.alive:
        return Check(CheckStatus.FAIL, "the writer is not running: nothing can be logged")
    if health.stalled_seconds > stall_seconds:
        return Check(
            CheckStatus.FAIL,
            f"stuck: {health.waiting} caller(s) waiting for {health.stalled_seconds:.0f} s without a commit",
        )
    return Check(CheckStatus.OK, f"{health.waiting} caller(s) waiting" if health.waiting else "idle")


def assess(
    *,
    engine: Engine,
    now: datetime,
    certificates: Iterable[SigningCertificate],
    warn_days: int,
    token: KeyToken | None,
    writer: WriterHealth,
    stall_seconds: float,
) -> Readiness:
    """Run every check (see the module docstring) and publish the certificates' days left."""
    checks = database_checks(engine)
    certificates = list(certificates)
    for cert in certificates:
        checks[cert.check_name] = certificate_check(cert, now, warn_days)
    publish_certificate_days(certificates, now)
    if token is not None:
        checks["key_token"] = token_check(token)
    checks["audit_writer"] = writer_check(writer, stall_seconds)
    return Readiness(checks)
