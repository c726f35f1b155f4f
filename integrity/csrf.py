"""CSRF tokens of the server-rendered forms, bound to the session they were issued for.

A token is an HMAC of the session token under a key derived from the secrets key (the OWASP
"signed double-submit cookie" pattern): a signed-in form carries HMAC("session", session token),
so a token taken from one session is worth nothing in another, and one seen before sign-in is
dead after it (the session changes). Before sign-in there is no session: the token is bound the
same way to a random pre-session cookie. Nothing is stored server-side; a token is checked by
recomputing it and comparing in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING

from integrity.accounts import derive_key

if TYPE_CHECKING:
    from integrity.app_state import AppState

# HKDF info: the CSRF subkey of the secrets key, apart from every other use of it (RFC 5869 §3.2).
_CSRF_KEY_INFO = b"bhxh-integrity/csrf-tokens/v1"
_SERVICE_KEY = "csrf"


class CsrfTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_secrets_key(cls, secrets_key: bytes) -> CsrfTokens:
        return cls(derive_key(secrets_key, _CSRF_KEY_INFO))

    def issue(self, *, session: str, pre_session: str) -> str:
        """The token for the session token ``session``, or, without one, for the pre-session
        cookie value ``pre_session``."""
        kind, bound = ("session", session) if session else ("pre-session", pre_session)
        mac = hmac.new(self._key, f"{kind}\x00{bound}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def check(self, submitted: str, *, session: str, pre_session: str) -> bool:
        """Whether ``submitted`` is the token of this session (or pre-session cookie)."""
        if not submitted or not (session or pre_session):
            return False
        expected = self.issue(session=session, pre_session=pre_session)
        return hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "surrogatepass"))


def csrf_tokens(state: AppState) -> CsrfTokens:
    """The service's CSRF tokens, derived once per application state."""
    tokens = state.services.get(_SERVICE_KEY)
    if not isinstance(tokens, CsrfTokens):
        tokens = state.services[_SERVICE_KEY] = CsrfTokens.from_secrets_key(state.keys.secrets_key)
    return tokens


__all__ = ["CsrfTokens", "csrf_tokens"]
