"""Closing the loop, measured: review the top of the queue with known labels, retrain, re-rank.

On a labelled dataset (default: ``../shared/data/xbd-santa-rosa-dev``) this script acts as if
people reviewed a real run:

1. ``sitewatch detect`` with the bundled default model writes a run folder;
2. round k "reviews" the top sites of the current queue that nobody has reviewed yet (until
   50/100/200 are reviewed in all), writing the known labels as verdicts into the run's
   ``review.sqlite`` (reviewer ``oracle``) exactly as the web app does;
3. ``review.export.export_dataset`` turns the verdicts into a labelled dataset, and the default
   model is fine-tuned on it (``train.trainer.train_model``, the code behind
   ``sitewatch train --from-review RUN``);
4. the fine-tuned model scores every site again (pairs cut once by the tiles stage, scored with
   ``models.inference.Scorer``: the same pairs and model ``sitewatch detect`` would use), and the
   next round's queue is that ranking;
5. also the app's quick re-rank (a logistic head on the run's ``embeddings.npz``).

Printed: ROC AUC (severe = major-damage/destroyed vs no-damage) on the sites nobody had reviewed
after each round, and on the sites never reviewed in any round (one fixed set, so the rounds
compare side by side), for the default model, each fine-tuned model and the quick re-rank.

    python benchmarks/bench_review_loop.py [--data DIR] [--work DIR] [--rounds 50,100,200] [--epochs 6] [--model default]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from detect.agreement import roc_auc as agreement_roc_auc

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "xbd-santa-rosa-dev"


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC where a site the model could not score (NaN, e.g. cannot_assess) ranks lowest."""
    return agreement_roc_auc(np.asarray(labels, dtype=np.int64), np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf))


def read_truth(sites_csv: Path) -> dict[str, str]:
    with sites_csv.open(newline="", encoding="utf-8") as fh:
        return {r["site_id"]: r["damage"] for r in csv.DictReader(fh)}


