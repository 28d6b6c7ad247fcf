"""Image series in detect: the change-point fit on its own, and series runs end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from detect.config import DetectConfig
from detect.series import fit_bracket, series_pairs
from sitewatch.errors import ConfigError, UsageError

HI, LO = 0.95, 0.02


def _scores(n: int, step: int | None, *, span: int = 2, outlier: int | None = None, hi: float = HI, lo: float = LO):
    """Pair probabilities of a site whose state changes after date ``step`` (None: never)."""
    out = {}
    for a, b in series_pairs(n, span):
        changed = step is not None and a <= step < b
        if outlier is not None and outlier in (a, b):
            changed = True  # a misaligned / hazy date looks different from every other one
        out[(a, b)] = hi if changed else lo
    return out


def test_series_pairs():
    assert series_pairs(4, 1) == [(0, 1), (1, 2), (2, 3)]
    assert series_pairs(4, 2) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    assert series_pairs(2, 5) == [(0, 1)]


@pytest.mark.parametrize("n", [3, 5, 7])
def test_every_step_position_is_found(n):
    for step in range(n - 1):
        b = fit_bracket(n, _scores(n, step))
        assert (b.last_intact, b.first_damaged) == (step, step + 1) and b.llr > 1.0, (n, step, b)


def test_no_change_gives_no_bracket():
    b = fit_bracket(5, _scores(5, None))
    assert not b.changed and b.last_intact is None and b.first_damaged is None and b.llr < 0


@pytest.mark.parametrize("bad", [1, 2, 3])
def test_one_bad_date_in_the_middle_does_not_flip_it(bad):
    # intact site, one date that differs from all others: an outlier, not a change
    b = fit_bracket(5, _scores(5, None, outlier=bad))
    assert not b.changed, b
    # a real change elsewhere, with one bad date: the step is still where it was
    step = 0 if bad >= 2 else 3
    b = fit_bracket(6, _scores(6, step, outlier=bad))
    assert b.changed and b.last_intact == step and b.first_damaged == step + 1 + (bad == step + 1), b
    assert b.outlier == bad


def test_bad_date_next_to_the_step_is_skipped_in_the_bracket():
    # change after date 1; date 2 is bad: first_damaged is date 3 (date 2 left out)
    b = fit_bracket(6, _scores(6, 1, outlier=2))
    assert (b.last_intact, b.first_damaged, b.outlier) == (1, 3, 2)


def test_consecutive_pairs_only_cannot_tell_a_bad_date():
    # span 1: a bad middle date is two high pairs; the fit then still prefers the outlier
    b = fit_bracket(5, _scores(5, None, span=1, outlier=2))
    assert not b.changed


def test_two_dates_follow_the_pair_score():
    assert fit_bracket(2, {(0, 1): 0.9}).changed
    assert not fit_bracket(2, {(0, 1): 0.1}).changed
    # a stricter min_llr needs more evidence
    assert not fit_bracket(2, {(0, 1): 0.9}, min_llr=5.0).changed


def test_soft_scores_and_missing_pairs():
    scores = _scores(5, 2, hi=0.8, lo=0.2)
    del scores[(0, 1)]  # a pair the model could not score
    b = fit_bracket(5, scores)
    assert (b.last_intact, b.first_damaged) == (2, 3)
    with pytest.raises(ValueError):
        fit_bracket(3, scores, eps=0.6)


@pytest.mark.parametrize(("field", "value"), [("series_pair_span", 0), ("series_eps", 0.5), ("series_outlier_penalty", -1.0), ("series_max_cloud_fraction", 2.0)])
def test_bad_series_settings_name_the_setting(field, value):
    with pytest.raises(ConfigError) as err:
        DetectConfig(**{field: value})
    assert err.value.setting == f"detect.{field}"


def _scores_csv(run: Path) -> dict[str, dict[str, str]]:
    with open(run / "scores.csv", newline="", encoding="utf-8") as fh:
        return {r["site_id"]: r for r in csv.DictReader(fh)}


def test_two_date_series_scores_like_before_after(tiny_scene, tmp_path):
    from detect.run import run_detect

    cfg = DetectConfig(device="cpu", threads=1, chips_top_n=3, embeddings=False)
    plain = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / "plain", detect=cfg, progress=False)
    series = run_detect(tiny_scene.sites, [], [], tmp_path / "series", detect=cfg, progress=False, series=[tiny_scene.before, tiny_scene.after])
    a, b = _scores_csv(plain.run_dir), _scores_csv(series.run_dir)
    assert a.keys() == b.keys()
    for sid in a:
        assert (a[sid]["score"], a[sid]["status"], a[sid]["rank"]) == (b[sid]["score"], b[sid]["status"], b[sid]["rank"]), sid
    assert all(r["series_dates"] == "2" and r["series_reference"] == "2021-05-01" for r in b.values())
    # two dates: llr = (2p - 1) log((1 - eps) / eps), a bracket from p = 0.5 + min_llr / (2 log 19)
    import math

    threshold = 0.5 + cfg.series_min_llr / (2 * math.log((1 - cfg.series_eps) / cfg.series_eps))
    for r in b.values():
        p = float(r["score"])
        assert float(r["series_llr"]) == pytest.approx((2 * p - 1) * math.log(19), abs=2e-3)
        if p >= threshold:
            assert (r["last_intact"], r["first_damaged"], r["bracket_score"]) == ("2021-05-01", "2021-09-01", r["score"])
        else:
            assert r["last_intact"] == r["first_damaged"] == r["bracket_score"] == ""
    manifest = json.loads((series.run_dir / "manifest.json").read_text())
    assert [d["day"] for d in manifest["series"]["days"]] == ["2021-05-01", "2021-09-01"]
    assert manifest["series"]["fit"]["series_pair_span"] == 2
    # chips come from the bracket pair
    top = min(b.values(), key=lambda r: int(r["rank"] or 10**6))
    assert top["chip_before"] and (series.run_dir / top["chip_before"]).is_file()


def test_series_needs_two_dated_days(tiny_scene, tmp_path):
    from detect.run import run_detect
    from sitewatch.errors import RasterError

    with pytest.raises(RasterError, match="at least two"):
        run_detect(tiny_scene.sites, [], [], tmp_path / "one", progress=False, series=[tiny_scene.before])
    with pytest.raises(UsageError, match="not both"):
        run_detect(tiny_scene.sites, [tiny_scene.before], [], tmp_path / "both", progress=False, series=[tiny_scene.after])


def test_timeline_dates_of_a_row():
    from detect.series import timeline_dates

    row = {
        "series_timeline": "2023-01-01/2023-02-01:0.01;2023-02-01/2023-04-01:0.9;2023-01-01/2023-04-01:0.95",
        "series_dropped": "2023-03-01:cloud",
        "last_intact": "2023-02-01",
        "first_damaged": "2023-04-01",
        "series_outlier": "",
        "series_reference": "2023-01-01",
    }
    got = [(d.day, d.state, d.bracket, d.note) for d in timeline_dates(row)]
    assert got == [
        ("2023-01-01", "intact", False, ""),
        ("2023-02-01", "intact", True, ""),
        ("2023-03-01", "dropped", False, "cloud"),
        ("2023-04-01", "damaged", True, ""),
    ]
    assert timeline_dates({"score": "0.5"}) == []
    row.update(last_intact="", first_damaged="", series_outlier="2023-02-01")
    assert [d.state for d in timeline_dates(row)] == ["unchanged", "outlier", "dropped", "unchanged"]


def test_synthetic_series_is_bracketed(tmp_path):
    """Known answer: synth --series gives each damaged site's damage date; detect must bracket it."""
    from detect.run import run_detect
    from tiles.synth.config import SynthConfig
    from tiles.synth.series import SeriesConfig, generate_series

    synth = SynthConfig(sites=16, size_px=640, seed=5, max_sites_per_region=8, destroyed_fraction=0.4, major_fraction=0.0, minor_fraction=0.0)
    generate_series(tmp_path / "ds", synth, SeriesConfig(dates=4))
    cfg = DetectConfig(device="cpu", threads=1, chips_top_n=4, embeddings=False)
    run = run_detect(tmp_path / "ds" / "sites.csv", [], [], tmp_path / "run", detect=cfg, progress=False, series=[tmp_path / "ds" / "series"])
    with open(tmp_path / "ds" / "sites.csv", newline="", encoding="utf-8") as fh:
        truth = {r["site_id"]: r for r in csv.DictReader(fh)}
    rows = _scores_csv(run.run_dir)
    destroyed = [s for s, t in truth.items() if t["damage"] == "destroyed"]
    intact = [s for s, t in truth.items() if t["damage"] == "no-damage"]
    good = [
        s for s in destroyed
        if rows[s]["last_intact"] and rows[s]["last_intact"] < truth[s]["damage_date"] <= rows[s]["first_damaged"]
    ]
    quiet = [s for s in intact if not rows[s]["last_intact"]]
    assert len(good) >= 0.75 * len(destroyed), (len(good), len(destroyed))
    assert len(quiet) >= 0.8 * len(intact), (len(quiet), len(intact))
    # every region has a cloudy date: it is dropped (or left out as an outlier) somewhere
    assert any("cloud" in r["series_dropped"] for r in rows.values())
    html_text = (run.run_dir / "report.html").read_text(encoding="utf-8")
    assert 'class="timeline"' in html_text and "bracket" in html_text
    # the review app's site page shows the same strip, with the bracket dates
    from fastapi.testclient import TestClient

    from review.app import create_app
    from review.config import ReviewConfig

    client = TestClient(create_app(run.run_dir, ReviewConfig(rerank_every=0)))
    client.get("/queue?reviewer=ann")
    state = client.app.state.review
    top = state.run.sites[state.queues.order("score")[0]]
    page = client.get(f"/site/{top.index}").text
    row = rows[top.site_id]
    assert 'id="timeline"' in page and "tl-bracket" in page
    assert f"<b>{row['last_intact']}</b> (last intact)" in page and f"<b>{row['first_damaged']}</b> (first damaged)" in page
    # a verdict records which dates the reviewer judged (the evidence pair shown)
    csrf = client.cookies.get("sw_csrf")
    r = client.post(f"/site/{top.index}/verdict", data={"verdict": "destroyed", "csrf": csrf}, headers={"accept": "application/json"})
    assert r.json()["ok"]
    entry = [a for a in state.store.audit() if a["site_id"] == top.site_id][-1]
    assert entry["detail"]["judged_dates"] == f"{row['before_time'][:10]}/{row['after_time'][:10]}"
    assert entry["detail"]["judged_dates"] == f"{row['last_intact']}/{row['first_damaged']}"


