"""The words people read: labels for every role, an unlabelled kind shown raw, Vietnam time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from auth.roles import ROLES
from integrity.labels import ROLE_LABELS, event_label, grouped, parse_stamp, role_label, utc_stamp, vietnam_time


def test_every_role_has_a_label_in_both_languages() -> None:
    assert set(ROLE_LABELS) == set(ROLES)
    assert role_label("auditor", "vi") == "Kiểm toán viên (auditor)"
    assert role_label("auditor", "en") == "Auditor (auditor)"


def test_an_unknown_role_or_action_is_shown_as_it_is() -> None:
    assert role_label("archivist", "vi") == "archivist"
    assert event_label("auth.webhook.registered", "en") == "auth.webhook.registered"
    assert event_label("auth.login.succeeded", "vi") == "Đăng nhập thành công"


def test_vietnam_time_is_utc_plus_seven_whatever_zone_the_instant_comes_in() -> None:
    at = datetime(2026, 12, 7, 16, 15, tzinfo=UTC)
    assert vietnam_time(at, "vi") == "07/12/2026 23:15 (giờ Việt Nam, UTC+7)"
    paris = at.astimezone(timezone(timedelta(hours=1)))
    assert vietnam_time(paris, "en") == "07/12/2026 23:15 (Vietnam time, UTC+7)"
    # No daylight saving in Vietnam: a July instant is also seven hours ahead.
    assert vietnam_time(datetime(2026, 7, 1, 17, 0, tzinfo=UTC), "vi").startswith("02/07/2026 00:00 ")
    assert utc_stamp(paris) == "2026-12-07T16:15:00Z"
    assert parse_stamp("2026-12-07T16:15:00.000001Z") == at + timedelta(microseconds=1)


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        vietnam_time(datetime(2026, 12, 7, 16, 15), "vi")
    with pytest.raises(ValueError, match="without a zone"):
        parse_stamp("2026-12-07T16:15:00")


def test_keys_are_grouped_by_four_for_typing() -> None:
    assert grouped("JBSWY3DPEHPK3PXP") == "JBSW Y3DP EHPK 3PXP"
    assert grouped("JBSWY3DPEHP") == "JBSW Y3DP EHP"
    assert grouped("JBSWY3DPEHPK3PXP").replace(" ", "") == "JBSWY3DPEHPK3PXP"
