"""Cautions for pairs outside the model's training envelope (detect.caution), end to end.

Known answers on real GeoTIFFs of chosen GSD: the bundled model was trained on synthetic scenes
at 0.5 m (its envelope, derived from its recorded train_config, is 0.5-0.5 m and an off-nadir
difference of at most 10.8 degrees), so with ``detect.caution_gsd_factor`` 1.5 an after epoch
resampled to 1.0 m is cautioned on every assessed site and the 0.5 m original on none; the
scores, ranks and flags are the same with and without cautions; the run folder reads back and
verifies; the report counts the cautions; the review app shows them on the site page.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from detect.caution import CautionPolicy, caution_reasons, split_caution
from detect.config import DetectConfig
from detect.run import run_detect
from detect.runfolder import SCORES_CSV, ScoreRow, read_scores, write_scores
from detect.verify import verify_run
from models.checkpoint import read_meta, training_envelope
from models.envelope import TrainingEnvelope, envelope_from_train_config, synth_envelope
from sitewatch.errors import ConfigError
from tests.detect.conftest import make_tiny_scene
from tiles.config import TilesConfig


def resampled_copy(src_folder: Path, dst_folder: Path, *, factor: int) -> Path:
    """Every raster of ``src_folder`` block-averaged by ``factor`` (GSD times ``factor``) into
    ``dst_folder``, with the same tags (acquisition time)."""
    import rasterio
    from rasterio.transform import Affine

    dst_folder.mkdir(parents=True, exist_ok=True)
    for src_path in sorted(src_folder.glob("*.tif")):
        with rasterio.open(src_path) as src:
            data = src.read().astype(np.float64)
            c, h, w = data.shape
            h2, w2 = h // factor, w // factor
            small = data[:, : h2 * factor, : w2 * factor].reshape(c, h2, factor, w2, factor).mean(axis=(2, 4))
            profile = src.profile.copy()
            profile.update(width=w2, height=h2, transform=src.transform @ Affine.scale(factor), tiled=False)
            profile.pop("blockxsize", None)
            profile.pop("blockysize", None)
            tags = src.tags()
        with rasterio.open(dst_folder / src_path.name, "w", **profile) as dst:
            dst.write(np.clip(np.rint(small), 0, 255).astype(np.uint8))
            dst.update_tags(**tags)
    return dst_folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs of the bundled model on one scene: after at 0.5 m, after at 1.0 m, and 1.0 m
    with cautions switched off."""
    root = tmp_path_factory.mktemp("caution")
    scene = make_tiny_scene(root / "scene", n_side=3, seed=5, size_px=384)
    coarse_after = resampled_copy(scene.after, root / "after_1m", factor=2)
    out: dict[str, Path] = {}
    base = dict(chips_top_n=-1, batch_size=16, threads=1, operating_point="0.01")  # some sites flagged at 1 m
    for name, after, detect in (
        ("native", scene.after, DetectConfig(**base)),
        ("coarse", coarse_after, DetectConfig(**base)),
        ("coarse_off", coarse_after, DetectConfig(**base, caution=False)),
    ):
        summary = run_detect(scene.sites, [scene.before], [after], root / name, tiles=TilesConfig(), detect=detect, progress=False)
        out[name] = summary.run_dir
    return out


def test_the_bundled_models_envelope_is_derived_from_its_train_config():
    meta = read_meta("default")
    assert meta.envelope == {}  # the shipped meta.json is unchanged
    env = training_envelope(meta)
    # synth gsd_m 0.5, no after_gsd_m, no resolution_change; off_nadir 0.4 x 30 deg, epochs draw 10-100 % of it
    assert env.source == "train_config"
    assert env.gsd_min_m == pytest.approx(0.5) and env.gsd_max_m == pytest.approx(0.5)
    assert env.off_nadir_difference_max_deg == pytest.approx(0.4 * 30 * 0.9)
    assert env.unmeasured == ()


