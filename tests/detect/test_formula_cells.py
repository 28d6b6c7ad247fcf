"""Issue 10 §6: site ids and names that a spreadsheet would run as formulas are written inert in
every CSV a run leads to (``scores.csv``, review export ``sites.csv``), and read back exactly."""

from __future__ import annotations

import csv
import json

from detect.config import DetectConfig
from detect.outputs import read_scores_csv
from detect.run import run_detect
from detect.verify import verify_run
from sitewatch.config import build_config
from tiles.config import TilesConfig
from tiles.formula_injection import FORMULA_TRIGGERS, neutralise_formula, restore_formula

EVIL = {
    "s000": ("=HYPERLINK(\"http://evil\",\"x\")", "=1+1"),
    "s001": ("+cmd|' /C calc'!A0", "@SUM(A1)"),
    "s002": ("-2+3", "'=already quoted"),
    "s003": ("@x", "-12.5"),  # a plain number stays a number
}


def _spreadsheet_safe(cell: str) -> bool:
    return not cell or cell[0] not in FORMULA_TRIGGERS or cell.lstrip("+-").replace(".", "", 1).isdigit()


def test_neutralise_is_exactly_reversible():
    for text in ("=a", "'=a", "''=a", "'a", "a", "-1", "-a", "", "'", "'-1", "  =x", "' =x", "\uff1dx"):
        assert restore_formula(neutralise_formula(text)) == text, text
        assert _spreadsheet_safe(neutralise_formula(text)), text


def test_formula_cells_in_scores_csv_and_review_export(tiny_scene, tmp_path):
    from review.export import export_dataset
    from review.store import VerdictStore

    rows = list(csv.DictReader(tiny_scene.sites.open(newline="", encoding="utf-8")))
    renamed = {}
    for row in rows:
        if row["site_id"] in EVIL:
            new_id, name = EVIL[row["site_id"]]
            renamed[new_id] = name
            row["site_id"], row["note"] = new_id, name
    sites = tmp_path / "sites.csv"
    with sites.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run = run_detect(
        sites, [tiny_scene.before], [tiny_scene.after], tmp_path / "run",
        tiles=build_config(TilesConfig, {}), detect=build_config(DetectConfig, {"chips_top_n": 2}), progress=False,
    ).run_dir

    with open(run / "scores.csv", newline="", encoding="utf-8") as fh:
        raw = list(csv.DictReader(fh))
    for row in raw:
        for cell in row.values():
            assert _spreadsheet_safe(cell), cell
    by_raw_id = {r["site_id"]: r for r in raw}
    assert by_raw_id["'=HYPERLINK(\"http://evil\",\"x\")"]["note"] == "'=1+1"
    assert by_raw_id["'-2+3"]["note"] == "''=already quoted"
    assert by_raw_id["'@x"]["note"] == "-12.5"
    # readers get the run's own text back; GeoJSON keeps it as it is
    restored = {r["site_id"]: r["note"] for r in read_scores_csv(run / "scores.csv")}
    assert {k: restored[k] for k in renamed} == renamed
    gj = json.loads((run / "scores.geojson").read_text(encoding="utf-8"))
    assert {f["properties"]["site_id"] for f in gj["features"]} >= set(renamed)
    kml = (run / "scores.kml").read_text(encoding="utf-8")  # GIS files hold the text as it is, too
    assert "<name>@x</name>" in kml and "<name>-2+3</name>" in kml and "'@x" not in kml
    assert verify_run(run).ok  # per-site ids in the manifest match the restored scores.csv

    store = VerdictStore.for_run(run)
    for sid in renamed:
        store.add_verdict(sid, "ann", "destroyed")
    out = export_dataset(run, tmp_path / "export")
    with open(out / "sites.csv", newline="", encoding="utf-8") as fh:
        exported = list(csv.DictReader(fh))
    assert len(exported) == len(renamed)
    for row in exported:
        for cell in row.values():
            assert _spreadsheet_safe(cell), cell
    assert {restore_formula(r["site_id"]) for r in exported} == set(renamed)
    assert {restore_formula(r["note"]) for r in exported} == set(renamed.values())
