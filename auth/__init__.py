"""Account protection: API keys, scopes, passwords, TOTP, recovery codes, lockout, sessions."""

from auth.apikeys import ApiClient, IssuedKey, authenticate, create_client, list_clients, revoke_client
from auth.devices import DeviceTokens, KnownDevice
from auth.errors import (
    AuthError,
    EnrolmentNotStarted,
    InvalidApiKey,
    InvalidCredentials,
    InvalidRole,
    InvalidUsername,
    LoginThrottled,
    MfaNotEnrolled,
    MissingScope,
    PasswordBlocklisted,
    PasswordContainsContext,
    PasswordRejected,
    PasswordTooLong,
    PasswordTooShort,
    SecretUnreadable,
    SessionInvalid,
    StepUpRequired,
    UnknownClient,
    UnknownScope,
    UnknownUser,
    UsernameTaken,
)
from auth.lockout import ThrottlePolicy
from auth.passwords import PasswordCheck, PasswordHasher, PasswordPolicy, normalise_username
from auth.roles import ROLES, scopes_for
from auth.scopes import SCOPES, parse_scopes
from auth.sessions import Session, SessionPolicy
from auth.totp import Enrolment, SecretBox
from auth.users import User

__all__ = [
    "ROLES",
    "SCOPES",
    "ApiClient",
    "AuthError",
    "DeviceTokens",
    "Enrolment",
    "EnrolmentNotStarted",
    "InvalidApiKey",
    "InvalidCredentials",
    "InvalidRole",
    "InvalidUsername",
    "IssuedKey",
    "KnownDevice",
    "LoginThrottled",
    "MfaNotEnrolled",
    "MissingScope",
    "PasswordBlocklisted",
    "PasswordCheck",
    "PasswordContainsContext",
    "PasswordHasher",
    "PasswordPolicy",
    "PasswordRejected",
    "PasswordTooLong",
    "PasswordTooShort",
    "SecretBox",
    "SecretUnreadable",
    "Session",
    "SessionInvalid",
    "SessionPolicy",
    "StepUpRequired",
    "ThrottlePolicy",
    "UnknownClient",
    "UnknownScope",
    "UnknownUser",
    "User",
    "UsernameTaken",
    "authenticate",
    "create_client",
    "list_clients",
    "normalise_username",
    "parse_scopes",
    "revoke_client",
    "scopes_for",
]
