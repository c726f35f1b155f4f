"""``bhxh-integrity audit verify|export|checkpoint|erase-pii|acknowledge-rollback``.

``verify`` checks the live database (every entry from entry 0; it only reads, so an auditor with
read access may run it, also while a rollback awaits acknowledgement), or an export with no database
at all (``--export FILE --public-key FILE [--since KEPT] [--save-checkpoint FILE]``). It says VERIFIED
and exits 0 only when no fault was found AND every entry read is anchored by a checkpoint signed
by a trusted key; ``--since`` proves the log still holds the tree of a checkpoint the auditor
kept from an earlier run; ``--tsa-cert ROOT`` checks each checkpoint's RFC 3161 time-stamp
against the TSA roots the auditor trusts and prints its time (``--require-timestamps``: a
checkpoint without one fails). Exit codes: 0 verified / done, 1 a fault or unanchored entries,
2 bad usage or input. A progress bar shows on a terminal only.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from api.cli_operator import ADMIN_ENV, CodeOption, ask_code, cli_actor, confirmed, operator
from api.cli_output import EXIT_FAILED, console, emit_json, err_console, fail
from api.cli_state import open_state
from audit.errors import AuditError

if TYPE_CHECKING:
    from audit.checkpoint import SignedCheckpoint
    from audit.policy import Policy
    from audit.verify import VerificationReport
    from integrity.reports import ReportContext

app = typer.Typer(
    help="The tamper-evident audit log: verify, export, checkpoint, erase personal data.", no_args_is_help=True
)

DemoOption = Annotated[
    bool, typer.Option("--demo", help="use the demonstration PKI of keys.example/ (NOT FOR PRODUCTION)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
MAX_KEY_FILE_BYTES = 64 * 1024


def _policy(path: Path) -> Policy:
    """The trust policy of ``--policy`` (C2SP tlog-policy); a bad file is one line, exit 2."""
    from audit.errors import PolicyInvalid
    from audit.policy import Policy

    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read policy {path}: {exc.strerror}")
    try:
        return Policy.from_bytes(data)
    except PolicyInvalid as exc:
        fail(f"policy {path}: {exc}")


def _read_text(path: Path, what: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror}")
    if len(data) > MAX_KEY_FILE_BYTES:
        fail(f"{what} {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        fail(f"{what} {path} is not UTF-8 text")


def _trusted(path: Path | None) -> SignedCheckpoint | None:
    if path is None:
        return None
    from audit.checkpoint import SignedCheckpoint

    try:
        return SignedCheckpoint.from_text(_read_text(path, "kept checkpoint"))
    except AuditError as exc:
        fail(f"kept checkpoint {path}: {exc}")


class _Progress:
    """A rich progress bar on a terminal; nothing in a pipe."""

    def __init__(self, total: int | None, label: str) -> None:
        self.enabled = sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self.total = total
        self.label = label

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def __call__(self, count: int) -> None:
        if self._bar is not None and count % 1000 == 0:
            self._bar.update(self._task, completed=count)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def _count_lines(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return None


def _render(
    report: VerificationReport,
    context: ReportContext,
    report_file: Path | None,
    as_json: bool,
    save_checkpoint: Path | None = None,
) -> None:
    from integrity.reports import FAULT_LABELS, proof_lines, render_html, report_json, timestamp_lines, verdict_line

    data = report_json(report, context)
    if report_file is not None:
        suffix = report_file.suffix.lower()
        if suffix not in (".html", ".htm", ".json"):
            fail("--report must name a .html or .json file")
        body = render_html(report, context) if suffix != ".json" else json.dumps(data, ensure_ascii=False, indent=2)
        try:
            report_file.write_text(body, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {report_file}: {exc.strerror}")
    if as_json:
        emit_json(data)
    else:
        style = "bold green" if report.ok else "bold red"
        console.print(f"[{style}]{verdict_line(report)}[/]", highlight=False)
        console.print(
            f"  {context.origin}  entries {report.entries_checked}  root {report.root_hash}\n"
            + "".join(f"  {line}\n" for line in proof_lines(report))
            + f"  personal data checked {report.pii_checked}, erased {report.pii_erased}, "
            f"not in source {report.pii_unavailable}",
            highlight=False,
        )
        for line in timestamp_lines(report):
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        ignored = sorted({name for check in report.checkpoints for name in check.ignored_cosigners})
        if ignored:
            console.print(f"  not counted (keys the policy does not list): {', '.join(ignored)}", highlight=False)
        for fault in report.faults[:20]:
            where = f"seq {fault.seq}" if fault.seq is not None else "checkpoint"
            console.print(f"  [red]✗[/] {FAULT_LABELS[fault.kind]} — {where}: {fault.detail}", highlight=False)
        if report_file is not None:
            console.print(f"  report written to {report_file}")
    if save_checkpoint is not None:
        _save_checkpoint(report, save_checkpoint, as_json)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _save_checkpoint(report: VerificationReport, path: Path, as_json: bool) -> None:
    """Keep the anchoring checkpoint for ``--since`` next time; only from a verified run."""
    if not report.ok or report.anchor_note is None:
        err_console.print(f"checkpoint not saved to {path}: the log was not verified")
        return
    try:
        path.write_text(report.anchor_note, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    if not as_json:
        console.print(f"  checkpoint of tree size {report.verified_tree_size} kept in {path} (use --since next time)")


@app.command("verify")
def verify(
    export: Annotated[
        Path | None, typer.Option("--export", help="verify this NDJSON export offline (no database)")
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="the log's verifier key(s) (.vkey lines or PEM); needed with --export"),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="a C2SP tlog-policy file (log keys, witnesses, quorum) instead of --public-key: a checkpoint "
            "anchors entries only when its witness quorum cosigned it",
        ),
    ] = None,
    trusted_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--since",
            "--trusted-checkpoint",
            help="a signed checkpoint kept from an earlier run: the log must still hold its tree",
        ),
    ] = None,
    save_checkpoint: Annotated[
        Path | None,
        typer.Option("--save-checkpoint", help="when verified, write the anchoring checkpoint here (for --since)"),
    ] = None,
    reference: Annotated[
        bool, typer.Option("--reference", help="with --export: the reference verifier only (slower)")
    ] = False,
    report_file: Annotated[
        Path | None, typer.Option("--report", help="also write the report to FILE.html or FILE.json")
    ] = None,
    tsa_cert: Annotated[
        list[Path] | None,
        typer.Option(
            "--tsa-cert",
            help="with --export: PEM root certificate(s) of the time-stamping authorities trusted for the "
            "checkpoints' RFC 3161 time-stamps (repeatable)",
        ),
    ] = None,
    require_timestamps: Annotated[
        bool,
        typer.Option("--require-timestamps", help="with --tsa-cert: a checkpoint without a time-stamp is a fault"),
    ] = False,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Verify chain, Merkle tree, checkpoints and personal data: exit 0 only when every entry is anchored by a trusted signed checkpoint, 1 otherwise."""
    trusted = _trusted(trusted_checkpoint)
    if policy_file is not None and public_key is not None:
        fail("--policy or --public-key, not both (a policy lists the log's keys itself)")
    policy = _policy(policy_file) if policy_file is not None else None
    if require_timestamps and not tsa_cert:
        fail("--require-timestamps needs --tsa-cert (the roots the time-stamps must chain to)")
    if export is not None:
        if public_key is None and policy is None:
            fail("--export needs --public-key (the log's verifier key) or --policy")
        roots = _tsa_roots(tsa_cert) if tsa_cert else None
        _verify_export(
            export,
            public_key,
            trusted,
            report_file,
            as_json,
            save_checkpoint,
            reference,
            roots,
            require_timestamps,
            policy,
        )
        return
    if public_key is not None:
        fail("--public-key goes with --export; the live check uses the configured keys")
    if tsa_cert:
        fail("--tsa-cert goes with --export: time-stamps are checked on an export")
    if reference:
        fail("--reference goes with --export")
    state = open_state(demo)
    try:
        with _Progress(state.audit.size(), "verifying") as progress:
            report = state.audit.verify(trusted_checkpoint=trusted, progress=progress, policy=policy)
        context = state.audit.report_context(trusted_checkpoint=trusted)
    finally:
        state.close()
    _render(report, context, report_file, as_json, save_checkpoint)


