"""Use cases of people's accounts: login, MFA, TOTP enrolment, step-up, sessions, admin.

Every security event goes to the audit log through ``AuditService.record`` (``_event`` below is
the one place that calls it), in the same transaction as the change it describes. Callers
outside get one generic answer (``InvalidCredentials`` → 401, ``LoginThrottled`` → 429); the
precise reason is in the audit entry's ``data.reason``.

The argon2 verification runs outside any write transaction: on SQLite a write transaction
holds the database's one write lock, and holding it for a 30 ms hash would serialise logins.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, Engine, select

from audit.tables import audit_entries
from auth import lockout, recovery, totp
from auth import sessions as session_store
from auth import users as user_store
from auth.devices import DeviceTokens
from auth.errors import (
    InvalidCredentials,
    InvalidUsername,
    LoginThrottled,
    MfaNotEnrolled,
    SessionInvalid,
    StepUpRequired,
    UnknownUser,
)
from auth.lockout import ThrottlePolicy
from auth.passwords import PasswordHasher, PasswordPolicy, normalise_username
from auth.roles import MFA_REQUIRED_BY_DEFAULT, parse_role, scopes_for
from auth.sessions import ENROL, FULL, STEP_UP_SECONDS, Session, SessionPolicy
from auth.totp import Enrolment, SecretBox
from auth.users import User
from integrity.audit_service import AuditService
from integrity.db import READ_ONLY
from integrity.settings import Settings

# HKDF info strings: one subkey per use of the secrets key (domain separation, RFC 5869 §3.2).
_TOTP_KEY_INFO = b"bhxh-integrity/totp-secrets/v1"
_DEVICE_KEY_INFO = b"bhxh-integrity/device-tokens/v1"
_ATTEMPT_KEY_INFO = b"bhxh-integrity/unknown-username-tag/v1"
_ATTEMPT_TAG_HEX = 16
SECURITY_EVENTS_SHOWN = 20
_SECURITY_ACTION_PREFIXES = ("auth.", "admin.user.")
UNKNOWN_SUBJECT = "unknown-user"


@dataclass(frozen=True)
class AccountPolicy:
    session: SessionPolicy = field(default_factory=SessionPolicy)
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    password: PasswordPolicy = field(default_factory=PasswordPolicy)
    step_up_seconds: int = STEP_UP_SECONDS
    issuer: str = totp.ISSUER


@dataclass(frozen=True)
class UserPrincipal:
    """A fully logged-in person; the same fields as ``api.deps.Principal``."""

    id: str
    name: str
    scopes: frozenset[str]
    role: str
    kind: Literal["user"] = "user"

    @property
    def actor(self) -> str:
        return f"user:{self.name}"


@dataclass(frozen=True)
class LoginResult:
    """``token`` for a session, or ``mfa_required`` with ``mfa_token`` (half-logged-in)."""

    token: str | None = None
    mfa_required: bool = False
    mfa_token: str | None = None
    enrolment_required: bool = False  # the session may only enrol TOTP
    device_token: str | None = None


@dataclass(frozen=True)
class ConfirmedEnrolment:
    recovery_codes: list[str]  # shown once
    token: str  # the rotated session token


@dataclass(frozen=True)
class SecurityEvent:
    seq: int
    ts: str
    action: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class AccountStatus:
    username: str
    role: str
    mfa_enabled: bool
    mfa_required: bool
    enrolment_pending: bool
    session_kind: str
    session_expires_at: datetime
    step_up_valid: bool
    recovery_codes_left: int
    recovery_code_used_at: datetime | None


@dataclass(frozen=True)
class _Refusal:
    error: Exception


def derive_key(secrets_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secrets_key)


class AccountService:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        audit: AuditService,
        *,
        secrets_key: bytes,
        policy: AccountPolicy | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self.policy = policy or AccountPolicy()
        self.hasher = hasher or PasswordHasher()
        self._box = SecretBox(derive_key(secrets_key, _TOTP_KEY_INFO))
        self._devices = DeviceTokens(derive_key(secrets_key, _DEVICE_KEY_INFO))
        self._attempt_key = derive_key(secrets_key, _ATTEMPT_KEY_INFO)

    # --- the one path to the audit log ------------------------------------------------------

    def _event(
        self,
        conn: Connection,
        action: str,
        subject: str,
        data: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
        pii: dict[str, Any] | None = None,
    ) -> None:
        self.audit.record(actor or f"user:{subject}", action, subject, data or {}, pii, conn=conn)

    def _read(self) -> Any:
        return self.engine.connect().execution_options(**READ_ONLY)

    # --- admin ----------------------------------------------------------------------------

    def create_user(
        self,
        username: str,
        password: str,
        role: str,
        *,
        actor: str,
        reason: str,
        mfa_required: bool | None = None,
    ) -> User:
        clean_role = parse_role(role)
        name = normalise_username(username)
        need_mfa = clean_role in MFA_REQUIRED_BY_DEFAULT if mfa_required is None else mfa_required
        self.policy.password.check(password, mfa=need_mfa, username=name)
        hashed = self.hasher.hash(password)
        now = self.clock()
        with self.engine.begin() as conn:
            user = user_store.create(conn, name, clean_role, hashed, mfa_required=need_mfa, now=now)
            self._event(
                conn,
                "admin.user.created",
                name,
                {"role": clean_role, "mfa_required": need_mfa, "reason": reason, "admin": actor},
                actor=actor,
            )
        return user

    def _user_or_raise(self, conn: Connection, username: str) -> User:
        try:
            name = normalise_username(username)
        except InvalidUsername as exc:
            raise UnknownUser(f"no account {username!r}") from exc
        user = user_store.by_name(conn, name)
        if user is None:
            raise UnknownUser(f"no account {name!r}")
        return user

    def unlock(self, username: str, *, actor: str, reason: str) -> None:
        """Clear the account's failure counter (also the 100-failure disable)."""
        with self.engine.begin() as conn:
            user = self._user_or_raise(conn, username)
            cleared = lockout.reset(conn, lockout.account_key(user.username))
            self._event(
                conn,
                "admin.user.unlocked",
                user.username,
                {"reason": reason, "admin": actor, "counter_cleared": cleared},
                actor=actor,
            )

    def reset_mfa(self, username: str, *, actor: str, reason: str) -> None:
        """Forget TOTP and recovery codes, revoke every session, force re-enrolment."""
        now = self.clock()
        with self.engine.begin() as conn:
            user = self._user_or_raise(conn, username)
            had = totp.remove(conn, user.user_id)
            recovery.remove_all(conn, user.user_id)
            user_store.set_mfa_required(conn, user.user_id, True)
            user_store.set_recovery_used(conn, user.user_id, None)
            revoked = session_store.revoke_all(conn, user.user_id, now)
            session_store.revoke_challenges(conn, user.user_id, now)
            self._event(
                conn,
                "admin.user.mfa_reset",
                user.username,
                {"reason": reason, "admin": actor, "had_totp": had, "sessions_revoked": revoked},
                actor=actor,
            )

    # --- login ----------------------------------------------------------------------------

    def login(self, username: str, password: str, *, address: str, device_token: str | None = None) -> LoginResult:
        now = self.clock()
        try:
            name: str | None = normalise_username(username)
        except InvalidUsername:
            name = None
        # Read phase: the account, the device and the counters; no write lock held.
        with self._read() as conn:
            user = user_store.by_name(conn, name) if name else None
            device = self._devices.verify(device_token, user.user_id, now) if user else None
            block = self._blocked(conn, name, address, device.device_id if device else None, now)
        subject, pii, tag = self._subject(user, username, address)
        if block is not None:
            with self.engine.begin() as conn:
                self._event(
                    conn, "auth.login.failed", subject, {"reason": block[0], "stage": "password", **tag}, pii=pii
                )
            raise LoginThrottled(block[1])
        # The hash, outside any transaction; a dummy one when the account does not exist, so
        # both paths cost the same (enumeration resistance).
        check = self.hasher.verify(user.password_hash, password) if user else self.hasher.verify_dummy(password)
        if not check.ok or user is None:
            reason = "bad_password" if user else ("unknown_user" if name else "invalid_username")
            with self.engine.begin() as conn:
                self._count_failure(conn, name, address, device.device_id if device else None, now, subject, pii)
                self._event(conn, "auth.login.failed", subject, {"reason": reason, "stage": "password", **tag}, pii=pii)
            raise InvalidCredentials("invalid username or password")
        new_hash = self.hasher.hash(password) if check.needs_rehash else None
        with self.engine.begin() as conn:
            if new_hash is not None:
                user_store.set_password_hash(conn, user.user_id, new_hash)
                self._event(conn, "auth.password.rehashed", user.username, {})
            if totp.status(conn, user.user_id).active:
                mfa_token = session_store.create_challenge(conn, user.user_id, now)
                self._event(conn, "auth.mfa.challenged", user.username, {"device_known": device is not None}, pii=pii)
                return LoginResult(mfa_required=True, mfa_token=mfa_token)
            kind = ENROL if user.mfa_required else FULL
            return self._open_session(conn, user, kind, now, device, "password", pii, mfa_at=None)

    def complete_mfa(
        self,
        mfa_token: str,
        *,
        code: str | None = None,
        recovery_code: str | None = None,
        address: str,
        device_token: str | None = None,
    ) -> LoginResult:
        now = self.clock()
        with self.engine.begin() as conn:
            outcome = self._complete_mfa(conn, mfa_token, code, recovery_code, address, device_token, now)
        if isinstance(outcome, _Refusal):
            raise outcome.error
        return outcome

    def _complete_mfa(
        self,
        conn: Connection,
        mfa_token: str,
        code: str | None,
        recovery_code: str | None,
        address: str,
        device_token: str | None,
        now: datetime,
    ) -> LoginResult | _Refusal:
        challenge = session_store.find_challenge(conn, mfa_token, now)
        user = user_store.by_id(conn, challenge.user_id) if challenge else None
        if challenge is None or user is None:
            addr_block = lockout.check(conn, lockout.address_key(address), now, self.policy.throttle)
            if addr_block is not None:
                self._event(
                    conn,
                    "auth.login.failed",
                    UNKNOWN_SUBJECT,
                    {"reason": "throttled_address", "stage": "mfa"},
                    pii={"address": address},
                )
                return _Refusal(LoginThrottled(addr_block.retry_after))
            self._record_address_failure(conn, address, now)
            self._event(
                conn,
                "auth.login.failed",
                UNKNOWN_SUBJECT,
                {"reason": "mfa_token_invalid", "stage": "mfa"},
                pii={"address": address},
            )
            return _Refusal(InvalidCredentials("invalid or expired MFA token"))
        device = self._devices.verify(device_token, user.user_id, now)
        pii = {"address": address}
        block = self._blocked(conn, user.username, address, device.device_id if device else None, now)
        if block is not None:
            self._event(conn, "auth.login.failed", user.username, {"reason": block[0], "stage": "mfa"}, pii=pii)
            return _Refusal(LoginThrottled(block[1]))
        method, reason, remaining = self._second_factor(conn, user, code, recovery_code, now)
        if reason is None and not session_store.consume_challenge(conn, challenge, now):
            reason = "mfa_token_reused"
        if reason is not None:
            session_store.fail_challenge(conn, challenge)
            self._count_failure(
                conn, user.username, address, device.device_id if device else None, now, user.username, pii
            )
            self._event(conn, "auth.login.failed", user.username, {"reason": reason, "stage": "mfa"}, pii=pii)
            return _Refusal(InvalidCredentials("invalid code"))
        if method == "recovery_code":
            self._recovery_used(conn, user, remaining, now)
        return self._open_session(conn, user, FULL, now, device, f"password+{method}", pii, mfa_at=now)

    def _second_factor(
        self, conn: Connection, user: User, code: str | None, recovery_code: str | None, now: datetime
    ) -> tuple[str, str | None, int | None]:
        """(method, failure reason or None, recovery codes left)."""
        if code and not recovery_code:
            verdict = totp.verify_and_consume(conn, self._box, user.user_id, code, now)
            return "totp", verdict.reason, None
        if recovery_code and not code:
            used = recovery.use(conn, user.user_id, recovery_code, now)
            return "recovery_code", used.reason, used.remaining
        return "none", "no_second_factor_given", None

    def _recovery_used(self, conn: Connection, user: User, remaining: int | None, now: datetime) -> None:
        user_store.set_recovery_used(conn, user.user_id, now)
        self._event(conn, "auth.recovery.used", user.username, {"remaining": remaining})

    def _open_session(
        self,
        conn: Connection,
        user: User,
        kind: str,
        now: datetime,
        device: Any,
        method: str,
        pii: dict[str, Any] | None,
        *,
        mfa_at: datetime | None,
    ) -> LoginResult:
        lockout.reset(conn, lockout.account_key(user.username))
        if device is not None:
            lockout.reset(conn, lockout.device_key(device.device_id))
        issued = session_store.create(conn, user.user_id, kind, now, self.policy.session, mfa_at=mfa_at)
        device_token = self._devices.issue(user.user_id, now, device.device_id if device else None)
        self._event(
            conn,
            "auth.login.succeeded",
            user.username,
            {"method": method, "session": kind, "device_known": device is not None},
            pii=pii,
        )
        return LoginResult(token=issued.token, enrolment_required=kind == ENROL, device_token=device_token)

    # --- throttling -------------------------------------------------------------------------

    def _blocked(
        self, conn: Connection, name: str | None, address: str, device_id: str | None, now: datetime
    ) -> tuple[str, int] | None:
        """(reason, retry-after) if a counter refuses this attempt. A known device passes the
        account's temporary delay and the address limit, but not the 100-failure disable."""
        policy = self.policy.throttle
        if name is not None:
            acct = lockout.check(conn, lockout.account_key(name), now, policy)
            if acct is not None and (acct.disabled or device_id is None):
                return ("account_disabled" if acct.disabled else "throttled_account", acct.retry_after)
        if device_id is not None:
            dev = lockout.check(conn, lockout.device_key(device_id), now, policy)
            return ("throttled_device", dev.retry_after) if dev is not None else None
        addr = lockout.check(conn, lockout.address_key(address), now, policy)
        if addr is not None:
            return ("throttled_address", addr.retry_after)
        return None

    def _record_address_failure(self, conn: Connection, address: str, now: datetime) -> None:
        failure = lockout.record_address_failure(conn, lockout.address_key(address), now, self.policy.throttle)
        if failure.newly_locked:
            self._event(
                conn,
                "auth.locked",
                "address",
                {
                    "scope": "address",
                    "failures": failure.failures,
                    "until": failure.locked_until.isoformat() if failure.locked_until else None,
                },
                actor="system",
                pii={"address": address},
            )

    def _count_failure(
        self,
        conn: Connection,
        name: str | None,
        address: str,
        device_id: str | None,
        now: datetime,
        subject: str,
        pii: dict[str, Any] | None,
    ) -> None:
        policy = self.policy.throttle
        if device_id is not None:
            # A known device's failures count against the device, not the account or address.
            failure = lockout.record_account_failure(conn, lockout.device_key(device_id), now, policy)
            scope = "device"
        else:
            self._record_address_failure(conn, address, now)
            if name is None:
                return
            failure = lockout.record_account_failure(conn, lockout.account_key(name), now, policy)
            scope = "account"
        if failure.newly_locked:
            self._event(
                conn,
                "auth.locked",
                subject,
                {
                    "scope": scope,
                    "failures": failure.failures,
                    "disabled": failure.disabled,
                    "until": failure.locked_until.isoformat() if failure.locked_until else None,
                },
                actor="system",
                pii=pii,
            )

    def _subject(self, user: User | None, typed: str, address: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        """(subject, personal data, extra data) of a login event. An unknown name may be a
        password typed into the wrong box, so it is stored nowhere, not even as personal data:
        only a keyed fingerprint, which lets an auditor see that attempts repeat a name."""
        if user is None:
            tag = hmac.new(self._attempt_key, typed.strip().casefold().encode(), hashlib.sha256).hexdigest()
            return UNKNOWN_SUBJECT, {"address": address}, {"attempted": tag[:_ATTEMPT_TAG_HEX]}
        return user.username, {"address": address}, {}

    # --- sessions -------------------------------------------------------------------------

    def _session(self, token: str, *, allow_enrol: bool = False) -> tuple[Session, User]:
        now = self.clock()
        with self._read() as conn:
            session = session_store.resolve(conn, token, now, self.policy.session)
            user = user_store.by_id(conn, session.user_id) if session else None
        if session is None or user is None or (not session.full and not allow_enrol):
            raise SessionInvalid("no valid session")
        if session_store.needs_touch(session, now):
            with self.engine.begin() as conn:
                session_store.touch(conn, session, now)
        return session, user

    def _principal(self, user: User) -> UserPrincipal:
        return UserPrincipal(user.user_id, user.username, scopes_for(user.role), user.role)

    def authenticate_session(self, token: str) -> UserPrincipal | None:
        """The person behind a full session token; None for anything else, including an MFA
        token (half-logged-in) and an enrolment-only session."""
        try:
            _, user = self._session(token)
        except SessionInvalid:
            return None
        return self._principal(user)

    def require_step_up(self, token: str) -> UserPrincipal:
        """The person, if the session passed a second factor within the step-up window."""
        session, user = self._session(token)
        if not session.has_recent_mfa(self.clock(), self.policy.step_up_seconds):
            raise StepUpRequired(
                f"this operation needs a second factor within the last {self.policy.step_up_seconds // 60} minutes"
            )
        return self._principal(user)

    def step_up(self, token: str, *, code: str | None = None, recovery_code: str | None = None, address: str) -> str:
        """Check a second factor for a live session; returns the rotated session token."""
        session, user = self._session(token)
        now = self.clock()
        with self.engine.begin() as conn:
            outcome = self._step_up(conn, session, user, code, recovery_code, address, now)
        if isinstance(outcome, _Refusal):
            raise outcome.error
        return outcome

    def _step_up(
        self,
        conn: Connection,
        session: Session,
        user: User,
        code: str | None,
        recovery_code: str | None,
        address: str,
        now: datetime,
    ) -> str | _Refusal:
        pii = {"address": address}
        if not totp.status(conn, user.user_id).active:
            return _Refusal(MfaNotEnrolled("enrol TOTP first"))
        acct = lockout.check(conn, lockout.account_key(user.username), now, self.policy.throttle)
        if acct is not None:
            self._event(conn, "auth.mfa.stepup.failed", user.username, {"reason": "throttled_account"}, pii=pii)
            return _Refusal(LoginThrottled(acct.retry_after))
        method, reason, remaining = self._second_factor(conn, user, code, recovery_code, now)
        if reason is not None:
            failure = lockout.record_account_failure(
                conn, lockout.account_key(user.username), now, self.policy.throttle
            )
            self._event(
                conn, "auth.mfa.stepup.failed", user.username, {"reason": reason, "failures": failure.failures}, pii=pii
            )
            return _Refusal(InvalidCredentials("invalid code"))
        if method == "recovery_code":
            self._recovery_used(conn, user, remaining, now)
        lockout.reset(conn, lockout.account_key(user.username))
        issued = session_store.rotate(conn, session, now, self.policy.session, mfa_at=now)
        self._event(conn, "auth.mfa.stepup.succeeded", user.username, {"method": method}, pii=pii)
        return issued.token

    def logout(self, token: str) -> None:
        session, user = self._session(token, allow_enrol=True)
        with self.engine.begin() as conn:
            session_store.revoke(conn, session.token_hash, self.clock())
            self._event(conn, "auth.logout", user.username, {})

    def status(self, token: str) -> AccountStatus:
        session, user = self._session(token, allow_enrol=True)
        now = self.clock()
        with self._read() as conn:
            state = totp.status(conn, user.user_id)
            left = recovery.remaining(conn, user.user_id)
        return AccountStatus(
            username=user.username,
            role=user.role,
            mfa_enabled=state.active,
            mfa_required=user.mfa_required,
            enrolment_pending=state.pending,
            session_kind=session.kind,
            session_expires_at=session.expires_at,
            step_up_valid=session.has_recent_mfa(now, self.policy.step_up_seconds),
            recovery_codes_left=left,
            recovery_code_used_at=user.recovery_used_at,
        )

    def security_events(self, token: str, limit: int = SECURITY_EVENTS_SHOWN) -> list[SecurityEvent]:
        """The account's recent security events, newest first, from the audit log."""
        _, user = self._session(token, allow_enrol=True)
        with self._read() as conn:
            rows = conn.execute(
                select(audit_entries.c.seq, audit_entries.c.ts, audit_entries.c.action, audit_entries.c.data)
                .where(audit_entries.c.subject == user.username)
                .order_by(audit_entries.c.seq.desc())
                .limit(limit * 3)
            ).all()
        events = [
            SecurityEvent(r.seq, r.ts, r.action, json.loads(r.data))
            for r in rows
            if r.action.startswith(_SECURITY_ACTION_PREFIXES)
        ]
        return events[:limit]

    # --- TOTP enrolment, recovery codes, password -----------------------------------------

    def begin_totp_enrolment(self, token: str) -> Enrolment:
        session, user = self._session(token, allow_enrol=True)
        now = self.clock()
        with self.engine.begin() as conn:
            # Replacing an active second factor is an MFA change: it needs a fresh step-up.
            if totp.status(conn, user.user_id).active and not session.has_recent_mfa(now, self.policy.step_up_seconds):
                raise StepUpRequired("replacing the second factor needs a recent step-up")
            secret = totp.new_secret()
            totp.start_enrolment(conn, self._box, user.user_id, secret, now)
            self._event(conn, "auth.mfa.enrolment_started", user.username, {})
        return totp.enrolment_for(secret, user.username, self.policy.issuer)

    def confirm_totp_enrolment(self, token: str, code: str) -> ConfirmedEnrolment:
        session, user = self._session(token, allow_enrol=True)
        now = self.clock()
        with self.engine.begin() as conn:
            outcome = self._confirm(conn, session, user, code, now)
        if isinstance(outcome, _Refusal):
            raise outcome.error
        return outcome

    def _confirm(
        self, conn: Connection, session: Session, user: User, code: str, now: datetime
    ) -> ConfirmedEnrolment | _Refusal:
        acct = lockout.check(conn, lockout.account_key(user.username), now, self.policy.throttle)
        if acct is not None:
            return _Refusal(LoginThrottled(acct.retry_after))
        match = totp.confirm_enrolment(conn, self._box, user.user_id, code, now)
        if not match.ok:
            lockout.record_account_failure(conn, lockout.account_key(user.username), now, self.policy.throttle)
            self._event(conn, "auth.mfa.enrolment_failed", user.username, {"reason": "bad_totp"})
            return _Refusal(InvalidCredentials("invalid code"))
        codes = recovery.replace_all(conn, user.user_id, now)
        user_store.set_recovery_used(conn, user.user_id, None)
        # An MFA change revokes every other session; this one is rotated and now counts as
        # having passed the second factor.
        revoked = session_store.revoke_all(conn, user.user_id, now, keep=session.token_hash)
        issued = session_store.rotate(conn, session, now, self.policy.session, kind=FULL, mfa_at=now)
        self._event(conn, "auth.mfa.enrolled", user.username, {"method": "totp", "sessions_revoked": revoked})
        return ConfirmedEnrolment(codes, issued.token)

    def regenerate_recovery_codes(self, token: str) -> list[str]:
        session, user = self._session(token)
        now = self.clock()
        if not session.has_recent_mfa(now, self.policy.step_up_seconds):
            raise StepUpRequired("new recovery codes need a recent second factor")
        with self.engine.begin() as conn:
            if not totp.status(conn, user.user_id).active:
                raise MfaNotEnrolled("enrol TOTP first")
            codes = recovery.replace_all(conn, user.user_id, now)
            user_store.set_recovery_used(conn, user.user_id, None)
            self._event(conn, "auth.recovery.regenerated", user.username, {"count": len(codes)})
        return codes

    def change_password(self, token: str, current: str, new: str, *, address: str) -> str:
        """Change the password; every session is revoked and a new one returned."""
        session, user = self._session(token)
        with self._read() as conn:
            has_mfa = totp.status(conn, user.user_id).active
        self.policy.password.check(new, mfa=has_mfa, username=user.username)
        if not self.hasher.verify(user.password_hash, current).ok:
            now = self.clock()
            with self.engine.begin() as conn:
                lockout.record_account_failure(conn, lockout.account_key(user.username), now, self.policy.throttle)
                self._event(
                    conn,
                    "auth.password.change_failed",
                    user.username,
                    {"reason": "bad_password"},
                    pii={"address": address},
                )
            raise InvalidCredentials("invalid password")
        hashed = self.hasher.hash(new)
        now = self.clock()
        with self.engine.begin() as conn:
            user_store.set_password_hash(conn, user.user_id, hashed, now)
            revoked = session_store.revoke_all(conn, user.user_id, now)
            issued = session_store.create(
                conn,
                user.user_id,
                session.kind,
                now,
                self.policy.session,
                mfa_at=session.mfa_at,
                expires_at=session.expires_at,
            )
            self._event(
                conn, "auth.password.changed", user.username, {"sessions_revoked": revoked}, pii={"address": address}
            )
        return issued.token


def build_account_service(
    settings: Settings, engine: Engine, clock: Callable[[], datetime], audit: AuditService, secrets_key: bytes
) -> AccountService:
    """The service as ``build_state`` wires it (session limits from ``BHXH_SESSION_*``)."""
    policy = AccountPolicy(session=SessionPolicy(settings.session_idle_seconds, settings.session_absolute_seconds))
    return AccountService(engine, clock, audit, secrets_key=secrets_key, policy=policy)


__all__ = [
    "AccountPolicy",
    "AccountService",
    "AccountStatus",
    "ConfirmedEnrolment",
    "LoginResult",
    "SecurityEvent",
    "UserPrincipal",
    "build_account_service",
]
