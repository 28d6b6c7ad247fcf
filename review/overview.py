"""The run map's background: a downsampled picture of the after scenes, made from the rasters.

:func:`map_extent` is the box of every site with coordinates (padded); :func:`render_overview`
paints every after scene that meets it onto one north-up WGS84 grid of at most ``max_px`` pixels
on its longer side (square on the ground), reading each scene once, decimated (GDAL uses the
file's overviews when present), with the tiles stage's scaling to ``[0, 1]``. No online basemap
and nothing fetched: the picture comes from the run's own imagery. The map page places sites on
it with the same linear lon/lat mapping, so a site's point lies on its building.

Made once, in the background when the app starts, and kept in the chip cache
(``RUN/review.sqlite-chips``) keyed by the rasters' paths, sizes and times and the extent.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: the map's CRS: WGS84 lon/lat, with pixels square on the ground at the extent's mid latitude.
MAP_CRS = "EPSG:4326"


@dataclass(frozen=True)
class MapExtent:
    """A lon/lat box and the pixel grid of the picture drawn over it.

    Attributes:
        west, south, east, north: WGS84 degrees.
        width, height: picture size in pixels (square pixels on the ground).
    """

    west: float
    south: float
    east: float
    north: float
    width: int
    height: int

    def as_dict(self) -> dict[str, float | int]:
        return {"west": self.west, "south": self.south, "east": self.east, "north": self.north,
                "width": self.width, "height": self.height}


def _metres_per_degree(lat: float) -> tuple[float, float]:
    """Metres per degree of latitude and of longitude at ``lat`` (spherical; for sizing only)."""
    m = math.pi * 6_371_008.8 / 180.0
    return m, m * max(math.cos(math.radians(lat)), 1e-6)


def map_extent(lonlat: Iterable[tuple[float, float]], max_px: int, *, pad: float = 0.05, min_span_m: float = 200.0) -> MapExtent | None:
    """The padded box of the given points (None when none is finite).

    Args:
        lonlat: ``(lon, lat)`` of the sites.
        max_px: pixels on the picture's longer side.
        pad: margin on each side, as a fraction of the span.
        min_span_m: the box is at least this wide and tall on the ground.
    """
    pts = np.array([p for p in lonlat if math.isfinite(p[0]) and math.isfinite(p[1])], dtype=np.float64)
    if pts.size == 0:
        return None
    west, east = float(pts[:, 0].min()), float(pts[:, 0].max())
    south, north = float(pts[:, 1].min()), float(pts[:, 1].max())
    m_lat, m_lon = _metres_per_degree(0.5 * (south + north))
    w_m = max((east - west) * m_lon, min_span_m) * (1 + 2 * pad)
    h_m = max((north - south) * m_lat, min_span_m) * (1 + 2 * pad)
    cx, cy = 0.5 * (west + east), 0.5 * (south + north)
    west, east = cx - w_m / 2 / m_lon, cx + w_m / 2 / m_lon
    south, north = cy - h_m / 2 / m_lat, cy + h_m / 2 / m_lat
    scale = max_px / max(w_m, h_m)
    return MapExtent(west, south, east, north, max(1, round(w_m * scale)), max(1, round(h_m * scale)))


def overview_key(rasters: Sequence[Path], extent: MapExtent, bands: Sequence[int]) -> str:
    """Cache key of a picture: the rasters (path, size, mtime), the extent and the bands."""
    parts = []
    for p in rasters:
        try:
            st = p.stat()
            parts.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            parts.append([str(p), -1, -1])
    text = json.dumps({"rasters": parts, "extent": extent.as_dict(), "bands": list(bands)}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render_overview(rasters: Sequence[Path], extent: MapExtent, bands: Sequence[int] = (1, 2, 3)) -> tuple[bytes, int]:
    """Paint the after scenes onto the extent's grid.

    Args:
        rasters: the after rasters (GeoTIFF files or folders, as the run recorded them).
        extent: where and how large to paint.
        bands: 1-based bands shown as RGB (a one-band scene is shown as grey).

    Returns:
        ``(JPEG bytes, number of scenes painted)``; pixels no scene covers are dark grey.
    """
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.transform import from_bounds
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds as window_from_bounds

    from tiles.catalog import RasterCatalog
    from tiles.chips import chip_to_rgb_uint8
    from tiles.radiometry import scale_to_unit, stats_from_sample

    w, h = extent.width, extent.height
    dst_transform = from_bounds(extent.west, extent.south, extent.east, extent.north, w, h)
    canvas = np.zeros((3, h, w), np.float32)
    painted = np.zeros((h, w), bool)
    used = 0
    catalog = RasterCatalog.from_paths(list(rasters), epoch="after")
    for scene in catalog.scenes:
        sw, ss, se, sn = scene.lonlat_bounds
        if se < extent.west or sw > extent.east or sn < extent.south or ss > extent.north:
            continue
        try:
            with rasterio.open(scene.path) as ds:
                left, bottom, right, top = transform_bounds(
                    MAP_CRS, ds.crs, extent.west, extent.south, extent.east, extent.north, densify_pts=21
                )
                win = window_from_bounds(left, bottom, right, top, transform=ds.transform)
                win = win.intersection(Window(0, 0, ds.width, ds.height)).round_offsets().round_lengths()
                if win.width < 1 or win.height < 1:
                    continue
                # read at about twice the picture's resolution, never more than the file has
                f = max(1.0, max(win.width / (2 * w), win.height / (2 * h)))
                shape = (max(1, int(win.height / f)), max(1, int(win.width / f)))
                if max(bands) <= ds.count:
                    use = list(bands)
                else:  # fewer bands than asked: grey from band 1, or the first three
                    use = [1] if ds.count < 3 else [1, 2, 3]
                data = ds.read(use, window=win, out_shape=(len(use), *shape), resampling=Resampling.average)
                valid = ds.dataset_mask(window=win, out_shape=shape) > 0
                if np.issubdtype(data.dtype, np.floating):
                    valid &= np.isfinite(data).all(axis=0)
                src_transform = ds.window_transform(win) * rasterio.Affine.scale(win.width / shape[1], win.height / shape[0])
                unit = scale_to_unit(data, stats_from_sample(data, valid, str(data.dtype)))
                unit[:, ~valid] = np.nan
                if unit.shape[0] < 3:
                    unit = np.repeat(unit[:1], 3, axis=0)
                out = np.full((3, h, w), np.nan, np.float32)
                reproject(
                    unit[:3], out, src_transform=src_transform, src_crs=ds.crs, src_nodata=np.nan,
                    dst_transform=dst_transform, dst_crs=MAP_CRS, dst_nodata=np.nan, resampling=Resampling.bilinear,
                )
        except Exception as exc:  # noqa: BLE001 - one unreadable scene leaves a gap, not an error
            log.warning("overview: %s not painted (%s)", scene.path, exc)
            continue
        here = np.isfinite(out).all(axis=0) & ~painted
        canvas[:, here] = out[:, here]
        painted |= here
        used += int(here.any())
    rgb = chip_to_rgb_uint8(canvas, painted)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue(), used


class RunMap:
    """The run map's extent and background picture, made once in a background thread.

    Args:
        lonlat: ``(lon, lat)`` of every site (NaN where invalid).
        rasters: the run's after rasters.
        bands: bands shown as RGB.
        cache: where the picture is kept between runs of the app (``get_overview``/``put_overview``).
        max_px: pixels on the picture's longer side.
    """

    def __init__(self, lonlat: Sequence[tuple[float, float]], rasters: Sequence[Path], bands: Sequence[int], cache: object, max_px: int) -> None:
        import threading

        self.extent = map_extent(lonlat, max_px)
        self.rasters = list(rasters)
        self.bands = tuple(bands)
        self.cache = cache
        self.status = "none"
        self.note = ""
        self._image: bytes | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if self.extent is None:
            self.note = "no site has valid coordinates"
        elif not self.rasters:
            self.note = "manifest.json lists no after rasters: sites are drawn without a picture"
        elif not all(p.exists() for p in self.rasters):
            self.note = "the run's after rasters are not all there any more: sites are drawn without a picture"
        else:
            self.status = "building"

    def start(self) -> None:
        """Make the picture in a background thread (unless there is nothing to make)."""
        import threading

        if self.status != "building" or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._build, name="review-overview", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the background picture (tests, benchmarks)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _build(self) -> None:
        assert self.extent is not None
        key = overview_key(self.rasters, self.extent, self.bands)
        try:
            image = self.cache.get_overview(key)  # type: ignore[attr-defined]
            if image is None:
                image, used = render_overview(self.rasters, self.extent, self.bands)
                self.cache.put_overview(key, image)  # type: ignore[attr-defined]
                log.info("run map: picture of %d after scene(s) made (%d x %d px)", used, self.extent.width, self.extent.height)
            with self._lock:
                self._image, self.status, self.note = image, "ready", ""
        except Exception as exc:  # noqa: BLE001 - the map still works without its picture
            log.warning("run map: no picture (%s)", exc)
            with self._lock:
                self.status, self.note = "none", f"no picture of the after scenes: {exc}"

    def image(self) -> bytes | None:
        """The JPEG picture, or None while it is being made or when there is none."""
        with self._lock:
            return self._image
