"""The training loop, in the order a run goes: data, network, ``fit``, ``calibrate``, checkpoint.

* :func:`load_training_data`: the DATASET arguments as pairs, split by area
  (:class:`TrainingData`).
* :func:`build_start_model`, :func:`build_optimizer`, :func:`plan_epochs`: the network (ImageNet
  initialisation or a checkpoint), AdamW with its own encoder learning rate, the schedule.
* :func:`train_one_epoch` (loss: :func:`training_loss`) and :func:`evaluate` (validation
  figures of one epoch).
* :func:`fit`: the epochs, keeping the weights with the best validation average precision, with
  early stopping; an interrupted run resumes from ``MODEL_DIR/.train_state/`` (safetensors +
  JSON, never pickle) when the data and config are unchanged.
* :func:`calibrate`: a temperature and the operating points on the validation split.
* :func:`train_model`: all of it, writing a checkpoint folder (``models.checkpoint`` format)
  with the effective config and the per-epoch log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import CheckpointMeta, load_checkpoint, read_meta, save_checkpoint, training_envelope
from models.config import ModelConfig
from models.factory import build_model
from models.inference import choose_device, choose_precision
from models.siamese import ModelOutput
from sitewatch.config import config_to_dict, write_config
from sitewatch.errors import ConfigError, InputError, UsageError
from tiles.config import TilesConfig
from tiles.synth.config import SynthConfig
from train.augment import augment_batch
from models.assessment import FeatureStats
from models.calibration import split_for_calibration
from train.calibration import CalibratedPoint, binary_nll, choose_operating_points, fit_temperature, sigmoid
from train.config import TrainConfig
from train.datasets import default_cache_dir, load_datasets, tqdm_disable
from train.metrics import BinaryReport, average_precision, binary_report, expected_calibration_error, roc_auc
from train.pairs import PairSet, concat_pairsets
from train.splits import grouped_holdout, grouped_kfold, spatial_block_groups

log = logging.getLogger(__name__)

STATE_DIR = ".train_state"
LOG_FILE = "train_log.json"
#: gradients are clipped to this global norm
GRAD_CLIP_NORM = 5.0


@dataclass(frozen=True)
class EpochSummary:
    """One epoch's figures (also one line of the training log)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    val_ap: float
    lr: float
    seconds: float
    pairs_per_s: float
    best: bool

    def line(self, epochs: int) -> str:
        """``epoch 3/10 loss 0.412 val_loss 0.380 AUC 0.931 AP 0.802 (*best) 41 s, 37 pairs/s``."""
        return (
            f"epoch {self.epoch}/{epochs} loss {self.train_loss:.4f} val_loss {format_metric(self.val_loss)} "
            f"AUC {format_metric(self.val_auc)} AP {format_metric(self.val_ap)}{' *best' if self.best else ''} "
            f"lr {self.lr:.2e} {self.seconds:.0f} s, {self.pairs_per_s:.1f} pairs/s"
        )


def format_metric(value: float | None) -> str:
    """``0.9312``, or ``n/a`` for a metric that is undefined (e.g. AUC on one class)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.4f}"


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` produced."""

    out_dir: Path
    meta: CheckpointMeta
    history: list[EpochSummary]
    best_epoch: int
    resumed_from_epoch: int


