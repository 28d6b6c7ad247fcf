"""detect.parts: aggregation rule, per-site summary, modes, and a known-answer run on generated compounds."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from detect.config import DetectConfig
from detect.parts import PART_COLUMNS, SiteWindows, aggregate_parts, is_facility, summarise_site
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
        tiles=tiles, detect=DetectConfig(chips_top_n=0, embeddings=False), progress=False,
    )
    with open(root / "run" / "scores.csv", newline="", encoding="utf-8") as fh:
        rows = {r["site_id"]: r for r in csv.DictReader(fh)}
    return root, rows


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
