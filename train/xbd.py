"""Adapter for the public xBD layout: xBD tiles become a labelled dataset folder.

Layout (as distributed)::

    PATH/images/<event>_<id>_pre_disaster.png
    PATH/images/<event>_<id>_post_disaster.png
    PATH/labels/<event>_<id>_post_disaster.json
    PATH/labels/<event>_<id>_pre_disaster.json      (optional)

Each post-disaster label file holds ``features.xy``: building polygons as WKT in *pixel*
coordinates (``x`` = column, ``y`` = row, ``(0, 0)`` the top-left corner of the top-left pixel)
with ``properties.subtype`` (the xBD damage class) and ``properties.uid``, and
``features.lng_lat``: the same polygons in WGS84. The PNGs carry no georeference, so the
adapter fits one, and the pairs are then cut by the tiles stage like those of any labelled
folder (the same catalogue, cutter, co-registration, normalisation and quality gates that
``sitewatch detect`` uses). :func:`import_xbd` writes, once per distinct content, into the cache:

1. per tile a least-squares affine geotransform from pixel ``(x, y)`` to ``(lon, lat)``, fitted
   on the vertices of the buildings present in both polygon sets (the pre-disaster image gets
   its own fit when its label file has polygons, else the post fit: xBD pairs share one grid).
   A tile is left out (and counted in the log) when it has no building in both sets, when the
   fit leaves a residual above :data:`MAX_FIT_RESIDUAL_M` metres, or when the fitted pixel size
   is implausible (outside 0.05-10 m);
2. ``before/<tile>.tif`` and ``after/<tile>.tif``: the PNG pixels unchanged in a lossless
   (DEFLATE) GeoTIFF in EPSG:4326 with that transform, tagged with the label's
   ``capture_date`` (``ACQUISITION_DATETIME``), ``sensor``, ``catalog_id`` and
   ``off_nadir_angle``;
3. ``sites.csv``: one row per building: ``site_id`` (``<tile>:<uid>``), ``lon``, ``lat`` (the
   centroid of its ``lng_lat`` footprint), ``tile`` and ``damage`` (the xBD subtype, empty when
   missing). Buildings the binary task does not use (minor damage, un-classified) stay in the
   file; the dataset loader leaves them out.

The cache is keyed on content only: the SHA-256 of every label file and image
(:func:`sitewatch.hashing.sha256_file`) and of this module's code, never on file times. The
converted folder costs about as much disk as the PNGs it was made from.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sitewatch.errors import InputError
from sitewatch.hashing import sha256_file

log = logging.getLogger(__name__)

__all__ = [
    "GeoFit",
    "ImportedDataset",
    "XbdTile",
    "find_xbd_tiles",
    "fit_geotransform",
    "import_xbd",
    "parse_wkt_ring",
    "ring_centroid",
    "write_labelled_folder",
    "xbd_fingerprint",
]

#: a tile whose two polygon sets disagree by more than this (RMS, metres) after the fit is left out
MAX_FIT_RESIDUAL_M = 2.0
#: plausible pixel sizes of the fitted geotransform (metres)
GSD_RANGE_M = (0.05, 10.0)
#: bump when the converted folder's layout changes (the module's code hash is in the key too)
FOLDER_VERSION = 1
_EARTH_RADIUS_M = 6_371_008.8
_SUFFIX_POST = "_post_disaster.json"

_NUMBER_PAIR = re.compile(r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s+(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def parse_wkt_ring(wkt: str) -> np.ndarray:
    """The outer ring of a WKT ``POLYGON`` (or the first polygon of a ``MULTIPOLYGON``).

    Returns:
        (K, 2) float64 array of ``(x, y)`` vertices.

    Raises:
        ValueError: not a polygon or fewer than 3 vertices.
    """
    text = wkt.strip()
    if not text.upper().startswith(("POLYGON", "MULTIPOLYGON")):
        raise ValueError(f"not a WKT polygon: {text[:40]!r}")
    start = text.find("((")
    if start < 0:
        raise ValueError(f"WKT polygon without a ring: {text[:40]!r}")
    body = text[start:].lstrip("(")
    ring = body.split(")", 1)[0]
    pts = np.array([(float(a), float(b)) for a, b in _NUMBER_PAIR.findall(ring)], dtype=np.float64)
    if pts.shape[0] < 3:
        raise ValueError(f"WKT polygon with fewer than 3 vertices: {text[:40]!r}")
    return pts


def ring_centroid(pts: np.ndarray) -> tuple[float, float]:
    """Area centroid ``(x, y)`` of a ring (vertex mean when the area is ~0).

    Computed relative to the vertex mean: in degrees (``lon`` ~ -122, a building ~1e-4 wide)
    the shoelace products would otherwise cancel catastrophically (metres of error).
    """
    origin = pts.mean(axis=0)
    x, y = pts[:, 0] - origin[0], pts[:, 1] - origin[1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2.0
    scale = float(np.abs(np.concatenate([x, y])).max())
    if abs(area) <= 1e-12 * scale**2:
        return float(origin[0]), float(origin[1])
    return float(origin[0] + ((x + x1) * cross).sum() / (6 * area)), float(origin[1] + ((y + y1) * cross).sum() / (6 * area))


def _polygons(features: list[dict]) -> dict[str, tuple[np.ndarray, str | None]]:
    """``uid -> (ring (K, 2), subtype)`` of the building features of one coordinate set."""
    out: dict[str, tuple[np.ndarray, str | None]] = {}
    for k, f in enumerate(features):
        props = f.get("properties") or {}
        if props.get("feature_type", "building") != "building":
            continue
        try:
            ring = parse_wkt_ring(f["wkt"])
        except (KeyError, ValueError, AttributeError):
            continue
        out[str(props.get("uid", k))] = (ring, props.get("subtype"))
    return out


@dataclass(frozen=True)
class GeoFit:
    """A fitted pixel-to-WGS84 geotransform of one xBD image.

    Attributes:
        transform: ``(a, b, c, d, e, f)`` with ``lon = a x + b y + c`` and
            ``lat = d x + e y + f`` (rasterio's / GDAL's affine order), ``x, y`` pixel coordinates.
        residual_m: RMS distance between the fitted and the labelled WGS84 vertices, metres.
        gsd_m: mean pixel size of the transform, metres.
        n_points: vertices the fit used.
    """

    transform: tuple[float, float, float, float, float, float]
    residual_m: float
    gsd_m: float
    n_points: int

    def apply(self, x: float, y: float) -> tuple[float, float]:
        """``(lon, lat)`` of pixel coordinates ``(x, y)``."""
        a, b, c, d, e, f = self.transform
        return a * x + b * y + c, d * x + e * y + f


def fit_geotransform(xy: dict[str, np.ndarray], lnglat: dict[str, np.ndarray]) -> GeoFit | None:
    """Least-squares affine transform from the pixel polygons to the WGS84 polygons.

    Matching buildings (same uid) contribute every vertex when both rings have the same number
    of vertices, else their centroids.

    Args:
        xy: uid -> (K, 2) ring in pixel ``(x, y)``.
        lnglat: uid -> (K, 2) ring in ``(lon, lat)`` degrees.

    Returns:
        The fit, or None when the matching points do not determine an affine transform (fewer
        than 3 points, or all on one line).
    """
    src, dst = [], []
    for uid in sorted(set(xy) & set(lnglat)):
        p, g = xy[uid], lnglat[uid]
        if p.shape == g.shape:
            src.append(p)
            dst.append(g)
        else:
            src.append(np.array([ring_centroid(p)]))
            dst.append(np.array([ring_centroid(g)]))
    if not src:
        return None
    px, geo = np.concatenate(src), np.concatenate(dst)
    if px.shape[0] < 3:
        return None
    # centre both sides for a well-conditioned solve, then move the offsets back
    p0, g0 = px.mean(axis=0), geo.mean(axis=0)
    design = np.column_stack([px - p0, np.ones(len(px))])
    if np.linalg.matrix_rank(design[:, :2], tol=1e-6 * max(1.0, float(np.abs(px - p0).max()))) < 2:
        return None
    coef, *_ = np.linalg.lstsq(design, geo - g0, rcond=None)  # (3, 2): rows x, y, 1
    a, d = coef[0]
    b, e = coef[1]
    c = g0[0] + coef[2, 0] - a * p0[0] - b * p0[1]
    f = g0[1] + coef[2, 1] - d * p0[0] - e * p0[1]
    m_lat = math.radians(1.0) * _EARTH_RADIUS_M
    m_lon = m_lat * math.cos(math.radians(float(g0[1])))
    pred = np.column_stack([a * px[:, 0] + b * px[:, 1] + c, d * px[:, 0] + e * px[:, 1] + f])
    err_m = np.hypot((pred[:, 0] - geo[:, 0]) * m_lon, (pred[:, 1] - geo[:, 1]) * m_lat)
    gsd = (math.hypot(a * m_lon, d * m_lat) + math.hypot(b * m_lon, e * m_lat)) / 2.0
    transform = (float(a), float(b), float(c), float(d), float(e), float(f))
    return GeoFit(transform, float(np.sqrt(np.mean(err_m**2))), float(gsd), int(px.shape[0]))


@dataclass(frozen=True)
class XbdTile:
    """One xBD tile: its pre/post images and label files."""

    stem: str
    post_label: Path
    pre_label: Path | None
    pre_image: Path
    post_image: Path


def find_xbd_tiles(root: Path) -> list[XbdTile]:
    """The tiles of an xBD-layout folder (those with both images; others are logged).

    Raises:
        InputError: ``images/`` or ``labels/`` missing, or no post-disaster label file.
    """
    root = Path(root)
    if not (root / "labels").is_dir() or not (root / "images").is_dir():
        raise InputError(f"xbd:{root}: expected images/ and labels/ folders (the public xBD layout)")
    label_files = sorted((root / "labels").glob(f"*{_SUFFIX_POST}"))
    if not label_files:
        raise InputError(f"xbd:{root}: labels/ holds no *{_SUFFIX_POST} files")
    tiles = []
    for lf in label_files:
        stem = lf.name[: -len(_SUFFIX_POST)]
        pre_png = root / "images" / f"{stem}_pre_disaster.png"
        post_png = root / "images" / f"{stem}_post_disaster.png"
        if not pre_png.is_file() or not post_png.is_file():
            log.warning("xbd:%s: %s has no matching pre/post PNGs; left out", root, lf.name)
            continue
        pre_label = root / "labels" / f"{stem}_pre_disaster.json"
        tiles.append(XbdTile(stem, lf, pre_label if pre_label.is_file() else None, pre_png, post_png))
    return tiles


def xbd_fingerprint(tiles: list[XbdTile]) -> str:
    """SHA-256 over the names and the contents (SHA-256 each) of every label file and image."""
    h = hashlib.sha256()
    for t in tiles:
        for p in (t.post_label, t.pre_label, t.pre_image, t.post_image):
            if p is not None:
                h.update(f"{p.parent.name}/{p.name}:{sha256_file(p)};".encode())
    return h.hexdigest()


def _read_label(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("the top level is not a JSON object")
        return doc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"xbd: {path} is not a valid xBD label file ({exc})") from None


def _label_polygons(doc: dict[str, Any], path: Path) -> tuple[dict, dict]:
    feats = doc.get("features") or {}
    if not isinstance(feats, dict):
        raise InputError(f"xbd: {path}: 'features' must hold 'xy' and 'lng_lat' lists")
    return _polygons(feats.get("xy") or []), _polygons(feats.get("lng_lat") or [])


def _fit_problem(fit: GeoFit | None) -> tuple[str, str] | None:
    """``(reason, detail)`` when a fit is not usable, else None."""
    if fit is None:
        return "no_georeference", "no building in both features.xy and features.lng_lat"
    if fit.residual_m > MAX_FIT_RESIDUAL_M:
        return "georeference_residual", f"xy and lng_lat polygons disagree by {fit.residual_m:.2f} m RMS after the fit"
    if not GSD_RANGE_M[0] < fit.gsd_m < GSD_RANGE_M[1]:
        return "implausible_gsd", f"the fitted pixel size is {fit.gsd_m:.3f} m"
    return None


def _image_tags(doc: dict[str, Any], source: str) -> dict[str, str]:
    """GeoTIFF tags the raster catalogue reads, from an xBD label's ``metadata``."""
    meta = doc.get("metadata") or {}
    tags = {"SOURCE": source}
    for tag, key in (("ACQUISITION_DATETIME", "capture_date"), ("SENSOR", "sensor"),
                     ("CATALOG_ID", "catalog_id"), ("OFF_NADIR_DEG", "off_nadir_angle")):
        if isinstance(meta, dict) and meta.get(key) not in (None, ""):
            tags[tag] = str(meta[key])
    return tags


