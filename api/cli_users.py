"""``bhxh-integrity users create|unlock|reset-mfa``: people's accounts from the server's shell.

Passwords are read from a hidden prompt or from standard input (``--password-stdin``), never
from the command line, where ``ps`` and shell history would keep them. Every action is audited
with the operator (``operator:<OS login>``) and the reason given; ``unlock`` and ``reset-mfa``
also need an administrator's TOTP code (``--admin``, ``--code``), who is logged as the admin.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from api.cli_operator import AdminOption, CodeOption, ask_code, cli_actor, confirmed, operator
from api.cli_output import console, emit_json, fail
from api.cli_state import open_state
from auth.errors import AuthError
from integrity.accounts import AccountService
from integrity.app_state import AppState
from integrity.operator_auth import Operator, SensitiveCommand

app = typer.Typer(help="People's accounts (officers, auditors, admins, citizens).", no_args_is_help=True)

DemoOption = Annotated[
    bool, typer.Option("--demo", help="use the demonstration PKI of keys.example/ (NOT FOR PRODUCTION)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
ReasonOption = Annotated[str, typer.Option("--reason", help="why; recorded in the audit log")]
_MIN_REASON = 3


def _accounts(state: AppState) -> AccountService:
    return state.accounts


def _reason(reason: str) -> str:
    if len(reason.strip()) < _MIN_REASON:
        fail(f"--reason must have at least {_MIN_REASON} characters")
    return reason.strip()


def _run(demo: bool, action: object) -> object:
    state = open_state(demo)
    try:
        return action(_accounts(state))  # type: ignore[operator]
    except AuthError as exc:
        fail(str(exc))
    finally:
        state.close()


def _confirmed_run(
    demo: bool, command: SensitiveCommand, admin: str, code: str | None, act: Callable[[AccountService, Operator], None]
) -> None:
    """Check the admin's code, then act as the operator with that admin named; a refused code
    leaves the account untouched."""
    who = operator()
    secret = ask_code(admin, code)
    state = open_state(demo)
    try:
        act(_accounts(state), confirmed(state, who, admin, secret, command))
    except AuthError as exc:
        fail(str(exc))
    finally:
        state.close()


@app.command("create")
def create(
    username: str,
    role: Annotated[str, typer.Option(help="officer, auditor, admin or citizen")],
    reason: ReasonOption,
    mfa_required: Annotated[
        bool | None, typer.Option("--mfa-required/--no-mfa-required", help="default: yes for staff roles")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Create a person's account (the password is asked for, never passed as an argument)."""
    actor, why = cli_actor(), _reason(reason)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _run(
        demo, lambda acc: acc.create_user(username, password, role, actor=actor, reason=why, mfa_required=mfa_required)
    )
    out = {"username": user.username, "role": user.role, "mfa_required": user.mfa_required}  # type: ignore[attr-defined]
    if as_json:
        emit_json(out)
    else:
        console.print(
            f"created {out['username']} ({out['role']}, MFA {'required' if out['mfa_required'] else 'optional'})"
        )


@app.command("unlock")
def unlock(
    username: str,
    reason: ReasonOption,
    admin: AdminOption,
    code: CodeOption = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Clear an account's failure counter, including the 100-failure disable (an administrator's
    TOTP code confirms it)."""
    why = _reason(reason)
    _confirmed_run(
        demo,
        SensitiveCommand.UNLOCK_ACCOUNT,
        admin,
        code,
        lambda acc, who: acc.unlock(username, actor=who.actor, reason=why, approved_by=who.approved_by),
    )
    if as_json:
        emit_json({"username": username, "action": "unlocked"})
    else:
        console.print(f"unlocked {username}")


@app.command("reset-mfa")
def reset_mfa(
    username: str,
    reason: ReasonOption,
    admin: AdminOption,
    code: CodeOption = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Remove TOTP and recovery codes, revoke sessions; the person must enrol again (an
    administrator's TOTP code confirms it)."""
    why = _reason(reason)
    _confirmed_run(
        demo,
        SensitiveCommand.RESET_MFA,
        admin,
        code,
        lambda acc, who: acc.reset_mfa(username, actor=who.actor, reason=why, approved_by=who.approved_by),
    )
    if as_json:
        emit_json({"username": username, "action": "mfa_reset"})
    else:
        console.print(f"reset the second factor of {username}; every session was revoked")
