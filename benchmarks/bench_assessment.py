"""Does each "out of its depth" signal separate the model's errors? And does AdaBN help?

For every labelled real set (the sets of ``bench_generalisation.py``), the model scores every pair
with ``Scorer(signals=True)``: the logit spread over the 8 flips/rotations (``tta_spread``), the
sharpness ratio of the epochs (``|sharpness_ratio|``) and, with feature statistics, the
embedding's Mahalanobis distance from synthetic training pairs (``feature_distance``; the
statistics are fitted here on ``--synth N`` generated pairs when the checkpoint stores none).

Per signal: ``errAUC``, the ROC AUC of the signal for the model's errors at ``screening`` (an
intact site flagged or a damaged site missed; 0.5 = the signal knows nothing about errors),
``dmgAUC``, its AUC for damage itself (far from 0.5 = abstaining on it throws damaged sites
away), and what setting aside the ``--abstain`` share of sites with the highest signal does to the
rest: AUC, intact flagged and recall at ``screening``, beside setting aside the same share at
random (mean of 20 draws).

Then AdaBN: ``Scorer.adapt(the set's pairs, scope=...)`` for ``all`` and ``encoder``: AUC, intact
flagged and recall at screening.

    python benchmarks/bench_assessment.py [--model default] [--sets NAME,...] [--synth 400]
        [--abstain 0.1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generalisation as bg  # noqa: E402

SIGNALS = ("tta_spread", "abs_sharpness_ratio", "feature_distance")


def score_all(scorer: Any, pairs: Any, batch: int = 64) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(pairs), batch):
        r = scorer.score(pairs.as_float(slice(i, i + batch)))
        for key in ("prob", "logit", "embedding", "tta_spread", "feature_distance", "sharpness_ratio"):
            value = getattr(r, key)
            if value is not None:
                out.setdefault(key, []).append(np.asarray(value))
    return {k: np.concatenate(v) for k, v in out.items()}


def at(y: np.ndarray, p: np.ndarray, thr: float) -> dict[str, float]:
    from train.metrics import roc_auc

    fa, rec = bg.flag_figures(y, p >= thr)
    return {"auc": roc_auc(y, p), "false_alarm": fa, "recall": rec}


def signal_rows(y: np.ndarray, scores: dict[str, np.ndarray], thr: float, abstain: float, seed: int) -> list[dict[str, Any]]:
    from train.metrics import roc_auc

    p = scores["prob"]
    flagged = p >= thr
    error = (flagged & (y == 0)) | (~flagged & (y == 1))
    signals = {"tta_spread": scores.get("tta_spread"), "feature_distance": scores.get("feature_distance")}
    if "sharpness_ratio" in scores:
        signals["abs_sharpness_ratio"] = np.abs(scores["sharpness_ratio"])
    rng = np.random.default_rng(seed)
    k = int(round(abstain * y.size))
    rows = [{"signal": "(all sites)", **at(y, p, thr), "errors": int(error.sum()), "n": int(y.size)}]
    rand = [at(y[keep], p[keep], thr) for keep in (np.sort(rng.permutation(y.size)[k:]) for _ in range(20))]
    rows.append({"signal": f"(random {abstain:.0%} aside)", **{m: float(np.nanmean([r[m] for r in rand])) for m in ("auc", "false_alarm", "recall")}})
    for name in SIGNALS:
        s = signals.get(name)
        if s is None:
            rows.append({"signal": name, "note": "n/a (not computed)"})
            continue
        keep = np.sort(np.argsort(-s, kind="mergesort")[k:])
        aside = np.setdiff1d(np.arange(y.size), keep)
        rows.append({
            "signal": name, "errAUC": roc_auc(error.astype(int), s), "dmgAUC": roc_auc(y, s),
            **at(y[keep], p[keep], thr), "aside_damaged": int(y[aside].sum()), "aside_errors": int(error[aside].sum()),
            "signal_median": float(np.median(s)), "signal_p90": float(np.quantile(s, 0.9)),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--sets", default="turkey-eq-2023-dev-byeye,turkey-eq-2023-dev,xbd-santa-rosa-dev")
    parser.add_argument("--synth", type=int, default=400, help="synthetic pairs for feature statistics when the checkpoint has none (0 = skip)")
    parser.add_argument("--abstain", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sitewatch-bench-assessment")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from models.assessment import FeatureStats
    from models.inference import Scorer
    from tiles.config import TilesConfig
    from train.datasets import default_cache_dir, load_dataset, load_labelled_folder

    tiles, cache = TilesConfig(), default_cache_dir()
    scorer = Scorer(args.model, device="cpu", signals=True)
    stats_source = "checkpoint" if scorer.feature_stats is not None else None
    if scorer.feature_stats is None and args.synth:
        synth = load_dataset(f"synth:{args.synth}", tiles, cache_dir=cache, seed=1234, progress=False)
        plain = Scorer(args.model, device="cpu")
        emb = np.concatenate([plain.score(synth.as_float(slice(i, i + 64))).embedding for i in range(0, len(synth), 64)])
        scorer.feature_stats = FeatureStats.fit(emb)
        stats_source = f"fitted here on synth:{args.synth} (seed 1234)"
    thr = float(scorer.meta.operating_points.get("screening", 0.5))
    payload: dict[str, Any] = {"model": args.model, "feature_stats": stats_source, "abstain": args.abstain, "sets": {}}
    for ls in bg.select(bg.discover_sets(bg.SHARED, bg.LABELS_DIR), args.sets):
        folder, _ = bg.materialise(ls, args.work, seed=args.seed)
        pairs = load_labelled_folder(folder, tiles, cache_dir=cache, progress=False, name=ls.name)
        y = pairs.labels.astype(np.int64)
        scores = score_all(scorer, pairs)
        rows = signal_rows(y, scores, thr, args.abstain, args.seed)
        adapted = {}
        for scope in ("all", "encoder"):
            a = Scorer(args.model, device="cpu").adapt(pairs.as_float(), scope=scope)
            adapted[scope] = at(y, score_all(a, pairs)["prob"], thr)
        payload["sets"][ls.name] = {"n": int(y.size), "positives": int(y.sum()), "signals": rows, "adapt": adapted}
        print(f"\n{ls.name}: {y.size} pairs, {int(y.sum())} damaged; screening p >= {thr:.3f}; set aside {args.abstain:.0%} by each signal")
        print(f"{'signal':<22} {'errAUC':>6} {'dmgAUC':>6} | rest: {'AUC':>5} {'FA':>5} {'rec':>5} | aside: dmg err")
        for r in rows:
            if "note" in r:
                print(f"{r['signal']:<22} {r['note']}")
                continue
            print(f"{r['signal']:<22} {bg._num(r.get('errAUC')):>6} {bg._num(r.get('dmgAUC')):>6} | "
                  f"      {bg._num(r['auc']):>5} {bg._pct(r['false_alarm']):>5} {bg._pct(r['recall']):>5} | "
                  f"{r.get('aside_damaged', ''):>5} {r.get('aside_errors', '')}")
        zs = rows[0]
        print(f"AdaBN: zero-shot AUC {zs['auc']:.3f} FA {zs['false_alarm']:.0%} rec {zs['recall']:.0%}; " + "; ".join(
            f"{scope}: AUC {v['auc']:.3f} FA {v['false_alarm']:.0%} rec {v['recall']:.0%}" for scope, v in adapted.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(bg.json_safe(payload), indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
