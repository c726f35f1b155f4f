"""``bhxh-integrity sign-personal`` and the ``--owner`` of ``keys generate|rotate|import-token``:
a person's own key and signature from the server's shell (docs/keys.md).

The command shows what will be signed, then asks for the person's current TOTP code (hidden)
unless ``--code`` gives it: the code is the person's consent, checked and counted on their
account's lockout like any code. The OS login running the command is logged as the operator
beside the person. Exit codes: 0 signed, 2 refused or bad input (one line on stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from api.cli_input import read_input
from api.cli_operator import operator
from api.cli_output import console, emit_json, fail
from api.cli_state import open_state
from auth.errors import AuthError
from integrity.errors import IntegrityError
from signing.errors import SigningError
from signing.purposes import KeyPurpose

if TYPE_CHECKING:
    from integrity.personal_signing import PersonalSigningService
    from signing.keystore import KeyRecord

app = typer.Typer(help="A person's own signature.", no_args_is_help=True)

OwnerOption = Annotated[
    str | None,
    typer.Option(
        "--owner",
        help="make it USER's own personal key (the account must exist; docs/keys.md); nobody else signs with it",
    ),
]
DemoOption = Annotated[
    bool, typer.Option("--demo", help="use the demonstration PKI of keys.example/ (NOT FOR PRODUCTION)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
_SUFFIX = {"jws": ".jws", "cms": ".p7s", "pdf": ".signed.pdf"}


def check_personal_purpose(purpose: KeyPurpose) -> None:
    """``--owner`` makes a personal key; ``--purpose`` may say so, or be left at its default."""
    if purpose not in (KeyPurpose.PERSONAL, KeyPurpose.DATA_MESSAGE):
        fail(f"a person's key is a personal key, not a {purpose.value} key: drop --purpose")


def personal_key_change(
    demo: bool, as_json: bool, what: str, change: Callable[[PersonalSigningService], KeyRecord]
) -> KeyRecord:
    """Open the state, make one change to a person's keys; a refusal is one line and exit 2."""
    state = open_state(demo)
    try:
        return change(state.personal_signing)
    except (SigningError, IntegrityError) as exc:
        fail(f"{what} refused: {exc}")
    finally:
        state.close()


def _code(user: str, code: str | None) -> str:
    if code is not None:
        return code
    try:
        return str(typer.prompt(f"current TOTP code of {user}", hide_input=True, err=True))
    except (typer.Abort, click.exceptions.Abort):  # typer has its own since 0.2x
        fail(f"signing in {user}'s name needs {user}'s current TOTP code (--code)")


@app.command("sign-personal")
def sign_personal(
    file: Annotated[Path, typer.Argument(help="the document to sign; - for stdin")],
    user: Annotated[str, typer.Option("--user", help="the person who signs, with their own personal key")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="jws, cms or pdf")] = "cms",
    key_id: Annotated[str | None, typer.Option("--key-id", help="one of USER's personal keys")] = None,
    code: Annotated[
        str | None, typer.Option("--code", help="USER's current TOTP code (asked for, hidden, when not given)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="where to write the signature (default: FILE plus .jws, .p7s, .signed.pdf)"),
    ] = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Sign FILE as USER: shows what will be signed, then USER's TOTP code activates the one
    signature. The OS login running this is logged as the operator."""
    from integrity.personal_documents import Channel, Document, parse_format
    from integrity.second_factor import TotpCode

    who = operator()
    document = Document(read_input(file), None if str(file) == "-" else file.name)
    target = out or (Path(f"{file}{_SUFFIX.get(fmt, '.sig')}") if str(file) != "-" else None)
    state = open_state(demo)
    try:
        personal = state.personal_signing
        person = personal.person_named(user)
        activation = personal.request(person, document, parse_format(fmt), key_id=key_id, channel=Channel.CLI)
        if not as_json:
            console.print(activation.summary("en"), highlight=False)
            console.print(activation.summary("vi"), highlight=False)
        factor = TotpCode(state.accounts, _code(person.name, code))
        signed = personal.activate(
            person, activation.id, document, factor, address="local", channel=Channel.CLI, operator=who.login
        )
    except (SigningError, IntegrityError, AuthError) as exc:
        fail(f"not signed: {exc}")
    finally:
        state.close()
    if target is not None:
        try:
            target.write_bytes(signed.content)
        except OSError as exc:
            fail(f"cannot write {target}: {exc.strerror}")
    if as_json:
        emit_json({**signed.to_dict(), "out": None if target is None else str(target)})
    elif target is None:
        sys.stdout.write(signed.signature + "\n")
    else:
        console.print(f"signed by {person.name} with {signed.key_id}, audit entry {signed.audit_seq}: {target}")
