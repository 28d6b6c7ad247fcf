"""The raster catalogue: headers only, acquisition times, unreadable files."""

from __future__ import annotations

import json
import pickle
import warnings
from datetime import datetime, timezone

import pytest

from sitewatch.errors import RasterError
from tiles.catalog import RasterCatalog, parse_acquisition_time


def test_headers_and_lonlat_bounds(make_scene):
    p = make_scene("x.tif", crs="utm", size_m=200.0, res_m=0.5)
    cat = RasterCatalog.from_paths(p, epoch="before")
    (s,) = cat.scenes
    assert s.scene_id == "x" and s.crs == "EPSG:32633"
    assert (s.width, s.height, s.count, s.dtype) == (400, 400, 3, "uint8")
    assert s.gsd_m == pytest.approx(0.5)
    w, so, e, n = s.lonlat_bounds
    assert w < 15.2 < e and so < 45.1 < n
    g = RasterCatalog.from_paths(make_scene("g.tif", crs="wgs84", res_m=0.5), epoch="after").scenes[0]
    assert g.crs == "EPSG:4326" and g.gsd_m == pytest.approx(0.5, rel=0.01)


def test_times_from_tag_sidecar_filename_unknown(tmp_path, make_scene):
    tag = make_scene("a/tagged.tif", tags={"ACQUISITION_DATETIME": "2017-10-11T19:19:41.000Z"})
    tiff = make_scene("a/tiffdt.tif", tags={"TIFFTAG_DATETIME": "2019:03:04 05:06:07"})
    side = make_scene("a/side.tif")
    (tmp_path / "a" / "side.tif.json").write_text(json.dumps({"acquired": "2018-02-03"}))
    named = make_scene("a/scene_20160705T101112.tif")
    unknown = make_scene("a/plain.tif")
    cat = RasterCatalog.from_paths([tmp_path / "a"], epoch="after")
    by = {s.scene_id: s for s in cat.scenes}
    assert by["tagged"].acquired == datetime(2017, 10, 11, 19, 19, 41, tzinfo=timezone.utc)
    assert by["tagged"].time_source == "tag"
    assert by["tiffdt"].acquired == datetime(2019, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    assert (by["side"].acquired.date().isoformat(), by["side"].time_source) == ("2018-02-03", "sidecar")
    assert by["scene_20160705T101112"].acquired == datetime(2016, 7, 5, 10, 11, 12, tzinfo=timezone.utc)
    assert by["scene_20160705T101112"].time_source == "filename"
    assert (by["plain"].acquired, by["plain"].time_source) == (None, "unknown")
    assert parse_acquisition_time(unknown, {"ACQUISITION_DATETIME": "yesterday"}) == (None, "unknown")
    assert {tag, tiff, side, named, unknown} == {s.path for s in cat.scenes}


def test_unreadable_files_are_skipped_and_listed(tmp_path, make_scene):
    good = make_scene("d/good.tif")
    (tmp_path / "d" / "broken.tif").write_bytes(b"not a tiff at all")
    cat = RasterCatalog.from_paths([tmp_path / "d", tmp_path / "missing.tif", str(tmp_path / "none*.tif")], epoch="before")
    assert [s.path for s in cat.scenes] == [good]
    reasons = {p.name: r for p, r in cat.skipped}
    assert set(reasons) == {"broken.tif", "missing.tif", "none*.tif"}
    assert "no such file" in reasons["missing.tif"] and "matched no files" in reasons["none*.tif"]


def test_nothing_readable_raises(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"junk")
    with pytest.raises(RasterError) as exc:
        RasterCatalog.from_paths(tmp_path, epoch="after")
    assert "--after" in str(exc.value) and "bad.tif" in str(exc.value)


def test_ungeoreferenced_raster_is_skipped(tmp_path, make_scene):
    import numpy as np
    import rasterio

    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    ok = make_scene("ok.tif")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cat = RasterCatalog.from_paths([plain, ok], epoch="before")
    assert [s.scene_id for s in cat.scenes] == ["ok"]
    assert "no CRS" in cat.skipped[0][1]
    # the skip is said once, in our words: rasterio's NotGeoreferencedWarning (which prints a line
    # of rasterio's source to the user) is not passed on
    assert [w for w in caught if "geotransform" in str(w.message)] == []


def test_duplicate_stems_get_unique_ids_and_catalog_pickles(make_scene):
    a = make_scene("one/scene.tif")
    b = make_scene("two/scene.tif")
    cat = RasterCatalog.from_paths([a, b], epoch="before")
    assert sorted(s.scene_id for s in cat.scenes) == ["one/scene", "two/scene"]
    again = pickle.loads(pickle.dumps(cat))
    assert again.scenes == cat.scenes and again.epoch == "before"
    assert again["one/scene"].path == a


def test_swapped_or_identical_epochs_are_refused_naming_the_flags(make_scene):
    """Swapped --before/--after give a run that flags almost nothing (the model reads change one
    way), with no other sign of the mistake; the same file for both gives no change at all."""
    from tiles.catalog import check_epochs

    early = make_scene("early.tif", tags={"ACQUISITION_DATETIME": "2023-01-10T10:00:00Z"})
    late = make_scene("late.tif", tags={"ACQUISITION_DATETIME": "2023-03-01T10:00:00Z"})
    undated = make_scene("undated.tif")
    cat = lambda *paths, epoch: RasterCatalog.from_paths(list(paths), epoch=epoch)  # noqa: E731
    check_epochs(cat(early, epoch="before"), cat(late, epoch="after"))  # the right way round
    with pytest.raises(RasterError) as exc:
        check_epochs(cat(late, epoch="before"), cat(early, epoch="after"))
    msg = str(exc.value)
    assert "--before" in msg and "--after" in msg and "swapped" in msg
    assert "2023-03-01" in msg and "2023-01-10" in msg
    with pytest.raises(RasterError, match=r"--before and --after both hold .*early\.tif"):
        check_epochs(cat(early, epoch="before"), cat(early, late, epoch="after"))
    # not refused: a scene whose time is unknown (nothing is certain then) ...
    check_epochs(cat(late, epoch="before"), cat(early, undated, epoch="after"))
    check_epochs(cat(late, undated, epoch="before"), cat(early, epoch="after"))
    # ... or epochs whose dates overlap (one before scene earlier than an after scene)
    mid = make_scene("mid.tif", tags={"ACQUISITION_DATETIME": "2023-02-01T10:00:00Z"})
    check_epochs(cat(early, late, epoch="before"), cat(mid, epoch="after"))
