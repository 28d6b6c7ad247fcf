"""A catalogue of GeoTIFF scenes for one epoch (before or after), indexed from headers only.

Rasters may be in any CRS and resolution; cloud-optimised GeoTIFFs are ordinary GeoTIFFs here.
The catalogue holds no open file handles, so it pickles cheaply to Dask workers.

Acquisition time, in order of preference (``SceneInfo.time_source`` says which one was used):

1. ``tag``: TIFF tag ``ACQUISITION_DATETIME`` (or ``ACQUISITIONDATETIME``/``ACQUISITION_DATE``),
   else ``TIFFTAG_DATETIME``;
2. ``sidecar``: a JSON file beside the raster (``scene.tif.json`` or ``scene.json``) with key
   ``acquired``, ``acquisition_datetime``, ``datetime`` or ``date``;
3. ``filename``: a date in the file name (``20170621``, ``2017-06-21``, optionally with a
   ``T``/``_`` time ``HHMMSS``);
4. ``unknown``: ``acquired`` is None.

A STAC Catalog, Collection, ItemCollection or Item JSON file among the inputs gives its items'
local image assets (:mod:`tiles.stac`); the item's ``datetime`` is the acquisition time
(``time_source`` ``stac``), its id the ``scene_id``, and its platform, GSD, off-nadir angle,
cloud cover and credit line are kept on the scene.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

from sitewatch.errors import RasterError
from tiles.bands import BandChoice, choose_bands
from tiles.config import TilesConfig

if TYPE_CHECKING:  # pragma: no cover
    from tiles.stac import StacScene

log = logging.getLogger(__name__)

__all__ = ["SceneInfo", "RasterCatalog", "check_epochs", "parse_acquisition_time", "sidecar_paths", "RASTER_SUFFIXES"]

RASTER_SUFFIXES = (".tif", ".tiff", ".gtiff")
Epoch = Literal["before", "after"]

_TAG_KEYS = ("ACQUISITION_DATETIME", "ACQUISITIONDATETIME", "ACQUISITION_DATE", "ACQUIRED")
_SIDECAR_KEYS = ("acquired", "acquisition_datetime", "datetime", "date", "ACQUISITION_DATETIME")
_NAME_DATE = re.compile(
    r"(?<!\d)((?:19|20)\d{2})[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])"
    r"(?:[T_ -]?([01]\d|2[0-3])[:]?([0-5]\d)[:]?([0-5]\d))?(?!\d)"
)


@dataclass(frozen=True)
class SceneInfo:
    """Header facts of one raster scene.

    Attributes:
        scene_id: unique id within the catalogue (the file stem, made unique when needed).
        path: absolute path of the file.
        crs: the raster's CRS as a string (``EPSG:xxxx`` where possible, else WKT).
        bounds: ``(left, bottom, right, top)`` in the raster's CRS.
        res: ``(x, y)`` pixel size in CRS units.
        width, height, count: raster size in pixels and bands.
        dtype: numpy dtype name of band 1.
        nodata: the nodata value, or None.
        acquired: acquisition time (timezone-aware UTC), or None when unknown.
        time_source: ``tag``, ``sidecar``, ``filename`` or ``unknown``.
        transform: the affine pixel-to-CRS transform as 6 numbers ``(a, b, c, d, e, f)``.
        lonlat_bounds: ``(west, south, east, north)`` in WGS84 degrees (a superset of the
            footprint, for quick filtering).
        gsd_m: approximate ground sample distance in metres (mean of x and y).
        has_mask: the file carries an internal/alpha mask that marks invalid pixels.
        colour_interp: GDAL colour interpretation per band, lower case (``red``, ``gray``,
            ``undefined``, ...).
        descriptions: band descriptions (``""`` where unset).
        catalog_id: the STAC item id when the scene came from a STAC catalogue, else ``""``.
        platform: the STAC item's platform (constellation), else ``""``.
        stated_gsd_m: the GSD the catalogue states (STAC ``gsd``; ``gsd_m`` is always
            measured from the header); None when not stated.
        off_nadir: STAC ``view:off_nadir`` in degrees, else None.
        cloud_cover: STAC ``eo:cloud_cover`` in percent, else None.
        credit: the catalogue's licence and providers, else ``""``.
        catalog_source: the STAC file the scene was listed in, else ``""``.
        file_key: identity of the file's content version (resolved path, size and modification
            time in ns): what per-scene caches are keyed by. Never the stem or ``scene_id``:
            ``before/scene.tif`` and ``after/scene.tif`` share both (the xBD layout).
    """

    scene_id: str
    path: Path
    crs: str
    bounds: tuple[float, float, float, float]
    res: tuple[float, float]
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    acquired: datetime | None
    time_source: str
    transform: tuple[float, float, float, float, float, float] = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    lonlat_bounds: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0)
    gsd_m: float = math.nan
    has_mask: bool = False
    file_key: str = ""
    colour_interp: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()
    catalog_id: str = ""
    platform: str = ""
    stated_gsd_m: float | None = None
    off_nadir: float | None = None
    cloud_cover: float | None = None
    credit: str = ""
    catalog_source: str = ""

    def band_choice(self, config: TilesConfig) -> BandChoice:
        """Which bands become the chip's channels for this scene (:func:`tiles.bands.choose_bands`).

        Raises:
            RasterError: ``tiles.bands`` asks for a band this scene does not have.
        """
        return choose_bands(self.count, self.colour_interp, self.descriptions, config, where=str(self.path))

    @property
    def cache_key(self) -> str:
        """The key of per-scene caches (value scaling, band choice): :attr:`file_key`."""
        return self.file_key or str(self.path)


def _parse_datetime_text(text: str) -> datetime | None:
    text = str(text).strip()
    if not text:
        return None
    candidates = [text, text.replace("Z", "+00:00")]
    # TIFFTAG_DATETIME: "YYYY:MM:DD HH:MM:SS"
    m = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", text)
    if m:
        candidates.insert(0, "{}-{}-{}T{}:{}:{}".format(*m.groups()))
    for cand in candidates:
        try:
            dt = datetime.fromisoformat(cand)
        except ValueError:
            continue
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.astimezone(timezone.utc)
    return None


def _time_from_name(name: str) -> datetime | None:
    for m in _NAME_DATE.finditer(name):
        y, mo, d, hh, mm, ss = m.groups()
        try:
            return datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


def sidecar_paths(path: Path) -> tuple[Path, ...]:
    """The JSON sidecars that may set a raster's acquisition time, in the order they are read
    (``scene.tif.json``, then ``scene.json``); they may or may not exist."""
    return (path.with_name(path.name + ".json"), path.with_suffix(".json"))


def parse_acquisition_time(path: Path, tags: dict[str, str]) -> tuple[datetime | None, str]:
    """Acquisition time of a raster and where it came from (see the module docstring).

    Args:
        path: the raster file (for the sidecar and the file name).
        tags: the dataset's default-domain tags.

    Returns:
        ``(time or None, source)`` with source ``tag``, ``sidecar``, ``filename`` or ``unknown``.
    """
    upper = {k.upper(): v for k, v in tags.items()}
    for key in _TAG_KEYS + ("TIFFTAG_DATETIME",):
        if key in upper:
            dt = _parse_datetime_text(upper[key])
            if dt is not None:
                return dt, "tag"
            log.warning("%s: tag %s=%r is not a date/time; ignored", path, key, upper[key])
    for sidecar in sidecar_paths(path):
        if sidecar.is_file():
            try:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                log.warning("%s: sidecar is not readable JSON (%s); ignored", sidecar, exc)
                continue
            if isinstance(data, dict):
                for key in _SIDECAR_KEYS:
                    if key in data and data[key]:
                        dt = _parse_datetime_text(str(data[key]))
                        if dt is not None:
                            return dt, "sidecar"
    dt = _time_from_name(path.name)
    if dt is not None:
        return dt, "filename"
    return None, "unknown"


def _expand(paths: Iterable[str | Path], stac: dict[Path, "StacScene"] | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files from files, folders (recursively), globs and STAC files; plus inputs that matched nothing.

    The items of STAC files go into ``stac`` (keyed by the resolved raster path) when given.
    """
    from tiles.stac import is_stac_file, read_stac_scenes

    files: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for item in paths:
        text = str(item)
        p = Path(text).expanduser()
        if p.is_file() and is_stac_file(p):
            scenes, skipped = read_stac_scenes(p)
            missing.extend(skipped)
            if not scenes and not skipped:
                missing.append((p, "STAC file lists no items"))
            for sc in scenes:
                files.append(sc.path)
                if stac is not None:
                    stac[sc.path.resolve()] = sc
            continue
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                missing.append((p, "folder holds no .tif/.tiff files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(text, recursive=True) if Path(f).is_file())
            if not found:
                missing.append((p, "glob matched no files"))
            files.extend(found)
        else:
            missing.append((p, "no such file or folder"))
    unique: list[Path] = []
    seen: set[Path] = set()
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return unique, missing


def _crs_string(crs) -> str:  # noqa: ANN001 - rasterio.crs.CRS
    epsg = crs.to_epsg(confidence_threshold=90) if crs else None
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _read_header(path: Path) -> SceneInfo:
    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.warp import transform_bounds

    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        # an ungeoreferenced file is reported below in our words (skipped, with what to do);
        # rasterio's own warning would print a source line of its internals to the user
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(path)
    with ds:
        if ds.crs is None:
            raise ValueError("has no CRS (georeference it, e.g. gdal_edit.py -a_srs)")
        if ds.transform.is_identity:
            raise ValueError("has no geotransform (it is not georeferenced)")
        if ds.count and ds.dtypes[0].startswith("complex"):
            raise ValueError(
                f"holds complex values ({ds.dtypes[0]}, e.g. SAR SLC); sitewatch reads optical imagery: "
                "convert it to amplitude or an RGB product first"
            )
        crs = _crs_string(ds.crs)
        tags = ds.tags()
        acquired, source = parse_acquisition_time(path, tags)
        bounds = tuple(ds.bounds)
        try:
            lonlat = transform_bounds(ds.crs, "EPSG:4326", *bounds, densify_pts=21)
        except Exception as exc:  # noqa: BLE001 - GDAL raises several types
            raise ValueError(f"its footprint cannot be transformed to WGS84 ({exc})") from None
        if ds.crs.is_geographic:
            lat = math.radians((lonlat[1] + lonlat[3]) / 2)
            mx, my = 111_320.0 * math.cos(lat), 110_574.0  # metres per degree
            t = ds.transform
            gsd = (math.hypot(t.a * mx, t.d * my) + math.hypot(t.b * mx, t.e * my)) / 2
        else:
            unit = ds.crs.linear_units_factor[1] if ds.crs.linear_units_factor else 1.0
            gsd = (math.hypot(ds.transform.a, ds.transform.d) + math.hypot(ds.transform.b, ds.transform.e)) / 2 * unit
        flags = ds.mask_flag_enums[0] if ds.count else []
        has_mask = any(f in (MaskFlags.per_dataset, MaskFlags.alpha) for f in flags) and MaskFlags.nodata not in flags
        nodata = ds.nodata
        st = path.stat()
        try:
            colour_interp = tuple(c.name.lower() for c in ds.colorinterp)
        except ValueError:  # a colour interpretation newer than this rasterio knows
            colour_interp = ()
        descriptions = tuple(d or "" for d in ds.descriptions)
        return SceneInfo(
            scene_id=path.stem,
            path=path,
            crs=crs,
            bounds=bounds,  # type: ignore[arg-type]
            res=tuple(ds.res),  # type: ignore[arg-type]
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            nodata=None if nodata is None else float(nodata),
            acquired=acquired,
            time_source=source,
            transform=tuple(ds.transform)[:6],  # type: ignore[arg-type]
            lonlat_bounds=tuple(lonlat),  # type: ignore[arg-type]
            gsd_m=float(gsd),
            has_mask=has_mask,
            file_key=f"{path}|{st.st_size}|{st.st_mtime_ns}",
            colour_interp=colour_interp,
            descriptions=descriptions,
        )


def _with_stac(scene: SceneInfo, item: "StacScene") -> SceneInfo:
    """The scene with what its STAC item says (the item's datetime wins over tags and names)."""
    from dataclasses import replace

    extra: dict[str, object] = {}
    if item.acquired is not None:
        extra.update(acquired=item.acquired, time_source="stac")
    return replace(
        scene,
        scene_id=item.item_id,
        catalog_id=item.item_id,
        platform=item.platform,
        stated_gsd_m=None if math.isnan(item.gsd_m) else item.gsd_m,
        off_nadir=None if math.isnan(item.off_nadir) else item.off_nadir,
        cloud_cover=None if math.isnan(item.cloud_cover) else item.cloud_cover,
        credit=item.credit,
        catalog_source=str(item.source),
        **extra,  # type: ignore[arg-type]
    )


class RasterCatalog:
    """The scenes of one epoch, indexed from their headers.

    Attributes:
        epoch: ``before`` or ``after`` (decides which acquisition time is preferred).
        scenes: the readable scenes, in input order.
        skipped: ``(path, reason)`` of every input that was not usable.
    """

    def __init__(self, scenes: Sequence[SceneInfo], *, epoch: str, skipped: Sequence[tuple[Path, str]] = ()) -> None:
        if epoch not in ("before", "after"):
            raise ValueError(f"epoch must be 'before' or 'after', got {epoch!r}")
        self.epoch = epoch
        self.scenes: list[SceneInfo] = list(scenes)
        self.skipped: list[tuple[Path, str]] = list(skipped)
        self._by_id = {s.scene_id: s for s in self.scenes}

    @classmethod
    def from_paths(cls, paths: str | Path | Iterable[str | Path], *, epoch: str, flag: str | None = None) -> "RasterCatalog":
        """Index GeoTIFFs from files, folders (searched recursively) and glob patterns.

        Args:
            paths: one or more files, folders or globs.
            epoch: ``before`` or ``after``.
            flag: the input's name in messages (default ``--before`` / ``--after``; a series
                says ``--series``).

        Raises:
            RasterError: no readable raster remains (the message lists what was skipped).
        """
        if isinstance(paths, (str, Path)):
            paths = [paths]
        stac: dict[Path, StacScene] = {}
        files, skipped = _expand(paths, stac)
        scenes: list[SceneInfo] = []
        for f in files:
            try:
                scene = _read_header(f)
                item = stac.get(f)
                scenes.append(scene if item is None else _with_stac(scene, item))
            except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, not fatal
                reason = str(exc).strip() or type(exc).__name__
                skipped.append((f, reason))
        for path, reason in skipped:
            log.warning("%s raster %s skipped: %s", flag or f"--{epoch}", path, reason)
        if not scenes:
            listing = "; ".join(f"{p}: {r}" for p, r in skipped[:5]) or "no inputs given"
            raise RasterError(
                f"{flag or '--' + epoch}: no readable GeoTIFF among the inputs ({listing}); pass GeoTIFF files, "
                "folders or globs with a CRS"
            )
        # unique scene ids: the stem, else parent/stem, else stem-<n>
        counts: dict[str, int] = {}
        for s in scenes:
            counts[s.scene_id] = counts.get(s.scene_id, 0) + 1
        used: set[str] = set()
        unique: list[SceneInfo] = []
        from dataclasses import replace

        for s in scenes:
            sid = s.scene_id if counts[s.scene_id] == 1 else f"{s.path.parent.name}/{s.path.stem}"
            base, n = sid, 2
            while sid in used:
                sid, n = f"{base}-{n}", n + 1
            used.add(sid)
            unique.append(replace(s, scene_id=sid) if sid != s.scene_id else s)
        return cls(unique, epoch=epoch, skipped=skipped)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, scene_id: str) -> SceneInfo:
        return self._by_id[scene_id]

    def __getstate__(self) -> dict:
        return {"epoch": self.epoch, "scenes": self.scenes, "skipped": self.skipped}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["scenes"], epoch=state["epoch"], skipped=state["skipped"])  # type: ignore[misc]

    def time_rank(self, scene: SceneInfo) -> float:
        """Sort key for the preferred time: latest first before the event, earliest first after.

        Unknown times sort last.
        """
        if scene.acquired is None:
            return math.inf
        ts = scene.acquired.timestamp()
        return -ts if self.epoch == "before" else ts

    def band_choices(self, config: TilesConfig) -> dict[str, BandChoice]:
        """``{scene_id: BandChoice}``: which bands every scene gives the chips (for a manifest).

        Scenes whose bands cannot be read under ``config`` (``tiles.bands`` asks for a band they
        lack) are left out; their sites come out ``cannot_assess`` / ``read_error`` with the
        reason.
        """
        out: dict[str, BandChoice] = {}
        for s in self.scenes:
            try:
                out[s.scene_id] = s.band_choice(config)
            except RasterError:
                continue
        return out

    def scenes_containing(self, lon: float, lat: float) -> list[SceneInfo]:
        """The scenes whose raster holds the point ``(lon, lat)`` (WGS84), in catalogue order.

        Exact (the point is transformed to each candidate scene's CRS), across the antimeridian
        too. Pixel values are not looked at: a point in a nodata area counts as contained.
        """
        import numpy as np
        from pyproj import CRS, Transformer

        from tiles import grid

        if not (math.isfinite(lon) and math.isfinite(lat)):
            return []
        found: list[SceneInfo] = []
        lon_a, lat_a = np.array([lon]), np.array([lat])
        for s in self.scenes:
            w, so, e, no = s.lonlat_bounds
            if not (so <= lat <= no and grid.lon_overlap(lon_a, lon_a, w, e)[0]):
                continue
            try:
                x, y = Transformer.from_crs("EPSG:4326", s.crs, always_xy=True).transform(lon, lat)
                if CRS.from_user_input(s.crs).is_geographic:
                    x = float(grid.wrap_lon_towards(np.array([[x]]), (s.bounds[0] + s.bounds[2]) / 2)[0, 0])
            except Exception:  # noqa: BLE001 - pyproj raises several types; not containable then
                continue
            rows, cols = grid.pixel_coords(s.transform, np.array([x]), np.array([y]))
            r, c = float(rows[0]) + 0.5, float(cols[0]) + 0.5
            if 0.0 <= r <= s.height and 0.0 <= c <= s.width:
                found.append(s)
        return found

    def crs_groups(self) -> dict[str, list[SceneInfo]]:
        """Scenes grouped by CRS string."""
        groups: dict[str, list[SceneInfo]] = {}
        for s in self.scenes:
            groups.setdefault(s.crs, []).append(s)
        return groups


