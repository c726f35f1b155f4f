"""Account protection: API keys, scopes, passwords, TOTP, recovery codes, lockout, sessions."""

from auth.apikeys import ApiClient, IssuedKey, authenticate, create_client, list_clients, revoke_client
from auth.errors import AuthError, InvalidApiKey, MissingScope, UnknownClient, UnknownScope
from auth.scopes import SCOPES, parse_scopes

__all__ = [
    "SCOPES",
    "ApiClient",
    "AuthError",
    "InvalidApiKey",
    "IssuedKey",
    "MissingScope",
    "UnknownClient",
    "UnknownScope",
    "authenticate",
    "create_client",
    "list_clients",
    "parse_scopes",
    "revoke_client",
]
