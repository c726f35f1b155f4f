"""Use cases of people's accounts: login, MFA, TOTP enrolment, step-up, sessions, admin.

Every security event goes to the audit log through ``AuditService.record`` (``_event`` below is
the one place that calls it), in the same transaction as the change it describes. Callers
outside get one generic answer (``InvalidCredentials`` → 401, ``LoginThrottled`` → 429); the
precise reason is in the audit entry's ``data.reason``.

Every check of a secret (password at login or password change, TOTP or recovery code at
login, step-up or enrolment) first reserves its attempt on the lockout counters
(``auth.lockout.reserve_all``): a refused attempt never reaches the check, a reserved one is
counted as a failure until the secret proves right. The argon2 verification runs outside any
write transaction, after its reservation is committed: on SQLite a write transaction holds the
database's one write lock, and holding it for a 30 ms hash would serialise logins.
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
from auth import lockout, passkeys, recovery, totp
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
from integrity.lockout_events import locked_entries
from integrity.lockout_events import throttle_reason as _throttle_reason
from integrity.refusal_log import RefusalKind, RefusalRecorder
from integrity.settings import Settings

# HKDF info strings: one subkey per use of the secrets key (domain separation, RFC 5869 §3.2).
_TOTP_KEY_INFO = b"bhxh-integrity/totp-secrets/v1"
_DEVICE_KEY_INFO = b"bhxh-integrity/device-tokens/v1"
_ATTEMPT_KEY_INFO = b"bhxh-integrity/unknown-username-tag/v1"
_ATTEMPT_TAG_HEX = 16
SECURITY_EVENTS_SHOWN = 20
# A second factor checked elsewhere (a passkey): called once the attempt is reserved, in its
# transaction; returns (method, failure reason or None).
FactorCheck = Callable[[Connection, User, datetime], tuple[str, str | None]]
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


@dataclass(frozen=True)
class _Factor:
    """What a person offered as a second factor: one of a TOTP code, a recovery code, or a
    factor checked elsewhere (``FactorCheck``)."""

    code: str | None
    recovery_code: str | None
    factor: FactorCheck | None


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
        refusals: RefusalRecorder | None = None,
    ) -> None:
        self.engine = engine
        self.refusals = refusals
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

    def _one_by_one(self, address: str, reason: str) -> bool:
        """Whether an anonymous refusal (no known account, or refused by the throttle before
        any check) gets its own entry; past the per-address limit it is counted in a summary
        (integrity.refusal_log). A failure against a known account always has its own entry:
        the account's lockout bounds those."""
        return self.refusals is None or self.refusals.admit(RefusalKind.LOGIN, address, reason)

    def _flush_refusals(self) -> None:
        # Outside any transaction: the summaries take the audit log's group commit.
        if self.refusals is not None:
            self.refusals.flush_due()

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

    def unlock(self, username: str, *, actor: str, reason: str, approved_by: str | None = None) -> None:
        """Clear the account's failure counter (also the 100-failure disable). ``approved_by``:
        the admin who confirmed an operator's command (the actor itself when an admin acts)."""
        with self.engine.begin() as conn:
            user = self._user_or_raise(conn, username)
            cleared = lockout.reset(conn, lockout.account_key(user.username))
            self._event(
                conn,
                "admin.user.unlocked",
                user.username,
                {"reason": reason, "admin": approved_by or actor, "counter_cleared": cleared},
                actor=actor,
            )

    def reset_mfa(self, username: str, *, actor: str, reason: str, approved_by: str | None = None) -> None:
        """Forget TOTP and recovery codes, revoke every session, force re-enrolment."""
        now = self.clock()
        with self.engine.begin() as conn:
            user = self._user_or_raise(conn, username)
            had = totp.remove(conn, user.user_id)
            recovery.remove_all(conn, user.user_id)
            removed = passkeys.remove_all(conn, user.user_id)
            user_store.set_mfa_required(conn, user.user_id, True)
            user_store.set_recovery_used(conn, user.user_id, None)
            revoked = session_store.revoke_all(conn, user.user_id, now)
            session_store.revoke_challenges(conn, user.user_id, now)
            self._event(
                conn,
                "admin.user.mfa_reset",
                user.username,
                {
                    "reason": reason,
                    "admin": approved_by or actor,
                    "had_totp": had,
                    "passkeys": removed,
                    "sessions_revoked": revoked,
                },
                actor=actor,
            )

    def spend_totp(self, conn: Connection, user: User, code: str, now: datetime) -> str | None:
        """Check ``user``'s TOTP code and spend it (replay guard), in the caller's transaction:
        None when right, else the reason for the audit log. For second-factor checks outside
        a session (integrity/operator_auth.py), which do their own lockout accounting."""
        return totp.verify_and_consume(conn, self._box, user.user_id, code, now).reason

    # --- login ----------------------------------------------------------------------------

    def login(self, username: str, password: str, *, address: str, device_token: str | None = None) -> LoginResult:
        now = self.clock()
        try:
            name: str | None = normalise_username(username)
        except InvalidUsername:
            name = None
        # Reserve the attempt before the hash: one that a delay, the cap or the address limit
        # refuses never reaches argon2, and concurrent ones cannot all slip past one check.
        with self.engine.begin() as conn:
            user = user_store.by_name(conn, name) if name else None
            device = self._devices.verify(device_token, user.user_id, now) if user else None
            subject, pii, tag = self._subject(user, username, address)
            held = self._reserve(conn, name, address, device.device_id if device else None, now)
            if isinstance(held, lockout.Block) and self._one_by_one(address, _throttle_reason(held)):
                self._event(
                    conn,
                    "auth.login.failed",
                    subject,
                    {"reason": _throttle_reason(held), "stage": "password", **tag},
                    pii=pii,
                )
        if isinstance(held, lockout.Block):
            self._flush_refusals()
            raise LoginThrottled(held.retry_after)
        # The hash, outside any transaction; a dummy one when the account does not exist, so
        # both paths cost the same (enumeration resistance).
        check = self.hasher.verify(user.password_hash, password) if user else self.hasher.verify_dummy(password)
        if not check.ok or user is None:
            reason = "bad_password" if user else ("unknown_user" if name else "invalid_username")
            logged = user is not None or self._one_by_one(address, reason)
            with self.engine.begin() as conn:
                self._locked_events(conn, held, subject, address)  # the failure is already counted
                if logged:
                    self._event(
                        conn, "auth.login.failed", subject, {"reason": reason, "stage": "password", **tag}, pii=pii
                    )
            self._flush_refusals()
            raise InvalidCredentials("invalid username or password")
        new_hash = self.hasher.hash(password) if check.needs_rehash else None
        with self.engine.begin() as conn:
            if new_hash is not None:
                user_store.set_password_hash(conn, user.user_id, new_hash)
                self._event(conn, "auth.password.rehashed", user.username, {})
            if totp.status(conn, user.user_id).active:
                # The password alone completes nothing: its attempt is given back, and earlier
                # failures stand until the second factor passes.
                lockout.settle(conn, held, lockout.Outcome.PASSED)
                mfa_token = session_store.create_challenge(conn, user.user_id, now)
                self._event(conn, "auth.mfa.challenged", user.username, {"device_known": device is not None}, pii=pii)
                return LoginResult(mfa_required=True, mfa_token=mfa_token)
            kind = ENROL if user.mfa_required else FULL
            return self._open_session(conn, user, kind, now, device, "password", pii, held, mfa_at=None)

    def complete_mfa(
        self,
        mfa_token: str,
        *,
        code: str | None = None,
        recovery_code: str | None = None,
        factor: FactorCheck | None = None,
        address: str,
        device_token: str | None = None,
    ) -> LoginResult:
        now = self.clock()
        with self.engine.begin() as conn:
            outcome = self._complete_mfa(conn, mfa_token, code, recovery_code, factor, address, device_token, now)
        if isinstance(outcome, _Refusal):
            self._flush_refusals()
            raise outcome.error
        return outcome

    def _complete_mfa(
        self,
        conn: Connection,
        mfa_token: str,
        code: str | None,
        recovery_code: str | None,
        factor: FactorCheck | None,
        address: str,
        device_token: str | None,
        now: datetime,
    ) -> LoginResult | _Refusal:
        challenge = session_store.find_challenge(conn, mfa_token, now)
        user = user_store.by_id(conn, challenge.user_id) if challenge else None
        if challenge is None or user is None:
            # No account to count against: the source address takes the attempt.
            held = lockout.reserve_all(conn, [lockout.address_key(address)], now, self.policy.throttle)
            if isinstance(held, lockout.Block):
                if self._one_by_one(address, "throttled_address"):
                    self._event(
                        conn,
                        "auth.login.failed",
                        UNKNOWN_SUBJECT,
                        {"reason": "throttled_address", "stage": "mfa"},
                        pii={"address": address},
                    )
                return _Refusal(LoginThrottled(held.retry_after))
            self._locked_events(conn, held, UNKNOWN_SUBJECT, address)
            if self._one_by_one(address, "mfa_token_invalid"):
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
        # Reserved in this transaction, before the code is checked: the row stays locked until
        # commit, so concurrent codes for one account are checked one at a time.
        held = self._reserve(conn, user.username, address, device.device_id if device else None, now)
        if isinstance(held, lockout.Block):
            self._event(
                conn, "auth.login.failed", user.username, {"reason": _throttle_reason(held), "stage": "mfa"}, pii=pii
            )
            return _Refusal(LoginThrottled(held.retry_after))
        method, reason, remaining = self._second_factor(conn, user, code, recovery_code, factor, now)
        if reason is None and not session_store.consume_challenge(conn, challenge, now):
            reason = "mfa_token_reused"
        if reason is not None:
            session_store.fail_challenge(conn, challenge)
            self._locked_events(conn, held, user.username, address)
            self._event(conn, "auth.login.failed", user.username, {"reason": reason, "stage": "mfa"}, pii=pii)
            return _Refusal(InvalidCredentials("invalid code"))
        if method == "recovery_code":
            self._recovery_used(conn, user, remaining, now)
        return self._open_session(conn, user, FULL, now, device, f"password+{method}", pii, held, mfa_at=now)

    def _second_factor(
        self,
        conn: Connection,
        user: User,
        code: str | None,
        recovery_code: str | None,
        factor: FactorCheck | None,
        now: datetime,
    ) -> tuple[str, str | None, int | None]:
        """(method, failure reason or None, recovery codes left)."""
        if factor is not None:
            return (*factor(conn, user, now), None)
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
        held: tuple[lockout.Reservation, ...],
        *,
        mfa_at: datetime | None,
    ) -> LoginResult:
        # A completed sign-in: the account's consecutive failures start over (a known device's
        # too, when it was one); the address gets its attempt back.
        lockout.settle(conn, held, lockout.Outcome.AUTHENTICATED)
        lockout.reset(conn, lockout.account_key(user.username))
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

    def _reserve(
        self, conn: Connection, name: str | None, address: str, device_id: str | None, now: datetime
    ) -> tuple[lockout.Reservation, ...] | lockout.Block:
        """Reserve a sign-in attempt (password or second factor). A known device's attempt is
        counted on the device alone: it passes the account's temporary delay and the address
        limit, but not the 100-failure disable. Any other is counted on the account (when the
        name is well-formed, known or not) and on the address, account first."""
        policy = self.policy.throttle
        if device_id is not None:
            acct = lockout.check(conn, lockout.account_key(name), now, policy) if name else None
            if acct is not None and acct.disabled:
                return acct
            return lockout.reserve_all(conn, [lockout.device_key(device_id)], now, policy)
        keys = [lockout.account_key(name)] if name is not None else []
        return lockout.reserve_all(conn, [*keys, lockout.address_key(address)], now, policy)

    def _locked_events(
        self, conn: Connection, held: tuple[lockout.Reservation, ...], subject: str, address: str | None
    ) -> None:
        """``auth.locked`` for each counter that this failed attempt put into a delay or the disable."""
        pii = {"address": address} if address is not None else None
        for entry_subject, data in locked_entries(held, subject):
            self._event(conn, "auth.locked", entry_subject, data, actor="system", pii=pii)

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

    def step_up(
        self,
        token: str,
        *,
        code: str | None = None,
        recovery_code: str | None = None,
        factor: FactorCheck | None = None,
        address: str,
    ) -> str:
        """Check a second factor for a live session; returns the rotated session token."""
        session, user = self._session(token)
        now = self.clock()
        with self.engine.begin() as conn:
            outcome = self._step_up(conn, session, user, code, recovery_code, factor, address, now)
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
        factor: FactorCheck | None,
        address: str,
        now: datetime,
    ) -> str | _Refusal:
        checked = _Factor(code, recovery_code, factor)
        method = self._fresh_factor(conn, user, checked, address, now, "auth.mfa.stepup.failed", {})
        if isinstance(method, _Refusal):
            return method
        issued = session_store.rotate(conn, session, now, self.policy.session, mfa_at=now)
        self._event(conn, "auth.mfa.stepup.succeeded", user.username, {"method": method}, pii={"address": address})
        return issued.token

    def confirm_second_factor(
        self,
        username: str,
        *,
        code: str | None = None,
        factor: FactorCheck | None = None,
        address: str,
        purpose: str,
    ) -> UserPrincipal:
        """Check a fresh second factor of ``username`` (a TOTP code, or ``factor``: a passkey)
        for one operation, ``purpose`` (a signature activation): the step-up's check, reserved
        on the account's lockout and spending the code, without a session to rotate. Raises
        ``InvalidCredentials``, ``LoginThrottled``, ``MfaNotEnrolled`` or ``UnknownUser``."""
        now = self.clock()
        tag = {"purpose": purpose}
        with self.engine.begin() as conn:
            user = self._user_or_raise(conn, username)
            checked = _Factor(code, None, factor)
            method = self._fresh_factor(conn, user, checked, address, now, "auth.mfa.confirm.failed", tag)
            if not isinstance(method, _Refusal):
                self._event(conn, "auth.mfa.confirm.succeeded", user.username, {"method": method, **tag})
        if isinstance(method, _Refusal):
            raise method.error
        return self._principal(user)

    def _fresh_factor(
        self,
        conn: Connection,
        user: User,
        checked: _Factor,
        address: str,
        now: datetime,
        failed: str,
        tag: dict[str, str],
    ) -> str | _Refusal:
        """The method of a second factor checked now, once its attempt is reserved on the
        account's lockout; a refusal is logged as ``failed``. A pass resets the account's
        consecutive failures, as a completed sign-in does."""
        pii = {"address": address}
        if not totp.status(conn, user.user_id).active:
            return _Refusal(MfaNotEnrolled("enrol TOTP first"))
        held = lockout.reserve_all(conn, [lockout.account_key(user.username)], now, self.policy.throttle)
        if isinstance(held, lockout.Block):
            self._event(conn, failed, user.username, {"reason": _throttle_reason(held), **tag}, pii=pii)
            return _Refusal(LoginThrottled(held.retry_after))
        method, reason, remaining = self._second_factor(
            conn, user, checked.code, checked.recovery_code, checked.factor, now
        )
        if reason is not None:
            self._locked_events(conn, held, user.username, address)
            data = {"reason": reason, "failures": held[0].failure.failures, **tag}
            self._event(conn, failed, user.username, data, pii=pii)
            return _Refusal(InvalidCredentials("invalid code"))
        if method == "recovery_code":
            self._recovery_used(conn, user, remaining, now)
        lockout.settle(conn, held, lockout.Outcome.AUTHENTICATED)
        return method

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
        held = lockout.reserve_all(conn, [lockout.account_key(user.username)], now, self.policy.throttle)
        if isinstance(held, lockout.Block):
            return _Refusal(LoginThrottled(held.retry_after))
        match = totp.confirm_enrolment(conn, self._box, user.user_id, code, now)
        if not match.ok:
            self._locked_events(conn, held, user.username, None)
            self._event(conn, "auth.mfa.enrolment_failed", user.username, {"reason": "bad_totp"})
            return _Refusal(InvalidCredentials("invalid code"))
        # A code of the new secret proves nothing about the account's existing factors: the
        # attempt is given back, earlier failures stand.
        lockout.settle(conn, held, lockout.Outcome.PASSED)
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
        pii = {"address": address}
        # The current password is a guessable secret like the login's: same counter, reserved
        # before argon2, so a stolen session cannot guess it faster than a login could.
        with self.engine.begin() as conn:
            held = lockout.reserve_all(conn, [lockout.account_key(user.username)], self.clock(), self.policy.throttle)
            if isinstance(held, lockout.Block):
                reason = _throttle_reason(held)
                self._event(conn, "auth.password.change_failed", user.username, {"reason": reason}, pii=pii)
        if isinstance(held, lockout.Block):
            raise LoginThrottled(held.retry_after)
        if not self.hasher.verify(user.password_hash, current).ok:
            with self.engine.begin() as conn:
                self._locked_events(conn, held, user.username, address)
                self._event(conn, "auth.password.change_failed", user.username, {"reason": "bad_password"}, pii=pii)
            raise InvalidCredentials("invalid password")
        hashed = self.hasher.hash(new)
        now = self.clock()
        with self.engine.begin() as conn:
            # A password change is not a sign-in: the attempt is given back, earlier failures stand.
            lockout.settle(conn, held, lockout.Outcome.PASSED)
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
    settings: Settings,
    engine: Engine,
    clock: Callable[[], datetime],
    audit: AuditService,
    secrets_key: bytes,
    refusals: RefusalRecorder | None = None,
) -> AccountService:
    """The service as ``build_state`` wires it (session limits from ``BHXH_SESSION_*``)."""
    policy = AccountPolicy(session=SessionPolicy(settings.session_idle_seconds, settings.session_absolute_seconds))
    return AccountService(engine, clock, audit, secrets_key=secrets_key, policy=policy, refusals=refusals)


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