def test_envelope_of_a_fine_tuned_model_and_of_real_data():
    synth = {"gsd_m": 0.4, "after_gsd_m": 0.6, "resolution_change": 0.5, "off_nadir": 1.0, "max_off_nadir_deg": 20.0}
    env = synth_envelope(synth)
    assert (env.gsd_min_m, env.gsd_max_m) == pytest.approx((0.4, 0.6 + 0.35))
    assert env.off_nadir_difference_max_deg == pytest.approx(18.0)
    start = TrainingEnvelope(gsd_min_m=0.3, gsd_max_m=0.5, off_nadir_difference_max_deg=25.0)
    tuned = envelope_from_train_config({"data": ["review-export/"], "from": "default"}, start_envelope=lambda name: start)
    assert (tuned.gsd_min_m, tuned.gsd_max_m, tuned.off_nadir_difference_max_deg) == (0.3, 0.5, 25.0)
    assert tuned.unmeasured == ("review-export/",)
    unknown = envelope_from_train_config({"data": ["xbd:/data/xbd"], "from": "missing-model"}, start_envelope=lambda name: None)
    assert not unknown.known and unknown.unmeasured == ("xbd:/data/xbd", "from:missing-model")
    # no caution is raised from an unknown bound
    cells = {"before_gsd_m": "3.0", "after_gsd_m": "3.0", "before_off_nadir": "0", "after_off_nadir": "40"}
    assert caution_reasons(cells, unknown, CautionPolicy()) == []
    # round trip through meta.json's form
    assert TrainingEnvelope.from_dict(tuned.to_dict()) == TrainingEnvelope(0.3, 0.5, 25.0, "meta.json", ("review-export/",))


def test_caution_rules_known_answers():
    env = TrainingEnvelope(gsd_min_m=0.5, gsd_max_m=0.5, off_nadir_difference_max_deg=10.8)
    policy = CautionPolicy(gsd_factor=1.5, off_nadir_margin_deg=5.0)
    assert caution_reasons({"before_gsd_m": "0.5", "after_gsd_m": "0.74"}, env, policy) == []
    assert caution_reasons({"before_gsd_m": "0.5", "after_gsd_m": "1.8"}, env, policy) == ["gsd_outside_training:1.8m"]
    assert caution_reasons({"before_gsd_m": "0.3", "after_gsd_m": "0.5"}, env, policy) == ["gsd_outside_training:0.3m"]
    # the stated (native) GSD of a STAC item wins over the resampled raster's
    assert caution_reasons({"before_gsd_m": "0.5", "after_gsd_m": "0.5", "after_stated_gsd_m": "1.2"}, env, policy) == ["gsd_outside_training:1.2m"]
    # off-nadir: 10.8 + 5 = 15.8 degrees allowed
    assert caution_reasons({"before_off_nadir": "5", "after_off_nadir": "20"}, env, policy) == []
    both = caution_reasons({"before_gsd_m": "1.6", "after_gsd_m": "0.5", "before_off_nadir": "2", "after_off_nadir": "30"}, env, policy)
    assert both == ["gsd_outside_training:1.6m", "off_nadir_difference:28deg"]
    # a rule switched off, and cells without the metadata (plain GeoTIFFs have no angle)
    assert caution_reasons({"before_gsd_m": "1.6", "after_gsd_m": "0.5"}, env, CautionPolicy(gsd_factor=None)) == []
    assert caution_reasons({"before_gsd_m": "", "after_gsd_m": "nan", "before_off_nadir": ""}, env, policy) == []


def test_policy_settings_are_checked():
    with pytest.raises(ConfigError, match="detect.caution_gsd_factor"):
        DetectConfig(caution_gsd_factor=0.5)
    with pytest.raises(ConfigError, match="detect.caution_off_nadir_margin_deg"):
        DetectConfig(caution_off_nadir_margin_deg=-1.0)
    assert DetectConfig(caution_gsd_factor=None, caution_off_nadir_margin_deg=None).caution


