"""``scores.gpkg`` and ``scores.kml`` of a real detect run: readable by GDAL/OGR and XML parsers,
one feature per site with coordinates, typed fields, default QGIS style, listed in the manifest."""

from __future__ import annotations

import csv
import math
import sqlite3
import xml.etree.ElementTree as ET

import pytest

from detect.gis import band_labels, rewrite_gis_files, write_gis_files, write_gpkg
from detect.runfolder import read_scores_csv
from detect.verify import verify_run
from detect.run import run_detect
from sitewatch.config import load_config
from sitewatch.jobs import DetectJob

pyogrio = pytest.importorskip("pyogrio")

KML = "{http://www.opengis.net/kml/2.2}"
JOB = load_config(DetectJob, None, {"detect.chips_top_n": 3, "detect.batch_size": 8})


@pytest.fixture(scope="module")
def gis_run(tiny_scene, tmp_path_factory):
    """The tiny scene plus a site outside the imagery (cannot_assess), one with no valid
    coordinates and a name that needs escaping."""
    root = tmp_path_factory.mktemp("gis")
    with open(tiny_scene.sites, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["name"] = 'Clinic <b>"A" & B</b>'
    far = dict(rows[1], site_id="far", lon=str(float(rows[1]["lon"]) + 0.5), name="outside")
    broken = dict(rows[2], site_id="nowhere", lat="not a number", name="broken row")
    rows += [far, broken]
    sites = root / "sites.csv"
    with open(sites, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = run_detect(sites, [tiny_scene.before], [tiny_scene.after], root / "run", tiles=JOB.tiles, detect=JOB.detect, progress=False)
    return summary.run_dir


def _located(run):
    rows = read_scores_csv(run / "scores.csv")
    return rows, [r for r in rows if r["lon"] and r["lat"] and math.isfinite(float(r["lon"])) and math.isfinite(float(r["lat"]))]


def test_gpkg_opens_with_ogr_one_point_per_located_site(gis_run):
    from pyogrio.raw import read

    rows, located = _located(gis_run)
    assert len(located) == len(rows) - 1  # the broken row has no coordinates
    layers = {name: kind for name, kind in pyogrio.list_layers(gis_run / "scores.gpkg")}
    assert layers["sites"] == "Point" and "footprints" not in layers  # a CSV has no footprints
    info = pyogrio.read_info(gis_run / "scores.gpkg", layer="sites")
    assert info["crs"] == "EPSG:4326" and info["features"] == len(located)
    types = dict(zip(info["fields"], info["dtypes"]))
    assert types["score"] == "float64" and types["rank"] == "int32" and types["flagged"] == "bool"
    assert types["before_time"].startswith("datetime64") and types["shift_m"] == "float64"
    meta, _, geometry, fields = read(gis_run / "scores.gpkg", layer="sites", return_fids=True)
    col = {name: fields[i] for i, name in enumerate(meta["fields"])}
    by_id = {r["site_id"]: r for r in located}
    assert set(col["site_id"]) == set(by_id)
    far = list(col["site_id"]).index("far")
    assert col["status"][far] == "cannot_assess" and col["reason"][far]
    assert math.isnan(col["score"][far])  # null score for a site not assessed
    assert col["band"][far] == "cannot assess"
    top = list(col["rank"]).index(1)
    assert abs(col["score"][top] - float(by_id[col["site_id"][top]]["score"])) < 1e-9
    # geometry round trip: WKB points at the csv coordinates
    import struct

    for sid, wkb in zip(col["site_id"], geometry):
        lon, lat = struct.unpack("<dd", bytes(wkb)[5:21])
        assert lon == pytest.approx(float(by_id[sid]["lon"])) and lat == pytest.approx(float(by_id[sid]["lat"]))


def test_gpkg_carries_a_default_qgis_style(gis_run):
    con = sqlite3.connect(gis_run / "scores.gpkg")
    try:
        styles = con.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
        contents = dict(con.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
    finally:
        con.close()
    assert [(t, d) for t, d, _ in styles] == [("sites", 1)]
    assert contents["layer_styles"] == "attributes"
    qml = ET.fromstring(styles[0][2].split("\n", 1)[1])  # after the DOCTYPE line
    renderer = qml.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "band"
    values = [c.get("value") for c in renderer.iter("category")]
    import json

    threshold = json.loads((gis_run / "manifest.json").read_text())["operating_point"]["threshold"]
    assert values == band_labels(threshold) and len(set(values)) == len(values) >= 4


def test_kml_parses_with_one_escaped_placemark_per_located_site(gis_run):
    rows, located = _located(gis_run)
    tree = ET.parse(gis_run / "scores.kml")
    marks = tree.getroot().findall(f"{KML}Document/{KML}Placemark")
    assert len(marks) == len(located)
    ids = [m.find(f"{KML}ExtendedData/{KML}Data[@name='site_id']/{KML}value").text for m in marks]
    assert sorted(ids) == sorted(r["site_id"] for r in located)
    styles = {s.get("id") for s in tree.getroot().iter(f"{KML}Style")}
    assert all(m.find(f"{KML}styleUrl").text.lstrip("#") in styles for m in marks)
    named = next(m for m, i in zip(marks, ids) if i == "s000")
    assert named.find(f"{KML}name").text == 'Clinic <b>"A" & B</b>'  # escaped in the file, text when parsed
    assert "&lt;b&gt;" in named.find(f"{KML}description").text  # never markup inside the balloon
    far = marks[ids.index("far")]
    assert "cannot_assess" in far.find(f"{KML}description").text
    top = next(r for r in located if r["rank"] == "1")
    balloon = marks[ids.index(top["site_id"])].find(f"{KML}description").text
    assert top["chip_before"] in balloon and top["before_time"].replace("T", " ") in balloon
    lon, lat = (float(v) for v in marks[0].find(f"{KML}Point/{KML}coordinates").text.split(","))
    first = next(r for r in located if r["site_id"] == ids[0])
    assert (lon, lat) == (float(first["lon"]), float(first["lat"]))


def test_gis_files_are_listed_in_the_manifest_and_verify(gis_run):
    import json

    outputs = json.loads((gis_run / "manifest.json").read_text())["outputs"]
    assert {"scores.gpkg", "scores.kml"} <= set(outputs)
    assert verify_run(gis_run, check_inputs=False).ok


def test_footprints_layer_and_reproducible_bytes(gis_run, tmp_path):
    from pyogrio.raw import read

    rows, located = _located(gis_run)
    lon, lat = float(located[0]["lon"]), float(located[0]["lat"])
    d = 0.0001
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]]
    footprints = {located[0]["site_id"]: {"type": "Polygon", "coordinates": [ring]}}
    digests = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        write_gis_files(folder, threshold=0.5, footprints=footprints, scores_csv=gis_run / "scores.csv")
        digests.append(((folder / "scores.gpkg").read_bytes(), (folder / "scores.kml").read_bytes()))
    assert digests[0] == digests[1]
    meta, _, geometry, fields = read(tmp_path / "a" / "scores.gpkg", layer="footprints")
    assert len(geometry) == 1 and fields[list(meta["fields"]).index("site_id")][0] == located[0]["site_id"]
    assert meta["crs"] == "EPSG:4326"
    con = sqlite3.connect(tmp_path / "a" / "scores.gpkg")
    try:
        styled = [r[0] for r in con.execute("SELECT f_table_name FROM layer_styles ORDER BY id")]
    finally:
        con.close()
    assert styled == ["sites", "footprints"]

    # after the scores are rewritten (sitewatch calibrate), the GIS files follow, footprints kept
    folder = tmp_path / "a"
    rows_a = read_scores_csv(gis_run / "scores.csv")
    rows_a[0]["score"] = "0.123456"
    with open(folder / "scores.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows_a[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows_a)
    rewrite_gis_files(folder, threshold=0.1)
    meta, _, geometry, fields = read(folder / "scores.gpkg", layer="footprints")
    col = dict(zip(meta["fields"], fields))
    assert len(geometry) == 1 and col["site_id"][0] == located[0]["site_id"]
    meta, _, _, fields = read(folder / "scores.gpkg", layer="sites")
    col = dict(zip(meta["fields"], fields))
    assert col["score"][list(col["site_id"]).index(rows_a[0]["site_id"])] == pytest.approx(0.123456)


def test_gpkg_without_located_sites_is_still_valid(tmp_path):
    rows = [{"site_id": "x", "lon": "", "lat": "", "score": "", "rank": "", "status": "cannot_assess",
             "reason": "invalid_site", "flagged": "false"}]
    n = write_gpkg(tmp_path / "scores.gpkg", rows, list(rows[0]), threshold=0.5)
    assert n == 0
    assert pyogrio.read_info(tmp_path / "scores.gpkg", layer="sites")["features"] == 0


def test_gpkg_written_in_chunks_holds_every_row_in_order_and_is_reproducible(gis_run, tmp_path, monkeypatch):
    """Issue 12: the layers are written GPKG_CHUNK_ROWS features at a time (bounded memory for any
    site count); the features, fields, nulls and layer order are those of a single write, and two
    writes give the same bytes."""
    import detect.gis as gis
    from pyogrio.raw import read

    rows, located = _located(gis_run)
    d = 0.0001
    footprints = {}
    for r in located[:5]:  # footprints on several sites: that layer is chunked too
        lon, lat = float(r["lon"]), float(r["lat"])
        footprints[r["site_id"]] = {"type": "Polygon", "coordinates": [[[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat - d]]]}

    def layers(folder):
        out = {}
        for layer in ("sites", "footprints"):
            meta, _, geometry, fields = read(folder / "scores.gpkg", layer=layer)
            out[layer] = (list(meta["fields"]), [bytes(g) for g in geometry], [list(f) for f in fields])
        return out

    whole = tmp_path / "whole"
    whole.mkdir()
    write_gis_files(whole, threshold=0.5, footprints=footprints, scores_csv=gis_run / "scores.csv")
    monkeypatch.setattr(gis, "GPKG_CHUNK_ROWS", 2)  # 2 features per GDAL call
    digests = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        write_gis_files(folder, threshold=0.5, footprints=footprints, scores_csv=gis_run / "scores.csv")
        digests.append((folder / "scores.gpkg").read_bytes())
    assert digests[0] == digests[1]
    chunked, single = layers(tmp_path / "a"), layers(whole)
    assert len(chunked["sites"][1]) == len(located) > 4 and len(chunked["footprints"][1]) == 5
    for layer in ("sites", "footprints"):
        names, geoms, fields = chunked[layer]
        assert names == single[layer][0] and geoms == single[layer][1]
        for name, a, b in zip(names, fields, single[layer][2]):
            assert [str(x) for x in a] == [str(x) for x in b], (layer, name)
    con = sqlite3.connect(tmp_path / "a" / "scores.gpkg")
    try:
        assert [r[0] for r in con.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'features' ORDER BY rowid")] == ["sites", "footprints"]
        assert [r[0] for r in con.execute("SELECT f_table_name FROM layer_styles ORDER BY id")] == ["sites", "footprints"]
    finally:
        con.close()
    assert not list((tmp_path / "a").glob("*.tmp"))