def score_images(model_dir: str | Path, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Calibrated probabilities of uint8 pairs ``(N, 2, C, H, W)`` under a model."""
    from models.inference import Scorer

    scorer = Scorer(str(model_dir), device="auto")
    out = []
    for i in range(0, len(images), batch):
        out.append(scorer.score(images[i : i + batch].astype(np.float32) / 255.0).prob)
    return np.concatenate(out) if out else np.zeros(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sitewatch-review-loop"))
    parser.add_argument("--rounds", default="50,100,200", help="cumulative reviewed counts after each round")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="default", help="starting model: 'default' (bundled) or a checkpoint folder")
    parser.add_argument("--queue", choices=("score", "uncertainty"), default="score",
                        help="which review queue the simulated reviewers work through")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from detect.run import run_detect
    from review.export import export_dataset
    from review.rerank import rerank
    from review.runfolder import RunFolder
    from review.store import VerdictStore
    from sitewatch.config import build_config
    from sitewatch.jobs import DetectJob, TrainJob
    from tiles.types import damage_to_label
    from train.datasets import load_labelled_folder
    from train.trainer import train_model

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    truth = read_truth(args.data / "sites.csv")
    t0 = time.perf_counter()
    run_dir = work / "run"
    if not (run_dir / "manifest.json").is_file():
        job = build_config(DetectJob, {"detect": {"chips_top_n": 0}})
        run_detect(args.data / "sites.csv", [args.data / "before"], [args.data / "after"], run_dir, tiles=job.tiles, detect=job.detect,
                   model=args.model, progress=False)
    t_detect = time.perf_counter() - t0
    run = RunFolder(run_dir)
    store = VerdictStore.for_run(run_dir)
    if store.verdicts():
        raise SystemExit(f"{run_dir} already holds verdicts; use a fresh --work folder")

    # every binary-labelled site's pair, cut once by the tiles stage (train's cached reader)
    train_job = build_config(TrainJob, {"train": {"epochs": args.epochs, "threads": args.threads, "early_stopping_patience": 3}})
    t1 = time.perf_counter()
    pairs = load_labelled_folder(args.data, train_job.tiles, cache_dir=work / "cache", progress=False, name="all")
    t_cut = time.perf_counter() - t1
    ids = [str(s) for s in pairs.site_ids]
    labels = np.asarray(pairs.labels, dtype=int)
    run_scores = {s.site_id: s.score for s in run.sites}
    scores = {"default": np.array([run_scores.get(s, np.nan) for s in ids])}
    emb = run.embeddings()

    rounds = [int(x) for x in args.rounds.split(",")]
    reviewed: list[str] = []
    current = dict(run_scores)  # the queue: the current model's score per site
    threshold = float(run.threshold() if run.threshold() is not None else 0.5)
    results = []
    reviewed_after: dict[str, set[str]] = {}
    for k in rounds:
        if args.queue == "score":
            key = lambda s: -np.nan_to_num(current[s], nan=-1)  # noqa: E731
        else:  # nearest the current model's threshold first, as the app's uncertainty queue
            key = lambda s: abs(np.nan_to_num(current[s], nan=9.0) - threshold)  # noqa: E731
        queue = sorted((s for s in current if s not in set(reviewed) and s in truth), key=key)
        batch = queue[: max(0, k - len(reviewed))]
        for sid in batch:
            store.add_verdict(sid, "oracle", truth[sid], note="known label (bench_review_loop)")
        reviewed += batch
        reviewed_after[f"round{k}"] = set(reviewed)
        positives = sum(1 for s in reviewed if damage_to_label(truth[s]) == 1)
        export = export_dataset(run_dir, work / f"export_{k}")
        tr = time.perf_counter()
        model_dir = work / f"model_{k}"
        try:
            train_model([str(export)], model_dir, tiles=train_job.tiles, model=train_job.model, train=train_job.train, synth=train_job.synth, init_from=args.model, progress=False, resume=False)
            scores[f"round{k}"] = score_images(model_dir, pairs.images)
            points = json.loads((model_dir / "meta.json").read_text()).get("operating_points") or {}
            threshold = float(points.get("screening", threshold))
            note = ""
        except Exception as exc:  # report, do not hide: e.g. one class only in the reviewed set
            note = f"training failed: {exc}"
            scores[f"round{k}"] = scores["default"]
        t_train = time.perf_counter() - tr
        current = dict(zip(ids, scores[f"round{k}"].tolist()))
        if emb is not None:
            lab = {s: damage_to_label(truth[s]) for s in reviewed if damage_to_label(truth[s]) is not None}
            e_ids, e = emb
            rr = rerank(e_ids, e, np.array([run_scores.get(s, np.nan) for s in e_ids]), lab, min_labels=4)  # type: ignore[arg-type]
            if rr is not None:
                scores[f"rerank{k}"] = np.array([rr.prob.get(s, np.nan) for s in ids])
        results.append({"round": k, "reviewed": len(reviewed), "positives_reviewed": positives, "train_s": round(t_train, 1), "note": note})

    final_unreviewed = np.array([s not in set(reviewed) for s in ids])
    print(f"data: {args.data} ({len(ids)} binary-labelled sites, {int(labels.sum())} severe); start model {args.model}, {args.queue} queue; "
          f"detect {t_detect:.0f} s, cut {t_cut:.0f} s")
    print(f"{'model':<16} {'reviewed':>8} {'severe':>6} {'AUC unreviewed-now':>19} {'n':>5} {'AUC never-reviewed':>19} {'n':>5}")
    print(f"{'default':<16} {0:>8} {0:>6} {roc_auc(labels, scores['default']):>19.4f} {len(ids):>5} "
          f"{roc_auc(labels[final_unreviewed], scores['default'][final_unreviewed]):>19.4f} {int(final_unreviewed.sum()):>5}")
    for r in results:
        k = r["round"]
        now = np.array([s not in reviewed_after[f'round{k}'] for s in ids])
        for name in (f"round{k}", f"rerank{k}"):
            if name not in scores:
                continue
            sc = scores[name]
            label = f"fine-tuned@{k}" if name.startswith("round") else f"quick-rerank@{k}"
            print(f"{label:<16} {r['reviewed']:>8} {r['positives_reviewed']:>6} {roc_auc(labels[now], sc[now]):>19.4f} {int(now.sum()):>5} "
                  f"{roc_auc(labels[final_unreviewed], sc[final_unreviewed]):>19.4f} {int(final_unreviewed.sum()):>5}"
                  + (f"  ({r['note']})" if r["note"] and name.startswith("round") else ""))
    (work / "loop_results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
