"""Use cases of passkeys (W3C WebAuthn Level 3, verified by py_webauthn): register, name, list
and remove them; answer with one as the second factor at login, for a step-up, and to activate
a personal signature.

A passkey is the phishing-resistant option NIST SP 800-63B-4 asks AAL2 to offer: its signature
covers the origin the browser saw and the relying party id it was made for, so a look-alike
site gets an answer that is useless here. Both come from the settings
(``BHXH_WEBAUTHN_RP_ID``, ``BHXH_WEBAUTHN_ORIGIN``). Passkeys sit beside TOTP, never instead of
it: registering one needs an account with TOTP and a fresh step-up, and TOTP with recovery
codes stays the way back in when a device is lost.

Every check of an assertion goes through the account's lockout like a code does: the attempt
is reserved (``auth.lockout.reserve_all``) before the challenge is spent and the signature
verified: the accounts use cases do the reserving (``complete_mfa``, ``step_up``,
``confirm_second_factor``) and call back here (``integrity.accounts.FactorCheck``). A signature
counter that did not grow flags the passkey as cloned (WebAuthn L3 §6.1.1) and refuses it from
then on.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    options_to_json_dict,
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_authenticator_data,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    CollectedClientData,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from auth import passkeys as store
from auth import sessions as session_store
from auth import totp
from auth import users as user_store
from auth.errors import (
    InvalidCredentials,
    MfaNotEnrolled,
    PasskeyAlreadyRegistered,
    PasskeyNotFound,
    PasskeyRejected,
    SessionInvalid,
    StepUpRequired,
)
from auth.passkeys import Passkey, Purpose
from auth.users import User
from integrity.accounts import AccountService, FactorCheck, LoginResult, UserPrincipal
from integrity.db import READ_ONLY
from integrity.second_factor import SIGNATURE_ACTIVATION
from integrity.settings import Settings

RP_NAME = "BHXH"
# ES256 first: every platform authenticator offers it; Ed25519 and RS256 for the rest.
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
METHOD = "passkey"
_MAX_CREDENTIAL_CHARS = 64 * 1024  # a browser's answer is a few kilobytes


@dataclass(frozen=True)
class RelyingParty:
    rp_id: str
    origin: str
    name: str = RP_NAME

    @property
    def rp_id_hash(self) -> bytes:
        return hashlib.sha256(self.rp_id.encode()).digest()


@dataclass(frozen=True)
class PasskeyOptions:
    """What ``navigator.credentials.create``/``get`` takes, in its JSON form (WebAuthn L3
    §5.1.10, base64url for bytes), and the challenge in it (for a caller that keeps it)."""

    public_key: dict[str, Any]
    challenge: bytes


@dataclass(frozen=True)
class PasskeyUse:
    """A verified assertion: which passkey, whether it verified its user, its new counter."""

    passkey_id: str
    user_verified: bool
    sign_count: int


class Person(Protocol):
    """Whoever is signing: ``UserPrincipal`` and integrity.personal_signing's ``Person`` fit."""

    @property
    def name(self) -> str: ...


Credential = Mapping[str, Any] | str


