"""Page texts of the passkeys (api/web_passkeys.py) and of the step-up on the security page,
Vietnamese then English; part of api.web's one table of page texts."""

from __future__ import annotations

PASSKEY_TEXTS: dict[str, tuple[str, str]] = {
    "passkeys": ("Khóa truy cập (passkey)", "Passkeys"),
    "passkeys_intro": (
        "Khóa truy cập dùng vân tay, khuôn mặt hoặc mã PIN của thiết bị. Trang web giả mạo không lừa lấy được nó.",
        "A passkey uses your device's fingerprint, face or PIN. A look-alike website cannot trick it out of you.",
    ),
    "no_passkeys": ("Chưa có khóa truy cập nào.", "No passkeys yet."),
    "passkey_name": ("Tên khóa", "Name"),
    "added_at": ("Ngày thêm", "Added"),
    "last_used": ("Lần dùng gần nhất", "Last used"),
    "never": ("Chưa dùng", "Never"),
    "passkey_blocked": ("Nghi bị sao chép: đã chặn", "Suspected copy: blocked"),
    "rename": ("Đổi tên", "Rename"),
    "remove": ("Xóa", "Remove"),
    "add_passkey": ("Thêm khóa truy cập", "Add a passkey"),
    "passkey_default_name": ("Khóa truy cập", "Passkey"),
    "create_passkey": ("Tạo khóa truy cập trên thiết bị", "Create the passkey on your device"),
    "go_back": ("Quay lại", "Back"),
    "use_passkey": ("Dùng khóa truy cập", "Use a passkey"),
    "passkey_prompt": (
        "Nhấn nút bên dưới rồi xác nhận trên thiết bị (vân tay, khuôn mặt hoặc mã PIN).",
        "Press the button below, then confirm on your device (fingerprint, face or PIN).",
    ),
    "passkey_cancelled": (
        "Thiết bị không trả lời hoặc bạn đã hủy. Vui lòng thử lại.",
        "The device did not answer or you cancelled. Please try again.",
    ),
    "passkey_unsupported": ("Trình duyệt này không hỗ trợ khóa truy cập.", "This browser does not support passkeys."),
    "passkey_failed": ("Khóa truy cập không được chấp nhận.", "The passkey was not accepted."),
    "passkey_exists": ("Khóa truy cập này đã được đăng ký.", "This passkey is already registered."),
    "passkey_bad_name": ("Tên khóa cần 1–64 ký tự.", "A passkey's name needs 1–64 characters."),
    "passkey_none": ("Tài khoản chưa có khóa truy cập.", "This account has no passkey."),
    "passkey_added": ("Đã thêm khóa truy cập.", "Passkey added."),
    "passkey_renamed": ("Đã đổi tên khóa truy cập.", "Passkey renamed."),
    "passkey_removed": ("Đã xóa khóa truy cập.", "Passkey removed."),
    "totp_first": ("Hãy đăng ký ứng dụng xác thực trước.", "Set up an authenticator app first."),
    "step_up_title": ("Xác thực lại", "Verify again"),
    "step_up_help": (
        "Thêm hoặc xóa khóa truy cập cần xác thực lại trong 5 phút gần nhất.",
        "Adding or removing a passkey needs you to have verified again within the last 5 minutes.",
    ),
    "step_up_state": ("Đã xác thực lại gần đây", "Recently verified"),
    "yes": ("Có", "Yes"),
    "no": ("Không", "No"),
    "step_up_done": ("Đã xác thực lại.", "Verified again."),
    "throttled_later": (
        "Quá nhiều lần thử sai. Vui lòng thử lại sau.",
        "Too many failed attempts. Please try again later.",
    ),
}