# ---- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    """The labelled pairs of one run, split by area.

    Attributes:
        sources: the pair sets as loaded (the DATASET arguments concatenated, then each extra
            set), whose names and hashes go into the checkpoint.
        pairs: all of them, concatenated.
        train: the training side of the split.
        val: the validation side (epoch selection; calibration data too unless ``calib``).
        split: how it was split, e.g. ``grouped by 256 m blocks (122 blocks)``.
        calib: validation groups kept out of epoch selection for the temperature and the
            operating points (``train.calibration_holdout``), or None (``val`` does both).
    """

    sources: tuple[PairSet, ...]
    pairs: PairSet
    train: PairSet
    val: PairSet
    split: str
    calib: PairSet | None = None

    @property
    def calibration(self) -> PairSet:
        """The pairs the temperature and operating points are fitted on."""
        return self.val if self.calib is None else self.calib


def choose_split(ps: PairSet, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """Grouped train/validation indices following ``cfg.split`` / ``folds`` / ``fold``.

    Falls back from ``group`` to spatial blocks when there are too few groups (e.g. one
    synthetic scene), and says so in the log.

    Returns:
        ``(train_idx, val_idx, description)``.
    """
    groups = ps.groups
    how = f"grouped by tile/scene ({np.unique(groups).size} groups)"
    need = max(2, cfg.folds)
    if cfg.split == "block" or np.unique(groups).size < need:
        if cfg.split != "block":
            log.info("only %d tile/scene group(s): splitting by %.0f m spatial blocks instead", np.unique(groups).size, cfg.block_size_m)
        prefixes = np.array([f"{g}|" for g in groups], dtype=object)
        blocks = spatial_block_groups(ps.lon, ps.lat, cfg.block_size_m)
        groups = np.array([p + b for p, b in zip(prefixes, blocks)], dtype=object)
        how = f"grouped by {cfg.block_size_m:.0f} m blocks ({np.unique(groups).size} blocks)"
    if cfg.folds > 1:
        train_idx, val_idx = grouped_kfold(groups, cfg.folds, seed=cfg.seed, labels=ps.labels)[cfg.fold]
        how += f", fold {cfg.fold + 1}/{cfg.folds}"
    else:
        train_idx, val_idx = grouped_holdout(groups, cfg.val_fraction, seed=cfg.seed, labels=ps.labels)
    return train_idx, val_idx, how


def load_training_data(
    specs: Sequence[str],
    tiles: TilesConfig,
    train: TrainConfig,
    synth: SynthConfig,
    *,
    extra_sets: Sequence[PairSet] = (),
    progress: bool | None = None,
) -> TrainingData:
    """Load the DATASET arguments (plus already-loaded sets) and split them by area.

    Raises:
        InputError: no data, one class only, pairs of another size than ``tiles.chip_px``, or a
            split that leaves no positive site on one side.
    """
    cache_dir = default_cache_dir(train.cache_dir)
    sets = [load_datasets(specs, tiles, cache_dir=cache_dir, synth=synth, synth_profiles=train.synth_profiles, seed=train.seed, nuisance=train.synth_nuisance, progress=progress)] if specs else []
    sets += list(extra_sets)
    if not sets:
        raise InputError("train.data: no training data; give at least one DATASET (a folder, synth:N or xbd:PATH)", setting="train.data")
    data = concat_pairsets(sets)
    log.info("training data %s", data.describe())
    if data.positives == 0 or data.positives == len(data):
        raise InputError(f"training data {data.name} has only one class ({data.positives} positive of {len(data)}); it needs both damaged and intact sites")
    if data.images.shape[-1] != tiles.chip_px:
        raise InputError(f"tiles.chip_px: pairs are {data.images.shape[-1]} px but tiles.chip_px is {tiles.chip_px}", setting="tiles.chip_px")
    train_idx, val_idx, split = choose_split(data, train)
    train_set, val_set = data.subset(train_idx), data.subset(val_idx)
    log.info("split %s: train %d (%d pos), validation %d (%d pos)", split, len(train_set), train_set.positives, len(val_set), val_set.positives)
    if train_set.positives == 0 or val_set.positives == 0:
        raise InputError(
            f"the grouped split ({split}) left no positive site on one side; add data, use "
            "fewer folds, or set train.split: block with a smaller train.block_size_m"
        )
    if val_set.positives == len(val_set):
        log.warning(
            "validation split (%s) holds no intact site: AUC/AP are undefined and the temperature and "
            "operating points cannot be fitted (review a random sample too, not only the top of the queue)",
            split,
        )
    calib_set = None
    if train.calibration_holdout is not None:
        val_set, calib_set = split_calibration(val_set, train)
        log.info("calibration holdout: epoch selection on %d (%d pos), temperature and operating points on %d (%d pos)",
                 len(val_set), val_set.positives, len(calib_set), calib_set.positives)
    return TrainingData(tuple(sets), data, train_set, val_set, split, calib_set)


def split_calibration(val: PairSet, cfg: TrainConfig) -> tuple[PairSet, PairSet]:
    """``(epoch selection, calibration)`` parts of the validation split, grouped by area.

    Raises:
        InputError: the validation split cannot be divided without leaving one side without a
            damaged or an intact site.
    """
    groups = val.groups
    if np.unique(groups).size < 2:
        groups = np.array(spatial_block_groups(val.lon, val.lat, cfg.block_size_m), dtype=object)
    select_idx, calib_idx = grouped_holdout(groups, float(cfg.calibration_holdout), seed=cfg.seed + 1, labels=val.labels)
    select, calib = val.subset(select_idx), val.subset(calib_idx)
    for part, name in ((select, "epoch selection"), (calib, "calibration")):
        if part.positives == 0 or part.positives == len(part):
            raise InputError(
                f"train.calibration_holdout: the {name} part of the validation split ({len(part)} pairs, "
                f"{part.positives} damaged) lacks a class; use more validation data (train.val_fraction) "
                "or set train.calibration_holdout: null", setting="train.calibration_holdout",
            )
    return select, calib


# ---- network, optimiser, schedule ---------------------------------------------------------


def _set_bn_eval(net: nn.Module) -> None:
    encoder = getattr(net, "encoder", net)
    for m in encoder.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _frozen_stages(net: nn.Module, n: int) -> list[nn.Module]:
    stages = getattr(getattr(net, "encoder", None), "stages", None)
    return list(stages[:n]) if stages is not None and n > 0 else []


def build_start_model(model: ModelConfig, init_from: str | Path | None) -> tuple[nn.Module, CheckpointMeta | None]:
    """The network to train: from a checkpoint (``"default"`` or a folder) or freshly built.

    Returns:
        ``(network, the checkpoint's meta or None)``.

    Raises:
        ModelError: the checkpoint cannot be loaded.
    """
    if init_from:
        net, meta = load_checkpoint(init_from)
        if meta.arch != model.arch:
            log.info("fine-tuning %s from %s (model.arch %s ignored)", meta.arch, init_from, model.arch)
        return net, meta
    return build_model(model.arch, pretrained=model.pretrained, in_channels=model.in_channels, epoch_head=model.epoch_head), None


def freeze_encoder_stages(net: nn.Module, n: int) -> None:
    """Stop the gradients of the first ``n`` encoder stages (``train.freeze_encoder_stages``)."""
    for stage in _frozen_stages(net, n):
        for p in stage.parameters():
            p.requires_grad_(False)


def build_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable weights; the encoder at ``lr * encoder_lr_scale``.

    Each parameter group carries its ``base_lr``; :func:`train_one_epoch` scales it per step.
    """
    encoder = getattr(net, "encoder", nn.Identity())
    encoder_params = [p for p in encoder.parameters() if p.requires_grad]
    enc_ids = {id(p) for p in encoder.parameters()}
    other = [p for p in net.parameters() if id(p) not in enc_ids]
    groups = [{"params": other, "base_lr": cfg.lr}]
    if encoder_params:
        groups.append({"params": encoder_params, "base_lr": cfg.lr * cfg.encoder_lr_scale})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class EpochPlan:
    """How the epochs of a run step.

    Attributes:
        steps_per_epoch: optimiser steps per epoch.
        lr_at: global step -> learning-rate multiplier (linear warm-up, then cosine).
        pos_weight: weight of positive pairs in the site loss.
    """

    steps_per_epoch: int
    lr_at: Callable[[int], float]
    pos_weight: float


def plan_epochs(train_set: PairSet, cfg: TrainConfig) -> EpochPlan:
    """Steps per epoch, the learning-rate schedule and the positive weight for ``train_set``."""
    per_epoch = cfg.epoch_pairs if cfg.epoch_pairs is not None else len(train_set)
    steps_per_epoch = max(1, per_epoch // cfg.batch_size)
    lr_at = _lr_schedule(cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch))
    neg = len(train_set) - train_set.positives
    pos_weight = float(neg / train_set.positives) if cfg.balance == "weighted_loss" else 1.0
    return EpochPlan(steps_per_epoch, lr_at, pos_weight)


def _lr_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def lr_at(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return lr_at


def _epoch_order(data: PairSet, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``data`` for one epoch (``train.epoch_pairs`` of them, class-balanced with
    ``train.balance: sampler``)."""
    n = cfg.epoch_pairs if cfg.epoch_pairs is not None else len(data)
    if cfg.balance == "sampler" and 0 < data.positives < len(data):
        p = np.where(data.labels == 1, 0.5 / data.positives, 0.5 / (len(data) - data.positives))
        return rng.choice(len(data), size=n, replace=True, p=p / p.sum())
    if n <= len(data):
        return rng.permutation(len(data))[:n]
    return np.concatenate([rng.permutation(len(data)) for _ in range(math.ceil(n / len(data)))])[:n]


# ---- one epoch -------------------------------------------------------------------------------


def centre_disc(size: int, radius_frac: float) -> torch.Tensor:
    """``(1, 1, size, size)`` float mask of the centre disc of radius ``radius_frac * size``."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2.0
    return (((yy - c) ** 2 + (xx - c) ** 2) <= (radius_frac * size) ** 2).float()[None, None]


def heatmap_target(labels: torch.Tensor, disc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weak heatmap supervision from site labels.

    Positives: the centre disc is change, the rest is unknown (ignored). Negatives: nothing is.

    Args:
        labels: (B,) float 0/1.
        disc: (1, 1, H, W) centre mask from :func:`centre_disc`, on the labels' device.

    Returns:
        ``(target (B, 1, H, W), weight (B, 1, H, W))``.
    """
    pos = labels.view(-1, 1, 1, 1)
    target = pos * disc
    weight = torch.where(pos > 0, disc, torch.ones_like(disc))
    return target, weight


def training_loss(
    out: ModelOutput, y: torch.Tensor, cfg: TrainConfig, *, pos_weight: torch.Tensor, disc: torch.Tensor | None,
    standing: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of one batch: site BCE (positives weighted) plus the weak heatmap loss, plus
    (with the per-epoch building head) the per-epoch building loss.

    Args:
        out: the network's output for the batch (``logit (B,)``, ``heatmap (B, 1, H, W)``,
            ``standing (B, 2)`` logits or None).
        y: (B,) float 0/1 labels.
        cfg: ``heatmap_weight`` (0 = site loss only), ``epoch_head_weight``.
        pos_weight: scalar tensor, weight of positive pairs.
        disc: (1, 1, H, W) centre disc (:func:`centre_disc`) when ``heatmap_weight > 0``.
        standing: (B, 2) per-epoch targets (1 / 0, -1 = unknown), see :func:`epoch_head_loss`.

    Returns:
        Scalar loss tensor.
    """
    loss = F.binary_cross_entropy_with_logits(out.logit.float(), y, pos_weight=pos_weight)
    if cfg.heatmap_weight > 0 and disc is not None:
        target, weight = heatmap_target(y, disc)
        hl = F.binary_cross_entropy_with_logits(out.heatmap.float(), target, weight=weight, reduction="sum")
        loss = loss + cfg.heatmap_weight * hl / weight.sum().clamp_min(1.0)
    if cfg.epoch_head_weight > 0 and out.standing is not None and standing is not None:
        loss = loss + cfg.epoch_head_weight * epoch_head_loss(out.standing, standing)
    return loss


def epoch_head_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of the per-epoch building logits over the epochs whose target is known.

    Args:
        logits: (B, 2) "intact building stands at the centre" logits (before, after).
        targets: (B, 2) 1 (stands), 0 (does not) or -1 (unknown: real labelled sets; masked out).

    Returns:
        Scalar tensor; 0 (still attached to the graph) when no target in the batch is known.
    """
    known = targets >= 0
    per = F.binary_cross_entropy_with_logits(logits.float(), targets.clamp_min(0).float(), reduction="none")
    return (per * known).sum() / known.sum().clamp_min(1)


def train_one_epoch(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: PairSet,
    order: np.ndarray,
    cfg: TrainConfig,
    gen: torch.Generator,
    *,
    plan: EpochPlan,
    step0: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    progress: bool | None = None,
    desc: str = "train",
) -> tuple[float, int]:
    """One pass over ``order`` (indices into ``data``) in augmented batches of ``cfg.batch_size``.

    Args:
        net: the network, trained in place (BatchNorm and frozen stages per ``cfg``).
        optimizer: from :func:`build_optimizer` (groups carry ``base_lr``).
        data: pairs ``(N, 2, C, H, W)`` uint8 and labels.
        order: the epoch's indices into ``data``.
        cfg: batch size, augmentation, loss weights.
        gen: torch generator of the augmentation.
        plan: learning-rate schedule and positive weight.
        step0: global step at the start of this epoch.
        device: where the batches go.
        autocast_dtype: autocast dtype (None = float32).

    Returns:
        ``(mean loss per pair, steps taken)``.
    """
    from tqdm import tqdm

    net.train()
    if cfg.freeze_bn:
        _set_bn_eval(net)
    for stage in _frozen_stages(net, cfg.freeze_encoder_stages):
        stage.eval()
    bs = cfg.batch_size
    n_batches = max(1, len(order) // bs)
    total, count = 0.0, 0
    pw = torch.tensor(plan.pos_weight, device=device)
    disc = centre_disc(data.images.shape[-1], cfg.heatmap_radius_frac).to(device) if cfg.heatmap_weight > 0 else None
    standing = data.standing_targets() if data.has_standing else None
    bar = tqdm(range(n_batches), desc=desc, unit="batch", leave=False, disable=tqdm_disable(progress))
    for b in bar:
        idx = order[b * bs : (b + 1) * bs]
        x = torch.from_numpy(data.images[idx]).float().div_(255.0)
        y = torch.from_numpy(data.labels[idx].astype(np.float32))
        st = torch.from_numpy(standing[idx].astype(np.int64)) if standing is not None else None
        # the swap augmentation only swaps negatives; one whose epochs differ in what stands
        # (never in synthetic sets) is kept in order so its per-epoch targets still match
        swap_y = y if st is None else torch.where(st[:, 0] != st[:, 1], torch.ones_like(y), y)
        x = augment_batch(x, swap_y, cfg.augment, gen).to(device)
        y = y.to(device)
        st = st.to(device) if st is not None else None
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * plan.lr_at(step0 + b)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = net(x)
        loss = training_loss(out, y, cfg, pos_weight=pw, disc=disc, standing=st)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP_NORM)
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    bar.close()
    return total / max(count, 1), n_batches


@torch.inference_mode()
def predict_logits(net: nn.Module, data: PairSet, *, batch_size: int = 64, device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None) -> np.ndarray:
    """Raw site logits ``(N,)`` float64 of every pair in ``data`` (eval mode, no augmentation)."""
    net.eval()
    device = torch.device(device)
    out = []
    for start in range(0, len(data), batch_size):
        x = torch.from_numpy(data.images[start : start + batch_size]).float().div_(255.0).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out.append(net(x).logit.float().cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def training_feature_stats(
    net: nn.Module, data: PairSet, cfg: TrainConfig, *, device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None,
) -> FeatureStats | None:
    """Mean and principal axes of the site embeddings of ``train.feature_stats_pairs`` training
    pairs (seeded sample, no augmentation), or None when that setting is 0 or too few pairs."""
    n = min(cfg.feature_stats_pairs, len(data))
    if n < 2:
        return None
    idx = np.sort(np.random.default_rng(cfg.seed).permutation(len(data))[:n])
    sample = data.subset(idx)
    net.eval()
    device = torch.device(device)
    out = []
    with torch.no_grad():
        for start in range(0, len(sample), 64):
            x = torch.from_numpy(sample.images[start : start + 64]).float().div_(255.0).to(device)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                out.append(net(x).embedding.float().cpu())
    return FeatureStats.fit(torch.cat(out).double().numpy())


@dataclass(frozen=True)
class Validation:
    """Validation figures of one epoch.

    Attributes:
        loss: mean BCE of the raw logits.
        auc, ap: ROC AUC and average precision (NaN when one class only).
        logits: ``(N,)`` float64 raw logits of the validation pairs.
    """

    loss: float
    auc: float
    ap: float
    logits: np.ndarray


def evaluate(net: nn.Module, data: PairSet, *, batch_size: int, device: torch.device, autocast_dtype: torch.dtype | None = None) -> Validation:
    """Score ``data`` without augmentation and measure it against its labels."""
    logits = predict_logits(net, data, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype)
    y = data.labels.astype(np.int64)
    return Validation(binary_nll(y, logits), roc_auc(y, logits), average_precision(y, logits), logits)


def _choose_device(name: str) -> torch.device:
    """``train.device`` through :func:`models.inference.choose_device`, naming the setting on error."""
    try:
        return choose_device(name)
    except UsageError as exc:
        raise ConfigError(f"train.device: {exc}", setting="train.device") from None


# ---- the epochs, resumable --------------------------------------------------------------------


@dataclass
class FitState:
    """Where a run stands after ``epoch`` epochs: what the resume state holds.

    Attributes:
        epoch: epochs done.
        best_ap, best_epoch: the best validation AP so far and its (1-based) epoch.
        bad_epochs: epochs since the last improvement.
        history: one summary per epoch done.
        best_weights: the network's state dict at ``best_epoch`` (CPU copies).
        resumed_from: the epoch this process resumed from (0 = started afresh).
    """

    epoch: int = 0
    best_ap: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[EpochSummary] = field(default_factory=list)
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    resumed_from: int = 0


def _weights_copy(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def _state_tensors(net: nn.Module, optimizer: torch.optim.Optimizer, best: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"best.{k}": v.contiguous() for k, v in best.items()})
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for key, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"opt.{pid}.{key}"] = t.detach().cpu().contiguous()
    tensors["torch_generator"] = gen.get_state().contiguous()
    return tensors


def _load_state_tensors(tensors: dict[str, torch.Tensor], net: nn.Module, optimizer: torch.optim.Optimizer, gen: torch.Generator) -> dict[str, torch.Tensor]:
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    opt = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    opt["state"] = state
    optimizer.load_state_dict(opt)
    gen.set_state(tensors["torch_generator"])
    return best


def _save_state(folder: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "state.safetensors.partial"))
    (folder / "state.safetensors.partial").replace(folder / "state.safetensors")
    (folder / "state.json.partial").write_text(json.dumps(info, indent=1), encoding="utf-8")
    (folder / "state.json.partial").replace(folder / "state.json")


def _run_fingerprint(specs: Sequence[str], ps: PairSet, config: dict[str, Any], init_from: str | Path | None) -> str:
    payload = json.dumps(
        {"data": list(specs), "hash": ps.data_hash, "job": config, "from": str(init_from) if init_from else None},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _save_resume(state_dir: Path, fingerprint: str, net: nn.Module, optimizer: torch.optim.Optimizer, gen: torch.Generator, rng: np.random.Generator, state: FitState) -> None:
    info = {
        "fingerprint": fingerprint, "epoch": state.epoch, "best_ap": state.best_ap, "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs, "numpy_rng": rng.bit_generator.state,
        "history": [dataclasses.asdict(h) for h in state.history],
    }
    _save_state(state_dir, _state_tensors(net, optimizer, state.best_weights, gen), info)


def _resume(state_dir: Path, fingerprint: str, net: nn.Module, optimizer: torch.optim.Optimizer, gen: torch.Generator, rng: np.random.Generator, state: FitState, epochs: int) -> None:
    """Load ``state_dir`` into the network, optimiser, generators and ``state`` when it belongs
    to this run (same fingerprint); otherwise leave everything as it is."""
    if not (state_dir / "state.json").is_file():
        return
    try:
        info = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("%s is unreadable (%s); starting afresh", state_dir / "state.json", exc)
        return
    if info.get("fingerprint") != fingerprint:
        log.warning("%s belongs to a different run (data or config changed); starting afresh", state_dir)
        return
    from safetensors.torch import load_file

    state.best_weights = _load_state_tensors(load_file(str(state_dir / "state.safetensors")), net, optimizer, gen)
    rng.bit_generator.state = info["numpy_rng"]
    state.history = [EpochSummary(**h) for h in info["history"]]
    state.best_ap, state.best_epoch, state.bad_epochs = info["best_ap"], info["best_epoch"], info["bad_epochs"]
    state.epoch = state.resumed_from = info["epoch"]
    log.info("resuming from epoch %d of %d (state in %s)", state.epoch, epochs, state_dir)


def fit(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainingData,
    cfg: TrainConfig,
    *,
    plan: EpochPlan,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    state_dir: Path,
    fingerprint: str,
    resume: bool = True,
    progress: bool | None = None,
    on_epoch: Callable[[EpochSummary], None] | None = None,
) -> FitState:
    """Train for ``cfg.epochs`` epochs (fewer with early stopping) and load the best weights.

    After every epoch the state is saved to ``state_dir``; with ``resume`` a saved state with
    the same ``fingerprint`` is continued, giving the weights an uninterrupted run gives.

    Returns:
        The final :class:`FitState`; ``net`` holds its ``best_weights``.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    state = FitState(best_weights=_weights_copy(net))
    if resume:
        _resume(state_dir, fingerprint, net, optimizer, gen, rng, state, cfg.epochs)
    eval_batch = max(cfg.batch_size, 64)
    for epoch in range(state.epoch, cfg.epochs):
        if cfg.early_stopping_patience is not None and state.bad_epochs >= cfg.early_stopping_patience:
            log.info("early stopping: no better validation AP for %d epochs", state.bad_epochs)
            break
        t0 = time.perf_counter()
        order = _epoch_order(data.train, cfg, rng)
        loss, steps = train_one_epoch(
            net, optimizer, data.train, order, cfg, gen, plan=plan, step0=epoch * plan.steps_per_epoch,
            device=device, autocast_dtype=autocast_dtype, progress=progress, desc=f"epoch {epoch + 1}/{cfg.epochs}",
        )
        train_s = time.perf_counter() - t0
        val = evaluate(net, data.val, batch_size=eval_batch, device=device, autocast_dtype=autocast_dtype)
        improved = val.ap > state.best_ap
        if improved:
            state.best_ap, state.best_epoch, state.bad_epochs = val.ap, epoch + 1, 0
            state.best_weights = _weights_copy(net)
        else:
            state.bad_epochs += 1
        summary = EpochSummary(
            epoch=epoch + 1, train_loss=loss, val_loss=val.loss, val_auc=val.auc, val_ap=val.ap,
            lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0,
            pairs_per_s=min(len(order), steps * cfg.batch_size) / max(train_s, 1e-9), best=improved,
        )
        state.history.append(summary)
        state.epoch = epoch + 1
        log.debug(summary.line(cfg.epochs))
        _save_resume(state_dir, fingerprint, net, optimizer, gen, rng, state)
        if on_epoch:
            on_epoch(summary)
    net.load_state_dict(state.best_weights)
    return state


# ---- calibration and the checkpoint ----------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """What calibration on the validation split gave.

    Attributes:
        temperature: probability = ``sigmoid(logit / temperature)``.
        points: ``screening`` and ``evidence`` thresholds on that probability.
        ece_before, ece_after: expected calibration error without and with the temperature.
        report: validation figures of the calibrated scores at the screening threshold.
    """

    temperature: float
    points: dict[str, CalibratedPoint]
    ece_before: float
    ece_after: float
    report: BinaryReport


def calibrate(labels: np.ndarray, logits: np.ndarray, cfg: TrainConfig) -> Calibration:
    """Fit the temperature and choose the operating points on held-out pairs.

    With ``train.temperature_share`` the temperature is fitted on that share of the pairs
    (stratified) and the operating points and reported figures come from the rest.

    Args:
        labels: (N,) 0/1 labels of the validation pairs.
        logits: (N,) raw logits of the same pairs.
        cfg: ``calibration_bins``, ``screening_recall``, ``evidence_precision``,
            ``screening_max_threshold``, ``top_k``.
    """
    t_idx, p_idx = split_for_calibration(labels, cfg.temperature_share, cfg.seed)
    temperature = fit_temperature(labels[t_idx], logits[t_idx])
    labels, logits = labels[p_idx], logits[p_idx]
    raw_p, cal_p = sigmoid(logits), sigmoid(logits / temperature)
    points = choose_operating_points(
        labels, cal_p, screening_recall=cfg.screening_recall, evidence_precision=cfg.evidence_precision,
        screening_max=cfg.screening_max_threshold,
    )
    return Calibration(
        temperature=float(temperature),
        points=points,
        ece_before=expected_calibration_error(labels, raw_p, cfg.calibration_bins),
        ece_after=expected_calibration_error(labels, cal_p, cfg.calibration_bins),
        report=binary_report(labels, cal_p, threshold=points["screening"].threshold, top_k=cfg.top_k, bins=cfg.calibration_bins),
    )


def _checkpoint_meta(
    data: TrainingData, state: FitState, cal: Calibration, *, arch: str, in_channels: int, tiles: TilesConfig,
    train_config: dict[str, Any], start_meta: CheckpointMeta | None, epoch_head: bool = False,
) -> CheckpointMeta:
    metrics: dict[str, Any] = {
        "validation": cal.report.to_dict(),
        "ece_before_calibration": cal.ece_before,
        "ece_after_calibration": cal.ece_after,
        "best_epoch": state.best_epoch,
        "epochs_run": len(state.history),
        "split": data.split,
        "n_train": len(data.train),
        "n_train_positive": data.train.positives,
        "n_val": len(data.val),
        "n_val_positive": data.val.positives,
        "operating_points": {k: dataclasses.asdict(v) for k, v in cal.points.items()},
    }
    meta = CheckpointMeta(
        arch=arch,
        in_channels=in_channels,
        input_px=tiles.chip_px,
        gsd_m=float(tiles.gsd_m),
        temperature=cal.temperature,
        operating_points={k: float(v.threshold) for k, v in cal.points.items()},
        metrics=metrics,
        data_hashes={s.name: s.data_hash for s in data.sources},
        train_config=train_config,
        epoch_head=epoch_head,
    )
    if start_meta is not None and start_meta.class_map:
        meta = dataclasses.replace(meta, class_map=dict(start_meta.class_map))
    return meta


# ---- the whole run ----------------------------------------------------------------------------


def train_model(
    specs: Sequence[str],
    out: Path,
    *,
    tiles: TilesConfig,
    model: ModelConfig,
    train: TrainConfig,
    synth: SynthConfig,
    init_from: str | Path | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[EpochSummary], None] | None = None,
    resume: bool = True,
    extra_sets: Sequence[PairSet] = (),
) -> TrainResult:
    """Train (or fine-tune) a model and write a checkpoint folder.

    Args:
        specs: DATASET arguments (folders, ``synth:N``, ``xbd:PATH``).
        out: the checkpoint folder to write (``model.safetensors``, ``meta.json``,
            ``config.yaml``, ``train_log.json``).
        tiles: how pairs are cut (and the model's input size and GSD).
        model: the architecture of a new model and how its weights are stored.
        train: the training settings.
        synth: the generator settings of ``synth:N`` datasets.
        init_from: ``"default"`` or a checkpoint folder to fine-tune; None = new model.
        progress: progress bars (None = automatic).
        on_epoch: called with each epoch's summary (the CLI prints its one-line summary).
        resume: continue from ``out/.train_state`` when it matches this run.
        extra_sets: already-loaded pair sets to add (e.g. from a review export).

    Returns:
        :class:`TrainResult`.

    Raises:
        InputError: datasets cannot be used or cannot be split without leaking.
        ModelError: the starting checkpoint cannot be loaded.
        ConfigError: a setting cannot be used here (e.g. ``train.device: cuda`` without CUDA).
    """
    out = Path(out)
    if train.threads is not None:
        torch.set_num_threads(train.threads)
    device = _choose_device(train.device)
    torch.manual_seed(train.seed)  # before the network is built: its initialisation draws from it
    data = load_training_data(specs, tiles, train, synth, extra_sets=extra_sets, progress=progress)

    net, start_meta = build_start_model(model, init_from)
    if getattr(net, "epoch_head", False):
        known = int((data.train.standing_targets() >= 0).sum())
        if train.epoch_head_weight > 0 and known == 0:
            log.warning("model.epoch_head: no training pair has per-epoch targets (standing_before/standing_after); "
                        "the per-epoch building head learns only through the site loss")
        else:
            log.info("per-epoch building head: %d known epoch targets in the training split, weight %g", known, train.epoch_head_weight)
    net.to(device)
    freeze_encoder_stages(net, train.freeze_encoder_stages)
    autocast_dtype = choose_precision(device, train.precision)
    log.info("training on %s, %s", device, "float32" if autocast_dtype is None else f"{autocast_dtype} autocast".replace("torch.", ""))
    optimizer = build_optimizer(net, train)
    sections = {"tiles": tiles, "model": model, "train": train, "synth": synth}
    config = config_to_dict(sections)
    state = fit(
        net, optimizer, data, train, plan=plan_epochs(data.train, train), device=device, autocast_dtype=autocast_dtype,
        state_dir=out / STATE_DIR, fingerprint=_run_fingerprint(specs, data.pairs, config, init_from),
        resume=resume, progress=progress, on_epoch=on_epoch,
    )

    logits = predict_logits(net, data.calibration, batch_size=max(train.batch_size, 64), device=device, autocast_dtype=autocast_dtype)
    cal = calibrate(data.calibration.labels.astype(np.int64), logits, train)
    log.info("calibration: temperature %.3f, ECE %.4f -> %.4f on %d validation pairs", cal.temperature, cal.ece_before, cal.ece_after, len(data.calibration))
    stats = training_feature_stats(net, data.train, train, device=device, autocast_dtype=autocast_dtype)
    meta = _checkpoint_meta(
        data, state, cal, tiles=tiles, start_meta=start_meta,
        arch=start_meta.arch if start_meta else model.arch,
        in_channels=start_meta.in_channels if start_meta else model.in_channels,
        epoch_head=bool(getattr(net, "epoch_head", False)),
        train_config={**config, "data": list(specs), "from": str(init_from) if init_from else None},
    )
    if stats is not None:
        meta = dataclasses.replace(meta, feature_stats=stats.to_dict())
    meta = dataclasses.replace(meta, envelope=training_envelope(meta).to_dict())  # what detect's cautions compare with
    net.cpu()
    save_checkpoint(net, meta, out, weights_dtype=model.weights_dtype)
    write_config(sections, out)
    log_doc = {"data": list(specs), "split": data.split, "epochs": [dataclasses.asdict(h) for h in state.history]}
    (out / LOG_FILE).write_text(json.dumps(log_doc, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    return TrainResult(out_dir=out, meta=read_meta(out), history=state.history, best_epoch=state.best_epoch, resumed_from_epoch=state.resumed_from)
