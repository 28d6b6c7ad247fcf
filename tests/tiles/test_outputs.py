"""Chips, file names, index rows, the pair store, and the ``sitewatch tiles`` command."""

from __future__ import annotations

import csv
import math
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

from sitewatch.cli import main
from tests.tiles.conftest import LAT0, LON0, write_sites_csv
from tiles.chips import INVALID_RGB, chip_to_rgb_uint8, safe_name, write_pair_pngs
from tiles.index import PAIR_META_COLUMNS, pair_meta_row
from tiles.store import iter_pairs, read_pair_npz, write_pair_npz
from tiles.types import Pair, PairMeta, Site


def _pair(site_id: str = "a/b c") -> Pair:
    rng = np.random.default_rng(0)
    image = rng.random((2, 3, 16, 16)).astype(np.float32)
    valid = np.ones((2, 16, 16), bool)
    valid[1, :, :4] = False
    image[1, :, ~valid[1]] = 0
    meta = PairMeta(site_id=site_id, status="ok", before_time=datetime(2020, 1, 2, tzinfo=timezone.utc), shift_m=0.25)
    return Pair(Site(site_id, 1.0, 2.0, extra={"k": "v"}), meta, image, valid)


def test_safe_name_never_collides():
    assert safe_name("abc-1.2_x") == "abc-1.2_x"
    a, b = safe_name("a/b"), safe_name("a_b")
    assert a != b and a.startswith("a_b_") and b == "a_b"
    assert safe_name("a?b") != safe_name("a*b")
    assert safe_name("..") != ".." and "/" not in safe_name("../x")


def test_chip_to_rgb_uint8():
    chip = np.zeros((3, 4, 5), np.float32)
    chip[0] = 1.0
    chip[2, 0, 0] = 0.5
    rgb = chip_to_rgb_uint8(chip)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 1]) == (255, 0, 0) and rgb[0, 0, 2] == 128
    grey = chip_to_rgb_uint8(np.full((1, 2, 2), 0.2, np.float32), np.array([[True, False], [True, True]]))
    assert tuple(grey[0, 0]) == (51, 51, 51) and tuple(grey[0, 1]) == INVALID_RGB


def test_write_pair_pngs(tmp_path):
    paths = write_pair_pngs(_pair(), tmp_path)
    assert set(paths) == {"before", "after", "pair"}
    assert paths["before"].name == f"{safe_name('a/b c')}_before.png"
    side = np.asarray(Image.open(paths["pair"]))
    assert side.shape[0] == 16 and side.shape[1] > 32
    after = np.asarray(Image.open(paths["after"]))
    assert tuple(after[0, 0]) == INVALID_RGB
    assert write_pair_pngs(Pair(Site("x", 0, 0), PairMeta("x", "cannot_assess")), tmp_path) == {}


def test_pair_meta_row_columns_and_format():
    row = pair_meta_row(_pair())
    assert tuple(row) == PAIR_META_COLUMNS
    assert row["before_time"] == "2020-01-02T00:00:00Z" and row["after_time"] == ""
    assert row["shift_m"] == "0.25" and row["shift_applied"] == "false" and row["chip_gsd_m"] == ""


def test_store_roundtrip(tmp_path):
    pair = _pair()
    path = write_pair_npz(pair, tmp_path / "pairs")
    back = read_pair_npz(path)
    assert back.site == pair.site and back.meta == replace_nan(back.meta, pair.meta)
    assert np.allclose(back.image, pair.image, atol=1e-3) and np.array_equal(back.valid, pair.valid)
    assert [p.site.site_id for p in iter_pairs(tmp_path)] == ["a/b c"]


def replace_nan(got: PairMeta, want: PairMeta) -> PairMeta:
    """``want`` (NaN != NaN, so compare the NaN fields by position)."""
    for f in ("before_gsd_m", "after_gsd_m", "chip_gsd_m", "chip_size_m", "coreg_confidence"):
        assert math.isnan(getattr(got, f)) == math.isnan(getattr(want, f))
    return got


@pytest.fixture()
def restore_logging():
    """The CLI configures logging onto the captured stderr; undo it after the test."""
    import logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_cli_smoke(tmp_path, make_scene, capsys, restore_logging):
    before = make_scene("b/before.tif", tags={"ACQUISITION_DATETIME": "2020-01-01T00:00:00Z"})
    after = make_scene("a/after.tif", crs="wgs84", shift_m=(1.0, 0.0))
    sites = write_sites_csv(
        tmp_path / "sites.csv",
        [("in", LON0, LAT0, "x1"), ("out", LON0 + 1, LAT0, "x2"), ("bad", "abc", LAT0, "x3"), ("in/2", LON0 + 0.0001, LAT0, "x4")],
        header="site_id,lon,lat,note",
    )
    out = tmp_path / "out"
    args = ["tiles", "--sites", str(sites), "--before", str(before.parent), "--after", str(after), "--out", str(out),
            "--set", "tiles.chip_px=64", "--chip-size-m", "32"]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "index.csv").open(encoding="utf-8")))
    assert [r["site_id"] for r in rows] == ["in", "out", "bad", "in/2"]
    assert [r["reason"] for r in rows] == ["", "outside_before_coverage", "invalid_site", ""]
    assert rows[0]["note"] == "x1" and rows[0]["before_scene"] == "before" and rows[0]["shift_applied"] == "true"
    assert float(rows[0]["shift_m"]) == pytest.approx(1.0, abs=0.1)
    assert rows[0]["chip_gsd_m"] == "0.5" and rows[1]["pair_file"] == "" and rows[1]["chip_before"] == ""
    pair = read_pair_npz(out / rows[3]["pair_file"])
    assert pair.image.shape == (2, 3, 64, 64) and pair.site.site_id == "in/2"
    assert (out / rows[0]["chip_pair"]).is_file()
    assert "chip_px: 64" in (out / "config.yaml").read_text()
    assert "wrote 4 rows" in capsys.readouterr().out
    # refuses to overwrite; bad flags are usage errors (exit 2); a missing sites file is exit 1
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--set", "tiles.chip_pxx=3"]) == 2
    assert "chip_pxx" in capsys.readouterr().err
    bad = ["tiles", "--sites", str(tmp_path / "no.csv"), "--before", str(before), "--after", str(after), "--out", str(tmp_path / "o2")]
    assert main(bad) == 1
    assert "no.csv" in capsys.readouterr().err
