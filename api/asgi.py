"""Entry point for uvicorn workers: builds the app from the ``BHXH_*`` environment."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from integrity.logs import configure_logging
from integrity.settings import Settings


def app_factory() -> FastAPI:
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
