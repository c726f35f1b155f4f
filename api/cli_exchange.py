"""``bhxh-integrity exchange``: the peer registry (``peers add|list|update|remove``), the replay
guard's housekeeping (``nonces purge``), a standalone verifying gateway (``gateway``) and the
public key that gateway signs with (``gateway-key``).

Every registry change is logged in the audit log by ``integrity.exchange`` as the operator
(``operator:<OS login>``) with the administrator whose TOTP code confirmed it (``--admin``).
Exit codes: 0 done, 2 bad usage or input, or a refused code (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from api.cli_operator import ADMIN_ENV, AdminOption, CodeOption, ask_code, confirmed, operator
from api.cli_output import console, emit_json, fail
from api.cli_state import open_state, run_server
from integrity.errors import IntegrityError
from integrity.operator_auth import SensitiveCommand

if TYPE_CHECKING:
    from integrity.app_state import AppState
    from integrity.exchange import ExchangeService, Peer

app = typer.Typer(help="Portal ↔ one-stop exchange: peers, replay guard, gateway.", no_args_is_help=True)
peers_app = typer.Typer(help="The registry of peers (keys, routes, base URLs).", no_args_is_help=True)
nonces_app = typer.Typer(help="The replay guard.", no_args_is_help=True)
app.add_typer(peers_app, name="peers")
app.add_typer(nonces_app, name="nonces")

DemoOption = Annotated[
    bool, typer.Option("--demo", help="use the demonstration PKI of keys.example/ (NOT FOR PRODUCTION)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
MAX_KEY_FILE_BYTES = 64 * 1024


def _service(state: AppState) -> ExchangeService:
    from api.routes.exchange import get_exchange

    return get_exchange(state)


def _read_key(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if len(data) > MAX_KEY_FILE_BYTES:
        fail(f"{path} is too large for a key or certificate")
    return data


def _code(admin: str, code: str | None) -> str:
    if not admin:
        fail(f"a change of peer is confirmed by an administrator: give --admin USER (or {ADMIN_ENV})")
    return ask_code(admin, code)


def _show(peer: Peer) -> None:
    console.print(
        f"[bold]{peer.name}[/]  keyid={peer.keyid}  {peer.key.algorithm.value}  sha256:{peer.fingerprint()[:16]}…"
    )
    if peer.previous is not None and peer.previous_until is not None:
        console.print(f"  previous keyid={peer.previous.keyid}  accepted until {peer.previous_until.isoformat()}")
    console.print(f"  base URL: {peer.base_url or '—'}")
    for route in peer.routes or ():
        console.print(f"  route: {route}")
    if not peer.routes:
        console.print("  routes: none (the peer may send nothing)")


@peers_app.command("add")
def peers_add(
    name: Annotated[str, typer.Argument(help="peer name, e.g. portal, one-stop, vssid")],
    keyid: Annotated[str, typer.Option("--keyid", help="the RFC 9421 keyid the peer signs with")],
    key: Annotated[Path, typer.Option("--key", help="PEM certificate or PEM public key of the peer")],
    route: Annotated[list[str] | None, typer.Option("--route", help="'METHOD /path' the peer may use; repeat")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="where the gateway forwards to this peer")] = None,
    admin: AdminOption = "",
    code: CodeOption = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Register a peer (logged as exchange.peer.added; an administrator's TOTP code confirms it)."""
    pem = _read_key(key)
    who, secret = operator(), _code(admin, code)
    state = open_state(demo)
    try:
        approved = confirmed(state, who, admin, secret, SensitiveCommand.ADD_PEER)
        peer = _service(state).peers.add(
            name,
            keyid=keyid,
            key_pem=pem,
            routes=route or [],
            base_url=base_url,
            actor=approved.actor,
            approved_by=approved.approved_by,
        )
    except IntegrityError as exc:
        fail(str(exc))
    finally:
        state.close()
    if as_json:
        emit_json(peer.as_dict())
    else:
        _show(peer)


@peers_app.command("list")
def peers_list(demo: DemoOption = False, as_json: JsonOption = False) -> None:
    """List the registered peers."""
    state = open_state(demo)
    try:
        peers = _service(state).peers.all()
    finally:
        state.close()
    if as_json:
        emit_json([p.as_dict() for p in peers])
        return
    if not peers:
        console.print("no peers registered")
    for peer in peers:
        _show(peer)


@peers_app.command("update")
def peers_update(
    name: str,
    keyid: Annotated[str | None, typer.Option("--keyid", help="new keyid")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="new PEM certificate or public key")] = None,
    route: Annotated[list[str] | None, typer.Option("--route", help="replaces ALL routes; repeat")] = None,
    no_routes: Annotated[bool, typer.Option("--no-routes", help="remove every route")] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help="new base URL")] = None,
    no_base_url: Annotated[bool, typer.Option("--no-base-url", help="remove the base URL")] = False,
    overlap: Annotated[
        int,
        typer.Option("--overlap", help="seconds the replaced key is still accepted (needs --key and a new --keyid)"),
    ] = 0,
    end_overlap: Annotated[bool, typer.Option("--end-overlap", help="stop accepting the replaced key now")] = False,
    admin: AdminOption = "",
    code: CodeOption = None,
    demo: DemoOption = False,
    as_json: JsonOption = False,
) -> None:
    """Change a peer's key, routes or base URL (logged as exchange.peer.updated).

    Key rotation without refusals: --key NEW.pem --keyid NEW-ID --overlap 86400 keeps the old
    key accepted for a day while the peer's instances switch over."""
    if (route and no_routes) or (base_url and no_base_url):
        fail("--route and --no-routes (or --base-url and --no-base-url) exclude each other")
    pem = _read_key(key) if key is not None else None
    routes = [] if no_routes else route
    who, secret = operator(), _code(admin, code)
    state = open_state(demo)
    try:
        approved = confirmed(state, who, admin, secret, SensitiveCommand.UPDATE_PEER)
        peer = _service(state).peers.update(
            name,
            keyid=keyid,
            key_pem=pem,
            routes=routes,
            base_url=base_url,
            clear_base_url=no_base_url,
            overlap_seconds=overlap,
            end_overlap=end_overlap,
            actor=approved.actor,
            approved_by=approved.approved_by,
        )
    except IntegrityError as exc:
        fail(str(exc))
    finally:
        state.close()
    if as_json:
        emit_json(peer.as_dict())
    else:
        _show(peer)


@peers_app.command("remove")
def peers_remove(
    name: str, admin: AdminOption = "", code: CodeOption = None, demo: DemoOption = False, as_json: JsonOption = False
) -> None:
    """Unregister a peer: its messages are refused from now on (logged as exchange.peer.removed;
    an administrator's TOTP code confirms it)."""
    who, secret = operator(), _code(admin, code)
    state = open_state(demo)
    try:
        approved = confirmed(state, who, admin, secret, SensitiveCommand.REMOVE_PEER)
        peer = _service(state).peers.remove(name, actor=approved.actor, approved_by=approved.approved_by)
    except IntegrityError as exc:
        fail(str(exc))
    finally:
        state.close()
    if as_json:
        emit_json({"removed": peer.name})
    else:
        console.print(f"removed peer {peer.name}")


@nonces_app.command("purge")
def nonces_purge(demo: DemoOption = False, as_json: JsonOption = False) -> None:
    """Delete replay-guard entries whose signatures have expired (the service also does this)."""
    state = open_state(demo)
    try:
        purged = _service(state).nonces.purge_expired()
    finally:
        state.close()
    if as_json:
        emit_json({"purged": purged})
    else:
        console.print(f"purged {purged} expired nonce(s)")


@app.command("gateway")
def gateway(
    demo: DemoOption = False,
    host: Annotated[str | None, typer.Option(help="bind address (BHXH_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (BHXH_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (BHXH_WORKERS)")] = None,
) -> None:
    """Serve only the verifying gateway (/gateway/{peer}/{path}, /healthz, /readyz)."""

    def _needs_gateway_key(state: AppState) -> None:
        if _service(state).gateway.key is None:
            fail(
                "no gateway key (gateway-exchange.key.pem in the keys directory, or BHXH_GATEWAY_KEY_LABEL): "
                "the gateway cannot sign what it forwards"
            )

    run_server(
        "api.cli_exchange:gateway_app_factory",
        demo=demo,
        host=host,
        port=port,
        workers=workers,
        check=_needs_gateway_key,
    )


@app.command("gateway-key")
def gateway_key(demo: DemoOption = False, as_json: JsonOption = False) -> None:
    """The gateway's keyid, algorithm and public key (PEM), to register with the portal and
    the one-stop system, which check every message the gateway signs."""
    state = open_state(demo)
    try:
        service = _service(state)
        try:
            key = service.gateway.public_key()
        except IntegrityError as exc:
            fail(str(exc))
        on_token = service.gateway.on_token
    finally:
        state.close()
    shown = {
        "keyid": key.keyid,
        "algorithm": key.algorithm.value,
        "on_token": on_token,
        "public_key_pem": key.public_pem(),
    }
    if as_json:
        emit_json(shown)
        return
    console.print(f"keyid={key.keyid}  {key.algorithm.value}  {'on the PKCS#11 token' if on_token else 'key file'}")
    typer.echo(key.public_pem(), nl=False)


def gateway_app_factory() -> object:
    """uvicorn factory of the standalone gateway (one state per worker process)."""
    from api.gateway import create_gateway_app
    from integrity.app_state import build_state
    from integrity.logs import configure_logging
    from integrity.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level)
    return create_gateway_app(build_state(settings))
