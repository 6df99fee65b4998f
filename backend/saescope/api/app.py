"""The FastAPI application: `create_app(settings)` wires the store reader, the live engine, the
routers under `/api/v1`, the JSON error handlers, the ASGI middlewares in front of them (the request
guard first: Host, NUL characters, API key; then the lean path for stored feature pages, then the
body size limit) and the static frontend.

Owns application assembly only: routers hold the endpoints, `runtime` the engine and model worker,
`errors` the error mapping, `store.reader` the SQL. The app is read-only: no endpoint writes to the
store or the file system. Serves `frontend/` at `/` and plotly.js from the installed `plotly`
package at `/vendor/plotly.min.js` (never a CDN). Files of the frontend folder are served only
when they resolve inside it: a symlink pointing out of the folder is not followed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from saescope.api.body_limit import RequestBodyLimit
from saescope.api.deps import AppState
from saescope.api.errors import install_error_handlers
from saescope.api.page_fast_path import FeaturePageFastPath
from saescope.api.request_guard import RequestGuard
from saescope.api.routers import dictionaries, features, inference, interpretability, interventions, meta
from saescope.api.runtime import EngineHolder, ModelWorker, freeze_long_lived_objects
from saescope.api.settings import ApiSettings
from saescope.store.database import parse_store_url
from saescope.store.reader import StoreReader

log = logging.getLogger("saescope.api")

API_PREFIX = "/api/v1"
SETTINGS_ENV = "SAESCOPE_API_SETTINGS"


def default_frontend_dir() -> Path | None:
    """The repository's `frontend/` folder when running from a checkout, else None."""
    candidate = Path(__file__).resolve().parents[3] / "frontend"
    return candidate if (candidate / "index.html").is_file() else None


def plotly_js_path() -> Path | None:
    try:
        import plotly
    except ImportError:  # pragma: no cover - plotly is a dependency
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def mount_offline_docs(app: FastAPI) -> None:
    """Serve the interactive OpenAPI page at /docs with Swagger UI's files from the installed
    `swagger-ui-bundle` package (users may be offline, so never from a CDN)."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/vendor/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def swagger_docs() -> Any:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="saescope API",
            swagger_js_url="/vendor/swagger/swagger-ui-bundle.js",
            swagger_css_url="/vendor/swagger/swagger-ui.css",
            swagger_favicon_url="/vendor/swagger/favicon-32x32.png",
        )


def mount_frontend(app: FastAPI, folder: Path) -> None:
    """Serve `folder` at `/`: index.html at `/`, each top-level file at `/<name>`, each sub-folder
    as static files at `/<name>/`. (Not one catch-all mount at `/`, which would swallow `/api/...`
    405 answers and unknown API paths.)"""
    index = folder / "index.html"
    if index.is_file():

        @app.get("/", include_in_schema=False)
        def frontend_index() -> FileResponse:
            return FileResponse(index, media_type="text/html")

    root = folder.resolve()
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in ("api", "docs", "openapi.json", "vendor"):
            continue
        if not entry.resolve().is_relative_to(root):
            log.warning("not serving %s: it points outside the frontend folder", entry.name)
            continue
        if entry.is_dir():  # StaticFiles does not follow symlinks out of its folder (follow_symlink=False)
            app.mount(f"/{entry.name}", StaticFiles(directory=str(entry)), name=f"frontend-{entry.name}")
        elif entry.is_file():
            app.add_api_route(
                f"/{entry.name}", _file_endpoint(entry), methods=["GET"], include_in_schema=False
            )


def _file_endpoint(path: Path):  # type: ignore[no-untyped-def]
    def serve() -> FileResponse:
        return FileResponse(path)

    return serve


def warn_if_store_unreadable(reader: StoreReader, store_url: str) -> None:
    """Log a warning at start-up when the store cannot be read (wrong schema, missing tables, no
    server): the server still starts, and every store endpoint answers an error until it can."""
    try:
        reader.count_dictionaries()
    except Exception as exc:  # noqa: BLE001 - any failure means the same to the operator
        shown = parse_store_url(store_url)[1].render_as_string(hide_password=True)
        log.warning("the store %s cannot be read (%s: %s); store endpoints will fail until it can",
                    shown, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")


def create_app(settings: ApiSettings) -> FastAPI:
    """A FastAPI app serving the atlas at `settings.store_url` (read-only) and live inference."""
    reader = StoreReader.from_url(settings.store_url)
    holder = EngineHolder(reader, settings.atlas_root, settings.device, settings.model_id)
    worker = ModelWorker.from_settings(settings)
    state = AppState(settings=settings, reader=reader, holder=holder, worker=worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warn_if_store_unreadable(reader, settings.store_url)
        if settings.preload_engine:

            def preload() -> None:
                holder.engine_for(reader.list_dictionaries(holder.served_model_id()))

            try:
                await worker.run(preload, timeout_s=None)
            except Exception as exc:  # the read API still works without the engine
                log.error("could not preload the engine (%s); live endpoints will retry on use", exc)
        freeze_long_lived_objects()  # what start-up built lives as long as the server
        try:
            yield
        finally:
            worker.shutdown()
            reader.close()

    app = FastAPI(
        title="saescope",
        version="0.1.0",
        description="A self-hosted atlas of sparse-autoencoder features: browse precomputed feature "
        "records, run live inference on pasted text, steer and ablate. Errors are JSON "
        '`{"error": message, "field": path}`.',
        lifespan=lifespan,
        docs_url=None,  # served below from the installed swagger-ui-bundle: no CDN, works offline
        redoc_url=None,
    )
    app.state.saescope = state
    mount_offline_docs(app)
    install_error_handlers(app)
    # the last added runs first: stored pages (GET, no body) are answered before anything else looks
    # at the request; the body limit comes before anything that reads a body
    app.add_middleware(RequestBodyLimit, max_bytes=settings.limits.max_body_bytes)
    if settings.fast_paths:
        app.add_middleware(FeaturePageFastPath, reader=reader, prefix=API_PREFIX)
    app.add_middleware(RequestGuard, security=settings.security, prefix=API_PREFIX)
    for module in (meta, dictionaries, features, inference, interventions, interpretability):
        app.include_router(module.router, prefix=API_PREFIX)

    plotly_js = plotly_js_path()
    if plotly_js is not None:

        @app.get("/vendor/plotly.min.js", include_in_schema=False)
        def plotly_bundle() -> FileResponse:
            return FileResponse(plotly_js, media_type="application/javascript")

    frontend = settings.frontend_dir or default_frontend_dir()
    if frontend is not None and Path(frontend).is_dir():
        mount_frontend(app, Path(frontend))
    else:

        @app.get("/", include_in_schema=False)
        def no_frontend() -> JSONResponse:
            return JSONResponse({"message": "saescope API: see /docs; no frontend folder found"})

    return app


def create_app_from_env() -> FastAPI:
    """App factory for multi-process serving: settings from the `SAESCOPE_API_SETTINGS` environment
    variable (ApiSettings as JSON). Use as
    `uvicorn.run("saescope.api.app:create_app_from_env", factory=True, workers=N)` after setting it
    (e.g. `os.environ[SETTINGS_ENV] = settings.model_dump_json()`). Each worker process loads its
    own engine on first live request."""
    import os

    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        from saescope.errors import ConfigError

        raise ConfigError(f"set {SETTINGS_ENV} to the ApiSettings JSON before starting workers")
    return create_app(ApiSettings.model_validate_json(raw))
