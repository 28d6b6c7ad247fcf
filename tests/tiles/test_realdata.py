"""Real imagery (../shared/data): Joplin across two CRSs, xBD Santa Rosa sites on their buildings."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from tiles.catalog import RasterCatalog
from tiles.config import TilesConfig
from tiles.coreg import estimate_shift
from tiles.cut import PairCutter
from tiles.sites import read_sites

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _overlap(*catalogs: RasterCatalog) -> tuple[float, float, float, float]:
    w = max(min(s.lonlat_bounds[0] for s in c.scenes) for c in catalogs)
    so = max(min(s.lonlat_bounds[1] for s in c.scenes) for c in catalogs)
    e = min(max(s.lonlat_bounds[2] for s in c.scenes) for c in catalogs)
    n = min(max(s.lonlat_bounds[3] for s in c.scenes) for c in catalogs)
    return w, so, e, n


def test_joplin_pairs_align_across_utm_and_wgs84(shared_data):
    root = shared_data / "joplin-tornado"
    before = RasterCatalog.from_paths(root / "before", epoch="before")
    after = RasterCatalog.from_paths(root / "after", epoch="after")
    assert {s.crs for s in before.scenes} == {"EPSG:26915"} and {s.crs for s in after.scenes} == {"EPSG:4326"}
    w, so, e, n = _overlap(before, after)
    pad = 0.0004  # ~40 m inside the common area
    sites = [s for s in read_sites(root / "sites.csv") if w + pad < s.lon < e - pad and so + pad < s.lat < n - pad]
    sites = sites[:: max(1, len(sites) // 120)][:120]
    assert len(sites) >= 60
    with PairCutter(before, after, TilesConfig()) as cutter:
        pairs = list(cutter.cut_many(sites))
    ok = [p for p in pairs if p.ok]
    assert len(ok) >= 0.8 * len(pairs), [p.meta.reason for p in pairs if not p.ok]
    # where the correlation is confident, the epochs are within a few metres of each other:
    # a CRS or axis-order mistake would show tens of metres
    confident = [p for p in ok if p.meta.coreg_confidence >= 0.5]
    assert len(confident) >= 8
    assert np.median([p.meta.shift_m for p in confident]) < 2.0
    # after co-registration the residual shift measured on the output pair is sub-pixel
    residual = []
    for p in confident:
        if p.meta.shift_applied:
            est = estimate_shift(p.image[0], p.image[1], p.valid[0], p.valid[1])
            residual.append(math.hypot(est.dy, est.dx))
    assert len(residual) >= 5
    assert np.median(residual) < 0.6, residual


def test_xbd_sites_land_on_their_buildings(shared_data):
    root = shared_data / "xbd-santa-rosa-dev"
    before = RasterCatalog.from_paths(root / "before", epoch="before")
    after = RasterCatalog.from_paths(root / "after", epoch="after")
    assert all(s.time_source == "tag" for s in before.scenes + after.scenes)
    sites = read_sites(root / "sites.csv")
    destroyed = [s for s in sites if s.damage == "destroyed"][::10][:40]
    intact = [s for s in sites if s.damage == "no-damage"][::30][:40]
    rng = np.random.default_rng(0)

    def moved(site, d=30.0):
        ang = rng.uniform(0, 2 * np.pi)
        return replace(
            site,
            lon=site.lon + d * math.cos(ang) / (111_320 * math.cos(math.radians(site.lat))),
            lat=site.lat + d * math.sin(ang) / 110_574,
        )

    yy, xx = np.mgrid[:128, :128]
    centre = np.hypot(yy - 63.5, xx - 63.5) < 10  # 5 m around the footprint centroid

    def centre_change(pairs):
        vals = [np.abs(p.image[0] - p.image[1]).mean(0)[centre & p.valid.all(0)].mean() for p in pairs if p.ok]
        assert len(vals) >= 25
        return float(np.median(vals))

    with PairCutter(before, after, TilesConfig(normalisation="none")) as cutter:
        burnt = centre_change(cutter.cut_many(destroyed))
        kept = centre_change(cutter.cut_many(intact))
        off_site = centre_change(cutter.cut_many([moved(s) for s in destroyed]))
    # the chip centre is where the labelled building is: destroyed buildings change much more
    # than intact ones there, and 30 m away from them the change is clearly smaller
    assert burnt > 2.0 * kept, (burnt, kept)
    assert burnt > 1.3 * off_site, (burnt, off_site)


def test_xbd_as_11bit_uint16_with_shared_names_matches_the_uint8_pairs(shared_data, tmp_path):
    # issue 10 item 1: before/X.tif and after/X.tif share their names (the xBD layout); saved as
    # 11-bit uint16 (Maxar's delivery) every pair used to come out blank
    import rasterio

    root = shared_data / "xbd-santa-rosa-dev"
    names = sorted(p.name for p in (root / "before").glob("*.tif"))[:6]
    for epoch, gain in (("before", 1), ("after", 8)):  # dim 16-bit before, 11-bit after, same names
        (tmp_path / epoch).mkdir()
        for name in names:
            with rasterio.open(root / epoch / name) as src:
                profile = src.profile | {"dtype": "uint16", "compress": "deflate", "photometric": "rgb"}
                profile.pop("jpeg_quality", None)
                data = src.read().astype(np.uint16) * gain
            with rasterio.open(tmp_path / epoch / name, "w", **profile) as dst:
                dst.write(data)
    cat = {e: RasterCatalog.from_paths([root / e / n for n in names], epoch=e) for e in ("before", "after")}
    cat16 = {e: RasterCatalog.from_paths(tmp_path / e, epoch=e) for e in ("before", "after")}
    w = min(s.lonlat_bounds[0] for s in cat["before"].scenes)
    e_ = max(s.lonlat_bounds[2] for s in cat["before"].scenes)
    so = min(s.lonlat_bounds[1] for s in cat["before"].scenes)
    n = max(s.lonlat_bounds[3] for s in cat["before"].scenes)
    sites = [s for s in read_sites(root / "sites.csv") if w < s.lon < e_ and so < s.lat < n][:60]
    assert len(sites) >= 20
    cfg = TilesConfig(normalisation="none", coregister=False)
    with PairCutter(cat["before"], cat["after"], cfg) as c8, PairCutter(cat16["before"], cat16["after"], cfg) as c16:
        pairs8 = list(c8.cut_many(sites))
        pairs16 = list(c16.cut_many(sites))
    ok8 = [(a, b) for a, b in zip(pairs8, pairs16) if a.ok]
    assert len(ok8) >= 15
    assert sum(b.ok for _, b in ok8) >= 0.9 * len(ok8), [b.meta.reason for _, b in ok8 if not b.ok]
    corr = [np.corrcoef(a.image[t, 0].ravel(), b.image[t, 0].ravel())[0, 1] for a, b in ok8 if b.ok for t in (0, 1)]
    assert np.median(corr) > 0.97, np.median(corr)
