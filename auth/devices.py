"""Known-device tokens: a signed statement "this device logged in as this user before".

Given to a device after a full login (as a cookie on the web pages, as ``device_token`` in the
API). During an account's temporary delay, a login that presents a valid one for that account
is let through, and its failures are counted against the device instead (OWASP "Slow Brute
Force" device cookies), so failures from elsewhere cannot shut the owner out. Nothing is
stored: the token is HMAC-SHA-256 signed with a key derived from the secrets key. A bad token
is treated as no token, silently (as starlette's signed session cookie does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

DEVICE_TOKEN_PREFIX = "dev1"
DEVICE_TOKEN_MAX_AGE_SECONDS = 180 * 24 * 3600
_DEVICE_ID_BYTES = 16
_DOMAIN = b"bhxh-integrity/device-token/v1|"
_KEY_BYTES = 32


@dataclass(frozen=True)
class KnownDevice:
    device_id: str
    user_id: str
    issued_at: int


class DeviceTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < _KEY_BYTES:
            raise ValueError("the device-token key must have at least 32 bytes")
        self._key = key

    def _mac(self, payload: str) -> str:
        mac = hmac.new(self._key, _DOMAIN + payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, user_id: str, now: datetime, device_id: str | None = None) -> str:
        device = device_id or secrets.token_hex(_DEVICE_ID_BYTES)
        payload = f"{DEVICE_TOKEN_PREFIX}.{user_id}.{device}.{int(now.timestamp())}"
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str | None, user_id: str, now: datetime) -> KnownDevice | None:
        """The device if ``token`` is genuine, unexpired and issued to ``user_id``; else None."""
        if not token or len(token) > 256:
            return None
        payload, _, mac = token.rpartition(".")
        parts = payload.split(".")
        if len(parts) != 4 or parts[0] != DEVICE_TOKEN_PREFIX:
            return None
        try:
            expected = self._mac(payload)
            issued = int(parts[3])
        except (ValueError, binascii.Error):
            return None
        if not hmac.compare_digest(expected.encode(), mac.encode()):
            return None
        if parts[1] != user_id or not 0 <= now.timestamp() - issued <= DEVICE_TOKEN_MAX_AGE_SECONDS:
            return None
        return KnownDevice(parts[2], parts[1], issued)
