"""benchmarks/bench_generalisation.py: run for real (subprocess, real rasters, real models).

The synthetic test needs nothing outside the repository; the realdata tests use ../shared/data
(skipped when absent) and check that the table holds real numbers and that every labelled site
is either scored or counted as cannot_assess.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_generalisation.py"


def load_bench():
    """The benchmark script as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("bench_generalisation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, mod)  # dataclasses look their module up by name
    spec.loader.exec_module(sys.modules[spec.name])  # type: ignore[union-attr]
    return sys.modules[spec.name]


def run_bench(args: list[str], tmp_path: Path, shared: Path | None = None) -> dict:
    out = tmp_path / "table.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SITEWATCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    if shared is not None:
        env["SITEWATCH_SHARED_DATA"] = str(shared)
        env["SITEWATCH_CACHE"] = os.environ.get("SITEWATCH_CACHE", str(tmp_path / "cache"))  # reuse cut pairs across runs
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--work", str(tmp_path / "work"), "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "AUC" in proc.stdout and "bAUC" in proc.stdout
    return json.loads(out.read_text())


def finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def check_accounted(table: dict) -> None:
    """Every binary-labelled site of a set is scored or counted as cannot_assess, never dropped."""
    for s in table["sets"]:
        c = s["counts"]
        labelled = s["limit"] or (c["positives"] + c["negatives"])
        na = sum(v["positive"] + v["negative"] for v in s["not_assessed"].values())
        assert s["pairs"] + na == labelled, s


def check_zero_shot(row: dict) -> None:
    assert 0.0 <= row["auc"] <= 1.0 and 0.0 <= row["ap"] <= 1.0
    assert row["auc_lo"] <= row["auc"] <= row["auc_hi"]
    for key in ("screening_false_alarm", "screening_recall", "evidence_false_alarm", "evidence_recall", "baseline_auc", "baseline_ap"):
        assert finite(row[key]) and 0.0 <= row[key] <= 1.0, key
    assert row["n"] == row["positives"] + row["negatives"] and row["positives"] > 0 and row["negatives"] > 0


# ---- pieces, known answers --------------------------------------------------------------------


def test_flag_figures_and_auc_interval_known_answer():
    bench = load_bench()
    y = np.array([1, 1, 0, 0, 0, 0])
    fa, rec = bench.flag_figures(y, np.array([True, False, True, False, False, False]))
    assert fa == pytest.approx(0.25) and rec == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.3).astype(int)
    s = y + rng.normal(0, 0.8, 400)
    lo, hi = bench.auc_interval(y, s, seed=0)
    from train.metrics import roc_auc

    assert lo < roc_auc(y, s) < hi and hi - lo < 0.15


def test_figures_baseline_flags_as_many_as_the_model():
    bench = load_bench()
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    probs = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.1, 0.1])
    base = np.array([0.0, 5.0, 4.0, 3.0, 0.0, 0.0, 0.0, 0.0])
    row = bench.figures(y, probs, {"screening": 0.5, "evidence": 0.85}, base, seed=0)
    assert row["screening_flagged"] == 3
    assert row["screening_false_alarm"] == pytest.approx(1 / 5) and row["screening_recall"] == pytest.approx(2 / 3)
    assert row["evidence_false_alarm"] == 0.0 and row["evidence_recall"] == pytest.approx(1 / 3)
    # the baseline's top 3 are sites 1, 2, 3: two damaged, one intact
    assert row["baseline_screening_recall"] == pytest.approx(2 / 3) and row["baseline_screening_false_alarm"] == pytest.approx(1 / 5)


def test_parse_data_arg_names_what_is_wrong(tmp_path):
    bench = load_bench()
    with pytest.raises(SystemExit, match="NAME=FOLDER"):
        bench.parse_data_arg("just-a-folder")
    with pytest.raises(SystemExit, match="no sites.csv"):
        bench.parse_data_arg(f"x={tmp_path}")
    (tmp_path / "sites.csv").write_text("site_id,lon,lat,damage\n")
    with pytest.raises(SystemExit, match="no such labels file"):
        bench.parse_data_arg(f"x={tmp_path}:{tmp_path / 'missing.csv'}")
    ls = bench.parse_data_arg(f"x={tmp_path}")
    assert ls.name == "x" and ls.folder == tmp_path and ls.labels_csv is None and ls.label_column == "damage"