class PasskeyService:
    def __init__(self, accounts: AccountService, relying_party: RelyingParty) -> None:
        self.accounts = accounts
        self.rp = relying_party

    # --- plumbing --------------------------------------------------------------------------

    def _event(
        self,
        conn: Connection,
        action: str,
        subject: str,
        data: dict[str, Any],
        pii: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        self.accounts.audit.record(actor or f"user:{subject}", action, subject, data, pii, conn=conn)

    def _read(self) -> Any:
        return self.accounts.engine.connect().execution_options(**READ_ONLY)

    def _person(self, token: str) -> UserPrincipal:
        person = self.accounts.authenticate_session(token)
        if person is None:
            raise SessionInvalid("no valid session")
        return person

    def _descriptors(self, keys: list[Passkey]) -> list[PublicKeyCredentialDescriptor]:
        return [PublicKeyCredentialDescriptor(id=k.credential_id) for k in keys]

    def _request_options(self, conn: Connection, user_id: str, purpose: Purpose, **kwargs: Any) -> PasskeyOptions:
        keys = [k for k in store.for_user(conn, user_id) if not k.flagged_clone]
        if not keys:
            raise MfaNotEnrolled("no passkey is registered on this account")
        challenge = store.new_challenge(conn, user_id, purpose, self.accounts.clock(), **kwargs)
        # Login asks for user verification where the authenticator can (the password is the
        # other factor); a step-up or a signature stands on the passkey alone, so it requires it.
        uv = UserVerificationRequirement.PREFERRED if purpose is Purpose.LOGIN else UserVerificationRequirement.REQUIRED
        options = generate_authentication_options(
            rp_id=self.rp.rp_id,
            challenge=challenge,
            timeout=store.CEREMONY_TIMEOUT_MS,
            allow_credentials=self._descriptors(keys),
            user_verification=uv,
        )
        return PasskeyOptions(options_to_json_dict(options), challenge)

    def _reason(
        self, client: CollectedClientData | None, rp_id_hash: bytes | None, uv: bool | None, need_uv: bool
    ) -> str:
        """Why py_webauthn refused an answer, for the audit log (it says so only in prose)."""
        if client is None:
            return "passkey_malformed"
        if client.origin != self.rp.origin:
            return "passkey_wrong_origin"
        if rp_id_hash is not None and not hmac.compare_digest(rp_id_hash, self.rp.rp_id_hash):
            return "passkey_wrong_rp_id"
        if need_uv and uv is False:
            return "passkey_user_not_verified"
        return "passkey_invalid"

    # --- the owner's list ------------------------------------------------------------------

    def list_passkeys(self, token: str) -> list[Passkey]:
        person = self._person(token)
        with self._read() as conn:
            return store.for_user(conn, person.id)

    def rename(self, token: str, passkey_id: str, name: str) -> Passkey:
        person = self._person(token)
        label = store.clean_name(name)
        with self.accounts.engine.begin() as conn:
            if not store.rename(conn, person.id, passkey_id, label):
                raise PasskeyNotFound("no such passkey on this account")
            self._event(conn, "auth.passkey.renamed", person.name, {"passkey_id": passkey_id}, {"name": label})
            found = store.by_id(conn, person.id, passkey_id)
        assert found is not None
        return found

    def remove(self, token: str, passkey_id: str) -> None:
        """Remove a passkey: an authenticator change, so it needs a fresh step-up; a refusal is
        logged too (a stolen session trying to strip the owner's factors is worth knowing)."""
        try:
            person = self.accounts.require_step_up(token)
        except StepUpRequired:
            person = self._person(token)
            with self.accounts.engine.begin() as conn:
                data = {"passkey_id": passkey_id, "reason": "step_up_required"}
                self._event(conn, "auth.passkey.removal_refused", person.name, data)
            raise
        with self.accounts.engine.begin() as conn:
            if not store.remove(conn, person.id, passkey_id):
                raise PasskeyNotFound("no such passkey on this account")
            self._event(conn, "auth.passkey.removed", person.name, {"passkey_id": passkey_id})

    # --- registration ----------------------------------------------------------------------

    def registration_options(self, token: str) -> PasskeyOptions:
        """Options for ``navigator.credentials.create``: needs TOTP and a fresh step-up (binding
        a new authenticator to an account asks for one already bound, SP 800-63B-4)."""
        person = self.accounts.require_step_up(token)
        now = self.accounts.clock()
        with self.accounts.engine.begin() as conn:
            if not totp.status(conn, person.id).active:
                raise MfaNotEnrolled("set up TOTP before adding a passkey")
            keys = store.for_user(conn, person.id)
            if len(keys) >= store.MAX_PASSKEYS:
                raise PasskeyRejected(f"an account holds at most {store.MAX_PASSKEYS} passkeys")
            challenge = store.new_challenge(conn, person.id, Purpose.REGISTER, now)
        options = generate_registration_options(
            rp_id=self.rp.rp_id,
            rp_name=self.rp.name,
            user_name=person.name,
            user_id=store.user_handle(person.id),
            user_display_name=person.name,
            challenge=challenge,
            timeout=store.CEREMONY_TIMEOUT_MS,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=self._descriptors(keys),
            supported_pub_key_algs=ALGORITHMS,
        )
        return PasskeyOptions(options_to_json_dict(options), challenge)

    def register(self, token: str, credential: Credential, name: str) -> Passkey:
        """Verify the browser's answer to ``registration_options`` and store the passkey. The
        challenge is spent whatever the outcome; every outcome is logged."""
        person = self.accounts.require_step_up(token)
        label = store.clean_name(name)
        now = self.accounts.clock()
        with self.accounts.engine.begin() as conn:
            outcome = self._register(conn, person, credential, label, now)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _register(
        self, conn: Connection, person: UserPrincipal, credential: Credential, label: str, now: datetime
    ) -> Passkey | Exception:
        def refused(reason: str, error: Exception | None = None) -> Exception:
            self._event(conn, "auth.passkey.registration_failed", person.name, {"reason": reason})
            return error or PasskeyRejected("the passkey was not accepted")

        parsed, client = _parse_registration(credential)
        if parsed is None or client is None:
            return refused("passkey_malformed")
        if not store.take_challenge(conn, client.challenge, person.id, Purpose.REGISTER, now):
            return refused("passkey_challenge_unknown")
        try:
            verified = verify_registration_response(
                credential=parsed,
                expected_challenge=client.challenge,
                expected_rp_id=self.rp.rp_id,
                expected_origin=self.rp.origin,
                require_user_verification=True,
                supported_pub_key_algs=ALGORITHMS,
            )
        except (WebAuthnException, ValueError):
            rp_hash, uv = _attested_flags(parsed)
            return refused(self._reason(client, rp_hash, uv, True))
        if store.count(conn, person.id) >= store.MAX_PASSKEYS:
            return refused("too_many_passkeys")
        transports = store.transports_text([t.value for t in parsed.response.transports or []])
        try:
            passkey = store.add(
                conn,
                person.id,
                verified.credential_id,
                label,
                verified.credential_public_key,
                verified.sign_count,
                transports,
                now,
            )
        except PasskeyAlreadyRegistered as exc:
            return refused("passkey_already_registered", exc)
        data = {
            "passkey_id": passkey.passkey_id,
            "aaguid": verified.aaguid,
            "transports": transports,
            "backed_up": verified.credential_backed_up,
        }
        self._event(conn, "auth.passkey.registered", person.name, data, {"name": label})
        return passkey

    # --- assertions: login, step-up, activation --------------------------------------------

    def login_options(self, mfa_token: str) -> PasskeyOptions:
        """Options for ``navigator.credentials.get`` answering the MFA challenge of a login
        whose password was right (``mfa_token``); only that account's passkeys are allowed."""
        now = self.accounts.clock()
        with self.accounts.engine.begin() as conn:
            challenge = session_store.find_challenge(conn, mfa_token, now)
            if challenge is None:
                raise InvalidCredentials("invalid or expired MFA token")
            return self._request_options(conn, challenge.user_id, Purpose.LOGIN)

    def complete_login(
        self, mfa_token: str, credential: Credential, *, address: str, device_token: str | None = None
    ) -> LoginResult:
        """The login's second factor is this assertion (``AccountService.complete_mfa``)."""
        check = self._factor(credential, Purpose.LOGIN, need_uv=False)
        return self.accounts.complete_mfa(mfa_token, factor=check, address=address, device_token=device_token)

    def step_up_options(self, token: str) -> PasskeyOptions:
        person = self._person(token)
        with self.accounts.engine.begin() as conn:
            return self._request_options(conn, person.id, Purpose.STEP_UP)

    def step_up(self, token: str, credential: Credential, *, address: str) -> str:
        """A step-up with a user-verifying passkey; returns the rotated session token."""
        check = self._factor(credential, Purpose.STEP_UP, need_uv=True)
        return self.accounts.step_up(token, factor=check, address=address)

    def activation_options(self, person: Person | str, *, challenge: bytes | None = None) -> PasskeyOptions:
        """Options to activate one personal signature. ``challenge`` is the activation's own
        (integrity.personal_signing: a digest over the activation and the document), so the
        passkey's signature covers what is being signed; without one, a random challenge. It is
        stored like every other: single use, a few minutes, this person, purpose "activate"."""
        with self.accounts.engine.begin() as conn:
            user = self._user(conn, person)
            return self._request_options(conn, user.user_id, Purpose.ACTIVATE, challenge=challenge)

    def verify_for_activation(
        self, user: Person | str, assertion: Credential, expected_challenge: bytes, *, address: str = "unknown"
    ) -> PasskeyUse:
        """Check that ``user`` is present and verified for one signature: ``assertion`` answers
        ``expected_challenge`` (issued by ``activation_options`` for this person, unused,
        unexpired), with user verification, from one of their passkeys. The attempt is reserved
        on the account's lockout before the check (``AccountService.confirm_second_factor``), and
        every outcome is logged. Raises ``InvalidCredentials`` (one answer for every failure),
        ``LoginThrottled`` or ``MfaNotEnrolled``."""
        used: list[PasskeyUse] = []

        def check(conn: Connection, account: User, now: datetime) -> tuple[str, str | None]:
            result = self._check(conn, account, assertion, Purpose.ACTIVATE, True, expected_challenge, now)
            if isinstance(result, str):
                return METHOD, result
            used.append(result)
            return METHOD, None

        name = user if isinstance(user, str) else user.name
        self.accounts.confirm_second_factor(name, factor=check, address=address, purpose=SIGNATURE_ACTIVATION)
        return used[0]

    def _user(self, conn: Connection, person: Person | str) -> User:
        user = user_store.by_name(conn, person if isinstance(person, str) else person.name)
        if user is None:
            raise InvalidCredentials("no such account")
        return user

    def _factor(self, credential: Credential, purpose: Purpose, *, need_uv: bool) -> FactorCheck:
        def check(conn: Connection, user: User, now: datetime) -> tuple[str, str | None]:
            result = self._check(conn, user, credential, purpose, need_uv, None, now)
            return METHOD, result if isinstance(result, str) else None

        return check

    def _check(
        self,
        conn: Connection,
        user: User,
        credential: Credential,
        purpose: Purpose,
        need_uv: bool,
        expected: bytes | None,
        now: datetime,
    ) -> PasskeyUse | str:
        """Check one assertion (its attempt already reserved): the use, or the reason it failed
        for the audit log. WebAuthn L3 §7.2, with py_webauthn doing the verification. The
        challenge is spent before anything else is looked at: one answer, one check."""
        if expected is not None and not store.take_challenge(conn, expected, user.user_id, purpose, now):
            return "passkey_challenge_unknown"
        parsed, client = _parse_assertion(credential)
        if parsed is None or client is None:
            return "passkey_malformed"
        challenge = expected if expected is not None else client.challenge
        if expected is None and not store.take_challenge(conn, challenge, user.user_id, purpose, now):
            return "passkey_challenge_unknown"
        if not hmac.compare_digest(client.challenge, challenge):
            return "passkey_challenge_mismatch"
        passkey = store.by_credential_id(conn, user.user_id, parsed.raw_id)
        if passkey is None:
            return "passkey_unknown"
        if passkey.flagged_clone:
            return "passkey_flagged_clone"
        handle = parsed.response.user_handle
        if handle is not None and not hmac.compare_digest(handle, store.user_handle(user.user_id)):
            return "passkey_wrong_user"
        try:
            # The counter is compared below, once the signature is known to be good: py_webauthn
            # compares it before the signature, and a forged answer must not flag a passkey.
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=self.rp.rp_id,
                expected_origin=self.rp.origin,
                credential_public_key=passkey.public_key,
                credential_current_sign_count=0,
                require_user_verification=need_uv,
            )
        except (WebAuthnException, ValueError):
            rp_hash, uv = _asserted_flags(parsed)
            return self._reason(client, rp_hash, uv, need_uv)
        if store.counter_regressed(passkey.sign_count, verified.new_sign_count):
            store.flag_clone(conn, passkey.passkey_id)
            data = {
                "passkey_id": passkey.passkey_id,
                "purpose": purpose.value,
                "stored_count": passkey.sign_count,
                "received_count": verified.new_sign_count,
            }
            self._event(conn, "auth.passkey.clone_suspected", user.username, data)
            return "passkey_clone_suspected"
        if not store.record_use(conn, passkey, verified.new_sign_count, now):
            return "passkey_counter_race"
        data = {"passkey_id": passkey.passkey_id, "purpose": purpose.value, "user_verified": verified.user_verified}
        self._event(conn, "auth.passkey.used", user.username, data)
        return PasskeyUse(passkey.passkey_id, verified.user_verified, verified.new_sign_count)


