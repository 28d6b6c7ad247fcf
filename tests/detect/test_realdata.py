"""Detection on real imagery from ../shared/data (skipped when it is absent).

The figures (ROC AUC on xBD, agreement on Joplin) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import csv
import random

import pytest

from detect.agreement import roc_auc
from detect.runfolder import read_scores_csv
from detect.run import run_detect
from sitewatch.config import load_config
from sitewatch.jobs import DetectJob
from tiles.types import damage_to_label

JOB = load_config(DetectJob, None, {"detect.chips_top_n": 10})


def _subset(src, dst, keep):
    with open(src, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames
        rows = [r for r in reader if keep(r)]
    return fields, rows


def _write(dst, fields, rows):
    with open(dst, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


@pytest.mark.realdata
@pytest.mark.slow
def test_joplin_across_two_crss(shared_data, tmp_path):
    """Before in EPSG:26915, after in EPSG:4326: sites in the overlap are scored, others say why."""
    root = shared_data / "joplin-tornado"
    fields, rows = _subset(root / "sites.csv", None, lambda r: True)
    rng = random.Random(0)
    labelled = [r for r in rows if r["xview2_model_damage"]]
    unlabelled = [r for r in rows if not r["xview2_model_damage"]]
    sample = rng.sample(labelled, 80) + rng.sample(unlabelled, 40)
    sites = tmp_path / "sites.csv"
    _write(sites, fields, sample)
    summary = run_detect(sites, [root / "before"], [root / "after"], tmp_path / "run", tiles=JOB.tiles, detect=JOB.detect, progress=False)
    out = read_scores_csv(summary.scores_csv)
    assert len(out) == 120 and {r["site_id"] for r in out} == {r["site_id"] for r in sample}
    ok = [r for r in out if r["status"] == "ok"]
    assert len(ok) >= 20, "sites inside the before/after overlap must be scored"
    before_ids = {p.stem for p in (root / "before").glob("*.tif")}
    after_ids = {p.stem for p in (root / "after").glob("*.tif")}
    assert all(r["before_scene"] in before_ids and r["after_scene"] in after_ids for r in ok)
    assert all(r["reason"] for r in out if r["status"] != "ok")
    # weak reference only: the xView2 model's output, not ground truth
    pairs = [(damage_to_label(r["xview2_model_damage"]), float(r["score"])) for r in ok]
    pairs = [(y, s) for y, s in pairs if y is not None]
    auc = roc_auc([y for y, _ in pairs], [s for _, s in pairs])
    print(f"\nJoplin: {len(ok)}/120 scored; agreement with xview2_model_damage: ROC AUC {auc:.3f} on {len(pairs)} sites")


@pytest.mark.realdata
@pytest.mark.slow
def test_xbd_santa_rosa_ranks_destroyed_above_no_damage(shared_data, tmp_path):
    root = shared_data / "xbd-santa-rosa-dev"
    fields, rows = _subset(root / "sites.csv", None, lambda r: damage_to_label(r["damage"]) is not None)
    rng = random.Random(0)
    pos = [r for r in rows if damage_to_label(r["damage"]) == 1]
    neg = [r for r in rows if damage_to_label(r["damage"]) == 0]
    sample = rng.sample(pos, 100) + rng.sample(neg, 100)
    sites = tmp_path / "sites.csv"
    _write(sites, fields, sample)
    summary = run_detect(sites, [root / "before"], [root / "after"], tmp_path / "run", tiles=JOB.tiles, detect=JOB.detect, progress=False)
    out = [r for r in read_scores_csv(summary.scores_csv) if r["status"] == "ok"]
    assert len(out) >= 100  # sites near an xBD tile edge are cannot_assess (mostly_nodata)
    labels = [damage_to_label(r["damage"]) for r in out]
    auc = roc_auc(labels, [float(r["score"]) for r in out])
    print(f"\nxBD Santa Rosa dev: {len(out)}/200 scored, ROC AUC destroyed vs no-damage {auc:.3f}")
    assert auc > 0.5, auc