def _write_geotiff(png: Path, out: Path, fit: GeoFit, tags: dict[str, str]) -> None:
    """The PNG's pixels, unchanged, as a lossless EPSG:4326 GeoTIFF with the fitted transform."""
    import rasterio
    from PIL import Image
    from rasterio.transform import Affine

    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB")).transpose(2, 0, 1)  # (3, H, W) uint8
    _, h, w = rgb.shape
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": 3, "dtype": "uint8", "crs": "EPSG:4326",
        "transform": Affine(*fit.transform), "compress": "deflate", "predictor": 2, "photometric": "RGB",
        "tiled": w >= 256 and h >= 256, **({"blockxsize": 256, "blockysize": 256} if w >= 256 and h >= 256 else {}),
    }
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(rgb)
        dst.update_tags(**tags)


def write_labelled_folder(tiles: list[XbdTile], out: Path, *, progress: bool | None = None) -> Counter[str]:
    """Write the tiles as a labelled dataset folder (``sites.csv``, ``before/``, ``after/``).

    Args:
        tiles: from :func:`find_xbd_tiles`.
        out: the folder to write (created).
        progress: progress bar (None = automatic).

    Returns:
        Counts of the tiles left out, by reason.

    Raises:
        InputError: a label file is not valid JSON.
    """
    from tqdm import tqdm

    (out / "before").mkdir(parents=True, exist_ok=True)
    (out / "after").mkdir(exist_ok=True)
    left_out: Counter[str] = Counter()
    rows: list[tuple[str, str, str, str, str]] = []
    for t in tqdm(tiles, desc="xbd tiles", unit="tile", disable=None if progress is None else not progress, leave=False):
        doc = _read_label(t.post_label)
        xy, ll = _label_polygons(doc, t.post_label)
        post_fit = fit_geotransform({u: r for u, (r, _) in xy.items()}, {u: r for u, (r, _) in ll.items()})
        pre_fit, pre_doc = post_fit, {}
        if t.pre_label is not None:
            pre_doc = _read_label(t.pre_label)
            pxy, pll = _label_polygons(pre_doc, t.pre_label)
            pre_fit = fit_geotransform({u: r for u, (r, _) in pxy.items()}, {u: r for u, (r, _) in pll.items()}) or post_fit
        problem = _fit_problem(post_fit) or _fit_problem(pre_fit)
        if problem is not None or post_fit is None or pre_fit is None:
            reason, detail = problem or ("no_georeference", "")
            log.warning("xbd: %s: %s; tile left out", t.post_label.name, detail)
            left_out[reason] += 1
            continue
        _write_geotiff(t.pre_image, out / "before" / f"{t.stem}.tif", pre_fit, _image_tags(pre_doc, f"xBD {t.pre_image.name}"))
        _write_geotiff(t.post_image, out / "after" / f"{t.stem}.tif", post_fit, _image_tags(doc, f"xBD {t.post_image.name}"))
        for uid, (ring, subtype) in xy.items():
            lon, lat = ring_centroid(ll[uid][0]) if uid in ll else post_fit.apply(*ring_centroid(ring))
            rows.append((f"{t.stem}:{uid}", repr(lon), repr(lat), t.stem, str(subtype or "")))
    with open(out / "sites.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["site_id", "lon", "lat", "tile", "damage"])
        w.writerows(rows)
    return left_out


@dataclass(frozen=True)
class ImportedDataset:
    """An xBD folder converted into a labelled dataset folder in the cache.

    Attributes:
        folder: the labelled folder (``sites.csv``, ``before/``, ``after/``).
        source_sha256: SHA-256 over the contents of the xBD label files and images.
        folder_key: SHA-256 identifying the converted folder (sources and this adapter's code).
        name: short name for logs and checkpoints (``xbd-<folder name>``).
        buildings: number of rows of ``sites.csv``.
    """

    folder: Path
    source_sha256: str
    folder_key: str
    name: str
    buildings: int


def _adapter_key(source_sha256: str) -> str:
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    payload = json.dumps({"v": FOLDER_VERSION, "sources": source_sha256, "code": code}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def import_xbd(root: Path, *, cache_dir: Path, progress: bool | None = None) -> ImportedDataset:
    """Convert an xBD-layout folder into a labelled dataset folder (once per content).

    Args:
        root: folder holding ``images/`` and ``labels/``.
        cache_dir: cache root; the folder goes to ``cache_dir/xbd/<key>/``.
        progress: progress bar (None = automatic).

    Raises:
        InputError: the layout is wrong, a label file is invalid, or no tile can be georeferenced.
    """
    root = Path(root)
    tiles = find_xbd_tiles(root)
    if not tiles:
        raise InputError(f"xbd:{root}: no tile has both its pre and post PNG in images/")
    source = xbd_fingerprint(tiles)
    key = _adapter_key(source)
    out = Path(cache_dir) / "xbd" / key[:24]
    done = out / ".complete"
    if not done.is_file():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("xbd:%s: converting %d tile(s) into %s", root, len(tiles), out)
        left_out = write_labelled_folder(tiles, tmp, progress=progress)
        if left_out:
            log.info("xbd:%s: tiles left out: %s", root, dict(left_out))
        if not any((tmp / "after").iterdir()):
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(
                f"xbd:{root}: no tile could be georeferenced ({dict(left_out)}); the label files need "
                "building polygons in both features.xy and features.lng_lat"
            )
        (tmp / ".complete").write_text(json.dumps({"source_sha256": source, "left_out": dict(left_out)}, sort_keys=True))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    with open(out / "sites.csv", encoding="utf-8") as f:
        buildings = max(0, sum(1 for _ in f) - 1)
    return ImportedDataset(out, source, key, f"xbd-{root.resolve().name}", buildings)
