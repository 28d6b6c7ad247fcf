"""``sitewatch calibrate`` on a new event: fit on N random verified sites, judge on the rest.

For each labelled real set (the sets of ``bench_generalisation.py``), the model scores every pair
once (raw logits, as ``sitewatch detect`` writes them). Then, ``--draws`` times, ``--n`` sites are
drawn at random (what the review app's validation sample is) and calibrated with
:func:`models.calibration.fit_calibration`, the code ``sitewatch calibrate`` runs, under each
policy variant; the fitted ``screening`` threshold is applied to every site that was not drawn.
Each fit gets the model's own ``screening`` threshold as the parent (what ``sitewatch calibrate``
holds screening at when the sample has few damaged sites; ``--parent`` replaces it, e.g. to see
the rule with a model whose screening threshold is below the 0.5 cap).
Printed per set and policy: the share of draws the policy refused (too few damaged sites drawn),
the shares of accepted draws with fewer than ``calibration.trust_positives`` damaged sites among
those choosing the operating points (``few``) and whose screening was held at the parent's
threshold (``held``), and over the
accepted draws the median [10th-90th percentile] recall and intact-flagged share at
``screening`` on the rest, the share of draws whose recall on the rest is >= 0.8, and the
fitted temperature; beside it the model as shipped on the same rest.

    python benchmarks/bench_calibrate.py [--sets NAME,...] [--n 100] [--draws 200] [--parent P] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generalisation as bg  # noqa: E402

#: policy variants side by side (changes to :class:`models.config.CalibrationConfig`); the
#: first is the policy before the few-positives rule (min_positives 8, screening always fitted)
VARIANTS = {
    "old: min_positives 8, no hold": {"min_positives": 8, "trust_positives": 0},
    "min_positives 3, no hold": {"min_positives": 3, "trust_positives": 0},
    "default policy": {},
    "default, min_positives 2": {"min_positives": 2},
    "default + Clopper-Pearson 0.9 screening": {"screening_recall_confidence": 0.9},
    "default, T and points on all": {"temperature_share": None},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--sets", default="turkey-eq-2023-dev-byeye,xbd-santa-rosa-dev,turkey-eq-2023-dev")
    parser.add_argument("--n", type=int, default=100, help="verified sites per draw")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--parent", type=float, help="the parent screening threshold (default: the model's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sitewatch-bench-calibrate")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("models.calibration").setLevel(logging.ERROR)  # one warning per draw otherwise
    import torch

    torch.set_num_threads(args.threads)
    from models.calibration import fit_calibration, sigmoid
    from models.config import CalibrationConfig
    from sitewatch.errors import InputError
    from tiles.config import TilesConfig
    from train.datasets import default_cache_dir, load_labelled_folder
    from train.evaluation import score_pair_set

    tiles, cache = TilesConfig(), default_cache_dir()
    payload: dict[str, Any] = {"model": args.model, "n": args.n, "draws": args.draws, "parent": args.parent, "sets": {}}
    for ls in bg.select(bg.discover_sets(bg.SHARED, bg.LABELS_DIR), args.sets):
        folder, _ = bg.materialise(ls, args.work, seed=args.seed)
        pairs = load_labelled_folder(folder, tiles, cache_dir=cache, progress=False, name=ls.name)
        y = pairs.labels.astype(np.int64)
        probs, logits, meta = score_pair_set(args.model, pairs, batch_size=64, device="cpu", tta=False)
        shipped_thr = float(meta.operating_points.get("screening", 0.5)) if args.parent is None else args.parent
        rng = np.random.default_rng(args.seed)
        draws = [np.sort(rng.permutation(y.size)[: args.n]) for _ in range(args.draws)]
        print(f"\n{ls.name}: {y.size} pairs, {int(y.sum())} damaged; {args.draws} draws of {args.n} random verified sites "
              f"(~{args.n * y.mean():.1f} damaged per draw); parent screening p >= {shipped_thr:.3f}", flush=True)
        print(f"{'policy':<40} {'refused':>7} {'few':>4} {'held':>5} | {'recall on the rest [p10-p90]':>28} {'rec>=0.8':>8} "
              f"{'intact flagged [p10-p90]':>26} | {'T':>5}   (at screening)")
        set_rows = {}
        shipped = []
        for d in draws:
            rest = np.setdiff1d(np.arange(y.size), d)
            shipped.append(bg.flag_figures(y[rest], probs[rest] >= shipped_thr))
        shipped = np.array(shipped)
        print(f"{'(model as shipped)':<40} {'':>7} {'':>4} {'':>5} | {_q(shipped[:, 1]):>28} {np.mean(shipped[:, 1] >= 0.8):>8.0%} "
              f"{_q(shipped[:, 0]):>26} |")
        for name, changes in VARIANTS.items():
            policy = dataclasses.replace(CalibrationConfig(bootstrap=0), **changes)
            figs, temps, refused, held, few = [], [], 0, 0, 0
            for d in draws:
                try:
                    fit = fit_calibration(y[d], logits[d], policy, previous_temperature=meta.temperature,
                                          parent_screening=shipped_thr)
                except InputError:
                    refused += 1
                    continue
                rest = np.setdiff1d(np.arange(y.size), d)
                p = sigmoid(logits[rest] / fit.temperature)
                figs.append(bg.flag_figures(y[rest], p >= fit.points["screening"].threshold))
                temps.append(fit.temperature)
                held += fit.screening_rule.rule == "held"
                few += fit.screening_rule.rule != "fitted"
            f = np.array(figs) if figs else np.zeros((0, 2))
            row = {
                "refused": refused / len(draws), "accepted": len(figs), "held": held / max(len(figs), 1),
                "few_positives": few / max(len(figs), 1),
                "recall_median": float(np.median(f[:, 1])) if len(f) else None,
                "recall_p10": float(np.quantile(f[:, 1], 0.1)) if len(f) else None,
                "recall_ge_0.8": float(np.mean(f[:, 1] >= 0.8)) if len(f) else None,
                "recall_p90": float(np.quantile(f[:, 1], 0.9)) if len(f) else None,
                "false_alarm_median": float(np.median(f[:, 0])) if len(f) else None,
                "false_alarm_p10": float(np.quantile(f[:, 0], 0.1)) if len(f) else None,
                "false_alarm_p90": float(np.quantile(f[:, 0], 0.9)) if len(f) else None,
                "temperature_median": float(np.median(temps)) if temps else None,
            }
            set_rows[name] = row
            if not len(f):
                print(f"{name:<40} {refused / len(draws):>7.0%} {'':>4} {'':>5} | every draw refused")
                continue
            print(f"{name:<40} {refused / len(draws):>7.0%} {few / len(figs):>4.0%} {held / len(figs):>5.0%} | {_q(f[:, 1]):>28} {np.mean(f[:, 1] >= 0.8):>8.0%} "
                  f"{_q(f[:, 0]):>26} | {np.median(temps):5.2f}", flush=True)
        payload["sets"][ls.name] = {"n_pairs": int(y.size), "positives": int(y.sum()), "variants": set_rows,
                                    "shipped_recall_median": float(np.median(shipped[:, 1])),
                                    "shipped_false_alarm_median": float(np.median(shipped[:, 0]))}
    if args.json:
        args.json.write_text(json.dumps(bg.json_safe(payload), indent=1) + "\n", encoding="utf-8")
    return 0


def _q(v: np.ndarray) -> str:
    return f"{np.median(v):.0%} [{np.quantile(v, 0.1):.0%}-{np.quantile(v, 0.9):.0%}]"


if __name__ == "__main__":
    raise SystemExit(main())
