"""Which building is meant: the site drawn on its chips (footprint, ring or crosshair).

Every chip is cut on one north-up local grid centred on the site (``tiles.grid``): a square of
``chip_size_m`` metres. So the marker is drawn in metres, in an SVG laid over the chip with the
view box ``-size/2 .. size/2`` (east to the right, north up; SVG ``y`` is minus north):

- the site's **footprint** outline when the sites file gave a polygon;
- else a **ring** of the site's ``radius_m``;
- else a **crosshair** on the site's position, open in the middle so the building stays visible.

Footprints are not in ``scores.csv``: :func:`site_footprints` reads them from the sites file the
run recorded in its manifest (only when its SHA-256 still matches).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from review.runfolder import RunFolder, RunSite
from sitewatch.hashing import sha256_file

log = logging.getLogger(__name__)

MarkerKind = Literal["footprint", "ring", "crosshair"]


def site_footprints(run: RunFolder) -> dict[str, Mapping[str, Any]]:
    """``{site_id: GeoJSON geometry}`` of the sites whose input gave a polygon footprint.

    Read from the run's sites file, ``manifest.inputs.sites.path``, with
    :func:`tiles.sites.read_sites` (the one place the review app does this, until scores carry
    footprints). Empty, with a warning, when the file is
    gone, unreadable, or no longer the one the run hashed.
    """
    entry = run.manifest.inputs.sites
    if not entry.path:
        return {}
    path = Path(entry.path)
    if not path.is_absolute():
        path = run.path / path
    if path.suffix.lower() not in (".json", ".geojson"):
        return {}  # a CSV has points only
    if not path.is_file():
        log.warning("sites file %s (from manifest.json) is not there: footprints are not drawn", path)
        return {}
    expected = entry.sha256
    if expected and sha256_file(path) != expected:
        log.warning("sites file %s changed since the run (SHA-256 differs): footprints are not drawn", path)
        return {}
    from tiles.sites import read_sites

    try:
        sites = read_sites(path)
    except Exception as exc:  # noqa: BLE001 - a marker is never worth a failed page
        log.warning("cannot read footprints from %s: %s", path, exc)
        return {}
    return {s.site_id: s.footprint for s in sites if s.footprint is not None}


def footprint_rings(footprint: Mapping[str, Any]) -> list[list[tuple[float, float]]]:
    """The outer and inner rings of a GeoJSON Polygon or MultiPolygon as ``(lon, lat)`` lists."""
    kind = footprint.get("type")
    coords = footprint.get("coordinates") or []
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    rings: list[list[tuple[float, float]]] = []
    for polygon in polygons:
        for ring in polygon or []:
            points = [(float(p[0]), float(p[1])) for p in ring if isinstance(p, (list, tuple)) and len(p) >= 2]
            if len(points) >= 3:
                rings.append(points)
    return rings


def lonlat_to_local_m(lon0: float, lat0: float, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(east, north)`` metres of WGS84 points on the local azimuthal-equidistant plane centred
    on ``(lon0, lat0)`` (the chip grid of :mod:`tiles.grid`)."""
    from pyproj import Transformer

    local = f"+proj=aeqd +lat_0={lat0!r} +lon_0={lon0!r} +datum=WGS84 +units=m +no_defs"
    to_local = Transformer.from_crs("EPSG:4326", local, always_xy=True)
    east, north = to_local.transform([p[0] for p in points], [p[1] for p in points])
    return list(zip((float(e) for e in east), (float(n) for n in north)))


def chip_extent_m(site: RunSite, footprint: Mapping[str, Any] | None, tiles: Mapping[str, Any]) -> float:
    """Side in metres of the site's chips: ``chip_size_m`` from ``scores.csv`` when the run
    wrote it, else as the tiles stage sizes it (its default widened for radius or footprint)."""
    recorded = _float(site.meta.get("chip_size_m"))
    if math.isfinite(recorded) and recorded > 0:
        return recorded
    from tiles import grid
    from tiles.config import TilesConfig

    defaults = TilesConfig()
    half = None
    if footprint is not None:
        try:
            half = grid.footprint_half_extent_m(footprint, site.lon, site.lat)
        except (TypeError, ValueError, IndexError):
            half = None
    return grid.chip_size_m_for(
        chip_size_m=float(tiles.get("chip_size_m", defaults.chip_size_m)),
        radius_m=site_radius_m(site),
        footprint_half_m=half,
        radius_scale=float(tiles.get("radius_scale", defaults.radius_scale)),
        max_chip_size_m=float(tiles.get("max_chip_size_m", defaults.max_chip_size_m)),
    )


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def site_radius_m(site: RunSite) -> float | None:
    """The site's ``radius_m`` (None when absent or not a positive number)."""
    r = _float(site.meta.get("radius_m"))
    return r if math.isfinite(r) and r > 0 else None


@dataclass(frozen=True)
class SiteMarker:
    """The site's outline on its chips, in chip metres (see the module doc).

    Attributes:
        kind: ``footprint``, ``ring`` or ``crosshair``.
        extent_m: side of the chip in metres.
        context_extent_m: side of the context view in metres.
        rings: footprint rings as SVG points ``"e,-n e,-n ..."`` (kind ``footprint``).
        radius_m: the ring's radius (kind ``ring``).
        describe: what the marker shows, in words (for the legend).
    """

    kind: MarkerKind
    extent_m: float
    context_extent_m: float
    rings: tuple[str, ...] = ()
    radius_m: float = 0.0
    describe: str = ""

    def view_box(self, context: bool = False) -> str:
        """The SVG ``viewBox`` of the chip (or of the context view)."""
        side = self.context_extent_m if context else self.extent_m
        return f"{-side / 2:.3f} {-side / 2:.3f} {side:.3f} {side:.3f}"

    @property
    def cross(self) -> tuple[float, float]:
        """Inner and outer distance (metres) of the crosshair's arms from the site."""
        return 0.08 * self.extent_m, 0.3 * self.extent_m


def site_marker(
    site: RunSite, footprint: Mapping[str, Any] | None, tiles: Mapping[str, Any], context_scale: float
) -> SiteMarker:
    """The marker of one site (footprint when given, else ring of its radius, else crosshair)."""
    extent = chip_extent_m(site, footprint, tiles)
    context = extent * context_scale
    if footprint is not None and math.isfinite(site.lon) and math.isfinite(site.lat):
        try:
            rings = [
                " ".join(f"{e:.2f},{-n:.2f}" for e, n in lonlat_to_local_m(site.lon, site.lat, ring))
                for ring in footprint_rings(footprint)
            ]
        except Exception as exc:  # noqa: BLE001 - a bad polygon falls back to the ring/crosshair
            log.warning("footprint of %s not drawn: %s", site.site_id, exc)
            rings = []
        if rings:
            return SiteMarker("footprint", extent, context, tuple(rings), describe="outline: the site's footprint from the sites file")
    radius = site_radius_m(site)
    if radius is not None:
        return SiteMarker("ring", extent, context, radius_m=radius, describe=f"ring: the site's radius, {radius:g} m")
    return SiteMarker("crosshair", extent, context, describe="crosshair: the site's position (no footprint or radius given)")
