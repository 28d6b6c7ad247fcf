"""Inference speed of every architecture, side by side in one run, with ratios.

Measures pairs per second for each architecture of :mod:`models.factory` and for a reference
peer built here (an FC-Siam-diff style U-Net on a ResNet-34 encoder, about 24 M parameters,
random init; the "plain peer" of issue 4) under float32, channels_last float32 and
channels_last + bfloat16 autocast, for several batch sizes, plus the end-to-end
:class:`models.inference.Scorer` on the bundled default model. Rounds are interleaved
(every configuration once per round, median over rounds) so load from other processes on a
shared machine hits all configurations alike; the ratios are the robust figures, the absolute
pairs/s depend on what else runs.

Usage::

    python benchmarks/bench_model.py                 # 2 threads, 128 px, batch 32, 5 rounds
    python benchmarks/bench_model.py --px 256 --batch-sizes 16 64 --rounds 3
    # the per-epoch building head's cost: each architecture with and without it, and the
    # Scorer on trained checkpoints of both kinds
    python benchmarks/bench_model.py --epoch-head --no-peer --scorer DIR_NOHEAD --scorer DIR_HEAD
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.factory import ARCHITECTURES, build_model
from models.inference import fuse_conv_batchnorm


class PeerDecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip, two 3x3 conv-BN-ReLU (a U-Net decoder block)."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin + cskip, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.body(x)


class FCSiamDiffPeer(nn.Module):
    """Reference peer: FC-Siam-diff U-Net, ResNet-34 encoder (random init), ~24 M parameters.

    Skips are ``|after - before|`` encoder features; the site score is the mean of the
    heatmap logits over a central disc (how the peer was scored with disc masks).

    Args: none. Input ``(B, 2, 3, H, W)``, output ``(logit (B,), heatmap (B, 1, H, W))``.
    """

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet34  # noqa: PLC0415

        r = resnet34(weights=None)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu)  # stride 2, 64
        self.pool = r.maxpool
        self.layers = nn.ModuleList([r.layer1, r.layer2, r.layer3, r.layer4])  # 4, 8, 16, 32
        skips = [256, 128, 64, 64, 0]
        cins = [512, 256, 128, 64, 32]
        couts = [256, 128, 64, 32, 16]
        self.decoder = nn.ModuleList(PeerDecoderBlock(i, s, o) for i, s, o in zip(cins, skips, couts))
        self.head = nn.Conv2d(16, 1, 3, padding=1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        y = self.pool(feats[0])
        for layer in self.layers:
            y = layer(y)
            feats.append(y)
        return feats  # strides 2, 4, 8, 16, 32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, c, h, w = x.shape
        images = x.reshape(b * 2, c, h, w)
        if self.head.weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self._encode((images - self.mean) / self.std)
        diffs = [(f.view(b, 2, *f.shape[1:])[:, 1] - f.view(b, 2, *f.shape[1:])[:, 0]).abs() for f in feats]
        y = diffs[-1]
        skip_list: list[torch.Tensor | None] = [diffs[3], diffs[2], diffs[1], diffs[0], None]
        for block, skip in zip(self.decoder, skip_list):
            size = skip.shape[-2:] if skip is not None else (h, w)
            y = block(y, skip, size)
        heat = self.head(y)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        disc = ((yy**2 + xx**2) <= 0.25).to(heat.dtype)
        logit = (heat[:, 0] * disc).sum(dim=(-2, -1)) / disc.sum()
        return logit, heat


@dataclass(frozen=True)
class Case:
    """One configuration to time."""

    name: str
    mode: str  # "fp32", "cl-fp32", "cl-bf16", "cl-bf16-fold" (conv+batch norm folded)
    batch: int
    run: Callable[[], object]
    params: int


def make_case(name: str, model: nn.Module, mode: str, batch: int, px: int) -> Case:
    model = copy.deepcopy(model).eval()  # .to(memory_format=...) works in place: one copy per case
    if mode.endswith("fold"):
        fuse_conv_batchnorm(model)
    if mode.startswith("cl"):
        model = model.to(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.contiguous_format)
    x = torch.rand(batch, 2, 3, px, px, generator=torch.Generator().manual_seed(0))
    bf16 = "bf16" in mode

    def run() -> object:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        with torch.inference_mode(), ctx:
            return model(x)

    return Case(name, mode, batch, run, sum(p.numel() for p in model.parameters()))


def time_once(fn: Callable[[], object], min_seconds: float) -> float:
    """Seconds per call, averaged over as many calls as fit in ``min_seconds`` (at least 1)."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--px", type=int, default=128, help="chip side in pixels (default 128)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32], help="batch sizes")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="time per measurement")
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), help="architectures")
    parser.add_argument("--no-peer", action="store_true", help="skip the ResNet-34 U-Net peer")
    parser.add_argument("--modes", nargs="+", default=["fp32", "cl-fp32", "cl-bf16", "cl-bf16-fold"])
    parser.add_argument("--epoch-head", action="store_true", help="also each architecture with the per-epoch building head (model.epoch_head)")
    parser.add_argument("--scorer", action="append", default=None, metavar="MODEL",
                        help="checkpoints timed end to end through the Scorer (repeatable; default: the bundled model)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.px} px, native CPU bf16: {cpu_bf16}, "
        f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}"
    )

    models: dict[str, nn.Module] = {a: build_model(a, pretrained=False, log_init=False) for a in args.archs}
    if args.epoch_head:
        models.update({f"{a}+epoch-head": build_model(a, pretrained=False, log_init=False, epoch_head=True) for a in args.archs})
    if not args.no_peer:
        models["peer-fcsiamdiff-resnet34"] = FCSiamDiffPeer()
    cases = [
        make_case(name, model, mode, batch, args.px)
        for name, model in models.items()
        for mode in args.modes
        for batch in args.batch_sizes
    ]
    from models.inference import Scorer  # noqa: PLC0415 (loads the checkpoints)

    arr = np.random.default_rng(0).random((max(args.batch_sizes), 2, 3, args.px, args.px), dtype=np.float32)
    for model_dir in args.scorer or ["default"]:
        try:
            scorer = Scorer(model_dir, device="cpu", batch_size=max(args.batch_sizes))
            label = "default" if model_dir == "default" else os.path.basename(os.path.normpath(model_dir))
            head = "+epoch-head" if scorer.meta.epoch_head else ""
            cases.append(
                Case(f"Scorer({label}: {scorer.meta.arch}{head})", "auto", len(arr), lambda s=scorer: s.score(arr), 0)
            )
        except Exception as exc:  # noqa: BLE001 (benchmark still useful without it)
            print(f"Scorer on {model_dir} skipped: {exc}")

    for case in cases:  # warm-up (oneDNN primitive creation, allocator)
        case.run()
    samples: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    for r in range(args.rounds):
        for i, case in enumerate(cases):
            samples[i].append(case.batch / time_once(case.run, args.min_seconds))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"load average at end {os.getloadavg()[0]:.1f} (above the thread count, absolute figures are low)")
    rate = {i: statistics.median(v) for i, v in samples.items()}
    best = {i: max(v) for i, v in samples.items()}
    by_key = {(c.name, c.mode, c.batch): rate[i] for i, c in enumerate(cases)}
    peer_name = "peer-fcsiamdiff-resnet34"
    print()
    print(f"{'architecture':38} {'params':>7} {'mode':>8} {'batch':>5} {'pairs/s':>8} {'best':>7} "
          f"{'spread':>6} {'vs fp32':>8} {'vs peer':>8}")
    for i, case in enumerate(cases):
        fp32 = by_key.get((case.name, "fp32", case.batch))
        peer = by_key.get((peer_name, "cl-bf16", case.batch)) or by_key.get((peer_name, case.mode, case.batch))
        spread = (max(samples[i]) - min(samples[i])) / rate[i]
        print(
            f"{case.name:38} {case.params / 1e6:6.2f}M {case.mode:>8} {case.batch:5d} {rate[i]:8.1f} "
            f"{best[i]:7.1f} {spread:6.0%} {(rate[i] / fp32) if fp32 else float('nan'):7.2f}x "
            f"{(rate[i] / peer) if peer else float('nan'):7.2f}x"
        )
    print("\npairs/s: median over rounds; best: the fastest round (closest to an idle machine). "
          "vs fp32: same model and batch in plain float32 (medians); vs peer: the ResNet-34 U-Net "
          "peer in channels_last+bf16 at the same batch (medians). spread: (max-min)/median.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
