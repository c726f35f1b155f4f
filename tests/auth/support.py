"""Builders shared by the account tests (auth, integrity, api): a real audit log, a fast
password hasher, a movable clock and TOTP codes computed the way an authenticator app does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import threading
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from auth.lockout import ThrottlePolicy
from auth.passwords import PasswordCheck, PasswordHasher
from integrity.accounts import AccountPolicy, AccountService
from integrity.audit_service import AuditService
from integrity.clock import FrozenClock

SECRETS_KEY = bytes(range(32))
STRONG = "correct horse battery staple"  # 28 characters, not on the blocklist
ADDRESS = "203.0.113.7"


def fast_hasher() -> PasswordHasher:
    # Same algorithm, tiny cost: tests prove behaviour, bench/ measures the real parameters.
    return PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)


class CountingHasher(PasswordHasher):
    """The fast hasher, counting its verifications (dummy ones included): how a test sees how
    many attempts reached argon2."""

    def __init__(self) -> None:
        super().__init__(memory_kib=1024, time_cost=1, parallelism=1)
        self.verifications = 0
        self._count_lock = threading.Lock()

    def verify(self, stored: str, password: str) -> PasswordCheck:
        with self._count_lock:
            self.verifications += 1
        return super().verify(stored, password)


def make_audit(engine: Engine, clock: FrozenClock) -> AuditService:
    return AuditService(
        engine,
        clock=clock,
        log_id="test",
        checkpoint_key=Ed25519PrivateKey.generate(),
        checkpoint_key_name="test-log",
        checkpoint_every=10_000,
        checkpoint_seconds=3600,
    )


def make_accounts(
    engine: Engine,
    clock: FrozenClock | None = None,
    *,
    throttle: ThrottlePolicy | None = None,
    hasher: PasswordHasher | None = None,
) -> AccountService:
    clock = clock or FrozenClock()
    policy = AccountPolicy(throttle=throttle or ThrottlePolicy())
    return AccountService(
        engine,
        clock,
        make_audit(engine, clock),
        secrets_key=SECRETS_KEY,
        policy=policy,
        hasher=hasher or fast_hasher(),
    )


def secret_from_uri(uri: str) -> bytes:
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def rfc6238(secret: bytes, step: int) -> str:
    """RFC 6238 / RFC 4226 written out independently of pyotp (HOTP with T as the counter)."""
    mac = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def step_of(clock: FrozenClock) -> int:
    return int(clock().timestamp()) // 30


def enrolled(
    accounts: AccountService, clock: FrozenClock, name: str = "alice", role: str = "officer"
) -> tuple[bytes, list[str], str]:
    """Create ``name`` (MFA required), enrol TOTP as a person does; returns (secret, recovery
    codes, full session). The clock moves on a step, so the next code is not the one just used."""
    accounts.create_user(name, STRONG, role, actor="user:root", reason="new officer")
    first = accounts.login(name, STRONG, address=ADDRESS)
    assert first.enrolment_required and first.token
    secret = secret_from_uri(accounts.begin_totp_enrolment(first.token).otpauth_uri)
    done = accounts.confirm_totp_enrolment(first.token, rfc6238(secret, step_of(clock)))
    clock.advance(30)
    return secret, done.recovery_codes, done.token


def logged(accounts: AccountService, action: str) -> list[Any]:
    """The audit entries of ``accounts``' log with this action, oldest first."""
    return [e for e in accounts.audit.entries() if e.action == action]  # type: ignore[attr-defined]


def wire_accounts(
    service: object, *, throttle: ThrottlePolicy | None = None, hasher: PasswordHasher | None = None
) -> AccountService:
    """Replace the wired AccountService of a tests.conftest Service with a fast-hashing one."""
    from auth.sessions import SessionPolicy

    state = service.state  # type: ignore[attr-defined]
    settings = service.settings  # type: ignore[attr-defined]
    policy = AccountPolicy(
        session=SessionPolicy(settings.session_idle_seconds, settings.session_absolute_seconds),
        throttle=throttle or ThrottlePolicy(),
    )
    existing = AccountService(
        state.engine,
        service.clock,
        state.audit,
        secrets_key=state.keys.secrets_key,  # type: ignore[attr-defined]
        policy=policy,
        hasher=hasher or fast_hasher(),
        refusals=state.refusals,
    )
    state.accounts = existing
    return existing
