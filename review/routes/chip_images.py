"""Chip PNGs: the files ``detect`` wrote into the run folder, and chips cut on demand."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from review.state import State

router = APIRouter()

#: browsers may keep chip images (they never change for a run) for an hour.
CHIP_CACHE = {"Cache-Control": "private, max-age=3600"}
CHIP_PROBLEMS = {
    "unlisted": "only the outputs manifest.json lists are served",
    "missing": "listed in manifest.json but not in the folder",
    "changed": "it changed after detect wrote it: run `sitewatch verify` on the run folder",
}


@router.get("/rendered-chip/{index}/{epoch}.png")
def rendered_chip(state: State, index: int, epoch: str) -> Response:
    """A chip cut from the run's rasters on demand (``epoch``: ``before`` or ``after``)."""
    site = state.site(index)
    if site is None or epoch not in ("before", "after"):
        return PlainTextResponse("no such chip", 404)
    data = state.chips.rendered_png(site, epoch)
    if data is None:
        reason = state.chips.ensure_rendered(site) if state.chips.render else "chips are not cut on demand"
        return PlainTextResponse(reason or "no chip", 404)
    return Response(data, media_type="image/png", headers=CHIP_CACHE)


@router.get("/context-chip/{index}/{epoch}.png")
def context_chip(state: State, index: int, epoch: str) -> Response:
    """The site's context view (the pair zoomed out), cut from the run's rasters on demand."""
    site = state.site(index)
    if site is None or epoch not in ("before", "after"):
        return PlainTextResponse("no such context view", 404)
    data = state.chips.context_png(site, epoch)
    if data is None:
        return PlainTextResponse(state.chips.context_note(site) or "no context view", 404)
    return Response(data, media_type="image/png", headers=CHIP_CACHE)


@router.get("/chip/{path:path}")
def chip(state: State, path: str) -> Response:
    """A chip file of the run folder: a ``.png`` that ``manifest.json`` lists as an output, unchanged."""
    if not path.lower().endswith(".png"):
        return PlainTextResponse("only chip images (.png) are served", 404)
    data, problem = state.chips.outputs.read(path)
    if data is None:  # the requested path is not echoed back
        return PlainTextResponse(f"no such chip in this run folder ({CHIP_PROBLEMS.get(problem, problem)})", 404)
    return Response(data, media_type="image/png", headers=CHIP_CACHE)
