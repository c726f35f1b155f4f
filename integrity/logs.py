"""Structured JSON logs (structlog) with the request id bound on every line of a request.

Secrets, keys, codes, tokens and personal data never belong in a log line. Callers must not
pass them; as a second guard, a processor replaces the value of any field whose name says it
holds one.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_SENSITIVE_FIELDS = frozenset(
    {
        "password",
        "new_password",
        "passphrase",
        "secret",
        "token",
        "api_key",
        "authorization",
        "code",
        "recovery_code",
        "totp",
        "otp",
        "mfa_token",
        "session",
        "cookie",
        "private_key",
        "pii",
        "applicant",
        "id_number",
        "name_of_person",
    }
)
REDACTED = "[redacted]"
# Third-party loggers whose DEBUG lines carry message content (tests/test_secret_hygiene.py).
_DATA_DUMPING_LOGGERS = ("signxml",)


def _redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in list(event_dict):
        if key.lower() in _SENSITIVE_FIELDS:
            event_dict[key] = REDACTED
    return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON lines on ``stream`` (stderr by default); stdlib logging is routed through too."""
    out: Any = stream or _CurrentStderr()
    numeric = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    # uvicorn's own access log would print raw paths and query strings; ours is structured.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every URL it fetches, query string included; the gateway logs its own lines.
    # alembic narrates every migration step at INFO; `init` and `migrate` report what changed.
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    # These print the data they handle at DEBUG (signxml: the canonicalised XML, i.e. the
    # dossier with names and ID numbers), so they stay at WARNING even when we debug.
    for dumper in _DATA_DUMPING_LOGGERS:
        logging.getLogger(dumper).setLevel(logging.WARNING)


def get_logger(name: str = "bhxh") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
