"""What every CLI command needs before it works: settings from the environment (with --demo),
the application state, and starting a uvicorn server. Shared by api/cli.py and the domain
command modules, so they import it directly instead of reaching back into api.cli."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from api.cli_output import fail
from integrity.app_state import AppState, build_state
from integrity.logs import configure_logging
from integrity.migrate import require_current
from integrity.settings import Settings

DEMO_KEYS_DIR = Path("keys.example")


def load_settings(demo: bool = False) -> Settings:
    """Settings from the environment; --demo switches to keys.example/ unless BHXH_KEYS_DIR is set."""
    overrides: dict[str, object] = {}
    if demo:
        overrides["demo"] = True
        if "BHXH_KEYS_DIR" not in os.environ:
            overrides["keys_dir"] = DEMO_KEYS_DIR
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        fail("invalid settings: " + "; ".join(f"{_variable(e['loc'])}: {e['msg']}" for e in exc.errors()))
    except SettingsError as exc:
        # pydantic-settings reads list settings as JSON and names only the field when that fails.
        field = re.search(r'field "(\w+)"', str(exc))
        name = _variable((field.group(1),)) if field else "a BHXH_* setting"
        examples = {
            "BHXH_WITNESSES": '[{"name": …, "url": …, "vkey": …}]',
            "BHXH_RATE_LIMITS": '{"sign": "200/second", "audit-read": "50/second"}',
        }
        example = examples.get(name, '["/path/a.pem", "/path/b.pem"]')
        fail(f"invalid settings: {name} is not valid JSON (written {example})")


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable a settings field is read from, as the README names it."""
    return "BHXH_" + ".".join(map(str, loc)).upper()


def open_state(demo: bool = False) -> AppState:
    """Settings, then the database (it must exist and be migrated: nothing is created here),
    then the keys and services."""
    settings = load_settings(demo)
    configure_logging(settings.log_level)
    require_current(settings.database_url)
    return build_state(settings)


def run_server(
    factory: str,
    *,
    demo: bool,
    host: str | None,
    port: int | None,
    workers: int | None,
    check: Callable[[AppState], None] = lambda _state: None,
) -> None:
    """Serve the uvicorn app ``factory`` ("module:function"). Keys and settings are checked once
    here, before workers fork, so a bad key stops with exit 2 instead of a crash loop."""
    import uvicorn

    if demo:
        # Worker processes build their own state from the environment.
        os.environ["BHXH_DEMO"] = "1"
        os.environ.setdefault("BHXH_KEYS_DIR", str(DEMO_KEYS_DIR))
    settings = load_settings(demo)
    configure_logging(settings.log_level)
    require_current(settings.database_url)
    state = build_state(settings)
    try:
        check(state)
    finally:
        state.close()
    uvicorn.run(
        factory,
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )
