"""Real deliveries that used to break pair cutting silently (issue 10, items 1-6).

Each test writes the kind of GeoTIFF vendors really deliver (11-bit data in uint16, files that
share a name across epochs, BGRN band order, black collars without nodata, a scene across the
antimeridian, a 2 km pixel) and checks the pair against a known answer.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from tests.tiles.conftest import LAT0, LON0, lonlat_of
from tiles.catalog import RasterCatalog
from tiles.config import TilesConfig
from tiles.cut import REASONS, PairCutter
from tiles.index import PAIR_META_COLUMNS, pair_meta_row
from tiles.types import Site

SITE = Site("s", LON0, LAT0)


def _cut(before, after, site=SITE, **cfg):
    b = RasterCatalog.from_paths(before, epoch="before")
    a = RasterCatalog.from_paths(after, epoch="after")
    with PairCutter(b, a, TilesConfig(**cfg)) as cutter:
        return cutter.cut(site)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


# -- 1. per-scene scaling is keyed by the file, never the stem ------------------------------------


@pytest.mark.parametrize(
    "before_range, after_range",
    [((0, 2047), (20, 420)), ((20, 420), (0, 2047)), ((0, 2047), (100, 60000))],
    ids=["11bit-then-dim", "dim-then-11bit", "11bit-then-16bit"],
)
def test_16bit_epochs_sharing_a_file_name_are_scaled_with_their_own_statistics(make_scene, before_range, after_range):
    # uint8 reference of the same ground: what the chips must look like
    ref = _cut(make_scene("ref/b.tif", marker=False), make_scene("ref/a.tif", marker=False),
               normalisation="none", coregister=False)
    # the xBD / vendor layout: before/scene.tif and after/scene.tif
    before = make_scene("before/scene.tif", dtype="uint16", value_range=before_range, marker=False)
    after = make_scene("after/scene.tif", dtype="uint16", value_range=after_range, marker=False)
    pair = _cut(before, after, normalisation="none", coregister=False)
    assert pair.ok, pair.meta
    assert pair.meta.blank_fraction < 0.01 and pair.meta.saturated_fraction < 0.01
    for epoch in (0, 1):
        chip = pair.image[epoch]
        clipped = float(((chip <= 0.0) | (chip >= 1.0)).mean())
        assert clipped < 0.02, (epoch, clipped)  # the stretch clips only its 0.5 % tails
        assert chip.max() > 0.8 and chip.min() < 0.2, (epoch, chip.min(), chip.max())
        for band in range(3):
            assert _corr(chip[band], ref.image[epoch][band]) > 0.98
    # the two epochs look alike although their raw values differ by up to 30x
    assert np.abs(pair.image[0] - pair.image[1]).mean() < 0.03


def test_dim_16bit_alone_is_stretched_not_blank(make_scene):
    before = make_scene("b.tif", dtype="uint16", value_range=(0, 300), marker=False)
    after = make_scene("a.tif", dtype="float32", value_range=(0.0, 900.0), marker=False)
    pair = _cut(before, after, normalisation="none", coregister=False)
    assert pair.ok and pair.meta.blank_fraction == 0.0
    assert pair.image[0].max() > 0.8 and np.abs(pair.image[0] - pair.image[1]).mean() < 0.03
