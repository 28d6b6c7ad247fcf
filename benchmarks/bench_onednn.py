"""The bundled model's Scorer with and without activations fused into the convolutions.

Side by side in one run (interleaved rounds, medians): ``Scorer("default")`` as it ships (on a
CPU with native bfloat16, each ReLU6/ReLU runs inside its oneDNN convolution, see
:mod:`models.onednn`) against the same Scorer with that rewrite turned off (the plain bfloat16
autocast path), for each thread count. Also checks that both give the same bytes (logits,
probabilities, heatmaps, embeddings) on the benchmark's batches.

Usage::

    python benchmarks/bench_onednn.py                       # threads 1 and 2, batches of 64, 5 rounds
    python benchmarks/bench_onednn.py --threads 2 --batches 8 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

import models.inference as inference
from models.inference import Scorer, cpu_has_fast_bfloat16
from models.onednn import FusedConvBF16


def build(fused: bool) -> Scorer:
    if fused:
        return Scorer("default", device="cpu")
    original = inference.fuse_for_bf16_cpu
    inference.fuse_for_bf16_cpu = lambda net: 0
    try:
        return Scorer("default", device="cpu")
    finally:
        inference.fuse_for_bf16_cpu = original


def rate(scorer: Scorer, batches: list[np.ndarray]) -> float:
    t0 = time.perf_counter()
    for b in batches:
        scorer.score(b)
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=4, help="batches per measurement (default 4)")
    p.add_argument("--px", type=int, default=128, help="chip side (default 128, the bundled model's input)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    if not cpu_has_fast_bfloat16():
        print("this CPU has no native bfloat16: the Scorer runs float32 and nothing is fused")
        return 0
    rng = np.random.default_rng(0)
    batches = [rng.random((args.batch_size, 2, 3, args.px, args.px), dtype=np.float32) for _ in range(args.batches)]
    fused, plain = build(True), build(False)
    n_fused = sum(isinstance(m, FusedConvBF16) for m in fused._net.modules())
    same = True
    for b in batches:
        a, c = fused.score(b), plain.score(b)
        same &= all(getattr(a, k).tobytes() == getattr(c, k).tobytes() for k in ("logit", "prob", "heatmap", "embedding"))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"{n_fused} convolutions fused; batches of {args.batch_size} at {args.px} px")
    print(f"same bytes (logit, prob, heatmap, embedding) on {len(batches) * args.batch_size} pairs: {same}")
    print(f"{'threads':>7} {'plain pairs/s':>14} {'fused pairs/s':>14} {'ratio':>6}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        rate(fused, batches[:1]), rate(plain, batches[:1])  # warm-up
        r_fused, r_plain = [], []
        for _ in range(args.rounds):
            r_plain.append(rate(plain, batches))
            r_fused.append(rate(fused, batches))
        mp, mf = statistics.median(r_plain), statistics.median(r_fused)
        print(f"{threads:>7} {mp:>14.0f} {mf:>14.0f} {mf / mp:>6.2f}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
