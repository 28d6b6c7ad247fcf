"""Incident windows: timely scene choice, no_timely_* reasons, strict dates in the sites file."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sitewatch.errors import ConfigError, InputError
from tests.tiles.conftest import LAT0, LON0, write_sites_csv
from tiles.catalog import RasterCatalog
from tiles.config import TilesConfig
from tiles.cut import REASONS, PairCutter
from tiles.incident import parse_window, site_window, timely_scenes
from tiles.index import pair_meta_row
from tiles.sites import read_sites
from tiles.types import Site


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_window_bounds_cover_whole_days():
    w = parse_window("2023-02-06/2023-02-08")
    assert w.start == _utc(2023, 2, 6) and w.end == _utc(2023, 2, 9)
    assert w.is_timely(_utc(2023, 2, 5, 23, 59), "before") and not w.is_timely(_utc(2023, 2, 6), "before")
    assert not w.is_timely(_utc(2023, 2, 8, 23), "after") and w.is_timely(_utc(2023, 2, 9), "after")
    assert not w.is_timely(None, "before") and not w.is_timely(None, "after")
    one = site_window("2023-02-06", None)
    assert one is not None and (one.start, one.end) == (_utc(2023, 2, 6), _utc(2023, 2, 7))
    timed = parse_window("2023-02-06T04:17Z/2023-02-06T10:00+02:00")
    assert timed.start == _utc(2023, 2, 6, 4, 17) and timed.end == _utc(2023, 2, 6, 8)
    assert site_window("", " ") is None


@pytest.mark.parametrize(
    "text", ["2023-02-06", "2023-13-01/2023-02-08", "06/02/2023", "2023-02-08/2023-02-06", "20230206/20230208", "2023-2-6/2023-02-08"]
)
def test_bad_windows_are_refused(text):
    with pytest.raises(ValueError):
        parse_window(text)
    with pytest.raises(ConfigError) as err:
        TilesConfig(incident_window=text)
    assert err.value.setting == "tiles.incident_window"


def test_timely_choice_keeps_order_and_reports_the_rest():
    w = parse_window("2023-02-06/2023-02-08")
    times = [
        ("late", _utc(2023, 2, 7)),  # inside the window: not timely either side
        ("b1", _utc(2023, 2, 1)),
        ("nodate", None),
        ("b0", _utc(2022, 6, 1)),
    ]
    choice = timely_scenes(times, w, "before", None)
    assert choice.kept == (1, 3) and choice.unknown == ("nodate",)
    assert [n[0] for n in choice.nearest_untimely] == ["late"]
    gap = timely_scenes(times, w, "before", 30.0)
    assert gap.kept == (1,) and [n[0] for n in gap.nearest_untimely] == ["late", "b0"]
    assert "250 days" in gap.nearest_untimely[1][2]


def test_cutter_picks_scenes_around_the_window(make_scene):
    b_old = make_scene("before/b_20220601.tif")
    b_new = make_scene("before/b_20230205.tif")
    a_in = make_scene("after/a_20230207.tif")  # during the window: must not be used
    a_ok = make_scene("after/a_20230301.tif")
    before = RasterCatalog.from_paths([b_old, b_new], epoch="before")
    after = RasterCatalog.from_paths([a_in, a_ok], epoch="after")
    cfg = TilesConfig(incident_window="2023-02-06/2023-02-08", coregister=False, normalisation="none")
    with PairCutter(before, after, cfg) as cutter:
        pair = cutter.cut(Site("s", LON0, LAT0))
        assert pair.ok, pair.meta
        assert (pair.meta.before_scene, pair.meta.after_scene) == ("b_20230205", "a_20230301")
        row = pair_meta_row(pair)
        assert row["incident_window"] == "2023-02-06/2023-02-08"
        assert float(row["before_gap_days"]) == pytest.approx(1.0) and float(row["after_gap_days"]) == pytest.approx(20.0)
        # the site's own window wins over the run's: no after scene is after 2023-03-05
        own = Site("own", LON0, LAT0, incident=site_window("2023-03-01", "2023-03-05"))
        late = cutter.cut(own)
        assert late.meta.status == "cannot_assess" and late.meta.reason == "no_timely_after"
        assert "a_20230301 2023-03-01T00:00:00Z" in late.meta.detail and "2023-03-01/2023-03-05" in late.meta.detail
    # without a window the earliest after scene is taken, as before
    with PairCutter(before, after, TilesConfig(coregister=False, normalisation="none")) as cutter:
        assert cutter.cut(Site("s", LON0, LAT0)).meta.after_scene == "a_20230207"


def test_max_gap_and_unknown_times_are_reported(make_scene):
    b_old = make_scene("before/b_20220601.tif")
    b_none = make_scene("before/undated.tif")
    a_ok = make_scene("after/a_20230210.tif")
    before = RasterCatalog.from_paths([b_old, b_none], epoch="before")
    after = RasterCatalog.from_paths([a_ok], epoch="after")
    cfg = TilesConfig(incident_window="2023-02-06/2023-02-08", max_incident_gap_days=90.0, coregister=False)
    with PairCutter(before, after, cfg) as cutter:
        pair = cutter.cut(Site("s", LON0, LAT0))
    assert pair.meta.reason == "no_timely_before"
    assert "b_20220601 2022-06-01T00:00:00Z (250 days from the window)" in pair.meta.detail
    assert "unknown acquisition time" in pair.meta.detail and "undated" in pair.meta.detail
    assert {"no_timely_before", "no_timely_after"} <= set(REASONS)
    # with a wider gap the dated scene qualifies, and the undated one is still named
    cfg = TilesConfig(incident_window="2023-02-06/2023-02-08", max_incident_gap_days=365.0, coregister=False)
    with PairCutter(before, after, cfg) as cutter:
        pair = cutter.cut(Site("s", LON0, LAT0))
    assert pair.ok and pair.meta.before_scene == "b_20220601"
    assert "undated" in pair.meta.detail


def test_sites_csv_incident_columns(tmp_path):
    path = write_sites_csv(
        tmp_path / "s.csv",
        [("a", LON0, LAT0, "2023-02-06", "2023-02-08"), ("b", LON0, LAT0, "", ""), ("c", LON0, LAT0, "2023-02-06", "")],
        header="site_id,lon,lat,incident_start,incident_end",
    )
    a, b, c = read_sites(path)
    assert a.incident is not None and a.incident.text == "2023-02-06/2023-02-08"
    assert a.extra["incident_start"] == "2023-02-06"  # passed through to the outputs as given
    assert b.incident is None
    assert c.incident is not None and c.incident.end == _utc(2023, 2, 7)


@pytest.mark.parametrize(("start", "end", "needle"), [("2023-02-30", "", "real date"), ("6 Feb 2023", "", "ISO date"), ("2023-02-08", "2023-02-06", "before it starts")])
def test_sites_csv_bad_incident_dates_name_file_and_row(tmp_path, start, end, needle):
    path = write_sites_csv(
        tmp_path / "s.csv",
        [("ok", LON0, LAT0, "", ""), ("bad", LON0, LAT0, start, end)],
        header="site_id,lon,lat,incident_start,incident_end",
    )
    with pytest.raises(InputError) as err:
        read_sites(path)
    text = str(err.value)
    assert str(path) in text and "row 2" in text and needle in text and "YYYY-MM-DD" in text


def test_geojson_incident_properties(tmp_path):
    import json

    path = tmp_path / "s.geojson"
    feats = [
        {"type": "Feature", "properties": {"site_id": "g", "incident_start": "2023-02-06"}, "geometry": {"type": "Point", "coordinates": [LON0, LAT0]}},
        {"type": "Feature", "properties": {"site_id": "h", "incident_end": "2023-02-31"}, "geometry": {"type": "Point", "coordinates": [LON0, LAT0]}},
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats[:1]}))
    (g,) = read_sites(path)
    assert g.incident is not None and g.incident.text == "2023-02-06/2023-02-06"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with pytest.raises(InputError, match="feature 2"):
        read_sites(path)
