"""Operators are people: every command that acts writes its entries as the OS login running it,
never ``system``, and the sensitive ones need an administrator's TOTP code, checked and counted
like any code, before anything changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.cli import app
from audit.entry import Entry
from audit.tables import audit_checkpoints, audit_entries
from integrity.app_state import build_state
from integrity.db import make_engine
from tests.api.operator_support import Admin, as_operator, demo_cli_env, enrolled_admin
from tests.api.test_receipts_api import body
from tests.auth.support import STRONG, rfc6238
from tests.conftest import DEMO_KEYS, demo_settings

runner = CliRunner()
LOGIN = "tran.lan"
ACTOR = f"operator:{LOGIN}"
PAYLOAD = b"<HoSo><MaHoSo>000.00.31.H29-260115-0001</MaHoSo></HoSo>"


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    demo_cli_env(monkeypatch, db_url)
    as_operator(monkeypatch, LOGIN)
    done = runner.invoke(app, ["init", "--demo"])
    assert done.exit_code == 0, done.output
    return db_url


def _cli(*args: str, stdin: str | None = None) -> Any:
    return runner.invoke(app, [*args, "--demo"], input=stdin)


def _ok(*args: str, stdin: str | None = None) -> Any:
    result = _cli(*args, stdin=stdin)
    assert result.exit_code == 0, (args, result.output)
    return json.loads(result.stdout) if "--json" in args else result


def _entries(db_url: str, since: int = 0) -> list[Entry]:
    state = build_state(demo_settings(db_url))
    try:
        return state.audit.entries(since, 100_000)
    finally:
        state.close()


def _size(db_url: str) -> int:
    return len(_entries(db_url))


def _refused(result: Any, words: str) -> None:
    # The demo-mode warning is a JSON log line on stderr; the refusal is the one other line.
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("{")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
    assert "Traceback" not in result.output


def _receipt_request(tmp_path: Path) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(body(), ensure_ascii=False), encoding="utf-8")
    return path


def test_every_acting_command_records_the_os_login_and_never_system(db: str, tmp_path: Path) -> None:
    # Two admins: each code is spent once, and the service accepts one step of clock drift.
    hoa, minh = enrolled_admin(db, "hoa"), enrolled_admin(db, "minh")
    thu, vy = enrolled_admin(db, "thu"), enrolled_admin(db, "vy")
    before = _size(db)

    _ok("users", "create", "lan.officer", "--role", "officer", "--reason", "new officer", "--password-stdin",
        stdin=STRONG + "\n")  # fmt: skip
    client = _ok("clients", "create", "portal-app", "--scopes", "sign,verify", "--json")
    _ok("clients", "revoke", client["client_id"])
    data = tmp_path / "hoso.xml"
    data.write_bytes(PAYLOAD)
    signature = tmp_path / "hoso.jws"
    _ok("sign", str(data), "--out", str(signature))
    _ok("verify", str(signature))
    kid = _ok("keys", "generate", "--alg", "ES256", "--json")["kid"]
    _ok("keys", "retire", kid, *hoa.args())
    _ok("keys", "revoke", kid, *hoa.args())
    receipt = _ok("receipts", "issue", str(_receipt_request(tmp_path)), "--json")
    _ok("audit", "export", "--include-pii", "--out", str(tmp_path / "log.ndjson"))
    _ok("audit", "erase-pii", str(receipt["audit_seq"]), "--reason", "data subject request", *minh.args())
    key = str(DEMO_KEYS / "portal-exchange.crt.pem")
    _ok("exchange", "peers", "add", "vssid", "--keyid", "vssid", "--key", key, *minh.args())
    _ok("exchange", "peers", "update", "vssid", "--no-routes", *thu.args())
    _ok("exchange", "peers", "remove", "vssid", *thu.args())
    _ok("users", "unlock", "lan.officer", "--reason", "help desk call", *vy.args())
    _ok("users", "reset-mfa", "lan.officer", "--reason", "phone lost", *vy.args())

    written = _entries(db, before)
    actions = [e.action for e in written]
    for expected in (
        "admin.user.created",
        "admin.client.created",
        "admin.client.revoked",
        "signature.created",
        "signature.verified",
        "key.generated",
        "key.retired",
        "key.revoked",
        "receipt.issued",
        "audit.exported",
        "audit.pii.erased",
        "exchange.peer.added",
        "exchange.peer.updated",
        "exchange.peer.removed",
        "admin.user.unlocked",
        "admin.user.mfa_reset",
    ):
        assert expected in actions, (expected, actions)
    assert {e.actor for e in written} == {ACTOR}, [(e.action, e.actor) for e in written if e.actor != ACTOR]
    by_action = {e.action: e for e in written}
    # The sensitive ones name the administrator whose code confirmed them.
    assert by_action["key.retired"].data["approved_by"] == "user:hoa"
    assert by_action["key.revoked"].data["approved_by"] == "user:hoa"
    assert by_action["audit.pii.erased"].data["approved_by"] == "user:minh"
    assert by_action["exchange.peer.added"].data["approved_by"] == "user:minh"
    assert by_action["exchange.peer.removed"].data["approved_by"] == "user:thu"
    assert by_action["admin.user.unlocked"].data["admin"] == "user:vy"
    assert by_action["admin.user.mfa_reset"].data["admin"] == "user:vy"
    confirmations = [(e.subject, e.data["command"]) for e in written if e.action == "auth.operator.confirmed"]
    assert confirmations == [
        ("hoa", "keys retire"),
        ("hoa", "keys revoke"),
        ("minh", "audit erase-pii"),
        ("minh", "exchange peers add"),
        ("thu", "exchange peers update"),
        ("thu", "exchange peers remove"),
        ("vy", "users unlock"),
        ("vy", "users reset-mfa"),
    ]
    # An erasure written by an operator is one the verifier honours.
    _ok("audit", "checkpoint")
    verified = _ok("audit", "verify", "--json")
    assert verified["ok"] is True and verified["pii"]["erased"] == 1


def test_init_writes_its_set_up_entries_as_the_os_login(db: str) -> None:
    # The db fixture ran `init --demo` as LOGIN on an empty, migrated database.
    written = _entries(db)
    assert sorted(e.action for e in written) == sorted(
        ["key.imported", "key.imported", "audit.log.created", *["exchange.peer.added"] * 3]
    )
    assert {e.actor for e in written} == {ACTOR}, [(e.action, e.actor) for e in written]
    # A second run changes nothing, and still verifies: every set-up entry is anchored.
    again = _ok("init", "--json")
    assert again["changed"] is False and _size(db) == len(written)
    assert _ok("audit", "verify", "--json")["ok"] is True


def test_init_without_an_os_login_is_refused_and_writes_nothing(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BHXH_DATABASE_URL", db_url)
    monkeypatch.setenv("BHXH_KEYS_DIR", str(DEMO_KEYS))
    as_operator(monkeypatch, "two words")
    _refused(_cli("init"), "login")
    # Read without building the service, whose start-up would import the configured keys.
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(audit_entries)).scalar_one() == 0
            assert conn.execute(select(func.count()).select_from(audit_checkpoints)).scalar_one() == 0
    finally:
        engine.dispose()


def test_sudo_records_the_person_who_ran_sudo(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "bhxh")
    monkeypatch.setenv("USER", "bhxh")
    monkeypatch.setenv("SUDO_USER", "nguyen.minh")
    before = _size(db)
    _ok("clients", "create", "portal-app", "--scopes", "sign")
    [entry] = _entries(db, before)
    assert entry.actor == "operator:nguyen.minh"


@pytest.mark.parametrize("login", ["", "two words"], ids=["no-login", "not-one-word"])
def test_without_an_os_login_nothing_is_written(db: str, monkeypatch: pytest.MonkeyPatch, login: str) -> None:
    import pwd

    for name in ("LOGNAME", "USER", "LNAME", "USERNAME", "SUDO_USER"):
        monkeypatch.delenv(name, raising=False)
    if login:
        monkeypatch.setenv("LOGNAME", login)
    else:

        def no_entry(uid: int) -> Any:
            raise KeyError(f"getpwuid(): uid not found: {uid}")

        monkeypatch.setattr(pwd, "getpwuid", no_entry)  # a user the password database does not know
    before = _size(db)
    _refused(_cli("clients", "create", "portal-app", "--scopes", "sign"), "login")
    assert _size(db) == before


# --- the second factor of sensitive commands --------------------------------------------------


def _wrong(admin: Admin) -> str:
    """A code of no step near now: refused as a wrong code."""
    return rfc6238(admin.secret, admin.last_step + 1000)


def _key_state(kid: str) -> str:
    rows = _ok("keys", "list", "--json")
    return {r["kid"]: r["state"] for r in rows}[kid]


def _peers() -> list[dict[str, Any]]:
    return _ok("exchange", "peers", "list", "--json")


def test_a_wrong_code_changes_nothing_and_is_counted_on_the_admin(db: str) -> None:
    hoa = enrolled_admin(db, "hoa")
    kid = _ok("keys", "generate", "--alg", "ES256", "--json")["kid"]
    peers = _peers()
    wrong = ["--admin", "hoa", "--code", _wrong(hoa)]
    attempts = {
        "keys retire": (["keys", "retire", kid], lambda: _key_state(kid) == "active"),
        "keys revoke": (["keys", "revoke", kid], lambda: _key_state(kid) == "active"),
        "exchange peers remove": (["exchange", "peers", "remove", "portal"], lambda: _peers() == peers),
        "exchange peers update": (["exchange", "peers", "update", "portal", "--no-routes"], lambda: _peers() == peers),
    }
    for number, (command, (args, unchanged)) in enumerate(attempts.items(), 1):
        before = _size(db)
        _refused(_cli(*args, *wrong), "wrong or already used code for 'hoa'")
        assert unchanged(), command
        [refusal] = _entries(db, before)  # the refusal alone, written as the operator
        assert (refusal.action, refusal.actor, refusal.subject) == ("auth.operator.refused", ACTOR, "hoa")
        assert refusal.data == {"command": command, "reason": "bad_totp", "failures": number}
    _refused(_cli("exchange", "peers", "remove", "portal"), "--admin")  # no admin named: nothing asked, nothing done
    assert _peers() == peers
    # The right code still works, once; the same code again is a replay.
    code = hoa.code()
    _ok("keys", "retire", kid, "--admin", "hoa", "--code", code)
    before = _size(db)
    _refused(_cli("keys", "revoke", kid, "--admin", "hoa", "--code", code), "wrong or already used code")
    assert _key_state(kid) == "retired"
    locked, replay = _entries(db, before)
    assert replay.action == "auth.operator.refused"
    assert (replay.data["reason"], replay.data["failures"]) == ("replayed_totp", 5)
    # The fifth failure in a row locks the admin's account, as five wrong sign-in codes would.
    assert (locked.action, locked.actor, locked.subject) == ("auth.locked", ACTOR, "hoa")
    _refused(_cli("keys", "revoke", kid, *hoa.args()), "too many failed attempts")
    assert _key_state(kid) == "retired"


def _keys() -> dict[str, str]:
    return {r["kid"]: r["state"] for r in _ok("keys", "list", "--json")}


def test_rotating_retires_a_key_so_it_waits_for_the_code_like_retire(db: str) -> None:
    hoa = enrolled_admin(db, "hoa")
    enrolled_admin(db, "lan.officer", role="officer")
    kid = _ok("keys", "generate", "--alg", "ES256", "--json")["kid"]
    keys = _keys()
    rotate = ("keys", "rotate", "--alg", "ES256")
    for case, (extra, words) in NO_CONFIRMING_ADMIN.items():
        if case == "admin-without-totp":
            continue  # the same check as `keys retire`; that test covers it
        before = _size(db)
        result = _cli(*rotate, *extra)
        assert result.exit_code == 2 and "Traceback" not in result.output, (case, result.output)
        assert words in " ".join(result.output.split()), (case, result.output)
        assert _keys() == keys and _size(db) == before, case  # no key made, none retired, nothing logged
    before = _size(db)
    _refused(_cli(*rotate, "--admin", "hoa", "--code", _wrong(hoa)), "keys rotate refused: wrong or already used")
    assert _keys() == keys
    [refusal] = _entries(db, before)
    assert (refusal.action, refusal.actor, refusal.subject) == ("auth.operator.refused", ACTOR, "hoa")
    assert refusal.data == {"command": "keys rotate", "reason": "bad_totp", "failures": 1}

    before = _size(db)
    new = _ok(*rotate, *hoa.args(), "--json")["kid"]
    assert _keys() == {**keys, kid: "retired", new: "active"}
    confirmation, rotated = _entries(db, before)
    assert (confirmation.action, confirmation.data) == ("auth.operator.confirmed", {"command": "keys rotate"})
    assert (rotated.action, rotated.actor, rotated.subject) == ("key.rotated", ACTOR, f"key:{new}")
    assert rotated.data["approved_by"] == "user:hoa"


def test_erasure_and_account_changes_wait_for_the_code(db: str, tmp_path: Path) -> None:
    hoa = enrolled_admin(db, "hoa")
    receipt = _ok("receipts", "issue", str(_receipt_request(tmp_path)), "--json")
    _ok("users", "create", "lan.officer", "--role", "officer", "--reason", "new officer", "--password-stdin",
        stdin=STRONG + "\n")  # fmt: skip
    wrong = ["--admin", "hoa", "--code", _wrong(hoa)]
    before = _size(db)
    seq = str(receipt["audit_seq"])
    _refused(_cli("audit", "erase-pii", seq, "--reason", "data subject request", *wrong), "wrong or already used")
    _refused(_cli("users", "reset-mfa", "lan.officer", "--reason", "phone lost", *wrong), "wrong or already used")
    _refused(_cli("users", "unlock", "lan.officer", "--reason", "help desk", *wrong), "wrong or already used")
    assert [e.action for e in _entries(db, before)] == ["auth.operator.refused"] * 3
    _ok("audit", "checkpoint")
    assert _ok("audit", "verify", "--json")["pii"]["erased"] == 0  # the personal data is still there


NO_CONFIRMING_ADMIN = {
    "no-admin": ([], "--admin"),
    "no-code-no-terminal": (["--admin", "hoa"], "TOTP code of the administrator 'hoa'"),
    "unknown-admin": (["--admin", "nobody", "--code", "123456"], "no account 'nobody'"),
    "not-an-admin": (["--admin", "lan.officer", "--code", "123456"], "only an administrator"),
    "admin-without-totp": (["--admin", "an.admin", "--code", "123456"], "no TOTP second factor"),
}


def test_a_sensitive_command_without_a_confirming_admin_is_refused(db: str, subtests: pytest.Subtests) -> None:
    enrolled_admin(db, "hoa")
    enrolled_admin(db, "lan.officer", role="officer")
    _ok("users", "create", "an.admin", "--role", "admin", "--reason", "new admin", "--password-stdin",
        stdin=STRONG + "\n")  # fmt: skip
    kid = _ok("keys", "generate", "--alg", "ES256", "--json")["kid"]
    for case, (extra, words) in NO_CONFIRMING_ADMIN.items():
        with subtests.test(case=case):
            before = _size(db)
            result = _cli("keys", "retire", kid, *extra)
            assert result.exit_code == 2 and "Traceback" not in result.output
            assert words in " ".join(result.output.split()), result.output
            assert _key_state(kid) == "active" and _size(db) == before