def _verify_export(
    export: Path,
    public_key: Path | None,
    trusted: SignedCheckpoint | None,
    report_file: Path | None,
    as_json: bool,
    save_checkpoint: Path | None,
    reference: bool,
    tsa_roots: list[Any] | None = None,
    require_timestamps: bool = False,
    policy: Policy | None = None,
) -> None:
    from datetime import UTC, datetime

    from audit.checkpoint import SignedNote
    from audit.export import load_verifier_keys, scan_export, verify_export
    from integrity.reports import ReportContext

    key_text = _read_text(public_key, "public key") if public_key is not None else ""
    try:
        with _Progress(_count_lines(export), "verifying") as progress:
            report = verify_export(
                export,
                key_text,
                trusted_checkpoint=trusted,
                progress=progress,
                reference=reference,
                tsa_roots=tsa_roots,
                require_timestamps=require_timestamps,
                policy=policy,
            )
        notes, _ = scan_export(export)
        names = [sig.name for note in notes for sig in _signatures(SignedNote, note)]
        if policy is not None:
            keys = tuple(k.to_text() for k in policy.logs) + tuple(
                f"witness {name} {key.to_text()}" for name, key in policy.witnesses.items()
            )
        else:
            keys = tuple(dict.fromkeys(k.to_text() for k in load_verifier_keys(key_text, names)))
    except AuditError as exc:
        fail(str(exc))
    origin = next((found for found in map(_origin, notes) if found), "unknown")
    context = ReportContext(origin, export.name, datetime.now(UTC), keys, trusted.size if trusted else None)
    _render(report, context, report_file, as_json, save_checkpoint)