def test_a_coarse_after_epoch_is_cautioned_and_a_native_one_is_not(runs):
    native = read_scores(runs["native"])
    coarse = read_scores(runs["coarse"])
    assert sum(r.ok for r in native) >= 5 and sum(r.ok for r in coarse) >= 5
    assert all(r.caution == "" for r in native)
    for r in coarse:
        if r.ok:
            assert float(r.pair["after_gsd_m"]) == pytest.approx(1.0, rel=1e-6)
            assert split_caution(r.caution) == ["gsd_outside_training:1m"], r.site_id
        else:
            assert r.caution == ""  # only assessed pairs carry a caution
    header = (runs["coarse"] / SCORES_CSV).read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[8] == "caution"  # right after the leading columns


def test_a_caution_changes_no_score_rank_or_flag(runs):
    on = {r.site_id: (r.score, r.rank, r.flagged, r.status) for r in read_scores(runs["coarse"])}
    off_rows = read_scores(runs["coarse_off"])
    assert {r.site_id: (r.score, r.rank, r.flagged, r.status) for r in off_rows} == on
    assert all(r.caution == "" for r in off_rows)
    header = (runs["coarse_off"] / SCORES_CSV).read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "caution" not in header


def test_the_run_verifies_and_the_report_counts_the_cautions(runs):
    for name in ("native", "coarse", "coarse_off"):
        report = verify_run(runs[name])
        assert report.ok, (name, report)
    html = (runs["coarse"] / "report.html").read_text(encoding="utf-8")
    n = sum(1 for r in read_scores(runs["coarse"]) if r.caution)
    assert f"<tr><th>with a caution</th><td>{n} " in html
    assert "<tr><td>gsd_outside_training</td><td>" + str(n) + "</td></tr>" in html
    flagged = [r for r in read_scores(runs["coarse"]) if r.flagged]
    assert flagged
    assert html.count('<div class="caution">caution: gsd_outside_training:1m') == min(len(flagged), DetectConfig().report_max_sites)
    assert "<tr><th>with a caution</th><td>0 " in (runs["native"] / "report.html").read_text(encoding="utf-8")


def test_scores_csv_round_trip_and_older_runs_without_the_column(tmp_path):
    rows = [
        ScoreRow("a", 10.0, 50.0, 0.9, 1, "ok", "", True, caution="gsd_outside_training:1.8m;off_nadir_difference:28deg"),
        ScoreRow("b", 10.1, 50.1, None, None, "cannot_assess", "outside_after_coverage"),
    ]
    write_scores(tmp_path, rows, score_decimals=6)
    back = read_scores(tmp_path)
    assert [r.caution for r in back] == [rows[0].caution, ""]
    assert split_caution(back[0].caution) == ["gsd_outside_training:1.8m", "off_nadir_difference:28deg"]
    # a scores.csv written before the column existed reads as "no caution"
    path = tmp_path / SCORES_CSV
    with open(path, newline="", encoding="utf-8") as fh:
        table = list(csv.reader(fh))
    col = table[0].index("caution")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([r[:col] + r[col + 1 :] for r in table])
    old = read_scores(tmp_path)
    assert [r.caution for r in old] == ["", ""] and old[0].score == pytest.approx(0.9)
    assert math.isclose(old[0].lon, 10.0)


def test_the_review_site_page_shows_the_caution(runs, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from review.app import create_app
    from review.config import ReviewConfig
    from review.runfolder import RunFolder

    run = Path(shutil.copytree(runs["coarse"], tmp_path / "run"))
    folder = RunFolder(run)
    site = next(s for s in folder.sites if s.ok)
    assert site.caution == "gsd_outside_training:1m"
    client = TestClient(create_app(run, ReviewConfig(rerank_every=0)))
    client.get("/queue?reviewer=ann")
    page = client.get(f"/site/{site.index}").text
    assert 'id="caution"' in page and "caution: gsd_outside_training:1m" in page
    native = Path(shutil.copytree(runs["native"], tmp_path / "native"))
    client = TestClient(create_app(native, ReviewConfig(rerank_every=0)))
    client.get("/queue?reviewer=ann")
    ok = next(s for s in RunFolder(native).sites if s.ok)
    assert 'id="caution"' not in client.get(f"/site/{ok.index}").text
