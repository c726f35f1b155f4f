"""``bhxh-integrity sign|verify`` and ``bhxh-integrity keys list|generate|import|import-token|rotate|retire|revoke``.

``app`` holds ``sign`` and ``verify`` (mounted at the top level); ``keys_app`` holds the key
commands (merged into the ``keys`` group beside ``dev-pki``). Exit codes: 0 done / signature
valid, 1 the signature is not valid, 2 bad usage or input. Passphrases never come from the
command line: they are read from a file or an environment variable named on it.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from api.cli_input import read_input
from api.cli_operator import ADMIN_ENV, AdminOption, CodeOption, ask_code, cli_actor, confirmed, operator
from api.cli_output import EXIT_FAILED, console, emit_json, fail
from api.cli_personal import OwnerOption, check_personal_purpose, personal_key_change
from api.cli_state import open_state
from integrity.errors import IntegrityError
from integrity.operator_auth import SensitiveCommand
from signing.algorithms import DEFAULT_RSA_BITS, Algorithm
from signing.errors import SigningError
from signing.purposes import KeyPurpose

if TYPE_CHECKING:
    from integrity.app_state import AppState
    from integrity.operator_auth import Operator
    from integrity.signatures import SignatureService
    from signing.keystore import KeyRecord

app = typer.Typer(help="Sign and verify data messages (JWS, CMS/CAdES, XMLDSig/XAdES).", no_args_is_help=True)
keys_app = typer.Typer(
    help="Signing keys: list, generate, import, import-token, rotate, retire, revoke.", no_args_is_help=True
)

DemoOption = Annotated[
    bool, typer.Option("--demo", help="use the demonstration PKI of keys.example/ (NOT FOR PRODUCTION)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
FormatOption = Annotated[str, typer.Option("--format", "-f", help="jws, cms or xml")]
# A kid is an RFC 7638 thumbprint in base64url, so one in 64 begins with "-". Click would read it
# as an option ("No such option: -9"); commands that take a kid as their argument therefore pass
# unknown options through as arguments. They define no short options, so no letter of a kid can
# be taken for one; a mistyped long option still fails as an unexpected extra argument.
KidArgument = Annotated[str, typer.Argument(help="the key's kid, as `keys list` prints it")]
KID_COMMAND = {"ignore_unknown_options": True}
OnTokenOption = Annotated[
    bool, typer.Option("--on-token", help="make the key on the PKCS#11 token of BHXH_PKCS11_* (never extractable)")
]
PurposeOption = Annotated[
    KeyPurpose,
    typer.Option(
        "--purpose",
        help="what the key signs (docs/keys.md); data-message keys sign JWS, CMS and XML, the receipt key none",
    ),
]


def _service(state: AppState) -> SignatureService:
    return state.signatures


def _secret(file: Path | None, env: str | None, what: str) -> bytes | None:
    """A passphrase from a file or an environment variable, never from argv."""
    if file is not None and env is not None:
        fail(f"give the {what} either as a file or as an environment variable, not both")
    if file is not None:
        return read_input(file).strip()
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            fail(f"environment variable {env} is not set")
        return value.encode()
    return None


def _algorithm(name: str) -> Algorithm:
    try:
        return Algorithm(name)
    except ValueError:
        fail(f"unknown algorithm {name!r}: use {', '.join(a.value for a in Algorithm)}")


# --- sign / verify -------------------------------------------------------------------------------


@app.command("sign")
def sign(
    file: Annotated[Path, typer.Argument(help="the data to sign (XML: the document to envelop); - for stdin")],
    fmt: FormatOption = "jws",
    detached: Annotated[bool, typer.Option("--detached", help="JWS: RFC 7797 detached, unencoded payload")] = False,
    key_id: Annotated[
        str | None,
        typer.Option("--key-id", help="an active data-message key; default: the institution's PS256 data-message key"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write the signature here (CMS: DER; XML: the signed document)")
    ] = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Sign FILE; the signature is logged in the audit log before it is written out."""
    from integrity.signatures import SignRequest

    payload = read_input(file)
    state = open_state(demo)
    try:
        signed = _service(state).sign(SignRequest(fmt, payload, detached, key_id), actor=cli_actor())
    except SigningError as exc:
        fail(str(exc))
    finally:
        state.close()
    raw = signed.signature.encode() if fmt == "jws" else base64.b64decode(signed.signature)
    if out is not None:
        try:
            out.write_bytes(raw)
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror}")
    if as_json:
        emit_json(signed.to_dict())
    elif out is None:
        sys.stdout.write(signed.signature + "\n")
    else:
        console.print(f"signed with {signed.key_id} ({signed.alg}), audit entry {signed.audit_seq}: {out}")


