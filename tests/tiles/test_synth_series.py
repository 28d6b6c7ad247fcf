"""Synthetic image series: dated files, known damage dates, spoilt dates, determinism."""

from __future__ import annotations

import csv
import hashlib
from datetime import date

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from sitewatch.errors import ConfigError, UsageError
from tiles.catalog import RasterCatalog
from tiles.synth.config import SynthConfig
from tiles.synth.series import SeriesConfig, generate_series

CFG = SynthConfig(sites=16, size_px=512, seed=4, max_sites_per_region=8, destroyed_fraction=0.4, major_fraction=0.0, minor_fraction=0.0)


@pytest.fixture(scope="module")
def series_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("series")
    summary = generate_series(out, CFG, SeriesConfig(dates=4))
    return out, summary


def _rows(out):
    with open(out / "sites.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_files_dates_and_labels(series_folder):
    out, summary = series_folder
    rows = _rows(out)
    assert summary.sites == len(rows) == 16 and summary.regions >= 2
    assert len(summary.files) == 4 * summary.regions
    cat = RasterCatalog.from_paths(out / "series", epoch="before")
    assert all(s.time_source == "tag" for s in cat.scenes)
    for region in range(summary.regions):
        times = sorted(s.acquired for s in cat.scenes if s.scene_id.startswith(f"region{region:03d}_"))
        assert len(times) == 4 and all(b - a >= np.timedelta64(30, "D") for a, b in zip(times, times[1:]))
        spoilers = []
        for f in sorted((out / "series").glob(f"region{region:03d}_*.tif")):
            with rasterio.open(f) as ds:
                spoilers.append(ds.tags()["SYNTH_SPOILER"])
        assert spoilers.count("cloudy") == 1 and spoilers.count("misregistered") == 1
    damaged = [r for r in rows if r["damage"] != "no-damage"]
    assert damaged and len(damaged) == summary.damaged
    for r in damaged:
        li, dd, fd = (date.fromisoformat(r[k]) for k in ("last_intact_date", "damage_date", "first_damaged_date"))
        assert li < dd <= fd
    for r in rows:
        if r["damage"] == "no-damage":
            assert r["damage_date"] == r["last_intact_date"] == r["first_damaged_date"] == ""
    for r in rows:
        if r["damage_stages"]:
            (d1, c1), (d2, c2) = (s.split(":") for s in r["damage_stages"].split(";"))
            assert d1 == r["damage_date"] and c1 == "major-damage" and c2 == "destroyed" and d2 > d1


def _patch(path, lon, lat, half=10):
    with rasterio.open(path) as ds:
        x, y = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True).transform(lon, lat)
        r, c = ds.index(x, y)
        return ds.read(window=((r - half, r + half), (c - half, c + half))).astype(np.float32)


def test_damage_appears_between_the_bracketing_dates(series_folder):
    out, _ = series_folder
    rows = [r for r in _rows(out) if r["damage"] == "destroyed" and not r["damage_stages"]]
    assert rows
    hits = 0
    for r in rows:
        files = {f.stem.split("_")[1]: f for f in (out / "series").glob(f"region{int(r['region']):03d}_*.tif")}
        li = files[r["last_intact_date"].replace("-", "")]
        fd = files[r["first_damaged_date"].replace("-", "")]
        lon, lat = float(r["lon"]), float(r["lat"])
        before, after = _patch(li, lon, lat), _patch(fd, lon, lat)
        hits += float(np.abs(after - before).mean()) > 12.0
    # the roof is replaced by rubble between those two dates (clouds may hide a few)
    assert hits >= 0.6 * len(rows), (hits, len(rows))


def test_same_seed_same_files(series_folder, tmp_path):
    out, summary = series_folder
    again = generate_series(tmp_path / "again", CFG, SeriesConfig(dates=4))
    digest = lambda files: [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]  # noqa: E731
    assert digest(again.files) == digest(summary.files)
    assert (tmp_path / "again" / "sites.csv").read_text() == (out / "sites.csv").read_text()
    with pytest.raises(UsageError, match="--overwrite"):
        generate_series(tmp_path / "again", CFG, SeriesConfig(dates=4))


@pytest.mark.parametrize(("field", "value"), [("dates", 2), ("first_date", "15/01/2023"), ("cloud_cover", 1.5), ("misregistration_px", 50)])
def test_bad_series_settings_name_the_setting(field, value):
    with pytest.raises(ConfigError) as err:
        SeriesConfig(**{"dates": 5, field: value})
    assert err.value.setting == f"series.{field}"