# ---- simulated review queues ------------------------------------------------------------------


def test_queues_are_the_review_apps_own_orders(tmp_path):
    bench = load_bench()
    from review.config import ReviewConfig
    from review.queue import ReviewQueues, validation_sample
    from review.runfolder import RunFolder
    from review.store import VerdictStore
    from tests.review.make_run import write_run

    scores = np.array([0.2, 0.9, 0.55, 0.1, 0.48, 0.9, 0.7])
    reviewed = np.zeros(scores.size, dtype=bool)
    # top: highest first, ties in input order
    assert bench.pick_verdicts("top", scores, 0.5, reviewed, 3, seed=0).tolist() == [1, 5, 6]
    # uncertainty: nearest the threshold first
    assert bench.pick_verdicts("uncertainty", scores, 0.5, reviewed, 3, seed=0).tolist() == [4, 2, 6]
    # random: the app's seeded validation sample, in its order
    assert bench.pick_verdicts("random", scores, 0.5, reviewed, 7, seed=3).tolist() == validation_sample(7, 7, 3).tolist()
    reviewed[[1, 5]] = True  # already reviewed sites are skipped, the order continues
    assert bench.pick_verdicts("top", scores, 0.5, reviewed, 2, seed=0).tolist() == [6, 2]
    with pytest.raises(ValueError, match="top, uncertainty, random"):
        bench.queue_order("mixed", scores, 0.5, seed=0)
    # the same functions order the app's queues of a real run folder
    run = RunFolder(write_run(tmp_path / "run", 12))
    queues = ReviewQueues(run, VerdictStore(run.path / "review.sqlite"), ReviewConfig(validation_size=5, validation_seed=2))
    ok = [s for s in run.sites if s.ok]
    ok_scores = np.array([s.score for s in ok])
    assert queues.order("score")[: len(ok)] == [ok[i].index for i in bench.queue_order("top", ok_scores, queues.threshold, seed=0)]
    assert queues.order("uncertainty") == [ok[i].index for i in bench.queue_order("uncertainty", ok_scores, queues.threshold, seed=0)]
    assert queues.order("validation") == [ok[i].index for i in bench.queue_order("random", ok_scores, queues.threshold, seed=2)[:5]]


def tiny_pairs(n: int = 120, seed: int = 0):
    """A small labelled PairSet (blank images) whose labels a 4-D embedding carries."""
    from train.pairs import PairSet

    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.2).astype(np.int8)
    return PairSet(
        images=np.zeros((n, 2, 3, 8, 8), np.uint8), labels=labels, groups=np.array(["g"] * n), site_ids=np.array([f"s{i}" for i in range(n)]),
        lon=np.zeros(n), lat=np.zeros(n), scenes=np.array(["x"] * n), damage=np.where(labels == 1, "destroyed", "no-damage"),
        name="tiny", data_hash="0", gsd_m=0.5,
    )


def test_rerank_rounds_lift_a_weak_start_on_a_tiny_labelled_set(tmp_path):
    bench = load_bench()
    from train.metrics import roc_auc

    pairs = tiny_pairs()
    rng = np.random.default_rng(1)
    y = pairs.labels.astype(float)
    embeddings = np.stack([3 * y + rng.normal(0, 1, y.size), rng.normal(0, 1, y.size), rng.normal(0, 1, y.size), rng.normal(0, 1, y.size)], axis=1)
    start = np.clip(0.3 + 0.2 * y + rng.normal(0, 0.25, y.size), 0.01, 0.99)  # a weak starting model
    base = rng.random(y.size)
    for queue in ("top", "uncertainty", "random"):
        rows = bench.verdict_rounds(pairs, base, "default", start, {"screening": 0.5, "evidence": 0.9}, queue=queue, counts=[5, 40, 80],
                                    job=None, work=tmp_path, seed=0, method="rerank", embeddings=embeddings)
        assert [r["verdicts"] for r in rows] == [5, 40, 80]
        assert "re-rank not fitted" in rows[0]["note"]  # 5 verdicts: under review.rerank_min_labels
        for r in rows[1:]:
            assert r["n"] == len(pairs) - r["verdicts"] and 0 <= r["reviewed_positive"] <= r["verdicts"]
            assert r["auc"] > r["zero_shot_auc_on_rest"] + 0.05, (queue, r)
    # the top queue of round one is the starting model's top 40
    rows = bench.verdict_rounds(pairs, base, "default", start, {"screening": 0.5}, queue="top", counts=[40], job=None, work=tmp_path,
                                seed=0, method="rerank", embeddings=embeddings)
    top40 = np.argsort(-start, kind="stable")[:40]
    assert rows[0]["reviewed_positive"] == int(pairs.labels[top40].sum())
    rest = np.setdiff1d(np.arange(len(pairs)), top40)
    assert rows[0]["zero_shot_auc_on_rest"] == pytest.approx(roc_auc(pairs.labels[rest], start[rest]))


