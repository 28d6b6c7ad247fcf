"""The run's map layers as downloads: ``scores.gpkg`` (QGIS) and ``scores.kml`` (Google Earth).

Served only when ``manifest.json`` lists the file among the run's outputs and its SHA-256 still
matches (:class:`review.run_outputs.RunOutputs`, the same rule as the chips): reviewers download
what the run produced, nothing else of the folder.
"""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from review.routes.chip_images import CHIP_PROBLEMS
from review.state import State

router = APIRouter()

#: the files that may be downloaded: ``{name: (media type, what it is for)}``.
DOWNLOADS = {
    "scores.gpkg": ("application/geopackage+sqlite3", "GeoPackage, for QGIS"),
    "scores.kml": ("application/vnd.google-earth.kml+xml", "KML, for Google Earth"),
}


def download_name(run_name: str, name: str) -> str:
    """The file name offered to the browser: ``<run>-scores.gpkg``, only ``A-Z a-z 0-9 . _ -``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", run_name).strip("._") or "run"
    return f"{stem[:80]}-{name}"


@router.get("/download/{name}")
def download(state: State, name: str) -> Response:
    """One of :data:`DOWNLOADS`, when the run lists it and it is unchanged."""
    if name not in DOWNLOADS:
        return PlainTextResponse(f"only {', '.join(DOWNLOADS)} can be downloaded", 404)
    data, problem = state.chips.outputs.read(name)
    if data is None:
        return PlainTextResponse(f"{name} cannot be downloaded ({CHIP_PROBLEMS.get(problem, problem)})", 404)
    media, _ = DOWNLOADS[name]
    filename = download_name(state.run.path.name, name)
    return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})
