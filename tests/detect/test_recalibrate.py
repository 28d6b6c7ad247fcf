"""``sitewatch calibrate``: a real small run recalibrated on its labelled sites."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from detect.runfolder import read_scores_csv
from sitewatch.cli import main
from tests.detect.conftest import make_tiny_scene


@pytest.fixture(scope="module")
def scene_and_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib_scene")
    scene = make_tiny_scene(root, n_side=8, size_px=560, seed=3)  # 64 sites, 22 destroyed
    run = root / "run"
    argv = ["detect", "--sites", str(scene.sites), "--before", str(scene.before), "--after", str(scene.after),
            "--out", str(run), "--chips", "2", "--set", "detect.batch_size=32", "-q"]
    assert main(argv) == 0
    return scene, run


@pytest.fixture
def run_copy(scene_and_run, tmp_path):
    scene, run = scene_and_run
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return scene, dst


def _labels_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["site_id", "damage"])
        w.writeheader()
        w.writerows(rows)
    return path


def _site_labels(scene) -> list[dict[str, str]]:
    with open(scene.sites, newline="", encoding="utf-8") as fh:
        return [{"site_id": r["site_id"], "damage": r["damage"]} for r in csv.DictReader(fh)]


def test_calibrate_rewrites_scores_flags_and_records_provenance(run_copy, tmp_path, capsys):
    scene, run = run_copy
    from review.runfolder import RunFolder

    before = {r["site_id"]: r for r in read_scores_csv(run / "scores.csv")}
    assert RunFolder(run).calibration_label().startswith("synthetic")
    labels = _labels_csv(tmp_path / "labels.csv", _site_labels(scene))
    assert main(["calibrate", str(run), "--labels", str(labels), "--set", "calibration.bootstrap=200"]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "flagged at screening" in out
    manifest = json.loads((run / "manifest.json").read_text())
    # the new run digest, in the line detect uses, so that it can be recorded and checked
    digest = hashlib.sha256((run / "manifest.json").read_bytes()).hexdigest()
    assert f"run digest: sha256:{digest}" in out
    cal = manifest["calibration"]
    assert cal["kind"] == "event" and cal["labels"]["sha256"] == hashlib.sha256(labels.read_bytes()).hexdigest()
    n_ok = sum(1 for r in before.values() if r["status"] == "ok")
    labelled_ok = sum(1 for r in before.values() if r["status"] == "ok")
    assert cal["n"] == labelled_ok and cal["positives"] == sum(
        1 for r in before.values() if r["status"] == "ok" and r["damage"] == "destroyed")
    assert cal["n_temperature"] + cal["n_operating_points"] == cal["n"]
    assert cal["previous_temperature"] == pytest.approx(manifest["model"]["meta"]["temperature"])
    t, thr = cal["temperature"], manifest["operating_point"]["threshold"]
    assert thr == pytest.approx(cal["operating_points"]["screening"]["threshold"])
    # 22 damaged: 11 chose the operating points, enough to trust the fitted screening threshold
    assert cal["screening_rule"]["rule"] == "fitted" and cal["screening_rule"]["positives"] == 11
    assert cal["screening_rule"]["parent_source"] == "the run's operating point (model calibration)"
    assert cal["screening_note"] in out
    rows = read_scores_csv(run / "scores.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == n_ok
    for r in ok:
        # the raw logit is kept; the score is sigmoid(logit / T) with the fitted T
        old_p = float(before[r["site_id"]]["score"])
        logit = float(r["logit"])
        if 1e-6 < old_p < 1 - 1e-6:
            assert logit == pytest.approx(manifest["model"]["meta"]["temperature"] * math.log(old_p / (1 - old_p)), abs=1e-3)
        assert float(r["score"]) == pytest.approx(1 / (1 + math.exp(-logit / t)), abs=2e-6)
        assert (r["flagged"] == "true") == (float(r["score"]) >= thr)
        assert r["calibration"] == cal["tag"]
    ranks = [int(r["rank"]) for r in ok]
    assert ranks == sorted(ranks) == list(range(1, len(ok) + 1))
    assert manifest["counts"]["flagged"] == sum(r["flagged"] == "true" for r in rows)
    # the report says which calibration the scores carry; the reliability files exist and are hashed
    report = (run / "report.html").read_text()
    assert "this event&#x27;s verified sample" in report or "this event's verified sample" in report
    assert (run / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (run / "calibration.txt").read_text()
    assert "reliability AFTER" in text and "interval" in text and cal["labels"]["sha256"] in text
    # the GIS copies carry the new flags too
    if (run / "scores.kml").is_file():
        kml = (run / "scores.kml").read_text()
        assert f"{thr:g})" in kml  # "flagged at >= <the new threshold>" in every balloon
    for name in ("calibration.txt", "calibration.json", "reliability.png", "scores.csv", "report.html", "scores.gpkg", "scores.kml"):
        assert manifest["outputs"][name] == hashlib.sha256((run / name).read_bytes()).hexdigest()
    assert main(["verify", str(run)]) == 0
    # the review app's label
    assert RunFolder(run).calibration_label().startswith(f"this event's verified sample ({cal['n']} sites")


def test_calibrate_names_unknown_sites_and_says_how_many_labels_are_needed(run_copy, tmp_path, capsys):
    scene, run = run_copy
    labels = _site_labels(scene)
    bad = _labels_csv(tmp_path / "bad.csv", labels + [{"site_id": "not-a-site", "damage": "destroyed"}])
    assert main(["calibrate", str(run), "--labels", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "'not-a-site'" in err and "not in" in err
    few = _labels_csv(tmp_path / "few.csv", [r for r in labels if r["damage"] == "no-damage"] + [r for r in labels if r["damage"] == "destroyed"][:2])
    assert main(["calibrate", str(run), "--labels", str(few)]) == 1
    err = capsys.readouterr().err
    assert "calibration.min_positives" in err and "at least 3 damaged" in err and "label 1 more" in err
    # nothing was rewritten by the failed calls
    assert "calibration" not in json.loads((run / "manifest.json").read_text())
    assert main(["calibrate", str(run)]) == 1
    assert "no review store" in capsys.readouterr().err
    # a store with too few verdicts: the error says where reviewers give them (the label-file
    # error above stays as it was: no review hint there)
    from review.store import VerdictStore

    VerdictStore.for_run(run).add_verdict(labels[0]["site_id"], "ana", labels[0]["damage"])
    assert main(["calibrate", str(run)]) == 1
    err = capsys.readouterr().err
    assert "calibration.min_labels" in err and "label 29 more" in err
    assert "the 'validation' queue" in err and "/queue?view=validation" in err and f"sitewatch review {run}" in err
    assert "http://127.0.0.1:8765/queue?view=validation" in err  # the review settings' address
    # the address follows review.host/review.port (the same --set the review app would take)
    assert main(["calibrate", str(run), "--set", "review.port=9123"]) == 1
    assert "http://127.0.0.1:9123/queue?view=validation" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--labels", str(few)]) == 1
    assert "sitewatch review" not in capsys.readouterr().err


def test_calibrate_from_the_runs_verified_random_sample(run_copy, capsys):
    from review.store import VerdictStore

    scene, run = run_copy
    truth = {r["site_id"]: r["damage"] for r in _site_labels(scene)}
    store = VerdictStore.for_run(run)
    for sid, damage in truth.items():
        store.add_verdict(sid, "ana", damage)
    assert main(["calibrate", str(run), "--set", "review.validation_size=50", "--set", "calibration.bootstrap=100"]) == 0
    cal = json.loads((run / "manifest.json").read_text())["calibration"]
    assert cal["labels"]["source"].startswith("review store, random validation sample")
    assert cal["labels"]["sample_sites"] == 50 and cal["n"] == 50
    assert len(cal["labels"]["verdict_chain_head"]) == 64


def test_calibrating_on_few_damaged_sites_holds_screening_at_the_runs_threshold(run_copy, tmp_path, capsys):
    """A rare-damage sample (3 damaged) after a calibration that lowered screening: the fitted
    threshold would be stricter, so screening is held at the run's (same logit, new temperature)."""
    from review.runfolder import RunFolder

    scene, run = run_copy
    truth = _site_labels(scene)
    scores = {r["site_id"]: float(r["score"]) for r in read_scores_csv(run / "scores.csv") if r["status"] == "ok"}
    ok = [r for r in truth if r["site_id"] in scores]
    intact = sorted((r for r in ok if r["damage"] == "no-damage"), key=lambda r: scores[r["site_id"]])
    # 1) reviewers found damage the model scored low: 8 low-scoring sites verified as destroyed
    first = [dict(r, damage="destroyed") if r in intact[:8] else r for r in ok]
    assert main(["calibrate", str(run), "--labels", str(_labels_csv(tmp_path / "first.csv", first)),
                 "--set", "calibration.bootstrap=0"]) == 0
    cal1 = json.loads((run / "manifest.json").read_text())["calibration"]
    assert cal1["screening_rule"]["rule"] == "fitted" and cal1["screening_rule"]["positives"] >= 10
    parent = cal1["operating_points"]["screening"]["threshold"]
    assert parent < 0.5  # the low-scoring damaged sites pulled screening down
    flagged1 = {r["site_id"] for r in read_scores_csv(run / "scores.csv") if r["flagged"] == "true"}
    capsys.readouterr()
    # 2) a new random sample: 3 damaged (high scores) among the intact sites
    destroyed = sorted((r for r in ok if r["damage"] == "destroyed"), key=lambda r: -scores[r["site_id"]])
    second = intact[8:] + destroyed[:3]
    assert main(["calibrate", str(run), "--labels", str(_labels_csv(tmp_path / "second.csv", second)),
                 "--set", "calibration.bootstrap=0"]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((run / "manifest.json").read_text())
    cal = manifest["calibration"]
    rule = cal["screening_rule"]
    assert cal["positives"] == 3 and rule["positives"] < rule["trust_positives"] == 10
    assert rule["rule"] == "held" and rule["parent_threshold_before"] == pytest.approx(parent)
    assert rule["parent_source"].startswith("the run's operating point")
    # the parent's threshold, mapped onto the new temperature through its logit
    z = cal1["temperature"] * math.log(parent / (1 - parent))
    held = 1 / (1 + math.exp(-z / cal["temperature"]))
    assert rule["parent_threshold"] == pytest.approx(held)
    # (floored to the 6 written decimals, so a site scored exactly at it keeps its flag)
    assert cal["operating_points"]["screening"]["threshold"] == pytest.approx(held, abs=1e-6)
    assert cal["operating_points"]["screening"]["threshold"] <= held
    assert manifest["operating_point"]["threshold"] == cal["operating_points"]["screening"]["threshold"]
    assert rule["fitted_threshold"] > held
    # nothing the run flagged before is dropped
    flagged2 = {r["site_id"] for r in read_scores_csv(run / "scores.csv") if r["flagged"] == "true"}
    assert flagged1 <= flagged2
    # said in the CLI summary, calibration.txt, calibration.json, report.html and the review app
    assert "screening held at the run's previous threshold" in out and "only" in out
    assert cal["screening_note"] == rule["text"] and "trust_positives 10" in rule["text"]
    assert "screening held at the run" in (run / "calibration.txt").read_text()
    assert json.loads((run / "calibration.json").read_text())["screening_rule"] == rule
    report = (run / "report.html").read_text()
    assert "Screening threshold: screening held at the run" in report.replace("&#x27;", "'")
    assert "screening held at the earlier threshold" in RunFolder(run).calibration_label()
    assert main(["verify", str(run)]) == 0
    # verify notices a screening_rule that does not match calibration.json
    doctored = dict(manifest, calibration=dict(cal, screening_rule=dict(rule, rule="fitted")))
    (run / "manifest.json").write_text(json.dumps(doctored, indent=1))
    assert main(["verify", str(run)]) != 0
