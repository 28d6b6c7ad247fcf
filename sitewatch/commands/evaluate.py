"""``sitewatch evaluate``: a model on a labelled dataset, beside a non-learned baseline."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from sitewatch.commands._common import add_config_options, info, load_job_config, progress_disabled

NAME = "evaluate"
HELP = "measure a model on a labelled dataset (metrics, PR curve, reliability plot, baseline)"
DESCRIPTION = """\
Score every labelled pair of DATASET (a labelled folder, synth:N or xbd:PATH) with a model and
report ROC AUC, average precision, F1 at the operating point, precision/recall at top-k and the
expected calibration error, beside a non-learned baseline (normalised pixel difference over the
chip centre) computed in the same run. Writes metrics.json, scores.csv, pr_curve.png and
reliability.png into --out.

example:
  sitewatch evaluate --model default --data ../shared/data/xbd-santa-rosa-dev --out eval-dev
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="MODEL_DIR", default="default", help="checkpoint folder or 'default' (the bundled model)")
    parser.add_argument("--data", metavar="DATASET", help="labelled dataset folder, synth:N or xbd:PATH (default: evaluate.data of the config file)")
    parser.add_argument("--out", metavar="DIR", help="report folder (default: evaluation-<model>-<dataset>)")
    parser.add_argument("--threshold", type=float, metavar="P", help="probability threshold for F1/precision/recall (default: the model's operating point)")
    add_config_options(parser)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text.split(":", 1)[-1].rstrip("/")).name or text).strip("_") or "data"


def run(args: argparse.Namespace) -> int:
    from sitewatch.errors import UsageError
    from sitewatch.jobs import EvaluateJob

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold {args.threshold}: must be a probability in [0, 1]")
    job = load_job_config(EvaluateJob, args, {"evaluate.threshold": ("--threshold", args.threshold), "evaluate.data": ("--data", args.data)})
    if job.evaluate.data is None:
        raise UsageError("no dataset: pass --data DATASET (a folder, synth:N or xbd:PATH) or set evaluate.data in --config")
    from train.evaluation import evaluate_model

    out = Path(args.out or f"evaluation-{_slug(args.model)}-{_slug(job.evaluate.data)}")
    result = evaluate_model(args.model, out, tiles=job.tiles, evaluate=job.evaluate, progress=None if not progress_disabled(args) else False)
    info(f"{result.n_pairs} labelled pairs ({result.model.positives} positive) from {job.evaluate.data}", args)
    for line in result.lines():
        info(line, args)
    info(f"wrote {out}/metrics.json, scores.csv, pr_curve.png, reliability.png", args)
    return 0
