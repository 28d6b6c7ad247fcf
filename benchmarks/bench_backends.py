"""Inference backends side by side: torch (the default) against ONNX Runtime and OpenVINO.

On the bundled model (or ``--model``), in one run:

1. speed: pairs per second of every backend on the same in-memory batch, rounds interleaved
   (each backend once per round, median over rounds) so load from other processes hits all alike;
   the ratios against the torch path (``Scorer``: channels_last, bfloat16 autocast where the CPU
   has native bfloat16) are the robust figures;
2. ranking: every backend scores the same labelled pairs (xBD Santa Rosa dev through the tiles
   path: ``destroyed`` = 1, ``no-damage`` = 0, ``cannot_assess`` and other grades left out; the cut
   pairs are cached in ``--workdir``), and the AUC of each is compared with torch's (the project
   adopts a backend only when it is at least 1.5x faster *and* its AUC differs by < 0.001).

Usage::

    python benchmarks/bench_backends.py                       # 2 threads, batch 64, 5 rounds
    python benchmarks/bench_backends.py --threads 1 --rounds 3 --sites 600

Needs ``onnxruntime`` and ``openvino`` (``pip install 'sitewatch[onnx,openvino]'``); a backend
whose package is missing is reported and skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def labelled_pairs(data: Path, workdir: Path, n_sites: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 2, C, H, W) float32, labels (N,))`` of the ok, destroyed/no-damage sites."""
    cache = workdir / f"pairs_{data.name}_{n_sites}.npz"
    if cache.is_file():
        z = np.load(cache)
        return z["images"], z["labels"]
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.cut import PairCutter
    from tiles.sites import read_sites

    sites = read_sites(data / "sites.csv")[:n_sites]
    before = RasterCatalog.from_paths([data / "before"], epoch="before")
    after = RasterCatalog.from_paths([data / "after"], epoch="after")
    images, labels = [], []
    t = time.perf_counter()
    with PairCutter(before, after, TilesConfig()) as cutter:
        for pair in cutter.cut_many(sites):
            grade = pair.site.damage
            if not pair.ok or grade not in ("destroyed", "no-damage"):
                continue
            images.append(pair.image.astype(np.float32))
            labels.append(1 if grade == "destroyed" else 0)
    print(f"cut {len(sites)} sites of {data.name} in {time.perf_counter() - t:.0f} s: {len(labels)} labelled ok pairs "
          f"({sum(labels)} destroyed)")
    arr, lab = np.stack(images), np.asarray(labels, np.int64)
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=arr, labels=lab)
    return arr, lab


def build_backends(model: str, threads: int, batch: int, only: list[str]) -> dict[str, Any]:
    """Every scorer to compare, by name (a backend whose package is missing is skipped)."""
    from models.backends import ExportedScorer
    from models.inference import Scorer
    from sitewatch.errors import UsageError

    makers: dict[str, Callable[[], Any]] = {
        "torch": lambda: Scorer(model, device="cpu", threads=threads, batch_size=batch),
        "torch-float32": lambda: Scorer(model, device="cpu", threads=threads, batch_size=batch, precision="float32"),
        "onnx": lambda: ExportedScorer(model, backend="onnx", threads=threads, batch_size=batch),
        "openvino-float32": lambda: ExportedScorer(model, backend="openvino", threads=threads, batch_size=batch, precision="float32"),
        "openvino": lambda: ExportedScorer(model, backend="openvino", threads=threads, batch_size=batch),
    }
    out = {}
    for name, make in makers.items():
        if only and name not in only and name != "torch":
            continue
        try:
            out[name] = make()
        except UsageError as exc:
            print(f"  {name}: skipped ({exc})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads of every backend (default: all cores)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--px", type=int, default=128, help="chip side for the speed test")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches-per-round", type=int, default=2)
    p.add_argument("--backends", default="", help="comma list to compare with torch (default: all)")
    shared = os.environ.get("SITEWATCH_SHARED_DATA", "/work/shared/data")
    p.add_argument("--data", default=str(Path(shared) / "xbd-santa-rosa-dev"), help="labelled set ('' = skip ranking)")
    p.add_argument("--sites", type=int, default=1760, help="sites of --data to cut")
    p.add_argument("--rank-backends", default="torch,onnx,openvino", help="backends whose ranking is compared")
    p.add_argument("--workdir", default=str(Path(os.environ.get("SITEWATCH_CACHE", Path.home() / ".cache/sitewatch")) / "bench_backends"))
    args = p.parse_args(argv)

    import logging
    import torch

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    only = [b for b in args.backends.split(",") if b]
    print(f"cpu count {os.cpu_count()}, {args.threads} threads per backend, batch {args.batch}, {args.px} px; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    scorers = build_backends(args.model, args.threads, args.batch, only)
    x = np.random.default_rng(0).random((args.batch, 2, 3, args.px, args.px), dtype=np.float32)
    for s in scorers.values():  # warm up (and export to ONNX on first use)
        s.score(x)
    rates: dict[str, list[float]] = {k: [] for k in scorers}
    for _ in range(args.rounds):
        for name, s in scorers.items():
            t = time.perf_counter()
            for _ in range(args.batches_per_round):
                s.score(x)
            rates[name].append(args.batches_per_round * args.batch / (time.perf_counter() - t))
    base = statistics.median(rates["torch"])
    print(flush=True)
    print(f"1. speed (median of {args.rounds} interleaved rounds of {args.batches_per_round} x {args.batch} pairs):")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"   {name:17s} {med:7.1f} pairs/s   x{med / base:4.2f} of torch   (rounds: {', '.join(f'{v:.0f}' for v in r)})")
    if args.data:
        from train.metrics import roc_auc

        images, labels = labelled_pairs(Path(args.data), Path(args.workdir), args.sites)
        print(f"2. ranking on {len(labels)} labelled pairs of {Path(args.data).name} ({int(labels.sum())} destroyed):")
        ranked = [b for b in args.rank_backends.split(",") if b in scorers]
        probs = {}
        for name in ranked:
            t = time.perf_counter()
            probs[name] = scorers[name].score(images).prob
            print(f"   ({name}: {len(labels) / (time.perf_counter() - t):.0f} pairs/s on this set)", flush=True)
        auc_torch = roc_auc(labels, probs["torch"])
        for name, pr in probs.items():
            auc = roc_auc(labels, pr)
            top = max(1, len(pr) // 10)
            overlap = len(set(np.argsort(-pr)[:top]) & set(np.argsort(-probs["torch"])[:top])) / top
            print(f"   {name:17s} AUC {auc:.5f}  (difference to torch {auc - auc_torch:+.5f}); max |prob - torch| "
                  f"{np.abs(pr - probs['torch']).max():.4f}; top-10% overlap with torch {overlap:.0%}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