def _signature_text(fmt: str, raw: bytes) -> str:
    """What the service takes: JWS text, or base64 of CMS DER / the XML document. A CMS file
    may be DER, PEM or base64; an XML file is the signed document itself."""
    if fmt == "jws":
        return raw.decode("ascii", errors="replace").strip()
    if fmt == "cms":
        text = raw.strip()
        if text.startswith(b"-----BEGIN"):
            body = b"".join(line for line in text.splitlines() if not line.startswith(b"-----"))
            return body.decode("ascii", errors="replace")
        if raw[:1] == b"\x30":
            return base64.b64encode(raw).decode("ascii")
        return b"".join(text.split()).decode("ascii", errors="replace")
    return base64.b64encode(raw).decode("ascii")


@app.command("verify")
def verify(
    signature: Annotated[
        Path, typer.Argument(help="JWS token file, CMS signature (DER/PEM/base64) or signed XML document")
    ],
    fmt: FormatOption = "jws",
    payload: Annotated[Path | None, typer.Option("--payload", help="the signed data (detached JWS, CMS)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="XML: write the element the signature covers here")] = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Verify a signature; the verdict is logged. Exit 0 valid, 1 not valid, 2 bad input."""
    text = _signature_text(fmt, read_input(signature))
    data = read_input(payload) if payload is not None else None
    state = open_state(demo)
    try:
        outcome = _service(state).verify(fmt, text, data, actor=cli_actor())
    except SigningError as exc:
        fail(str(exc))
    finally:
        state.close()
    result = outcome.result
    if out is not None and outcome.signed_xml is not None:
        out.write_bytes(outcome.signed_xml)
    if as_json:
        emit_json({**result.to_dict(), "audit_seq": outcome.audit_seq})
    else:
        colour = "green" if result.valid else "red"
        console.print(f"[bold {colour}]{result.indication.value}[/] {result.sub_indication or ''}".rstrip())
        if result.signer is not None:
            purpose = f" (purpose: {result.signer.purpose})" if result.signer.purpose else ""
            console.print(f"signer: {result.signer.subject or result.signer.kid}{purpose}", highlight=False)
        if result.signed_at is not None:
            console.print(f"signed at (claimed): {result.signed_at.isoformat()}")
        for reason in result.reasons:
            console.print(f"reason: {reason}", highlight=False)
        console.print(result.message_vi)
        console.print(result.message_en)
    if not result.valid:
        raise typer.Exit(EXIT_FAILED)


# --- keys ------------------------------------------------------------------------------------------


def _key_row(record: object) -> dict[str, object]:
    from signing.keystore import KeyRecord

    assert isinstance(record, KeyRecord)
    cert = record.certificate
    return {
        "kid": record.kid,
        "algorithm": record.algorithm.value,
        "state": record.state.value,
        "owner": record.owner or None,
        "purpose": record.purpose.value,
        "created_at": record.created_at.isoformat(),
        "retired_at": record.retired_at.isoformat() if record.retired_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "storage": "pkcs11" if record.token_object_id else "encrypted",
        "pkcs11_object_id": record.token_object_id,
        "certificate": None
        if cert is None
        else {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.isoformat(),
        },
    }


def _report(record: object, what: str, as_json: bool) -> None:
    row = _key_row(record)
    if as_json:
        emit_json(row)
    else:
        console.print(f"{what} {row['kid']} ({row['algorithm']}, {row['purpose']}, {row['state']})")


def _change_keys(demo: bool, as_json: bool, what: str, change: Callable[[SignatureService], KeyRecord]) -> None:
    """Open the state, make one keystore change, report it; a refusal is one line and exit 2."""
    state = open_state(demo)
    try:
        record = change(_service(state))
    except SigningError as exc:
        fail(str(exc))
    finally:
        state.close()
    _report(record, what, as_json)


@keys_app.command("list")
def keys_list(demo: DemoOption = False, as_json: JsonOption = False) -> None:
    """List the keystore's keys (never private material)."""
    state = open_state(demo)
    try:
        rows = [_key_row(r) for r in _service(state).list_keys()]
    except SigningError as exc:
        fail(str(exc))
    finally:
        state.close()
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("kid", "alg", "purpose", "state", "owner", "storage", "certificate", "created")
    for r in rows:
        cert = r["certificate"]
        table.add_row(
            str(r["kid"]),
            str(r["algorithm"]),
            str(r["purpose"]),
            str(r["state"]),
            str(r["owner"] or "service"),
            str(r["storage"]),
            cert["subject"] if isinstance(cert, dict) else "-",
            str(r["created_at"]),
        )
    console.print(table)


@keys_app.command("generate")
def keys_generate(
    alg: Annotated[str, typer.Option("--alg", help="Ed25519, ES256 or PS256")] = "Ed25519",
    rsa_bits: Annotated[int, typer.Option("--rsa-bits", help="PS256 key size (at least 2048)")] = DEFAULT_RSA_BITS,
    on_token: OnTokenOption = False,
    purpose: PurposeOption = KeyPurpose.DATA_MESSAGE,
    owner: OwnerOption = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Generate a new active key (refused if one of that algorithm and purpose is active: use rotate).
    With --owner, USER's personal key, made on the token (--on-token)."""
    algorithm = _algorithm(alg)
    if owner is not None:
        check_personal_purpose(purpose)
        record = personal_key_change(
            demo,
            as_json,
            "keys generate",
            lambda personal: personal.generate_key(
                owner, algorithm, actor=cli_actor(), on_token=on_token, rsa_bits=rsa_bits
            ),
        )
        _report(record, "generated", as_json)
        return
    _change_keys(
        demo,
        as_json,
        "generated",
        lambda service: service.generate_key(
            algorithm, actor=cli_actor(), rsa_bits=rsa_bits, on_token=on_token, purpose=purpose
        ),
    )


@keys_app.command("rotate")
def keys_rotate(
    admin: AdminOption,
    code: CodeOption = None,
    alg: Annotated[str, typer.Option("--alg", help="Ed25519, ES256 or PS256")] = "Ed25519",
    rsa_bits: Annotated[int, typer.Option("--rsa-bits", help="PS256 key size (at least 2048)")] = DEFAULT_RSA_BITS,
    on_token: OnTokenOption = False,
    purpose: PurposeOption = KeyPurpose.DATA_MESSAGE,
    owner: OwnerOption = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Generate a new active key and retire the current one of that algorithm and purpose (its
    signatures keep verifying); with --owner, USER's personal key on the token. Retiring, an
    administrator's TOTP code confirms it. To rotate to a key certified by a CA, use
    ``keys import --rotate`` (or ``import-token``)."""
    algorithm = _algorithm(alg)
    if owner is not None:
        check_personal_purpose(purpose)
        person = owner

        def personal(state: AppState, who: Operator) -> KeyRecord:
            try:
                return state.personal_signing.generate_key(
                    person,
                    algorithm,
                    actor=who.actor,
                    approved_by=who.approved_by,
                    on_token=on_token,
                    rotate=True,
                    rsa_bits=rsa_bits,
                )
            except (SigningError, IntegrityError) as exc:
                fail(f"keys rotate refused: {exc}")

        _confirmed_key_change(demo, as_json, "rotated to", SensitiveCommand.ROTATE_KEY, admin, code, personal)
        return
    _confirmed_key_change(
        demo,
        as_json,
        "rotated to",
        SensitiveCommand.ROTATE_KEY,
        admin,
        code,
        lambda state, who: state.signatures.generate_key(
            algorithm,
            actor=who.actor,
            approved_by=who.approved_by,
            rotate=True,
            rsa_bits=rsa_bits,
            on_token=on_token,
            purpose=purpose,
        ),
    )


@keys_app.command("import")
def keys_import(
    file: Annotated[Path, typer.Argument(help="PKCS#12 (.p12/.pfx) or encrypted PKCS#8 PEM private key")],
    cert: Annotated[Path | None, typer.Option("--cert", help="PEM certificate chain, leaf first (PKCS#8 only)")] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option("--passphrase-file", help="file holding the key file's passphrase")
    ] = None,
    passphrase_env: Annotated[
        str | None, typer.Option("--passphrase-env", help="environment variable holding it")
    ] = None,
    rotate: Annotated[bool, typer.Option("--rotate", help="retire the active key of the same algorithm")] = False,
    purpose: PurposeOption = KeyPurpose.DATA_MESSAGE,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Import a key (and its certificate chain) into the keystore, re-encrypted at rest."""
    from signing.keystore import parse_certificates, parse_pkcs8, parse_pkcs12

    secret = _secret(passphrase_file, passphrase_env, "key passphrase")
    data = read_input(file)
    try:
        if file.suffix.lower() in (".p12", ".pfx"):
            if cert is not None:
                fail("a PKCS#12 file carries its own certificates; --cert applies to PKCS#8 only")
            private_key, chain = parse_pkcs12(data, secret)
        else:
            private_key = parse_pkcs8(data, secret)
            chain = parse_certificates(read_input(cert)) if cert is not None else ()
    except SigningError as exc:
        fail(str(exc))
    _change_keys(
        demo,
        as_json,
        "imported",
        lambda service: service.import_key(private_key, chain, actor=cli_actor(), rotate=rotate, purpose=purpose),
    )


@keys_app.command("import-token")
def keys_import_token(
    label: Annotated[str, typer.Argument(help="CKA_LABEL of the key pair on the PKCS#11 token")],
    cert: Annotated[Path | None, typer.Option("--cert", help="PEM certificate chain of that key, leaf first")] = None,
    rotate: Annotated[bool, typer.Option("--rotate", help="retire the active key of the same algorithm")] = False,
    purpose: PurposeOption = KeyPurpose.DATA_MESSAGE,
    owner: OwnerOption = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Add a key pair already on the PKCS#11 token (made by the HSM's tools) to the keystore.
    With --owner, USER's personal key, with the certificate a CA issued to USER (--cert)."""
    from signing.keystore import parse_certificates

    try:
        chain = parse_certificates(read_input(cert)) if cert is not None else ()
    except SigningError as exc:
        fail(str(exc))
    if owner is not None:
        check_personal_purpose(purpose)
        record = personal_key_change(
            demo,
            as_json,
            "keys import-token",
            lambda personal: personal.import_token_key(owner, label, chain, actor=cli_actor(), rotate=rotate),
        )
        _report(record, "imported", as_json)
        return
    _change_keys(
        demo,
        as_json,
        "imported",
        lambda service: service.import_token_key(label, chain, actor=cli_actor(), rotate=rotate, purpose=purpose),
    )


def _confirmed_key_change(
    demo: bool,
    as_json: bool,
    what: str,
    command: SensitiveCommand,
    admin: str,
    code: str | None,
    change: Callable[[AppState, Operator], KeyRecord],
) -> None:
    """``_change_keys`` once an administrator's TOTP code confirmed the operator; a refused
    code changes no key."""
    who, secret = operator(), ask_code(admin, code)
    state = open_state(demo)
    try:
        record = change(state, confirmed(state, who, admin, secret, command))
    except SigningError as exc:
        fail(str(exc))
    finally:
        state.close()
    _report(record, what, as_json)


@keys_app.command("retire", context_settings=KID_COMMAND)
def keys_retire(
    kid: KidArgument, admin: AdminOption, code: CodeOption = None, demo: DemoOption = False, as_json: JsonOption = False
) -> None:
    """Stop signing with KID; its signatures keep verifying (an administrator's TOTP code confirms it)."""
    _confirmed_key_change(
        demo,
        as_json,
        "retired",
        SensitiveCommand.RETIRE_KEY,
        admin,
        code,
        lambda state, who: _service(state).retire_key(kid, actor=who.actor, approved_by=who.approved_by),
    )


@keys_app.command("revoke", context_settings=KID_COMMAND)
def keys_revoke(
    kid: KidArgument,
    at: Annotated[
        str | None,
        typer.Option("--at", help="RFC 3339 revocation time (e.g. the suspected compromise); default now"),
    ] = None,
    admin: AdminOption = "",
    code: CodeOption = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Revoke KID: signatures claiming a time at or after the revocation fail verification (an
    administrator's TOTP code confirms it)."""
    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--at {at!r} is not an RFC 3339 time")
        if when.tzinfo is None:
            fail("--at must carry a time zone (e.g. Z or +07:00)")
    if not admin:
        fail(f"revoking a key is confirmed by an administrator: give --admin USER (or {ADMIN_ENV})")
    _confirmed_key_change(
        demo,
        as_json,
        "revoked",
        SensitiveCommand.REVOKE_KEY,
        admin,
        code,
        lambda state, who: _service(state).revoke_key(kid, actor=who.actor, at=when, approved_by=who.approved_by),
    )
