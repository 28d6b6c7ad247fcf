"""A generated scene for the review app's site views: a dense block of buildings with known footprints.

Real GeoTIFFs (rasterio, UTM, 0.5 m) of red-roofed buildings on a textured ground, 16 m apart so
several share a chip (the case where a reviewer cannot tell which building is meant), some
destroyed in the after epoch, and a ``sites.geojson`` of their footprint polygons plus two point
sites (one with ``radius_m``, one without). :func:`detect_run` scores it with the bundled model
through the ``sitewatch detect`` command, so the review app sees a real run folder.

Used by tests and by ``docs/make_review_screenshots.py``; nothing here is real imagery.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CRS = "EPSG:32637"
GSD_M = 0.5
ORIGIN = (440_000.0, 3_700_000.0)  # upper-left corner, metres
ROOF_RGB = (205, 62, 48)


@dataclass(frozen=True)
class Building:
    """One drawn building: centre and size in metres (scene x east, y north), angle in degrees."""

    site_id: str
    cx: float
    cy: float
    w: float
    h: float
    angle: float
    destroyed: bool

    def corners(self) -> np.ndarray:
        """``(4, 2)`` corner coordinates ``(x, y)`` in the scene CRS."""
        a = math.radians(self.angle)
        ux, uy = math.cos(a), math.sin(a)
        vx, vy = -uy, ux
        hw, hh = self.w / 2, self.h / 2
        return np.array([
            [self.cx + sx * hw * ux + sy * hh * vx, self.cy + sx * hw * uy + sy * hh * vy]
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ])


def buildings(size_px: int = 400) -> list[Building]:
    """A 4 x 4 block of buildings, 16 m apart, in the middle of the scene."""
    x0, y0 = ORIGIN
    side = size_px * GSD_M
    cx0, cy0 = x0 + side / 2 - 24.0, y0 - side / 2 + 24.0
    rng = np.random.default_rng(4)
    out = []
    for r in range(4):
        for c in range(4):
            k = 4 * r + c
            out.append(Building(
                site_id=f"b{k:02d}",
                cx=cx0 + 16.0 * c + float(rng.uniform(-1.5, 1.5)),
                cy=cy0 - 16.0 * r + float(rng.uniform(-1.5, 1.5)),
                w=float(rng.uniform(8.0, 11.0)),
                h=float(rng.uniform(6.0, 8.5)),
                angle=float(rng.uniform(-35.0, 35.0)),
                destroyed=k in (1, 6, 11, 12),
            ))
    return out


def _paint(size_px: int, blds: list[Building], epoch: str, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    from skimage.draw import polygon

    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.normal(0, 1, (size_px, size_px)), 6) * 60
    img = np.stack([100 + base, 115 + 0.8 * base, 80 + 0.6 * base]).astype(np.float64)
    img += rng.normal(0, 4, img.shape)
    x0, y0 = ORIGIN
    for b in blds:
        xy = b.corners()
        cols = (xy[:, 0] - x0) / GSD_M - 0.5
        rows = (y0 - xy[:, 1]) / GSD_M - 0.5
        rr, cc = polygon(rows, cols, (size_px, size_px))
        if epoch == "after" and b.destroyed:
            rubble = rng.uniform(30, 110, rr.size)
            img[:, rr, cc] = np.stack([rubble, rubble * 0.95, rubble * 0.9])
        else:
            for ch, v in enumerate(ROOF_RGB):
                img[ch, rr, cc] = v + rng.normal(0, 3, rr.size)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Scene:
    """The files of a generated scene."""

    sites: Path
    before: Path
    after: Path
    buildings: tuple[Building, ...]


def write_scene(folder: Path, size_px: int = 400) -> Scene:
    """Write ``before/``, ``after/`` GeoTIFFs and ``sites.geojson`` into ``folder``."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    blds = buildings(size_px)
    transform = from_origin(ORIGIN[0], ORIGIN[1], GSD_M, GSD_M)
    paths = {}
    for epoch, seed, when in (("before", 1, "2023-02-01T08:30:00Z"), ("after", 2, "2023-03-15T08:40:00Z")):
        (folder / epoch).mkdir(exist_ok=True)
        path = folder / epoch / f"block_{epoch}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8",
                           crs=CRS, transform=transform) as dst:
            dst.write(_paint(size_px, blds, epoch, seed))
            dst.update_tags(ACQUISITION_DATETIME=when)
        paths[epoch] = folder / epoch
    to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    features = []
    for b in blds:
        xy = b.corners()
        lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
        ring = [[float(x), float(y)] for x, y in zip(lon, lat)]
        features.append({"type": "Feature", "properties": {"site_id": b.site_id, "name": f"house {b.site_id}", "kind": "home"},
                         "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}})
    side = size_px * GSD_M
    for site_id, dx, radius in (("clinic", 60.0, 9.0), ("well", -60.0, None)):
        lon, lat = to_lonlat.transform(ORIGIN[0] + side / 2 + dx, ORIGIN[1] - side / 2 - 60.0)
        props = {"site_id": site_id, "name": site_id, "kind": "facility"}
        if radius:
            props["radius_m"] = radius
        features.append({"type": "Feature", "properties": props, "geometry": {"type": "Point", "coordinates": [lon, lat]}})
    sites = folder / "sites.geojson"
    sites.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return Scene(sites, paths["before"], paths["after"], tuple(blds))


def block_run_folder(tmp_path_factory) -> tuple[Scene, Path]:  # noqa: ANN001 - pytest's factory
    """``(scene, run folder)`` in a fresh temporary folder (for module-scoped fixtures)."""
    root = tmp_path_factory.mktemp("block")
    scene = write_scene(root / "scene")
    return scene, detect_run(scene, root / "run")


def detect_run(scene: Scene, out: Path) -> Path:
    """Score the scene with the bundled model through ``sitewatch detect`` (chips for every site)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sitewatch", "detect", "-q", "--sites", str(scene.sites), "--before", str(scene.before),
           "--after", str(scene.after), "--out", str(out), "--chips", "all"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"sitewatch detect failed ({r.returncode}): {r.stderr[-3000:]}")
    return out
