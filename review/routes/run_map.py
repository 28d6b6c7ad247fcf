"""The map of the run: every site as a point over a picture of the after scenes.

``/map`` is the page (drawn by ``static/map.js`` on a canvas, so 10,000 sites stay responsive);
``/api/map`` gives the sites as columns (one array per field); ``/map/overview.jpg`` the picture
(503 while it is still being made; the page asks ``/map/overview-status`` first). Verdicts follow the independent-review rule of the queue: a
site's decision shows only once you have given your own verdict on it (others' are "hidden").
"""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from review.consensus import needs_adjudication
from review.guards import Reviewer
from review.state import State

router = APIRouter()


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def map_sites(state: Any, reviewer: str) -> dict[str, list[Any]]:
    """The run's sites as columns for the map (see the module doc for ``verdict``)."""
    summaries = state.queues.summaries()
    mine = state.store.reviewed_by(reviewer)
    cols: dict[str, list[Any]] = {k: [] for k in ("index", "id", "name", "lon", "lat", "score", "rank", "status", "flagged", "verdict")}
    for s in state.run.sites:
        c = summaries.get(s.site_id)
        if c is None:
            verdict = ""
        elif s.site_id not in mine:
            verdict = "hidden"
        elif needs_adjudication(c):
            verdict = "disputed"
        else:
            verdict = c.final or "undecided"
        cols["index"].append(s.index)
        cols["id"].append(s.site_id)
        cols["name"].append(s.name)
        cols["lon"].append(_num(s.lon))
        cols["lat"].append(_num(s.lat))
        cols["score"].append(_num(s.score))
        cols["rank"].append(s.rank)
        cols["status"].append(s.status if s.ok else "cannot_assess")
        cols["flagged"].append(bool(s.flagged))
        cols["verdict"].append(verdict)
    return cols


@router.get("/map", response_class=HTMLResponse)
def map_page(request: Request, state: State, reviewer: Reviewer, site: int | None = None) -> Response:
    """The map page (``?site=INDEX`` selects a site)."""
    selected = site if site is not None and state.site(site) is not None else None
    return state.render(request, "map.html", selected=selected, map=state.map)


@router.get("/api/map")
def map_data(request: Request, state: State, reviewer: Reviewer) -> Response:
    """Extent, picture status, threshold and the sites, as JSON (gzip when the client takes it:
    10,000 sites are about 1 MB of JSON, 0.2 MB compressed)."""
    m = state.map
    body = json.dumps({
        "extent": m.extent.as_dict() if m.extent is not None else None,
        "overview": {"status": m.status, "note": m.note, "url": "/map/overview.jpg"},
        "threshold": state.queues.threshold,
        "sites": map_sites(state, reviewer),
    }, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(gzip.compress(body, 5), media_type="application/json",
                        headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
    return Response(body, media_type="application/json")


@router.get("/map/overview-status")
def overview_status(state: State) -> Response:
    """Whether the picture is ready (``building``, ``ready`` or ``none``), with a note."""
    return Response(json.dumps({"status": state.map.status, "note": state.map.note}), media_type="application/json")


@router.get("/map/overview.jpg")
def overview_image(state: State) -> Response:
    """The picture of the after scenes (503 with a note while it is made or when there is none)."""
    image = state.map.image()
    if image is None:
        message = "the picture of the after scenes is being made" if state.map.status == "building" else state.map.note
        return PlainTextResponse(message or "no picture", 503, headers={"Retry-After": "2"})
    return Response(image, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
