"""The reviewers' web app (FastAPI): queues, one site at a time, verdicts, progress.

Build it with :func:`create_app`; :func:`review.server.serve` runs it with uvicorn. Pages are
server-rendered Jinja2 templates with autoescaping on (every text from input files or reviewers is
escaped), plus one static script for keyboard shortcuts and the swipe/flicker views. Requests never
run the CNN: chips come from the run folder (or are cut on demand, see
:mod:`review.chip_provider`) and the quick re-rank uses stored embeddings.

The app is assembled here from its parts: the shared state (:mod:`review.state`), the request
rules (:mod:`review.guards`: access middleware and the app-wide CSRF dependency) and one router
per area (:mod:`review.routes`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from review.config import ReviewConfig
from review.guards import access_guard, csrf_protected, install_handlers
from review.routes import auth, chip_images, downloads, progress, queues, run_map, sites
from review.state import HERE, AppSettings, ReviewApp

ROUTERS = (auth.router, queues.router, sites.router, chip_images.router, progress.router, run_map.router,
           downloads.router)


def create_app(
    run_dir: str | Path,
    config: ReviewConfig | None = None,
    *,
    token: str | None = None,
    allowed_hosts: frozenset[str] | None = None,
) -> FastAPI:
    """The review app for one run folder.

    Args:
        run_dir: the run folder (``scores.csv`` ...); ``review.sqlite`` is created in it.
        config: review settings (defaults when None).
        token: access token required on every request, or None for none.
        allowed_hosts: host names accepted in the ``Host`` header (None: any).

    Raises:
        RunFolderError: the folder is not a readable run folder.
    """
    state = ReviewApp(run_dir, config or ReviewConfig(), AppSettings(token=token, allowed_hosts=allowed_hosts))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.chips.close()

    app = FastAPI(
        title="sitewatch review",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        dependencies=[Depends(csrf_protected)],
    )
    app.state.review = state
    state.map.start()  # the run map's picture, made from the rasters in the background
    install_handlers(app)
    app.middleware("http")(access_guard)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for router in ROUTERS:
        app.include_router(router)
    return app
