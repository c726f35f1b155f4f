from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from auth.devices import DEVICE_TOKEN_MAX_AGE_SECONDS, DeviceTokens

NOW = datetime(2025, 11, 23, 8, 0, 0, tzinfo=UTC)
TOKENS = DeviceTokens(b"k" * 32)


def test_genuine_token_identifies_the_device() -> None:
    token = TOKENS.issue("user-1", NOW)
    device = TOKENS.verify(token, "user-1", NOW + timedelta(days=1))
    assert device is not None and device.user_id == "user-1" and len(device.device_id) == 32
    assert TOKENS.issue("user-1", NOW, device.device_id).split(".")[2] == device.device_id


def test_token_of_another_user_is_ignored() -> None:
    assert TOKENS.verify(TOKENS.issue("user-1", NOW), "user-2", NOW) is None


def test_token_signed_with_another_key_is_ignored() -> None:
    assert TOKENS.verify(DeviceTokens(b"x" * 32).issue("user-1", NOW), "user-1", NOW) is None


def test_expired_token_is_ignored() -> None:
    token = TOKENS.issue("user-1", NOW)
    assert TOKENS.verify(token, "user-1", NOW + timedelta(seconds=DEVICE_TOKEN_MAX_AGE_SECONDS + 1)) is None


@pytest.mark.parametrize(
    "bad", [None, "", "garbage", "dev1.a.b.c.d", "dev1.user-1.x.notanumber.mac", "é" * 10, "x" * 300]
)
def test_malformed_token_is_ignored(bad: str | None) -> None:
    assert TOKENS.verify(bad, "user-1", NOW) is None


def test_tampered_token_is_ignored() -> None:
    token = TOKENS.issue("user-1", NOW)
    payload, _, mac = token.rpartition(".")
    forged = payload.replace(payload.split(".")[2], "0" * 32) + "." + mac
    assert TOKENS.verify(forged, "user-1", NOW) is None