def _too_big(credential: Credential) -> bool:
    return isinstance(credential, str) and len(credential) > _MAX_CREDENTIAL_CHARS


def _parse_registration(credential: Credential) -> tuple[RegistrationCredential | None, CollectedClientData | None]:
    if _too_big(credential):
        return None, None
    try:
        parsed = parse_registration_credential_json(credential if isinstance(credential, str) else dict(credential))
        return parsed, parse_client_data_json(parsed.response.client_data_json)
    except (WebAuthnException, ValueError, TypeError, KeyError):
        return None, None


def _parse_assertion(credential: Credential) -> tuple[AuthenticationCredential | None, CollectedClientData | None]:
    if _too_big(credential):
        return None, None
    try:
        parsed = parse_authentication_credential_json(credential if isinstance(credential, str) else dict(credential))
        return parsed, parse_client_data_json(parsed.response.client_data_json)
    except (WebAuthnException, ValueError, TypeError, KeyError):
        return None, None


def _attested_flags(parsed: RegistrationCredential) -> tuple[bytes | None, bool | None]:
    try:
        data = parse_attestation_object(parsed.response.attestation_object).auth_data
    except (WebAuthnException, ValueError, TypeError, KeyError):
        return None, None
    return data.rp_id_hash, data.flags.uv


def _asserted_flags(parsed: AuthenticationCredential) -> tuple[bytes | None, bool | None]:
    try:
        data = parse_authenticator_data(parsed.response.authenticator_data)
    except (WebAuthnException, ValueError, TypeError, KeyError):
        return None, None
    return data.rp_id_hash, data.flags.uv


def build_passkey_service(settings: Settings, accounts: AccountService) -> PasskeyService:
    rp_id, origin = settings.webauthn_relying_party()
    return PasskeyService(accounts, RelyingParty(rp_id, origin))


__all__ = [
    "PasskeyOptions",
    "PasskeyService",
    "PasskeyUse",
    "Person",
    "RelyingParty",
    "build_passkey_service",
]
