"""Training and evaluation figures on real imagery (../shared/data), each beside its baseline.

Every sub-benchmark prints the model's figures and the non-learned pixel-difference baseline
computed in the same run on the same pairs, so ratios are measured side by side.

    python benchmarks/bench_train.py zero-shot --model default
    python benchmarks/bench_train.py cv --from default --folds 5 --epochs 4
    python benchmarks/bench_train.py sensor --from default --epochs 4
    python benchmarks/bench_train.py joplin --model default
    python benchmarks/bench_train.py speed

Set ``SITEWATCH_SHARED_DATA`` when the data is not at ``../shared/data``; cut pairs are cached
(``SITEWATCH_CACHE``), so the first run of each takes longer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sitewatch.config import load_config  # noqa: E402
from sitewatch.jobs import TrainJob  # noqa: E402
from tiles.config import TilesConfig  # noqa: E402
from train.baseline import pixel_difference_score  # noqa: E402
from train.datasets import PairSet, default_cache_dir, load_labelled_folder  # noqa: E402
from train.metrics import average_precision, precision_recall_at_k, roc_auc  # noqa: E402

SHARED = Path(os.environ.get("SITEWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
DEV = SHARED / "xbd-santa-rosa-dev"
JOPLIN = SHARED / "joplin-tornado"


def dev_pairs(tiles: TilesConfig) -> PairSet:
    return load_labelled_folder(DEV, tiles, cache_dir=default_cache_dir(), progress=False)


def score(model: str | Path, ps: PairSet) -> np.ndarray:
    from models.inference import Scorer

    scorer = Scorer(model)
    return np.concatenate([scorer.score(ps.as_float(slice(i, i + 128))).prob for i in range(0, len(ps), 128)])


def line(name: str, y: np.ndarray, s: np.ndarray, k: int = 50) -> str:
    pk, rk = precision_recall_at_k(y, s, k)
    return f"{name:<26} n={len(y):5d} pos={int(y.sum()):4d}  AUC {roc_auc(y, s):.4f}  AP {average_precision(y, s):.4f}  P@{k} {pk:.3f}"


def zero_shot(args: argparse.Namespace) -> None:
    ps = dev_pairs(TilesConfig())
    t0 = time.perf_counter()
    prob = score(args.model, ps)
    dt = time.perf_counter() - t0
    y = ps.labels
    print(f"xbd-santa-rosa-dev ({len(ps)} pairs cut, {DEV})")
    print(line(f"model {args.model}", y, prob))
    print(line("pixel-difference baseline", y, pixel_difference_score(ps.images)))
    print(f"scoring: {len(ps) / dt:.1f} pairs/s")


def _train_eval(train: PairSet, test: PairSet, args: argparse.Namespace, out: Path) -> np.ndarray:
    from train.trainer import train_model

    overrides = {"train.epochs": args.epochs, "train.threads": args.threads, "train.lr": args.lr, "train.seed": args.seed}
    job = load_config(TrainJob, args.config, overrides)
    t0 = time.perf_counter()
    res = train_model([], out, tiles=job.tiles, model=job.model, train=job.train, synth=job.synth, init_from=args.init_from, extra_sets=[train], progress=False)
    secs = time.perf_counter() - t0
    per_epoch = [h.seconds for h in res.history]
    print(f"  trained on {len(train)} pairs in {secs:.0f} s ({np.mean(per_epoch):.0f} s/epoch incl. validation, best epoch {res.best_epoch})")
    return score(out, test)


def cross_validation(args: argparse.Namespace) -> None:
    from train.splits import grouped_kfold

    ps = dev_pairs(TilesConfig())
    folds = grouped_kfold(ps.groups, args.folds, seed=args.seed, labels=ps.labels)
    oof = np.full(len(ps), np.nan)
    base = pixel_difference_score(ps.images)
    aucs = []
    with tempfile.TemporaryDirectory() as tmp:
        for f, (tr, te) in enumerate(folds):
            print(f"fold {f + 1}/{args.folds}: {np.unique(ps.groups[te]).size} test tiles")
            oof[te] = _train_eval(ps.subset(tr), ps.subset(te), args, Path(tmp) / f"fold{f}")
            aucs.append(roc_auc(ps.labels[te], oof[te]))
            print("  " + line("fine-tuned", ps.labels[te], oof[te]))
            print("  " + line("baseline", ps.labels[te], base[te]))
    print(f"grouped {args.folds}-fold CV by tile (out-of-fold, pooled):")
    print(line("fine-tuned", ps.labels, oof))
    print(line("pixel-difference baseline", ps.labels, base))
    print(f"per-fold AUC mean {np.mean(aucs):.4f} (min {np.min(aucs):.4f})")


def _sensor_of_groups(ps: PairSet) -> np.ndarray:
    import rasterio

    sensors = {}
    for g in np.unique(ps.groups):
        with rasterio.open(DEV / "before" / f"{g}.tif") as ds:
            sensors[g] = ds.tags().get("SENSOR", "unknown")
    return np.array([sensors[g] for g in ps.groups])


def sensor_split(args: argparse.Namespace) -> None:
    ps = dev_pairs(TilesConfig())
    sensor = _sensor_of_groups(ps)
    base = pixel_difference_score(ps.images)
    names = sorted(set(sensor))
    print("before-image sensors:", {n: int((sensor == n).sum()) for n in names})
    with tempfile.TemporaryDirectory() as tmp:
        for a in names:
            for b in names:
                if a == b:
                    continue
                tr, te = np.nonzero(sensor == a)[0], np.nonzero(sensor == b)[0]
                print(f"train on {a} tiles, test on {b} tiles")
                prob = _train_eval(ps.subset(tr), ps.subset(te), args, Path(tmp) / f"{a}-{b}")
                print("  " + line("fine-tuned", ps.labels[te], prob))
                print("  " + line("zero-shot model", ps.labels[te], score(args.init_from or "default", ps.subset(te))))
                print("  " + line("baseline", ps.labels[te], base[te]))


def joplin(args: argparse.Namespace) -> None:
    from tiles.catalog import RasterCatalog
    from tiles.cut import PairCutter
    from tiles.sites import read_sites

    sites = read_sites(JOPLIN / "sites.csv")
    before = RasterCatalog.from_paths([JOPLIN / "before"], epoch="before")
    after = RasterCatalog.from_paths([JOPLIN / "after"], epoch="after")
    imgs, refs, ids = [], [], []
    reasons: dict[str, int] = {}
    with PairCutter(before, after, TilesConfig()) as cutter:
        for pair in cutter.cut_many(sites):
            if not pair.ok:
                reasons[pair.meta.reason] = reasons.get(pair.meta.reason, 0) + 1
                continue
            imgs.append(np.clip(np.rint(np.nan_to_num(pair.image) * 255), 0, 255).astype(np.uint8))
            refs.append((pair.site.extra or {}).get("xview2_model_damage", ""))
            ids.append(pair.site.site_id)
    images = np.stack(imgs)
    refs_a = np.array(refs)
    from models.inference import Scorer

    scorer = Scorer(args.model)
    prob = np.concatenate([scorer.score(images[i : i + 128].astype(np.float32) / 255).prob for i in range(0, len(images), 128)])
    base = pixel_difference_score(images)
    print(f"joplin: {len(sites)} sites, {len(images)} assessable, cannot_assess {reasons}")
    has = refs_a != ""
    y = np.isin(refs_a, ["destroyed", "major-damage"]).astype(int)
    print(f"sites with an xview2_model_damage value: {int(has.sum())} ({int(y[has].sum())} major/destroyed)")
    print(line("model (ref sites only)", y[has], prob[has]))
    print(line("baseline (ref sites only)", y[has], base[has]))
    print(line("model (empty = negative)", y, prob))
    print(line("baseline (empty = negative)", y, base))
    thr = scorer.meta.operating_points.get("screening", 0.5)
    flag = prob >= thr
    agree = float(((flag == (y == 1)) & has).sum() / max(has.sum(), 1))
    print(f"screening threshold {thr:.3f}: flagged {int(flag.sum())}; agreement with the reference on ref sites {agree:.3f}")
    top = np.argsort(-prob)[:20]
    print("top 20 by model:", ", ".join(f"{ids[i]}({refs[i] or '-'})" for i in top))
    if args.chips:
        from PIL import Image

        out = Path(args.chips)
        out.mkdir(parents=True, exist_ok=True)
        rows = [np.concatenate([images[i, 0], images[i, 1]], axis=2) for i in top[:10]]
        Image.fromarray(np.concatenate(rows, axis=1).transpose(1, 2, 0)).save(out / "joplin_top10.png")
        print(f"wrote {out / 'joplin_top10.png'} (before | after, top 10; look at it, do not commit it)")


def speed(args: argparse.Namespace) -> None:
    """Training throughput on real dev pairs: one epoch over ~1,500 pairs, and scoring speed."""
    import torch

    from train.trainer import train_model

    ps = dev_pairs(TilesConfig())
    job = load_config(TrainJob, args.config, {"train.epochs": 1, "train.threads": args.threads, "train.val_fraction": 0.05})
    with tempfile.TemporaryDirectory() as tmp:
        res = train_model([], Path(tmp) / "m", tiles=job.tiles, model=job.model, train=job.train, synth=job.synth, init_from=args.init_from, extra_sets=[ps], progress=False)
    h = res.history[0]
    n_train, n_val = res.meta.metrics["n_train"], res.meta.metrics["n_val"]
    print(
        f"one epoch on {n_train} real pairs (+ validation on {n_val}): {h.seconds:.0f} s "
        f"({h.pairs_per_s:.1f} pairs/s training, threads={torch.get_num_threads()})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["zero-shot", "cv", "sensor", "joplin", "speed"])
    p.add_argument("--model", default="default")
    p.add_argument("--from", dest="init_from", default="default")
    p.add_argument("--config", default=str(REPO / "configs" / "train-finetune.yaml"))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chips", default="", help="folder for a PNG of Joplin's top-ranked pairs")
    args = p.parse_args()
    if args.init_from in ("", "none"):
        args.init_from = None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not DEV.is_dir():
        raise SystemExit(f"real data not found at {SHARED}; set SITEWATCH_SHARED_DATA")
    {"zero-shot": zero_shot, "cv": cross_validation, "sensor": sensor_split, "joplin": joplin, "speed": speed}[args.what](args)


if __name__ == "__main__":
    main()
