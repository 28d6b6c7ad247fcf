"""A tiny seeded before/after scene for the detect tests (written with rasterio, a few KB)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass(frozen=True)
class TinyScene:
    """Paths of a generated scene: ``sites.csv`` with ``damage``, ``before/`` and ``after/``."""

    root: Path
    sites: Path
    before: Path
    after: Path
    n_sites: int


def make_tiny_scene(root: Path, *, n_side: int = 5, seed: int = 0, size_px: int = 512, tiled: bool = True) -> TinyScene:
    """Write a 0.5 m UTM scene with ``n_side**2`` square buildings; every third one destroyed.

    Before: bright roofs on textured ground. After: destroyed roofs replaced by dark rubble,
    plus a small brightness change everywhere (a different acquisition).
    """
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    gsd = 0.5
    x0, y0 = 500_000.0, 4_000_000.0
    transform = from_origin(x0, y0, gsd, gsd)
    ground = 0.35 + 0.08 * rng.standard_normal((3, size_px, size_px))
    before = ground.copy()
    after = ground.copy() * 1.05 + 0.02
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    margin = 80
    centres = np.linspace(margin, size_px - margin, n_side).astype(int)
    rows = []
    k = 0
    for r in centres:
        for c in centres:
            destroyed = k % 3 == 0
            half = 7
            roof = np.array([0.85, 0.8, 0.75])[:, None, None]
            before[:, r - half : r + half, c - half : c + half] = roof
            if destroyed:
                rubble = 0.15 + 0.1 * rng.random((3, 2 * half + 6, 2 * half + 6))
                after[:, r - half - 3 : r + half + 3, c - half - 3 : c + half + 3] = rubble
            else:
                after[:, r - half : r + half, c - half : c + half] = roof * 1.02
            x = x0 + (c + 0.5) * gsd
            y = y0 - (r + 0.5) * gsd
            lon, lat = to_wgs84.transform(x, y)
            rows.append(
                {
                    "site_id": f"s{k:03d}",
                    "lon": f"{lon:.8f}",
                    "lat": f"{lat:.8f}",
                    "kind": "home",
                    "damage": "destroyed" if destroyed else "no-damage",
                    "note": f"block <{k // n_side}>",
                }
            )
            k += 1
    for name, data, when in (("before", before, "2021-05-01T10:00:00"), ("after", after, "2021-09-01T10:00:00")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.clip(data * 255, 0, 255).astype(np.uint8)
        profile = dict(
            driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8", crs="EPSG:32633", transform=transform
        )
        if tiled:
            profile.update(tiled=True, blockxsize=128, blockysize=128)
        with rasterio.open(folder / f"{name}_scene.tif", "w", **profile) as ds:
            ds.write(arr)
            ds.update_tags(ACQUISITION_DATETIME=when)
    sites = root / "sites.csv"
    with open(sites, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return TinyScene(root=root, sites=sites, before=root / "before", after=root / "after", n_sites=len(rows))


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> TinyScene:
    """One shared tiny scene (read-only for tests)."""
    return make_tiny_scene(tmp_path_factory.mktemp("tiny_scene"))
