"""The API documentation page, ``/docs``: Swagger UI served from this service itself.

The Swagger UI files come from the installed ``fastapi-offline`` package and the start-up
script from ``api/static``, all under ``/docs/assets``: the page loads nothing from another
origin (the service runs where no CDN is reachable) and runs no inline script, so its CSP
keeps ``script-src 'self'``. ReDoc is not offered: its styling is injected inline, which that
CSP refuses.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from api.middleware import DOCS_CSP

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
# Our start-up script first, then Swagger UI's own files (swagger-ui-bundle.js, swagger-ui.css,
# favicon.png), each found inside its installed package.
ASSET_PACKAGES: list[str | tuple[str, str]] = [("api", "static"), ("fastapi_offline", "static")]

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/docs-init.js"></script>
</body>
</html>
"""


@router.get(DOCS_PATH)
def docs_page(request: Request) -> HTMLResponse:
    app = request.app
    root = request.scope.get("root_path", "").rstrip("/")
    html = _PAGE.format(
        title=escape(f"{app.title} API"),
        assets=escape(root + ASSETS_PATH),
        openapi=escape(root + (app.openapi_url or "")),
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_CSP})


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets (the app must be built with ``docs_url=None``)."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(packages=ASSET_PACKAGES), name="docs-assets")
