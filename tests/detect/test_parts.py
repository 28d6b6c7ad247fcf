"""detect.parts: aggregation rule, per-site summary, modes, and a known-answer run on generated compounds."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from detect.config import DetectConfig
from detect.parts import PART_COLUMNS, SiteWindows, aggregate_parts, is_facility, parts_overlay_html, summarise_site
from sitewatch.config import build_config
from sitewatch.errors import ConfigError
from tiles.config import TilesConfig
from tiles.parts import plan_site
from tiles.types import Site

LON0, LAT0 = 15.0, 36.0


def test_aggregate_max_and_noisy_or() -> None:
    assert aggregate_parts([0.1, 0.9, 0.3], "max") == pytest.approx(0.9)
    assert aggregate_parts([0.5, 0.5], "noisy_or") == pytest.approx(0.75)
    # the reason max is the default: noisy-or of many weak, correlated parts looks like damage
    weak = [0.05] * 25
    assert aggregate_parts(weak, "max") == pytest.approx(0.05)
    assert aggregate_parts(weak, "noisy_or") > 0.7
    with pytest.raises(ValueError):
        aggregate_parts([], "max")
    with pytest.raises(ValueError):
        aggregate_parts([0.2], "mean")


def _rows(plan, scores):
    out = []
    for w, s in zip(plan.windows, scores):
        if isinstance(s, str):
            out.append({"site_id": w.site.site_id, "status": "cannot_assess", "reason": s, "score": ""})
        else:
            out.append({"site_id": w.site.site_id, "status": "ok", "reason": "", "score": f"{s:.6f}"})
    return out


def _plan(context: bool = True):
    tiles = build_config(TilesConfig, {"parts": {"context_count": 6}})
    site = Site("H", LON0, LAT0, kind="hospital", radius_m=70.0)
    plan = plan_site(site, tiles, parts=True, context=context)
    assert len(plan.parts) == 9 and len(plan.context) == (6 if context else 0)
    return plan


def test_summary_isolated_damage_is_targeted() -> None:
    plan = _plan()
    site_row = {"site_id": "H", "status": "ok", "reason": "", "score": "0.120000"}
    parts = [0.01, 0.02, 0.95, 0.7, "cloud", 0.01, 0.0, 0.01, 0.02]
    ctx = [0.01, 0.1, 0.6, 0.02, 0.03, 0.04]
    row = summarise_site(site_row, plan, _rows(plan, parts + ctx), DetectConfig(), 0.5, decimals=6)
    assert set(PART_COLUMNS) <= set(row)
    assert row["score"] == "0.950000" and row["score_source"] == "parts" and row["window_score"] == "0.120000"
    assert row["parts"] == "9" and row["parts_assessed"] == "8"
    assert row["damaged_fraction"] == "0.2500"  # 2 of 8 assessed parts at or above 0.5
    assert row["top_part"] == "p02" and row["top_part_score"] == "0.950000"
    assert "p04=cloud" in row["part_scores"] and row["part_scores"].startswith("p00=0.010000;")
    assert row["context"] == "6" and row["context_assessed"] == "6"
    assert float(row["context_damage"]) == pytest.approx(1 / 6, abs=1e-4)
    assert row["targeted"] == "true"


def test_summary_area_damage_and_unknowns() -> None:
    plan = _plan()
    site_row = {"site_id": "H", "status": "ok", "reason": "", "score": "0.100000"}
    parts = [0.9] + [0.01] * 8
    area = summarise_site(site_row, plan, _rows(plan, parts + [0.9, 0.8, 0.7, 0.1, 0.6, 0.2]), DetectConfig(), 0.5, decimals=6)
    assert area["targeted"] == "false" and float(area["context_damage"]) == pytest.approx(4 / 6, abs=1e-4)
    # too few assessed context chips: cannot tell
    few = summarise_site(site_row, plan, _rows(plan, parts + ["cloud"] * 4 + [0.0, 0.0]), DetectConfig(), 0.5, decimals=6)
    assert few["context_assessed"] == "2" and few["targeted"] == ""
    # an undamaged site is never targeted
    calm = summarise_site(site_row, plan, _rows(plan, [0.01] * 9 + [0.0] * 6), DetectConfig(), 0.5, decimals=6)
    assert calm["targeted"] == "false" and calm["damaged_fraction"] == "0.0000"
    # the threshold is configurable
    lax = summarise_site(
        site_row, plan, _rows(plan, parts + [0.9, 0.8, 0.7, 0.1, 0.6, 0.2]),
        DetectConfig(targeted_max_context_damage=0.7), 0.5, decimals=6,
    )
    assert lax["targeted"] == "true"


def test_summary_without_assessed_parts_keeps_the_window() -> None:
    plan = _plan(context=False)
    ok = {"site_id": "H", "status": "ok", "reason": "", "score": "0.300000"}
    row = summarise_site(ok, plan, _rows(plan, ["mostly_nodata"] * 9), DetectConfig(), 0.5, decimals=6)
    assert row["score"] == "0.300000" and row["score_source"] == "window" and row["parts_assessed"] == "0"
    assert row["damaged_fraction"] == "" and row["top_part"] == "" and row["targeted"] == ""
    bad = {"site_id": "H", "status": "cannot_assess", "reason": "too_coarse", "score": "", "detail": "coarse"}
    row = summarise_site(bad, plan, _rows(plan, ["cloud"] * 9), DetectConfig(), 0.5, decimals=6)
    assert row["status"] == "cannot_assess" and "none of 9 parts assessed (cloud)" in row["detail"]
    # a site the big window cannot assess is assessed from its parts
    row = summarise_site(bad, plan, _rows(plan, [0.2] * 8 + [0.6]), DetectConfig(), 0.5, decimals=6)
    assert row["status"] == "ok" and row["reason"] == "" and row["score"] == "0.600000" and row["top_part"] == "p08"


def test_modes_decide_which_sites_get_windows() -> None:
    tiles = TilesConfig()
    point = Site("a", LON0, LAT0)
    home = Site("b", LON0, LAT0, kind="home", radius_m=60.0)
    clinic = Site("c", LON0, LAT0, kind="School")
    assert not is_facility(point, tiles) and not is_facility(home, tiles) and is_facility(clinic, tiles)
    auto = SiteWindows(tiles, DetectConfig(), 0.5)
    assert auto.plan(point).windows == () and auto.plan(home).windows == ()
    p = auto.plan(clinic)
    assert len(p.parts) == 9 and len(p.context) == 12
    on = SiteWindows(tiles, DetectConfig(parts="on", context="on"), 0.5)
    assert len(on.plan(home).parts) == 9 and len(on.plan(point).context) == 12 and on.plan(point).parts == ()
    off = SiteWindows(tiles, DetectConfig(parts="off", context="off"), 0.5)
    assert not off.active and off.plan(clinic).windows == ()
    only_ctx = SiteWindows(tiles, DetectConfig(parts="off"), 0.5)
    assert only_ctx.plan(clinic).parts == () and len(only_ctx.plan(clinic).context) == 12


def test_detect_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(DetectConfig, {"targeted_max_context_damage": 1.5})
    assert "detect.targeted_max_context_damage" in str(err.value)
    with pytest.raises(ConfigError):
        build_config(DetectConfig, {"parts": "sometimes"})


@pytest.fixture(scope="module")
def compound_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    """Three generated compounds (intact, one block destroyed alone, one block and the
    neighbourhood destroyed) scored by the bundled model with parts and context."""
    from detect.run import run_detect
    from tiles.synth.compounds import default_cases, write_compound_cases

    root = tmp_path_factory.mktemp("compounds")
    write_compound_cases(root, default_cases(1), extent_m=540.0)
    tiles = build_config(TilesConfig, {"parts": {"context_inner_m": 30.0, "context_outer_m": 100.0}})
    run_detect(
        root / "sites.geojson", [root / "before"], [root / "after"], root / "run",
        tiles=tiles, detect=DetectConfig(chips_top_n=3, embeddings=False), progress=False,
    )
    with open(root / "run" / "scores.csv", newline="", encoding="utf-8") as fh:
        rows = {r["site_id"]: r for r in csv.DictReader(fh)}
    return root, rows


@pytest.mark.slow
def test_dask_path_scores_parts_identically(compound_run: tuple[Path, dict[str, dict[str, str]]]) -> None:
    """The Dask task runs the same parts-and-context step: scores.csv is byte-identical."""
    from detect.run import run_detect

    root, _ = compound_run
    tiles = build_config(TilesConfig, {"parts": {"context_inner_m": 30.0, "context_outer_m": 100.0}})
    run_detect(
        root / "sites.geojson", [root / "before"], [root / "after"], root / "dask",
        tiles=tiles, detect=DetectConfig(chips_top_n=3, embeddings=False), workers=1, dask_processes=False, progress=False,
    )
    assert (root / "dask" / "scores.csv").read_bytes() == (root / "run" / "scores.csv").read_bytes()


def test_known_answer_compounds(compound_run: tuple[Path, dict[str, dict[str, str]]]) -> None:
    root, rows = compound_run
    with open(root / "truth.csv", newline="", encoding="utf-8") as fh:
        truth = {r["site_id"]: r for r in csv.DictReader(fh)}
    assert set(rows) == set(truth)
    by_case = {truth[s]["case"]: rows[s] for s in rows}
    for case, row in by_case.items():
        assert row["status"] == "ok" and row["score_source"] == "parts", case
        assert int(row["parts_assessed"]) == int(row["parts"]) > 1
        assert row["context_assessed"] == row["context"] == "12"
    iso, area, intact = by_case["isolated"], by_case["area"], by_case["intact"]
    assert iso["flagged"] == "true" and intact["flagged"] == "false"
    assert float(iso["score"]) > float(intact["score"])
    # the top part is one of the windows that meet the destroyed block
    assert iso["top_part"] in truth[iso["site_id"]]["damaged_parts"].split(";")
    assert iso["targeted"] == "true" and area["targeted"] == "false"
    assert float(area["context_damage"]) > float(iso["context_damage"])
    # the single window sees the destroyed block far less clearly than its own part does
    assert float(iso["window_score"]) < float(iso["score"])

    # report.html outlines the parts of flagged compounds on their chip and says what was around
    page = (root / "run" / "report.html").read_text(encoding="utf-8")
    assert page.count("parts by score") == sum(r["flagged"] == "true" for r in rows.values())
    assert "hit alone (targeted)" in page and f"{iso['top_part']}: {float(iso['top_part_score']):.3f}" in page


def test_parts_overlay_geometry() -> None:
    plan = _plan()
    site_row = {"site_id": "H", "status": "ok", "reason": "", "score": "0.1", "chip_size_m": "280.0", "chip_after": "chips/H_after.png"}
    row = summarise_site(site_row, plan, _rows(plan, [0.9] + ["cloud"] + [0.01] * 7 + [0.0] * 6), DetectConfig(), 0.5, decimals=6)
    figure, lines = parts_overlay_html(row, px=280)
    assert figure.count("<rect") == 9 and 'href="chips/H_after.png"' in figure
    # part p00 is the north-west one: 64 m square centred at (-48, 48) m on a 280 m chip drawn at 1 px/m
    assert '<rect x="60.0" y="60.0" width="64.0" height="64.0" stroke="#ff2820" stroke-width="3"' in figure
    assert 'stroke-dasharray' in figure and "p01: cloud" in figure
    assert "8 of 9 assessed" in lines and "&rarr; hit alone (targeted)" in lines
    assert parts_overlay_html({"site_id": "x", "score": "0.2"}) == ("", "")


@pytest.mark.realdata
@pytest.mark.slow
def test_joplin_footprints_parts_and_context_in_every_output(shared_data, tmp_path) -> None:
    """Joplin's building footprints: those larger than one chip inside the before/after overlap are
    scored part by part with a context ring; small ones as before. Parts and context show in
    scores.csv, scores.geojson, scores.gpkg and report.html."""
    import json
    import sqlite3

    from detect.run import run_detect

    root = shared_data / "joplin-tornado"
    doc = json.loads((root / "footprints.geojson").read_text(encoding="utf-8"))
    with open(root / "sites.csv", newline="", encoding="utf-8") as fh:
        ids = list(csv.DictReader(fh))
    assert len(ids) == len(doc["features"])
    tiles = TilesConfig()
    inside = lambda r: -94.4994 < float(r["lon"]) < -94.4864 and 37.0665 < float(r["lat"]) < 37.0750  # noqa: E731
    big, small = [], []
    for feat, row in zip(doc["features"], ids):
        if not inside(row):
            continue
        site = Site(row["site_id"], float(row["lon"]), float(row["lat"]), footprint=feat["geometry"])
        (big if is_facility(site, tiles) else small).append((feat, row))
    assert len(big) >= 3, "the overlap holds several footprints larger than one chip"
    chosen = big + small[:6]
    features = [
        {"type": "Feature", "geometry": f["geometry"], "properties": {"site_id": r["site_id"], "xview2": r["xview2_model_damage"]}}
        for f, r in chosen
    ]
    sites = tmp_path / "sites.geojson"
    sites.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    run = tmp_path / "run"
    run_detect(sites, [root / "before"], [root / "after"], run, tiles=tiles,
               detect=DetectConfig(chips_top_n=-1, operating_point="0.3"), progress=False)
    with open(run / "scores.csv", newline="", encoding="utf-8") as fh:
        rows = {r["site_id"]: r for r in csv.DictReader(fh)}
    big_ids = {r["site_id"] for _, r in big}
    for sid, row in rows.items():
        if sid in big_ids:
            assert int(row["parts"]) >= 2 and row["context"] == "12", sid
            if row["status"] == "ok":
                assert row["score_source"] == "parts" and row["top_part"].startswith("p")
                assert int(row["parts_assessed"]) >= 1 and row["damaged_fraction"] != ""
        else:
            assert row["parts"] == "" and row["context"] == "", sid
    assessed = [rows[s] for s in big_ids if rows[s]["status"] == "ok"]
    assert len(assessed) >= 2
    print("\nJoplin facilities:", [(r["site_id"], r["score"], r["window_score"], r["parts_assessed"] + "/" + r["parts"],
                                    r["top_part"], r["context_assessed"], r["context_damage"], r["targeted"]) for r in assessed])
    props = {f["properties"]["site_id"]: f["properties"] for f in json.loads((run / "scores.geojson").read_text())["features"]}
    assert all(props[s]["parts"] == rows[s]["parts"] and props[s]["context_damage"] == rows[s]["context_damage"] for s in rows)
    with sqlite3.connect(run / "scores.gpkg") as db:
        columns = {c[1] for c in db.execute("PRAGMA table_info(sites)")}
        assert {"parts", "damaged_fraction", "top_part", "context_damage", "targeted"} <= columns
    page = (run / "report.html").read_text(encoding="utf-8")
    flagged = [r for r in assessed if r["flagged"] == "true"]
    assert page.count("parts by score") == len(flagged) and (not flagged or "surroundings:" in page)
