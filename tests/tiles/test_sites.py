"""Validation of sites files: every message names the file, the row and the field."""

from __future__ import annotations

import json
import math

import pytest

from sitewatch.errors import InputError
from tests.tiles.conftest import write_sites_csv
from tiles.sites import read_sites
from tiles.types import damage_to_label


def test_csv_with_optional_and_extra_columns(tmp_path):
    f = write_sites_csv(
        tmp_path / "s.csv",
        [("h1", 15.2, 45.1, "Hospital A", "hospital", 40, "destroyed", "north"),
         ("h2", -0.5, 51.5, "", "", "", "", "")],
        header="site_id,lon,lat,name,kind,radius_m,damage,district",
    )
    s = read_sites(f)
    assert [x.site_id for x in s] == ["h1", "h2"]
    assert (s[0].lon, s[0].lat, s[0].name, s[0].kind, s[0].radius_m) == (15.2, 45.1, "Hospital A", "hospital", 40.0)
    assert damage_to_label(s[0].damage) == 1 and s[1].damage is None
    assert s[0].extra == {"district": "north"} and s[0].row == 1 and s[1].row == 2
    assert s[1].name is None and s[1].radius_m is None


def test_binary_label_column_and_aliases(tmp_path):
    f = write_sites_csv(tmp_path / "s.csv", [("a", 1, 2, 1), ("b", 1, 2, 0)], header="site_id,Longitude,Latitude,label")
    s = read_sites(f)
    assert [damage_to_label(x.damage) for x in s] == [1, 0]


def test_bom_and_blank_lines_are_fine(tmp_path):
    f = tmp_path / "s.csv"
    f.write_bytes("\ufeffsite_id,lon,lat\n\na,1,2\n\n".encode("utf-8"))
    assert [x.site_id for x in read_sites(f)] == ["a"]


