"""Importer for the public xBD layout, so users holding xBD can train on it.

Layout (as distributed)::

    PATH/images/<event>_<id>_pre_disaster.png
    PATH/images/<event>_<id>_post_disaster.png
    PATH/labels/<event>_<id>_post_disaster.json

Each post-disaster label file holds ``features.xy``: building polygons as WKT in *pixel*
coordinates with ``properties.subtype`` (the xBD damage class) and ``properties.uid``, and
usually ``features.lng_lat`` (the same polygons in WGS84). The PNGs are not georeferenced, so
chips are cut in pixel space: a window of ``tiles.chip_size_m`` metres (using the GSD measured
from the two polygon sets, else ``metadata.gsd``) around each building's centroid, resampled to
``tiles.chip_px`` and normalised like the tiles stage does (after matched to before).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from sitewatch.errors import InputError
from tiles.config import TilesConfig
from tiles.types import damage_to_label
from train.datasets import CACHE_VERSION, PairSet, _cache_key, load_pairset, save_pairset, tqdm_disable

log = logging.getLogger(__name__)

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
    """Area centroid ``(x, y)`` of a ring (vertex mean when the area is ~0)."""
    x, y = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2.0
    if abs(area) < 1e-12:
        return float(x.mean()), float(y.mean())
    return float(((x + x1) * cross).sum() / (6 * area)), float(((y + y1) * cross).sum() / (6 * area))


def _estimate_gsd(xy: dict[str, np.ndarray], lnglat: dict[str, np.ndarray]) -> float | None:
    """Metres per pixel from the same buildings' centroids in pixels and in WGS84."""
    common = sorted(set(xy) & set(lnglat))
    if len(common) < 2:
        return None
    px = np.array([ring_centroid(xy[u]) for u in common])
    ll = np.array([ring_centroid(lnglat[u]) for u in common])
    lat0 = math.radians(float(ll[:, 1].mean()))
    metres = np.stack([np.radians(ll[:, 0]) * 6_371_008.8 * math.cos(lat0), np.radians(ll[:, 1]) * 6_371_008.8], axis=1)
    i, j = np.triu_indices(len(common), 1)
    d_px = np.hypot(*(px[i] - px[j]).T)
    d_m = np.hypot(*(metres[i] - metres[j]).T)
    keep = d_px > 20
    if not keep.any():
        return None
    return float(np.median(d_m[keep] / d_px[keep]))


def _polygons(features: list[dict]) -> dict[str, tuple[np.ndarray, str | None]]:
    out: dict[str, tuple[np.ndarray, str | None]] = {}
    for k, f in enumerate(features):
        props = f.get("properties") or {}
        if props.get("feature_type", "building") != "building":
            continue
        try:
            ring = parse_wkt_ring(f["wkt"])
        except (KeyError, ValueError):
            continue
        out[str(props.get("uid", k))] = (ring, props.get("subtype"))
    return out


def _crop(img: np.ndarray, cx: float, cy: float, half: float, out_px: int) -> tuple[np.ndarray, float]:
    """Crop a square of half-side ``half`` px around ``(cx, cy)`` and resize to ``out_px``.

    Args:
        img: (H, W, C) uint8.

    Returns:
        ``((C, out_px, out_px) float32 in [0, 1], fraction of the window inside the image)``.
    """
    h, w = img.shape[:2]
    x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
    inside = max(0.0, min(x1, w) - max(x0, 0)) * max(0.0, min(y1, h) - max(y0, 0)) / ((2 * half) ** 2)
    pil = Image.fromarray(img)
    chip = pil.transform((out_px, out_px), Image.Transform.EXTENT, (x0, y0, x1, y1), resample=Image.Resampling.BILINEAR)
    return np.asarray(chip, dtype=np.float32).transpose(2, 0, 1) / 255.0, inside


def normalise_after(before: np.ndarray, after: np.ndarray, mode: str) -> np.ndarray:
    """Make ``after`` radiometrically comparable to ``before`` (both (C, H, W) in [0, 1])."""
    if mode == "histogram":
        from skimage.exposure import match_histograms

        return np.clip(match_histograms(after, before, channel_axis=0), 0, 1).astype(np.float32)
    if mode == "standardise":
        mb, sb = before.mean(axis=(1, 2), keepdims=True), before.std(axis=(1, 2), keepdims=True) + 1e-6
        ma, sa = after.mean(axis=(1, 2), keepdims=True), after.std(axis=(1, 2), keepdims=True) + 1e-6
        return np.clip((after - ma) / sa * sb + mb, 0, 1).astype(np.float32)
    return after


def _xbd_fingerprint(root: Path, label_files: list[Path]) -> str:
    """Fast fingerprint: names, sizes and mtimes of label and image files (xBD is many GB)."""
    h = hashlib.sha256()
    for p in label_files + sorted((root / "images").glob("*.png")):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)};".encode())
    return h.hexdigest()