def _tsa_roots(paths: list[Path]) -> list[Any]:
    """The TSA root certificates of the ``--tsa-cert`` files (PEM, one or more each)."""
    from audit.timestamps import load_roots

    roots: list[Any] = []
    for path in paths:
        try:
            roots += load_roots(_read_text(path, "TSA certificate").encode())
        except AuditError as exc:
            fail(f"TSA certificate {path}: {exc}")
    return roots


def _signatures(note_type: Any, note: str) -> Any:
    try:
        return note_type.from_text(note).signatures
    except AuditError:
        return ()


def _origin(note: str) -> str | None:
    first = note.split("\n", 1)[0]
    return first or None


@app.command("export")
def export_cmd(
    out: Annotated[Path | None, typer.Option("--out", help="write to this file (default: standard output)")] = None,
    include_pii: Annotated[
        bool, typer.Option("--include-pii", help="add personal data (pii_salt, pii_data); logged")
    ] = False,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Write the whole log as NDJSON (entries and checkpoints), streamed. With --out and --json,
    standard output gets {"out", "lines"} (without --out it carries the export itself)."""
    if as_json and out is None:
        fail("--json needs --out: without it the NDJSON export itself is written to standard output")
    actor = cli_actor()
    state = open_state(demo)
    try:
        if include_pii:
            state.audit.record(actor, "audit.exported", state.audit.origin, {"include_pii": True})
        target = nullcontext(sys.stdout.buffer) if out is None else _open_out(out)
        with target as handle:
            count = state.audit.export(handle, include_pii=include_pii)
    finally:
        state.close()
    if as_json:
        emit_json({"out": str(out), "lines": count, "include_pii": include_pii})
    elif out is not None:
        err_console.print(f"wrote {count} lines to {out}")


def _open_out(path: Path) -> Any:
    try:
        return path.open("wb")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")


@app.command("checkpoint")
def checkpoint(demo: DemoOption = False, as_json: JsonOption = False) -> None:
    """Sign a checkpoint over every committed entry now (and publish it when configured)."""
    state = open_state(demo)
    try:
        signed = state.audit.checkpoint_now()
    finally:
        state.close()
    if as_json:
        emit_json({"tree_size": signed.tree_size, "root_hash": signed.root_hash, "note": signed.note})
    else:
        sys.stdout.write(signed.note)


@app.command("erase-pii")
def erase_pii(
    seq: Annotated[int, typer.Argument(help="the entry whose personal data is erased")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the audit.pii.erased entry)")],
    admin: Annotated[
        str,
        typer.Option(
            "--admin",
            "--approved-by",
            envvar=ADMIN_ENV,
            help="the administrator who approves the erasure and confirms it with a TOTP code",
        ),
    ],
    code: CodeOption = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delete an entry's personal data (salt and data) and log audit.pii.erased, written as the
    operator and naming the approving administrator, whose TOTP code confirms it, and the
    reason; the chain stays verifiable."""
    from audit.erasure import MAX_REASON_CHARS, valid_reason
    from integrity.operator_auth import SensitiveCommand

    if not valid_reason(reason.strip()):  # before the code is asked for: a refusal spends none
        fail(f"an erasure needs a reason (at most {MAX_REASON_CHARS} characters)")
    who = operator()
    secret = ask_code(admin, code)
    state = open_state(demo)
    try:
        approved = confirmed(state, who, admin, secret, SensitiveCommand.ERASE_PERSONAL_DATA)
        try:
            erasure = state.audit.erase_pii(seq, reason, approved_by=approved.approved_by or "", actor=approved.actor)
        except AuditError as exc:
            fail(str(exc))
    finally:
        state.close()
    if as_json:
        emit_json({"seq": seq, "erasure_seq": erasure})
    else:
        console.print(f"[green]✓[/] personal data of entry {seq} erased; logged as entry {erasure}")


@app.command("acknowledge-rollback")
def acknowledge_rollback(
    reason: Annotated[
        str, typer.Option("--reason", help="why appends may resume (recorded in the audit.rollback.acknowledged entry)")
    ],
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """After a restore to an older state: log, as the operator, which entries the witnesses
    counted that the log lost (one audit.rollback.acknowledged entry), and let appends resume.
    Exit 2, nothing written, when the log is not rolled back."""
    actor = cli_actor()
    state = open_state(demo)
    try:
        try:
            done = state.audit.acknowledge_rollback(reason, actor=actor)
        except AuditError as exc:
            fail(str(exc))
    finally:
        state.close()
    witnesses = [{"witness": f.witness, "witness_size": f.witness_size} for f in done.findings]
    if as_json:
        emit_json(
            {
                "seq": done.seq,
                "log_size": done.log_size,
                "lost_first": done.lost.first,
                "lost_last": done.lost.last,
                "witnesses": witnesses,
            }
        )
        return
    named = ", ".join(f"{w['witness']} ({w['witness_size']})" for w in witnesses)
    console.print(
        f"[green]✓[/] loss of entries {done.lost} acknowledged (witnesses: {named}); logged as entry {done.seq}; "
        "appends resume",
        highlight=False,
    )
