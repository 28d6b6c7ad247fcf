"""What the per-epoch building head sees on real imagery: its parts' AUCs, set by set.

For a checkpoint trained with ``model.epoch_head: true`` and every labelled real set that
``benchmarks/bench_generalisation.py`` finds (the same sets, cut and cached the same way), prints
the ROC AUC of

* ``fused``: the site logit the Scorer reports (change path + ``epoch_gain * gone``);
* ``change``: the change path alone (``fused - epoch_gain * gone``, what the site score would be
  without the head's term);
* ``gone``: the head's ``logit(p_before * (1 - p_after))`` alone;
* ``1-p_after``: "no intact building stands after" alone (one epoch, no comparison at all);

and the mean ``p_before`` / ``p_after`` of damaged and intact sites, so one sees whether the head
judges each epoch on real imagery as it learned to on synthetic scenes. Plain pass, no TTA.

    python benchmarks/bench_epoch_head.py --model DIR [--sets NAME,...] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _bench_generalisation():
    spec = importlib.util.spec_from_file_location("bench_generalisation", HERE / "bench_generalisation.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["bench_generalisation"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a checkpoint folder with the per-epoch building head")
    parser.add_argument("--sets", help="comma-separated set names or patterns (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sitewatch-bench-epoch-head")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from models.inference import Scorer
    from models.siamese import gone_logit
    from tiles.config import TilesConfig
    from train.datasets import default_cache_dir, load_labelled_folder
    from train.metrics import roc_auc

    bg = _bench_generalisation()
    scorer = Scorer(args.model, device="cpu", threads=args.threads)
    if not scorer.meta.epoch_head:
        print(f"{args.model} has no per-epoch building head (meta.json epoch_head is false)")
        return 2
    gain = float(scorer._net.epoch_gain.detach())  # noqa: SLF001 (the learned weight of the head's term)
    tiles = TilesConfig()
    rows = []
    print(f"model {args.model}: epoch_gain {gain:.3f}")
    print(f"{'set':28} {'labels':9} {'n':>5} {'pos':>4} {'fused':>6} {'change':>6} {'gone':>6} {'1-p_after':>9} "
          f"{'p_b|pos':>7} {'p_a|pos':>7} {'p_b|neg':>7} {'p_a|neg':>7}")
    for ls in bg.select(bg.discover_sets(bg.SHARED, bg.LABELS_DIR), args.sets):
        folder, _ = bg.materialise(ls, args.work)
        pairs = load_labelled_folder(folder, tiles, cache_dir=default_cache_dir(None), progress=False, name=ls.name)
        logits, standing = [], []
        for start in range(0, len(pairs), 64):
            res = scorer.score(pairs.as_float(slice(start, start + 64)))
            logits.append(res.logit)
            standing.append(res.standing)
        fused = np.concatenate(logits)
        p = np.clip(np.concatenate(standing), 1e-7, 1 - 1e-7)
        gone = gone_logit(torch.from_numpy(np.log(p / (1 - p)))).double().numpy()
        y = pairs.labels.astype(np.int64)
        row = {
            "set": ls.name, "kind": ls.kind, "n": int(len(y)), "positives": int(y.sum()),
            "auc_fused": roc_auc(y, fused), "auc_change": roc_auc(y, fused - gain * gone),
            "auc_gone": roc_auc(y, gone), "auc_not_standing_after": roc_auc(y, 1 - p[:, 1]),
            "p_before_pos": float(p[y == 1, 0].mean()), "p_after_pos": float(p[y == 1, 1].mean()),
            "p_before_neg": float(p[y == 0, 0].mean()), "p_after_neg": float(p[y == 0, 1].mean()),
        }
        rows.append(row)
        print(f"{ls.name:28} {ls.kind:9} {row['n']:5d} {row['positives']:4d} {row['auc_fused']:6.3f} {row['auc_change']:6.3f} "
              f"{row['auc_gone']:6.3f} {row['auc_not_standing_after']:9.3f} {row['p_before_pos']:7.2f} {row['p_after_pos']:7.2f} "
              f"{row['p_before_neg']:7.2f} {row['p_after_neg']:7.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "epoch_gain": gain, "sets": rows}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