@pytest.mark.parametrize(
    "content, needles",
    [
        (b"", ["is empty"]),
        (b"   \n", ["is empty"]),
        (b"site_id,lon,lat\n", ["no site rows"]),
        (b"site_id,x,lat\na,1,2\n", ["missing required column", "lon", "found: site_id, x, lat"]),
        (b"id,lon,lat\na,1,2\n", ["missing required column", "site_id"]),
        (b"site_id,lon,lat\na,1,2\nb,3,4\na,5,6\n", ["row 3", "site_id 'a'", "duplicates row 1"]),
        (b"site_id,lon,lat\n,1,2\n", ["row 1", "site_id is empty"]),
        (b"site_id,lon,lat\na,1,2,3\n", ["row 1", "4 fields", "header has 3"]),
        ("site_id,lon,lat,name\na,1,2,Caf\u00e9\n".encode("latin-1"), ["line 2", "not valid UTF-8", "UTF-8"]),
        (b"site_id,lon,lat,lon\na,1,2,3\n", ["lon", "more than once"]),
        (b"site_id;lon;lat\na;1;2\n", ["not comma-separated", "site_id;lon;lat"]),
    ],
)
def test_file_level_problems_raise(tmp_path, content, needles):
    f = tmp_path / "sites.csv"
    f.write_bytes(content)
    with pytest.raises(InputError) as exc:
        read_sites(f)
    msg = str(exc.value)
    assert str(f) in msg
    for needle in needles:
        assert needle in msg, msg


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_sites(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a folder"):
        read_sites(tmp_path)


@pytest.mark.parametrize(
    "lon, lat, needle",
    [
        ("abc", "45", "lon 'abc' is not a number"),
        ("15", "", "lat is empty"),
        ("nan", "45", "not a finite number"),
        ("15", "123.4", "lat 123.4 out of range [-90, 90]; are the lon and lat columns swapped?"),
        ("181", "45", "lon 181 out of range [-180, 180]"),
        # UTM easting/northing pasted into lon/lat: say what they look like and what is needed
        ("500123.5", "4000123.2", "lon 500124 out of range [-180, 180]; lat 4.00012e+06 out of range [-90, 90]; "
         "these look like projected coordinates (metres, e.g. UTM): give WGS84 longitude and latitude in degrees"),
    ],
)
def test_row_level_problems_flow_through(tmp_path, caplog, lon, lat, needle):
    f = write_sites_csv(tmp_path / "s.csv", [("ok", 15, 45), ("bad", lon, lat), ("ok2", 16, 46)])
    sites = read_sites(f)
    assert [s.site_id for s in sites] == ["ok", "bad", "ok2"]
    bad = sites[1]
    assert math.isnan(bad.lon) and math.isnan(bad.lat)
    assert needle in bad.problem
    if abs(float(lon) if lon.replace(".", "").isdigit() else 0) <= 1000:
        assert "projected" not in bad.problem  # a plain out-of-range degree is not called metres
    assert sites[0].problem is None and sites[2].problem is None
    assert any("row 2" in r.message and "bad" in r.message for r in caplog.records)


def test_bad_radius_is_ignored_with_a_warning(tmp_path, caplog):
    f = write_sites_csv(tmp_path / "s.csv", [("a", 1, 2, "-5")], header="site_id,lon,lat,radius_m")
    s = read_sites(f)
    assert s[0].radius_m is None and s[0].problem is None
    assert any("radius_m" in r.message and "row 1" in r.message for r in caplog.records)


def _fc(features):
    return {"type": "FeatureCollection", "features": features}


def test_geojson_points_and_polygons(tmp_path):
    square = [[[15.0, 45.0], [15.001, 45.0], [15.001, 45.001], [15.0, 45.001], [15.0, 45.0]]]
    doc = _fc(
        [
            {"type": "Feature", "properties": {"site_id": "p", "kind": "school", "ward": 3},
             "geometry": {"type": "Point", "coordinates": [15.2, 45.1]}},
            {"type": "Feature", "id": "poly", "properties": {"damage": "no-damage"},
             "geometry": {"type": "Polygon", "coordinates": square}},
            {"type": "Feature", "properties": {"site_id": "nogeom"}, "geometry": None},
        ]
    )
    f = tmp_path / "s.geojson"
    f.write_text(json.dumps(doc))
    s = read_sites(f)
    assert (s[0].lon, s[0].lat, s[0].kind, s[0].extra) == (15.2, 45.1, "school", {"ward": "3"})
    assert s[1].site_id == "poly" and s[1].footprint["type"] == "Polygon"
    assert s[1].lon == pytest.approx(15.0005, abs=1e-7) and s[1].lat == pytest.approx(45.0005, abs=1e-7)
    assert s[2].problem == "geometry is missing" and math.isnan(s[2].lon)


@pytest.mark.parametrize(
    "doc, needle",
    [
        ("{not json", "not valid JSON (line 1"),
        (json.dumps({"type": "Point", "coordinates": [1, 2]}), "FeatureCollection"),
        (json.dumps(_fc([])), "no features"),
        (json.dumps(_fc([{"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [1, 2]}}])),
         "feature 1: no site_id"),
        (json.dumps(_fc([{"type": "Feature", "properties": {"site_id": "a"}, "geometry": None}] * 2)),
         "feature 2: site_id 'a' duplicates feature 1"),
        (json.dumps({**_fc([]), "crs": {"type": "name", "properties": {"name": "EPSG:3857"}}}), "EPSG:3857"),
    ],
)
def test_geojson_problems_raise(tmp_path, doc, needle):
    f = tmp_path / "s.geojson"
    f.write_text(doc)
    with pytest.raises(InputError) as exc:
        read_sites(f)
    assert str(f) in str(exc.value) and needle in str(exc.value)


def test_quoted_newlines_and_unicode_separators_survive(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text('site_id,lon,lat,name\n1,10,20,"line1\nline2"\n2,11,21,x\u2028y\n', encoding="utf-8")
    sites = read_sites(f)
    assert [s.name for s in sites] == ["line1\nline2", "x\u2028y"]


# -- issue 10: coordinates Python's float() accepts but no person meant ---------------------------


@pytest.mark.parametrize(
    "lon, needle",
    [
        ("1_5.005", "lon '1_5.005' is not a number"),
        ("0x1F", "lon '0x1F' is not a number"),
        ("\u0661\u0665.2", "is not a number"),  # Arabic-Indic digits
        ("15.2.1", "is not a number"),
        ("1e400", "not a finite number"),
        ("Infinity", "not a finite number"),
    ],
)
def test_coordinates_must_be_plain_decimal_numbers(tmp_path, lon, needle):
    f = write_sites_csv(tmp_path / "s.csv", [("a", lon, 45), ("b", "15.005", "-45.5"), ("c", "+15", "4.5e1")])
    sites = read_sites(f)
    assert sites[0].problem is not None and needle in sites[0].problem and math.isnan(sites[0].lon)
    assert (sites[1].lon, sites[1].lat, sites[2].lon, sites[2].lat) == (15.005, -45.5, 15.0, 45.0)


def test_radius_with_an_underscore_is_ignored(tmp_path, caplog):
    f = write_sites_csv(tmp_path / "s.csv", [("a", 1, 2, "1_0")], header="site_id,lon,lat,radius_m")
    assert read_sites(f)[0].radius_m is None
    assert any("radius_m" in r.message for r in caplog.records)


def test_oversized_csv_field_names_the_row(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("site_id,lon,lat,name\na,1,2,x\nb,1,2," + '"' + "y" * 200_000 + '"\n', encoding="utf-8")
    with pytest.raises(InputError) as exc:
        read_sites(f)
    assert str(f) in str(exc.value) and "row 2" in str(exc.value)


# -- issue 10: malformed GeoJSON is a clear error or an invalid site, never a traceback -----------


def _feature(geometry, props=None, **extra):
    return {"type": "Feature", "properties": {"site_id": "x", **(props or {})}, "geometry": geometry, **extra}


POINT = {"type": "Point", "coordinates": [15.2, 45.1]}


@pytest.mark.parametrize(
    "geometry, needle",
    [
        ("POINT (15.2 45.1)", "geometry is not a GeoJSON geometry object"),
        ({"type": "Point", "coordinates": [15.2]}, "Point coordinates must be [lon, lat]"),
        ({"type": "Point", "coordinates": "15.2,45.1"}, "Point coordinates must be [lon, lat]"),
        ({"type": "Point", "coordinates": [[15.2, 45.1]]}, "Point coordinates must be [lon, lat]"),
        ({"type": "Point", "coordinates": ["15.2", "45.1"]}, "not a JSON number"),
        ({"type": "Point", "coordinates": [True, 45.1]}, "not a JSON number"),
        ({"type": "Point", "coordinates": [float("nan"), 45.1]}, "not a finite number"),
        ({"type": "Point", "coordinates": [15.2, float("inf")]}, "not a finite number"),
        ({"type": "Point", "coordinates": [15.2, 1e308]}, "out of range"),
        ({"type": "Polygon", "coordinates": [15.2, 45.1]}, "Polygon coordinates must be a list of rings"),
        ({"type": "Polygon", "coordinates": [[15.2, 45.1]]}, "ring 1 must be a list of at least 3 [lon, lat]"),
        ({"type": "Polygon", "coordinates": [[[15.0, 45.0], [15.1, 45.0]]]}, "at least 3"),
        ({"type": "Polygon", "coordinates": [[[15.0, 45.0], [15.1, 45.0], [15.1, 95.0]]]}, "out of range"),
        ({"type": "MultiPolygon", "coordinates": []}, "MultiPolygon coordinates must be a non-empty list"),
        ({"type": "MultiPolygon", "coordinates": [[[[15.0, 45.0], [15.1, 45.0], ["a", 45.1]]]]}, "not a JSON number"),
        ({"type": "LineString", "coordinates": [[15.0, 45.0], [15.1, 45.0]]}, "not supported"),
        ({"type": ["Point"], "coordinates": [15.2, 45.1]}, "not supported"),
        ({"coordinates": [15.2, 45.1]}, "not supported"),
    ],
)
def test_bad_geometry_is_an_invalid_site(tmp_path, caplog, geometry, needle):
    good = {"type": "Feature", "properties": {"site_id": "ok"}, "geometry": POINT}
    f = tmp_path / "s.geojson"
    f.write_text(json.dumps(_fc([good, _feature(geometry)])))
    sites = read_sites(f)
    assert sites[0].problem is None and sites[0].lon == 15.2
    bad = sites[1]
    assert bad.site_id == "x" and math.isnan(bad.lon) and bad.footprint is None
    assert bad.problem is not None and needle in bad.problem, bad.problem
    assert any("feature 2" in r.message and str(f) in r.message for r in caplog.records)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


MALFORMED = {
    "list-properties": (json.dumps(_fc([_feature(POINT, None, properties=["site_id", "x"])])),
                        "feature 1: properties must be a JSON object"),
    "string-properties": (json.dumps(_fc([_feature(POINT, None, properties="x")])),
                          "feature 1: properties must be a JSON object"),
    "string-feature": (json.dumps(_fc(["not a feature"])), "feature 1: is not a GeoJSON Feature object"),
    "features-object": (json.dumps({"type": "FeatureCollection", "features": {"a": 1}}), "'features' list"),
    "crs-string": (json.dumps({**_fc([_feature(POINT)]), "crs": "EPSG:3857"}), "EPSG:3857"),
    "crs-bad-properties": (json.dumps({**_fc([_feature(POINT)]), "crs": {"properties": "x"}}), "crs"),
    "id-object": (json.dumps(_fc([_feature(POINT, {"site_id": {"a": 1}})])),
                  "feature 1: site_id must be a string or an integer"),
    "id-bool": (json.dumps(_fc([_feature(POINT, {"site_id": True})])), "feature 1: site_id must be a string or an integer"),
    "feature-id-list": (json.dumps(_fc([_feature(POINT, {"site_id": None}, id=[1])])),
                        "feature 1: site_id must be a string or an integer"),
    "deep-features": ('{"type": "FeatureCollection", "features": ' + _deep(100_000) + "}", "nested too deeply"),
    "deep-property": ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"site_id": "a", '
                      '"x": ' + _deep(5_000) + '}, "geometry": null}]}', "nested too deeply"),
    "unclosed-deep": ("[" * 100_000, "nested too deeply"),
    "array-top": (_deep(50), "expected a GeoJSON FeatureCollection"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_geojson_names_file_and_feature(tmp_path, case):
    text, needle = MALFORMED[case]
    f = tmp_path / "s.geojson"
    f.write_text(text)
    with pytest.raises(InputError) as exc:
        read_sites(f)
    assert str(f) in str(exc.value) and needle in str(exc.value), str(exc.value)


def test_nested_property_values_pass_through_as_json_text(tmp_path):
    props = {"site_id": 7, "tags": {"a": [1, 2]}, "deep": json.loads(_deep(200)), "n": 1.5, "none": None}
    f = tmp_path / "s.geojson"
    f.write_text(json.dumps(_fc([{"type": "Feature", "properties": props, "geometry": POINT}])))
    (s,) = read_sites(f)
    assert s.site_id == "7" and s.extra["tags"] == '{"a": [1, 2]}' and s.extra["n"] == "1.5" and s.extra["none"] == ""
    assert s.extra["deep"].startswith("[[[")


def test_blank_lines_above_the_header_are_named(tmp_path):
    """A spreadsheet export with an empty first line said 'missing site_id, lon, lat; found: (none)'."""
    f = tmp_path / "s.csv"
    f.write_text("\n\nsite_id,lon,lat\na,15,45\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"s\.csv: line 1 is empty; the header row .* must be the first line"):
        read_sites(f)
    f.write_text(",,\na,15,45\n", encoding="utf-8")  # a header of empty names is not an empty line
    with pytest.raises(InputError) as exc:
        read_sites(f)
    assert "line 1 is empty" not in str(exc.value)