# ---- the whole command on generated imagery ---------------------------------------------------


def test_runs_on_a_generated_set_with_a_labels_file(tmp_path):
    from tiles.synth.config import SynthConfig
    from tiles.synth.dataset import generate_dataset
    from tiles.types import damage_to_label

    data = tmp_path / "synth"
    generate_dataset(data, SynthConfig(sites=24, size_px=512, seed=3), progress=False)
    with open(data / "sites.csv", newline="", encoding="utf-8") as fh:
        sites = list(csv.DictReader(fh))
    # a label file of our own: the first damaged site is marked unsure (empty), the rest kept
    first_pos = next(i for i, r in enumerate(sites) if damage_to_label(r["damage"]) == 1)
    with open(tmp_path / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["site_id", "damage"])
        for i, r in enumerate(sites):
            w.writerow([r["site_id"], "" if i == first_pos else r["damage"]])
    table = run_bench(["--data", f"mine={data}:{tmp_path / 'labels.csv'}", "--sets", "mine", "--no-finetune"], tmp_path)
    (s,) = table["sets"]
    want_pos = sum(1 for r in sites if damage_to_label(r["damage"]) == 1) - 1
    assert s["name"] == "mine" and s["counts"]["positives"] == want_pos
    assert s["counts"]["left_out"].get("(none)") == 1
    check_accounted(table)
    rows = {r["row"]: r for r in table["rows"]}
    assert set(rows) == {"zero-shot", "adapted"}
    check_zero_shot(rows["zero-shot"])
    assert rows["zero-shot"]["n"] == s["pairs"]


# ---- real imagery -----------------------------------------------------------------------------


@pytest.mark.realdata
def test_turkey_weak_and_by_eye_rows_hold_real_numbers(shared_data, tmp_path):
    table = run_bench(["--sets", "turkey-eq-2023-dev,turkey-eq-2023-dev-byeye", "--limit", "60", "--no-finetune"], tmp_path, shared=shared_data)
    names = {s["name"]: s for s in table["sets"]}
    assert set(names) == {"turkey-eq-2023-dev", "turkey-eq-2023-dev-byeye"}
    assert names["turkey-eq-2023-dev"]["kind"] == "weak" and names["turkey-eq-2023-dev-byeye"]["kind"] == "by-eye"
    assert names["turkey-eq-2023-dev-byeye"]["counts"]["positives"] == 20  # the committed label file
    check_accounted(table)
    for r in table["rows"]:
        if r["row"] == "zero-shot":
            check_zero_shot(r)


@pytest.mark.realdata
@pytest.mark.slow
def test_verdict_rounds_on_santa_rosa(shared_data, tmp_path):
    table = run_bench(
        ["--sets", "xbd-santa-rosa-dev", "--limit", "90", "--verdicts", "30", "--epochs", "1"], tmp_path, shared=shared_data,
    )
    check_accounted(table)
    (s,) = table["sets"]
    rounds = [r for r in table["rows"] if r.get("verdicts") == 30]
    assert {r["queue"] for r in rounds} == {"top", "uncertainty", "random"}
    for r in rounds:
        assert r["minutes"] > 0
        if "auc" in r:  # a round either has figures on the unreviewed rest or says why training failed
            assert r["n"] == s["pairs"] - 30 and finite(r["auc"]) and finite(r["zero_shot_auc_on_rest"])
        else:
            assert r["note"].startswith("fine-tuning failed")