def load_xbd(root: Path, tiles: TilesConfig, *, cache_dir: Path, progress: bool | None = None) -> PairSet:
    """Labelled pairs from an xBD-layout folder (cached like other datasets).

    Args:
        root: folder holding ``images/`` and ``labels/``.
        tiles: chip size in metres and pixels, normalisation.
        cache_dir: cache root.
        progress: show a progress bar (None = automatic).

    Raises:
        InputError: missing folders, no label files, or no usable building.
    """
    from tqdm import tqdm

    root = Path(root)
    if not (root / "labels").is_dir() or not (root / "images").is_dir():
        raise InputError(f"xbd:{root}: expected images/ and labels/ folders (the public xBD layout)")
    label_files = sorted((root / "labels").glob("*_post_disaster.json"))
    if not label_files:
        raise InputError(f"xbd:{root}: labels/ holds no *_post_disaster.json files")
    fingerprint = _xbd_fingerprint(root, label_files)
    key = _cache_key("xbd", fingerprint, tiles, {"xbd_version": CACHE_VERSION})
    cache = cache_dir / "pairs" / f"xbd-{key[:32]}.npz"
    if cache.is_file():
        return load_pairset(cache)

    images, labels, groups, ids, lons, lats, damage = [], [], [], [], [], [], []
    skipped: Counter[str] = Counter()
    for lf in tqdm(label_files, desc="xbd tiles", unit="tile", disable=tqdm_disable(progress), leave=False):
        stem = lf.name[: -len("_post_disaster.json")]
        pre_png = root / "images" / f"{stem}_pre_disaster.png"
        post_png = root / "images" / f"{stem}_post_disaster.png"
        if not pre_png.is_file() or not post_png.is_file():
            log.warning("xbd:%s: %s has no matching pre/post PNGs; skipped", root, lf.name)
            skipped["missing_image"] += 1
            continue
        try:
            doc = json.loads(lf.read_text(encoding="utf-8"))
            feats = doc.get("features") or {}
            xy = _polygons(feats.get("xy") or [])
            ll = _polygons(feats.get("lng_lat") or [])
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError(f"xbd:{root}: {lf.name} is not a valid xBD label file ({exc})") from None
        gsd = _estimate_gsd({u: r for u, (r, _) in xy.items()}, {u: r for u, (r, _) in ll.items()})
        if gsd is None:
            gsd = float((doc.get("metadata") or {}).get("gsd") or 0) or None
        if gsd is None or not 0.05 < gsd < 10:
            log.warning("xbd:%s: %s has no usable GSD (no lng_lat polygons or metadata.gsd); skipped", root, lf.name)
            skipped["no_gsd"] += 1
            continue
        pre = np.asarray(Image.open(pre_png).convert("RGB"))
        post = np.asarray(Image.open(post_png).convert("RGB"))
        half = tiles.chip_size_m / gsd / 2.0
        for uid, (ring, subtype) in xy.items():
            label = damage_to_label(subtype)
            if label is None:
                skipped[str(subtype)] += 1
                continue
            cx, cy = ring_centroid(ring)
            b, inside_b = _crop(pre, cx, cy, half, tiles.chip_px)
            a, inside_a = _crop(post, cx, cy, half, tiles.chip_px)
            if min(inside_a, inside_b) < tiles.min_valid_fraction:
                skipped["mostly_outside_image"] += 1
                continue
            a = normalise_after(b, a, tiles.normalisation)
            pair = np.stack([b, a])
            images.append(np.clip(np.rint(pair * 255), 0, 255).astype(np.uint8))
            labels.append(label)
            groups.append(stem)
            ids.append(f"{stem}:{uid}")
            lon, lat = ring_centroid(ll[uid][0]) if uid in ll else (float("nan"), float("nan"))
            lons.append(lon)
            lats.append(lat)
            damage.append(str(subtype))
    if skipped:
        log.info("xbd:%s: left out %s", root, dict(skipped))
    if not images:
        raise InputError(f"xbd:{root}: no building with a usable damage label (left out: {dict(skipped)})")
    ps = PairSet(
        images=np.stack(images),
        labels=np.array(labels, dtype=np.int8),
        groups=np.array(groups, dtype=object),
        site_ids=np.array(ids, dtype=object),
        lon=np.array(lons, dtype=np.float64),
        lat=np.array(lats, dtype=np.float64),
        scenes=np.array(groups, dtype=object),
        damage=np.array(damage, dtype=object),
        name=f"xbd-{root.resolve().name}",
        data_hash=fingerprint,
        gsd_m=tiles.gsd_m,
    )
    save_pairset(ps, cache)
    return ps
