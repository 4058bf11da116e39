"""What a browser gets: the dashboard at `/` and Swagger UI at `/docs`, every asset served from here
(nothing from a CDN, so both work offline). Any other client asking for `/` gets the JSON 404 that
names what exists."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

DASHBOARD = Path(__file__).parent / "dashboard"
SWAGGER_ASSETS = Path(str(files("fastapi_offline") / "static"))  # Swagger UI 5, shipped inside the wheel
DASHBOARD_HEADERS = {
    # only this origin: the page talks to /v1 alone; blob: for the loss picture and the downloads
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def docs_headers(page: str) -> dict[str, str]:
    """/docs runs Swagger UI's bundle from /docs/assets and one inline script, the configuration
    FastAPI writes into the page: that script is allowed by its hash, nothing else inline. No site
    may frame the page (clickjacking of its Authorize form)."""
    inline = re.findall(r"<script>(.*?)</script>", page, re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline)
    return {
        "Content-Security-Policy": f"default-src 'self'; script-src 'self' {hashes}; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def install_web(app: FastAPI) -> None:
    app.mount("/dashboard", StaticFiles(directory=DASHBOARD), name="dashboard")
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_ASSETS), name="docs-assets")

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> FileResponse:
        if "text/html" not in request.headers.get("accept", ""):
            raise HTTPException(404)  # answered by the 404 handler, which names what exists
        return FileResponse(DASHBOARD / "index.html", media_type="text/html", headers=DASHBOARD_HEADERS)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/assets/favicon.png",
            # no call to validator.swagger.io; a key given to Authorize is kept in the page only, never
            # in the origin's storage, which the dashboard shares
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
        )
        page.headers.update(docs_headers(page.body.decode()))
        return page
