"""``bhxh-integrity witness``: set up and serve a witness of the audit log (C2SP tlog-witness),
the program another agency runs so that whoever holds the log's key cannot rewrite its history
unseen. It needs no database nor BHXH_* settings: only its directory and the log's verifier key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from api.cli_output import emit_json

app = typer.Typer(help="Witness of the audit log (C2SP tlog-witness), run by another agency.", no_args_is_help=True)

DirOption = Annotated[Path, typer.Option("--dir", help="the witness's directory (keys and cosigned checkpoints)")]


@app.command("init")
def init(
    name: Annotated[str, typer.Option("--name", help="the witness's key name, e.g. witness.example.gov.vn/w1")],
    directory: DirOption,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Create the witness's ML-DSA-44 and Ed25519 keys in DIR (never replacing existing ones) and
    print its verifier keys, which the log's operator adds to its list of witnesses."""
    from integrity.witness_service import VKEY_FILE, init_witness

    keys = init_witness(directory, name)
    if as_json:
        emit_json(
            {
                "name": name,
                "dir": str(directory),
                "vkeys": [{"type": key.kind.name.lower(), "vkey": key.to_text()} for key in keys],
                "vkey_file": str(directory / VKEY_FILE),
            }
        )
        return
    # Written raw: an ML-DSA-44 vkey is ~1,760 characters and must stay one unbroken line.
    sys.stdout.write("".join(key.to_text() + "\n" for key in keys))


@app.command("serve")
def serve(
    directory: DirOption,
    log: Annotated[
        list[Path], typer.Option("--log", help="verifier key file of a log to follow (repeatable)", show_default=False)
    ],
    origin: Annotated[
        str | None,
        typer.Option(help="the log's checkpoint origin, if not its key's name (with a single --log)"),
    ] = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8080,
) -> None:
    """Serve POST /add-checkpoint and GET /<origin hash>/checkpoint for the logs given by --log."""
    import uvicorn

    from api.witness_app import create_witness_app
    from integrity.logs import configure_logging
    from integrity.witness_service import open_witness

    configure_logging("INFO")
    service, lock = open_witness(directory, log, origin)
    try:
        # One process: the per-log locks that make add-checkpoint atomic are in-process.
        uvicorn.run(
            create_witness_app(service), host=host, port=port, log_config=None, access_log=False, proxy_headers=False
        )
    finally:
        lock.release()
