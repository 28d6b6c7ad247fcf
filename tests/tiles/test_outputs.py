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


def test_long_ids_give_bounded_distinct_file_names():
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    na, nb = safe_name(long_a), safe_name(long_b)
    assert na != nb and len(na) <= 100 and len(nb) <= 100 and na.startswith("a" * 80)
    assert safe_name("x" * 100) == "x" * 100  # short enough: unchanged
    assert len(safe_name("/" * 300)) <= 100


def test_a_300_character_site_id_does_not_stop_the_run(tmp_path, make_scene):
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.output import write_tiles_folder

    before = RasterCatalog.from_paths(make_scene("b.tif"), epoch="before")
    after = RasterCatalog.from_paths(make_scene("a.tif"), epoch="after")
    sites = [Site("s" * 300, LON0, LAT0), Site("s" * 299 + "t", LON0, LAT0)]
    summary = write_tiles_folder(sites, before, after, tmp_path / "out", TilesConfig(chip_px=32, chip_size_m=16.0),
                                 progress=False)
    assert summary.by_status == {"ok": 2}
    rows = list(csv.DictReader((tmp_path / "out" / "index.csv").open(encoding="utf-8")))
    assert [r["site_id"] for r in rows] == [s.site_id for s in sites]
    assert len({r["pair_file"] for r in rows}) == 2
    for r in rows:
        assert (tmp_path / "out" / r["pair_file"]).is_file() and (tmp_path / "out" / r["chip_pair"]).is_file()
        assert read_pair_npz(tmp_path / "out" / r["pair_file"]).site.site_id == r["site_id"]


@pytest.mark.parametrize(
    "text, safe",
    [
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("  =1+1", "'  =1+1"),
        ("\uff1d1+1", "'\uff1d1+1"),  # full-width equals sign
        ("-12.5", "-12.5"),  # a plain number is not a formula
        ("+3", "+3"),
        ("1e-5", "1e-5"),
        ("Hospital = big", "Hospital = big"),
        ("", ""),
    ],
)
def test_neutralise_formula(text, safe):
    from tiles.formula_injection import neutralise_formula

    assert neutralise_formula(text) == safe


def test_index_csv_cells_cannot_be_spreadsheet_formulas(tmp_path, make_scene):
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.output import write_tiles_folder

    before = RasterCatalog.from_paths(make_scene("b.tif"), epoch="before")
    after = RasterCatalog.from_paths(make_scene("=cmd.tif"), epoch="after")
    sites = [
        Site("=1+1", LON0, LAT0, name="=HYPERLINK(\"http://evil\")", kind="@x", extra={"note": "+cmd", "depth": "-3.5"}),
        Site("-2", LON0, LAT0, name="plain"),
    ]
    write_tiles_folder(sites, before, after, tmp_path / "out", TilesConfig(chip_px=32, chip_size_m=16.0), progress=False)
    rows = list(csv.DictReader((tmp_path / "out" / "index.csv").open(encoding="utf-8")))
    r = rows[0]
    assert (r["site_id"], r["name"], r["kind"], r["note"], r["after_scene"]) == (
        "'=1+1", "'=HYPERLINK(\"http://evil\")", "'@x", "'+cmd", "'=cmd")
    assert r["depth"] == "-3.5" and rows[1]["site_id"] == "-2" and float(r["lon"]) == LON0
    for row in rows:
        for cell in row.values():
            assert not cell or cell[0] not in "=+@\t\r" or cell.lstrip("+-").replace(".", "", 1).isdigit()
