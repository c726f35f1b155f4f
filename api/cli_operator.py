"""What the acting commands share: the operator who runs them (the OS login, never ``system``)
and, for the sensitive ones, an administrator's TOTP code that confirms them
(integrity/operator_auth.py). A refusal is one line on stderr and exit code 2, with nothing done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import click
import typer

from api.cli_output import fail
from auth.errors import AuthError
from integrity.errors import IntegrityError
from integrity.operator_auth import Operator, SensitiveCommand, confirm, current_operator

if TYPE_CHECKING:
    from integrity.app_state import AppState

ADMIN_ENV = "BHXH_ADMIN"
AdminOption = Annotated[
    str,
    typer.Option(
        "--admin",
        envvar=ADMIN_ENV,
        help="the administrator's account whose TOTP code confirms this command (logged beside the OS login)",
    ),
]
CodeOption = Annotated[
    str | None,
    typer.Option("--code", help="the administrator's current TOTP code (asked for, hidden, when not given)"),
]


def operator() -> Operator:
    """The OS login running this command; refused (exit 2) when the OS gives none."""
    try:
        return current_operator()
    except IntegrityError as exc:
        fail(str(exc))


def cli_actor() -> str:
    """``operator:<OS login>``, the actor of every entry an acting command writes."""
    return operator().actor


def ask_code(admin: str, code: str | None) -> str:
    """``--code``, else a hidden prompt; without a terminal or input the command is refused."""
    if code is not None:
        return code
    try:
        # On stderr: standard output stays the command's answer (JSON with --json).
        return str(typer.prompt(f"TOTP code of the administrator {admin}", hide_input=True, err=True))
    except (click.exceptions.Abort, typer.Abort):  # end of input: no terminal, nothing piped
        fail(f"this command needs the current TOTP code of the administrator {admin!r} (--code)")


def confirmed(state: AppState, who: Operator, admin: str, code: str, command: SensitiveCommand) -> Operator:
    """``who`` confirmed by ``admin``'s code: the actor and approver of the command's entries."""
    try:
        return confirm(state.accounts, who, admin, code, command)
    except (AuthError, IntegrityError) as exc:
        fail(f"{command.value} refused: {exc}")
