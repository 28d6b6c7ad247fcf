"""``sitewatch train``: train or fine-tune the Siamese change model on labelled pairs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sitewatch.commands._common import add_config_options, info, load_job_config, progress_disabled
from sitewatch.errors import UsageError

NAME = "train"
HELP = "train or fine-tune the change model on labelled datasets"
DESCRIPTION = """\
Train (or fine-tune) the Siamese change-detection model and write a checkpoint folder that
`sitewatch detect --model` and `sitewatch evaluate --model` accept.

DATASET is one of:
  FOLDER          a labelled dataset: sites.csv (site_id, lon, lat, damage|label), before/, after/
  synth:N         N synthetic sites generated on the fly (cached)
  xbd:PATH        the public xBD layout (images/*_pre_disaster.png, labels/*_post_disaster.json)

Pairs are cut through the tiles stage once and cached; validation is held out by area (tile,
scene or spatial block), never by random site. The best epoch by validation average precision
is kept, a temperature is fitted on validation data and the operating points "screening"
(recall ~0.9) and "evidence" (precision ~0.9) are stored in the checkpoint. An interrupted run
resumes when started again with the same arguments.

examples:
  sitewatch train --config configs/train-default.yaml --out models/default
  sitewatch train --data labelled/ --from default --out my-model --epochs 8
  sitewatch train --from-review RUN --out my-model
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DATASET", action="append", default=None, help="labelled dataset folder, synth:N or xbd:PATH (repeatable); default: train.data of the config file")
    parser.add_argument("--out", metavar="MODEL_DIR", required=True, help="checkpoint folder to write")
    parser.add_argument("--from", dest="init_from", metavar="default|MODEL_DIR", help="fine-tune from this checkpoint instead of ImageNet initialisation")
    parser.add_argument("--epochs", type=int, metavar="N", help="maximum epochs (overrides train.epochs)")
    parser.add_argument("--from-review", metavar="RUN", help="add the reviewed sites of a detect run folder (review export) and fine-tune that run's model")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if MODEL_DIR holds an interrupted run")
    add_config_options(parser)


def _review_dataset(run: Path, cache_dir: Path) -> tuple[Path, str]:
    """Export a run's verdicts as a labelled dataset; returns ``(folder, the run's model)``."""
    try:
        from review.export import export_dataset_summary
    except ImportError as exc:
        raise UsageError(f"--from-review needs the review stage (review.export.export_dataset), which is not available: {exc}") from None
    if not run.is_dir():
        raise UsageError(f"--from-review {run}: no such run folder (the output of sitewatch detect)")
    import hashlib

    key = hashlib.sha256(str(run.resolve()).encode()).hexdigest()[:16]
    summary = export_dataset_summary(run, cache_dir / "review-export" / key)
    if not summary.exported:
        raise UsageError(
            f"--from-review {run}: no site of the run has a decided verdict yet ({summary.skipped_undecided} "
            f"undecided); review sites first (sitewatch review {run}), then train again"
        )
    folder = summary.out_dir
    from detect.runfolder import read_manifest

    # export_dataset has read the run folder through the run folder contract: its manifest is readable
    model = read_manifest(run).model.path or "default"
    return Path(folder), model


def run(args: argparse.Namespace) -> int:
    from sitewatch.jobs import TrainJob

    if args.epochs is not None and args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    job = load_job_config(TrainJob, args, {"train.epochs": ("--epochs", args.epochs), "train.data": ("--data", args.data)})
    from train.datasets import default_cache_dir
    from train.trainer import format_metric, train_model

    specs = list(job.train.data)
    init_from = args.init_from
    if args.from_review:
        folder, run_model = _review_dataset(Path(args.from_review), default_cache_dir(job.train.cache_dir))
        specs.append(str(folder))
        if init_from is None:
            init_from = run_model
            info(f"fine-tuning the run's model: {run_model}", args)
    if not specs:
        raise UsageError("no training data: pass --data DATASET (a folder, synth:N or xbd:PATH), --from-review RUN, or train.data in --config")
    if init_from and init_from != "default" and not Path(init_from).is_dir():
        raise UsageError(f"--from {init_from}: no such checkpoint folder; give 'default' or a folder written by sitewatch train")
    out = Path(args.out)
    info(f"training on {', '.join(specs)} -> {out}", args)
    result = train_model(
        specs, out, tiles=job.tiles, model=job.model, train=job.train, synth=job.synth, init_from=init_from,
        progress=None if not progress_disabled(args) else False,
        on_epoch=lambda s: info(s.line(job.train.epochs), args), resume=not args.no_resume,
    )
    m = result.meta.metrics
    v = m["validation"]
    info(
        f"best epoch {m['best_epoch']}: validation AUC {format_metric(v['roc_auc'])} AP {format_metric(v['average_precision'])}; "
        f"temperature {result.meta.temperature:.3f}, ECE {format_metric(m['ece_before_calibration'])} -> {format_metric(m['ece_after_calibration'])}; "
        f"operating points " + ", ".join(f"{k} {t:.3f}" for k, t in result.meta.operating_points.items()),
        args,
    )
    info(f"wrote {out}", args)
    return 0
