"""``bhxh-integrity keys init`` and ``keys install-cert``: the production key material.

Merged into the ``keys`` group beside ``dev-pki``. The work is in ``integrity.key_material`` and
``integrity.cert_install``; here the settings are read, the token opened when configured, and the
outcome rendered. Every refusal is one line on stderr and exit code 2, with nothing written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from api.cli_output import console, emit_json, fail
from api.cli_state import load_settings
from integrity.errors import IntegrityError
from signing.errors import SigningError

keys_app = typer.Typer(help="Production key material: init, install-cert.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
MAX_CERT_BYTES = 1024 * 1024


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CERT_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}")
    if len(data) > MAX_CERT_BYTES:
        fail(f"{what} {path} is larger than {MAX_CERT_BYTES} bytes")
    return data


@keys_app.command("init")
def keys_init(
    out: Annotated[
        Path | None, typer.Option("--out", help="the keys directory to create (default: BHXH_KEYS_DIR)")
    ] = None,
    common_name: Annotated[
        str, typer.Option("--common-name", help="CN the CSR asks for")
    ] = "BHXH One-Stop System Signing",
    organization: Annotated[
        str, typer.Option("--organization", help="O the CSR asks for")
    ] = "Bảo hiểm xã hội Việt Nam",
    data_message_common_name: Annotated[
        str, typer.Option("--data-message-common-name", help="CN the data-message CSR asks for")
    ] = "BHXH Institution Data Message Signing",
    as_json: JsonOption = False,
) -> None:
    """Make the service's keys (checkpoint, secrets, gateway) and the CSRs for the receipt and
    the data-message certificates, encrypted with BHXH_KEYS_PASSPHRASE_FILE; on the PKCS#11
    token when BHXH_PKCS11_MODULE is set. Never overwrites a key."""
    from integrity.key_material import (
        CsrSubject,
        KeyRole,
        init_key_material,
        refuse_existing,
        service_passphrase,
    )
    from integrity.keys import open_key_token

    settings = load_settings()
    target = out if out is not None else settings.keys_dir
    try:
        passphrase = service_passphrase(settings)
        refuse_existing(target)  # before the token is touched: a refusal makes nothing anywhere
        token = open_key_token(settings)
        try:
            report = init_key_material(
                target,
                passphrase=passphrase,
                log_id=settings.log_id,
                subject=CsrSubject(common_name=common_name, organization=organization),
                data_message_subject=CsrSubject(common_name=data_message_common_name, organization=organization),
                token=token,
            )
        finally:
            if token is not None:
                token.close()
    except IntegrityError as exc:
        fail(str(exc))
    if as_json:
        emit_json(report.to_dict())
        return
    console.print(f"wrote {len(report.files)} files to {report.out}")
    for name, label in report.settings.items():
        console.print(f"on the PKCS#11 token: {name}={label}", highlight=False, soft_wrap=True)
    if KeyRole.DATA_MESSAGE in report.token_labels:
        label = report.token_labels[KeyRole.DATA_MESSAGE]
        console.print(f"on the PKCS#11 token: data-message key {label}", highlight=False, soft_wrap=True)
    console.print(f"certificate signing requests: {report.csr} {report.data_message_csr}", highlight=False)
    console.print(f"audit checkpoint verifier key: {report.verifier_key}", highlight=False, soft_wrap=True)
    console.print("next:")
    for number, step in enumerate(report.next_steps, 1):
        console.print(f"  {number}. {step}", highlight=False, soft_wrap=True)


@keys_app.command("install-cert")
def keys_install_cert(
    cert: Annotated[Path, typer.Argument(help="the CA's certificate for our CSR (PEM; may be followed by its chain)")],
    chain: Annotated[
        Path | None,
        typer.Option("--chain", help="the CA's chain (PEM), up to its root unless that is a configured anchor"),
    ] = None,
    keys_dir: Annotated[
        Path | None, typer.Option("--keys-dir", help="the keys directory (default: BHXH_KEYS_DIR)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a certificate for our receipt or data-message key (our key, its purpose, trusted
    chain, valid now) and install it as one-stop-signing.crt.pem or
    institution-data-message.crt.pem, with its root and intermediates in ca.crt.pem."""
    from integrity.cert_install import (
        data_message_public_key,
        install_certificate,
        receipt_and_data_message,
        signing_public_key,
    )
    from integrity.key_material import configured_passphrase
    from integrity.keys import open_key_token
    from signing.trust import TrustPolicy

    settings = load_settings()
    directory = keys_dir if keys_dir is not None else settings.keys_dir
    cert_pem = _read(cert, "certificate")
    chain_pem = _read(chain, "chain") if chain is not None else None
    try:
        anchors = TrustPolicy.from_files(settings.trust_anchor_files).anchors
        passphrase = configured_passphrase(settings)
        if settings.receipt_key_label is None:
            key = signing_public_key(directory, passphrase)
        else:
            token = open_key_token(settings)
            if token is None:
                fail("BHXH_RECEIPT_KEY_LABEL names a token key: set BHXH_PKCS11_MODULE, _TOKEN_LABEL and _PIN_FILE")
            try:
                key = token.key_by_label(settings.receipt_key_label).public_key()
            finally:
                token.close()
        installed = install_certificate(
            directory,
            cert_pem,
            chain_pem,
            keys=receipt_and_data_message(key, data_message_public_key(directory, passphrase)),
            trust_anchors=anchors,
            now=datetime.now(UTC),
        )
    except (IntegrityError, SigningError) as exc:
        fail(str(exc))
    if as_json:
        emit_json(installed.to_dict())
        return
    console.print(
        f"installed the {installed.purpose} certificate {installed.certificate}: {installed.subject}", highlight=False
    )
    console.print(f"issued by {installed.issuer}, valid until {installed.not_after.isoformat()}", highlight=False)
    console.print(f"trusted CA certificates: {installed.anchors_file}", highlight=False)
    console.print(f"next: BHXH_KEYS_DIR={directory} bhxh-integrity init, then serve", highlight=False)
