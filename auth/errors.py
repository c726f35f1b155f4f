"""Errors of the account-protection domain, all under one base class."""

from __future__ import annotations


class AuthError(Exception):
    """Base of every error raised by ``auth``."""


class InvalidApiKey(AuthError):
    """The API key is missing, malformed, unknown or revoked (one opaque answer outside)."""


class MissingScope(AuthError):
    """A known caller lacks the scope the operation needs."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"the caller lacks the scope {scope!r}")
        self.scope = scope


class UnknownScope(AuthError):
    """A scope name that the system does not define."""


class UnknownClient(AuthError):
    """No API client with that id."""


class InvalidClientName(AuthError):
    """The client name is empty or too long."""
