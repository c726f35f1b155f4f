"""``bhxh-integrity receipts issue|revoke|verify``: the receipt use cases from the command line.

Exit codes: 0 issued / issued by the system, 1 the file is NOT a receipt issued by the system,
2 bad usage or input (unreadable request or PDF, refused request).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from api.cli_operator import cli_actor
from api.cli_output import EXIT_FAILED, console, emit_json, fail
from api.cli_state import open_state
from integrity.errors import IntegrityError

if TYPE_CHECKING:
    from integrity.app_state import AppState
    from integrity.receipts import ReceiptService, ReceiptVerdict

app = typer.Typer(
    help="Receipts (giấy tiếp nhận hồ sơ và hẹn trả kết quả): issue, revoke and verify.", no_args_is_help=True
)

DemoOption = Annotated[
    bool, typer.Option("--demo", help="use the demonstration PKI of keys.example/ (NOT FOR PRODUCTION)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
MAX_REQUEST_BYTES = 1024 * 1024


def _service(state: AppState) -> ReceiptService:
    return state.receipts


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if len(data) > limit:
        fail(f"{path} is larger than {limit} bytes")
    return data


@app.command("issue")
def issue(
    request_file: Annotated[Path, typer.Argument(help="JSON receipt request (docs/receipts.md); - for stdin")],
    out: Annotated[Path | None, typer.Option("--out", help="write the signed PDF to this file")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="retrying with the same key returns the same receipt")
    ] = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Issue a receipt: next dossier code, Vietnamese PDF, PAdES signature, registry, audit log."""
    from api.routes.receipts import ReceiptIn

    raw = (
        typer.get_binary_stream("stdin").read(MAX_REQUEST_BYTES + 1)
        if str(request_file) == "-"
        else _read(request_file, MAX_REQUEST_BYTES)
    )
    try:
        body = ReceiptIn.model_validate_json(raw)
    except ValidationError as exc:
        fail(
            "invalid receipt request: "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        )
    actor = cli_actor()
    state = open_state(demo)
    try:
        receipts = _service(state)
        try:
            issued = receipts.issue(body.to_domain(), issued_by=actor, idempotency_key=idempotency_key)
            pdf = receipts.pdf(issued.code) if out is not None else None
        except IntegrityError as exc:
            fail(str(exc))
    finally:
        state.close()
    if out is not None and pdf is not None:
        try:
            out.write_bytes(pdf)
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror}")
    record = issued.record
    if as_json:
        emit_json(
            {
                "code": record.code,
                "sha256": record.sha256,
                "audit_seq": record.audit_seq,
                "issued_at": record.issued_at.isoformat(),
                "replayed": issued.replayed,
                "pdf": None if out is None else str(out),
            }
        )
        return
    console.print(f"[green]✓[/] issued [bold]{record.code}[/] (audit seq {record.audit_seq}, sha256 {record.sha256})")
    if issued.replayed:
        console.print("  (an earlier request with this Idempotency-Key made it; no new code was taken)")
    if out is not None:
        console.print(f"  signed PDF written to {out}")


@app.command("revoke")
def revoke(
    code: Annotated[str, typer.Argument(help="the dossier code of the receipt to withdraw")],
    reason: Annotated[
        str, typer.Option("--reason", help="issued_in_error, dossier_withdrawn or replaced (never free text)")
    ],
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Revoke an issued receipt, once and for good (audit entry receipt.revoked)."""
    from integrity.receipt_revocations import RevocationReason

    try:
        chosen = RevocationReason(reason)
    except ValueError:
        fail(f"--reason must be one of {', '.join(r.value for r in RevocationReason)}")
    actor = cli_actor()
    state = open_state(demo)
    try:
        try:
            revocation = _service(state).revoke(code, chosen, revoked_by=actor)
        except IntegrityError as exc:
            fail(str(exc))
    finally:
        state.close()
    if as_json:
        emit_json(
            {
                "code": revocation.code,
                "reason": revocation.reason.value,
                "revoked_at": revocation.revoked_at.isoformat(),
                "audit_seq": revocation.audit_seq,
            }
        )
        return
    console.print(
        f"[yellow]✓[/] revoked [bold]{revocation.code}[/] ({revocation.reason.value}, audit seq {revocation.audit_seq})"
    )


def _mark(value: bool | None, good: bool = True) -> str:
    if value is None:
        return "[yellow]?[/]"
    return "[green]✓[/]" if value is good else "[red]✗[/]"


def _print_verdict(path: Path, verdict: ReceiptVerdict) -> None:
    sig = verdict.signature
    console.print(f"[bold]{path}[/]  sha256 {verdict.sha256}")
    console.print(f"  dossier code (signed)          {verdict.code or '-'}")
    console.print(f"  {_mark(verdict.intact)} signature intact")
    marked = f" (certificate purpose: {sig.signer_purpose})" if sig.signer_purpose else ""
    console.print(f"  {_mark(verdict.trusted_signer)} signer is a trusted one-stop key  {sig.signer or ''}{marked}")
    console.print(
        f"  {_mark(verdict.modified_after_signing, good=False)} not modified after signing  ({sig.modification_level.value if sig.modification_level else 'unknown'})"
    )
    console.print(f"  {_mark(verdict.registered)} code registered")
    console.print(f"  {_mark(verdict.hash_matches)} registered hash equals the file's")
    if verdict.valid:
        console.print("[bold green]ISSUED BY THE SYSTEM[/] — phiếu do hệ thống cấp")
        return
    if verdict.issued_by_system and verdict.revocation is not None:
        # Issued here, then withdrawn: the file is genuine, the receipt no longer stands.
        console.print(
            f"[bold red]REVOKED[/] {verdict.revocation.revoked_at.isoformat()} — "
            "phiếu do hệ thống cấp nhưng đã bị thu hồi, không còn giá trị / "
            "issued by the system but revoked, no longer valid",
            highlight=False,
        )
        console.print(f"  {verdict.revocation.reason_vi} / {verdict.revocation.reason_en}", highlight=False)
        return
    console.print("[bold red]NOT ISSUED BY THE SYSTEM[/] — phiếu không do hệ thống cấp")
    for reason in verdict.reasons:
        console.print(f"  - {reason.vi}\n    {reason.en}", highlight=False)


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="the PDF presented as a receipt")],
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Check that a PDF is a valid receipt issued by the system: exit 0 yes, 1 no (not issued
    by the system, or revoked since), 2 unreadable."""
    from integrity.receipts import MAX_VERIFY_BYTES

    data = _read(file, MAX_VERIFY_BYTES)
    state = open_state(demo)
    try:
        try:
            verdict = _service(state).verify(data)
        except IntegrityError as exc:
            fail(str(exc))
    finally:
        state.close()
    if as_json:
        emit_json({"file": str(file), **verdict.to_dict()})
    else:
        _print_verdict(file, verdict)
    if not verdict.valid:
        raise typer.Exit(EXIT_FAILED)
