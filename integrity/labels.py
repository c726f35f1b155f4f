"""Words a person reads instead of the service's identifiers: the product name, role names,
security-event names and times, each in Vietnamese and English.

Defined once here so that every page says the same thing. An identifier with no label yet
(a new event kind, a new role) is shown as it is, never dropped: a security event a person
cannot read by name must still be there for them to ask about.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from auth.roles import ADMIN, AUDITOR, CITIZEN, OFFICER
from signing.vietnam_time import VIETNAM_TIME


@dataclass(frozen=True)
class Label:
    vi: str
    en: str

    def in_lang(self, lang: str) -> str:
        return self.vi if lang == "vi" else self.en


PRODUCT_NAME = Label("Hệ thống bảo đảm toàn vẹn dữ liệu BHXH", "BHXH integrity service")

ROLE_LABELS: dict[str, Label] = {
    OFFICER: Label("Cán bộ tiếp nhận", "Intake officer"),
    AUDITOR: Label("Kiểm toán viên", "Auditor"),
    ADMIN: Label("Quản trị viên", "Administrator"),
    CITIZEN: Label("Người dân", "Citizen"),
}

# Every action that AccountService.security_events can return (the ``auth.`` and
# ``admin.user.`` audit actions).
EVENT_LABELS: dict[str, Label] = {
    "auth.login.succeeded": Label("Đăng nhập thành công", "Signed in"),
    "auth.login.failed": Label("Đăng nhập thất bại", "Failed sign-in"),
    "auth.login.failures_summarised": Label("Tổng hợp các lần đăng nhập thất bại", "Failed sign-ins summarised"),
    "auth.locked": Label("Tạm khóa do nhiều lần sai", "Locked after failures"),
    "auth.logout": Label("Đăng xuất", "Signed out"),
    "auth.mfa.challenged": Label("Mật khẩu đúng, chờ mã xác thực", "Password accepted, code requested"),
    "auth.mfa.enrolment_started": Label("Bắt đầu đăng ký TOTP", "TOTP set-up started"),
    "auth.mfa.enrolment_failed": Label("Mã đăng ký TOTP sai", "Wrong TOTP set-up code"),
    "auth.mfa.enrolled": Label("Đã bật xác thực hai lớp", "Two-step verification turned on"),
    "auth.mfa.stepup.succeeded": Label("Xác thực lại thành công", "Re-verified"),
    "auth.mfa.stepup.failed": Label("Xác thực lại thất bại", "Re-verification failed"),
    "auth.operator.confirmed": Label("Mã đã xác nhận lệnh quản trị", "Code confirmed an operator command"),
    "auth.operator.refused": Label("Mã xác nhận lệnh quản trị bị từ chối", "Code for an operator command refused"),
    "auth.mfa.confirm.succeeded": Label("Xác nhận bằng mã (ký số cá nhân)", "Confirmed with a code (personal signing)"),
    "auth.mfa.confirm.failed": Label("Xác nhận bằng mã thất bại", "Confirmation with a code failed"),
    "auth.recovery.used": Label("Đã dùng mã khôi phục", "Recovery code used"),
    "auth.recovery.regenerated": Label("Tạo mã khôi phục mới", "New recovery codes"),
    "auth.password.changed": Label("Đổi mật khẩu", "Password changed"),
    "auth.password.change_failed": Label("Đổi mật khẩu thất bại", "Password change failed"),
    "auth.password.rehashed": Label("Nâng cấp lưu trữ mật khẩu", "Password storage upgraded"),
    "auth.passkey.registered": Label("Đã thêm khóa truy cập", "Passkey added"),
    "auth.passkey.registration_failed": Label("Thêm khóa truy cập thất bại", "Passkey not added"),
    "auth.passkey.renamed": Label("Đổi tên khóa truy cập", "Passkey renamed"),
    "auth.passkey.removed": Label("Đã xóa khóa truy cập", "Passkey removed"),
    "auth.passkey.removal_refused": Label(
        "Từ chối xóa khóa truy cập: cần xác thực lại", "Passkey removal refused: verify again first"
    ),
    "auth.passkey.used": Label("Đã dùng khóa truy cập", "Passkey used"),
    "auth.passkey.clone_suspected": Label(
        "Nghi khóa truy cập bị sao chép: đã chặn", "Passkey suspected of being copied: blocked"
    ),
    "admin.user.created": Label("Quản trị viên tạo tài khoản", "Account created by an administrator"),
    "admin.user.unlocked": Label("Quản trị viên mở khóa", "Unlocked by an administrator"),
    "admin.user.mfa_reset": Label(
        "Quản trị viên đặt lại xác thực hai lớp", "Two-step verification reset by an administrator"
    ),
}

_ZONE_NOTE = Label("giờ Việt Nam, UTC+7", "Vietnam time, UTC+7")


def role_label(role: str, lang: str) -> str:
    """``Cán bộ tiếp nhận (officer)``: the role's name, then the identifier an administrator
    assigns (``bhxh users create --role officer``)."""
    label = ROLE_LABELS.get(role)
    return role if label is None else f"{label.in_lang(lang)} ({role})"


def event_label(action: str, lang: str) -> str:
    label = EVENT_LABELS.get(action)
    return action if label is None else label.in_lang(lang)


def vietnam_time(moment: datetime, lang: str) -> str:
    """``07/12/2026 23:15 (giờ Việt Nam, UTC+7)``: the wall-clock time a person in Vietnam
    reads, day first as Vietnamese dates are written, whatever the page language."""
    if moment.tzinfo is None:
        raise ValueError("a time shown to a person must be timezone-aware")
    local = moment.astimezone(VIETNAM_TIME)
    return f"{local:%d/%m/%Y %H:%M} ({_ZONE_NOTE.in_lang(lang)})"


def utc_stamp(moment: datetime) -> str:
    """RFC 3339 UTC with ``Z``, for a ``<time datetime>`` attribute."""
    if moment.tzinfo is None:
        raise ValueError("a time shown to a person must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def grouped(text: str, size: int = 4) -> str:
    """``JBSW Y3DP EHPK 3PXP``: a code to be typed by hand, in groups a reader can keep their
    place in. Authenticator apps ignore the spaces in a typed base32 key."""
    return " ".join(text[i : i + size] for i in range(0, len(text), size))


def parse_stamp(stamp: str) -> datetime:
    """An audit entry's ``ts`` (RFC 3339, ``Z``) as an aware datetime."""
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a zone: {stamp!r}")
    return moment