def test_passing_clouds_are_dropped_persistent_ones_kept():
    from tiles.series import drop_passing_clouds
    from tiles.types import Pair, PairMeta, Site

    site = Site("s", 15.0, 45.0)

    def pairs(clouds: dict[int, float]) -> dict[int, Pair]:
        return {k: Pair(site, PairMeta("s", "ok", cloud_fraction=c)) for k, c in clouds.items()}

    # reference 0; day 2 alone is cloud-like: a passing cloud
    out = drop_passing_clouds(0, pairs({1: 0.0, 2: 0.2, 3: 0.01, 4: 0.0}), 0.05)
    assert [k for k, p in out.items() if not p.ok] == [2] and out[2].meta.reason == "cloud"
    # days 3 and 4 cloud-like (rubble that stays): kept; the last day alone: dropped
    assert all(p.ok for p in drop_passing_clouds(0, pairs({1: 0.0, 2: 0.0, 3: 0.2, 4: 0.3}), 0.05).values())
    assert not drop_passing_clouds(0, pairs({1: 0.0, 2: 0.0, 3: 0.3}), 0.05)[3].ok
    # two days (one pair) keep the tiles rule; no limit drops nothing
    assert drop_passing_clouds(0, pairs({1: 0.4}), 0.05)[1].ok
    assert all(p.ok for p in drop_passing_clouds(0, pairs({1: 0.0, 2: 0.4, 3: 0.0}), None).values())


def test_series_cli(tiny_scene, tmp_path, capsys):
    from sitewatch.cli import main

    out = tmp_path / "run"
    argv = ["detect", "--sites", str(tiny_scene.sites), "--series", str(tiny_scene.before), str(tiny_scene.after),
            "--out", str(out), "--chips", "0", "--set", "detect.series_pair_span=1"]
    assert main(argv) == 0
    rows = _scores_csv(out)
    assert len(rows) == tiny_scene.n_sites and all(r["series_dates"] == "2" for r in rows.values())
    capsys.readouterr()
    base = ["detect", "--sites", str(tiny_scene.sites), "--out", str(tmp_path / "x")]
    assert main([*base, "--before", str(tiny_scene.before)]) == 2
    assert "--series" in capsys.readouterr().err
    assert main([*base, "--series", str(tiny_scene.before), "--after", str(tiny_scene.after)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--series", str(tiny_scene.before), str(tiny_scene.after), "--set", "detect.series_eps=0.7"]) == 2
    assert "detect.series_eps" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "s"), "--series", "2"]) == 2
    assert "series.dates" in capsys.readouterr().err