def check_epochs(before: RasterCatalog, after: RasterCatalog) -> None:
    """Refuse before/after catalogues that are plainly the wrong way round or the same imagery.

    The model reads change in one direction (intact before, damaged after): swapped epochs
    score destroyed sites as if they had been rebuilt, so nearly nothing is flagged, with no
    other sign of the mistake. Refused: a file given to both ``--before`` and ``--after``, and
    every before scene acquired after every after scene (all acquisition times known).

    Raises:
        RasterError: naming the flags, the file or the dates, and what to do.
    """
    shared = sorted({s.path for s in before.scenes} & {s.path for s in after.scenes})
    if shared:
        raise RasterError(
            f"--before and --after both hold {shared[0]}"
            + (f" (and {len(shared) - 1} more)" if len(shared) > 1 else "")
            + ": give the imagery from before the event to --before and from after it to --after"
        )
    b_times = [s.acquired for s in before.scenes]
    a_times = [s.acquired for s in after.scenes]
    if not b_times or not a_times or None in b_times or None in a_times:
        return
    if min(b_times) > max(a_times):  # type: ignore[type-var] - no None left
        fmt = "%Y-%m-%d"
        raise RasterError(
            f"every --before scene was acquired after every --after scene (before from "
            f"{min(b_times).strftime(fmt)}, after until {max(a_times).strftime(fmt)}): "  # type: ignore[type-var]
            "are --before and --after swapped? Give the imagery from before the event to --before"
        )
