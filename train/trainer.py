"""The training loop: ``train_one_epoch``, ``predict_logits``, ``train_model``.

``train_model`` loads the datasets (cached pairs), splits them by area, trains a Siamese network
from ImageNet initialisation or from a checkpoint, keeps the weights with the best validation
average precision, calibrates a temperature and operating points on the validation split and
writes a checkpoint folder (``models.checkpoint`` format) with the effective config and the
per-epoch log. An interrupted run resumes from ``MODEL_DIR/.train_state/`` (safetensors +
JSON, never pickle) when the data and config are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sitewatch.config import config_to_dict, write_config
from sitewatch.errors import InputError, UsageError
from train.augment import augment_batch
from train.calibration import binary_nll, choose_operating_points, fit_temperature, sigmoid
from train.config import TrainConfig
from train.datasets import PairSet, default_cache_dir, load_datasets, tqdm_disable
from train.metrics import average_precision, binary_report, expected_calibration_error, roc_auc
from train.splits import grouped_holdout, grouped_kfold, spatial_block_groups

log = logging.getLogger(__name__)

STATE_DIR = ".train_state"
LOG_FILE = "train_log.json"


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
    """What ``train_model`` produced."""

    out_dir: Path
    meta: Any
    history: list[EpochSummary]
    best_epoch: int
    resumed_from_epoch: int


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


def _set_bn_eval(model: nn.Module) -> None:
    encoder = getattr(model, "encoder", model)
    for m in encoder.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _frozen_stages(model: nn.Module, n: int) -> list[nn.Module]:
    stages = getattr(getattr(model, "encoder", None), "stages", None)
    return list(stages[:n]) if stages is not None and n > 0 else []


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    step0: int,
    data: PairSet,
    order: np.ndarray,
    cfg: TrainConfig,
    gen: torch.Generator,
    *,
    pos_weight: float,
    device: torch.device,
    progress: bool | None = None,
    desc: str = "train",
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float, int]:
    """One pass over ``order`` (indices into ``data``) in batches.

    Args:
        lr_at: step -> learning-rate multiplier (warm-up + cosine).
        step0: global step at the start of this epoch.
        pos_weight: weight of positive pairs in the site loss.

    Returns:
        ``(mean loss, steps taken)``.
    """
    from tqdm import tqdm

    model.train()
    if cfg.freeze_bn:
        _set_bn_eval(model)
    for stage in _frozen_stages(model, cfg.freeze_encoder_stages):
        stage.eval()
    bs = cfg.batch_size
    n_batches = max(1, len(order) // bs)
    total, count = 0.0, 0
    pw = torch.tensor(pos_weight, device=device)
    disc = centre_disc(data.images.shape[-1], cfg.heatmap_radius_frac).to(device) if cfg.heatmap_weight > 0 else None
    bar = tqdm(range(n_batches), desc=desc, unit="batch", leave=False, disable=tqdm_disable(progress))
    for b in bar:
        idx = order[b * bs : (b + 1) * bs]
        x = torch.from_numpy(data.images[idx]).float().div_(255.0)
        y = torch.from_numpy(data.labels[idx].astype(np.float32))
        x = augment_batch(x, y, cfg.augment, gen).to(device)
        y = y.to(device)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * lr_at(step0 + b)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = model(x)
        loss = F.binary_cross_entropy_with_logits(out.logit.float(), y, pos_weight=pw)
        if cfg.heatmap_weight > 0:
            target, weight = heatmap_target(y, disc)
            hl = F.binary_cross_entropy_with_logits(out.heatmap.float(), target, weight=weight, reduction="sum")
            loss = loss + cfg.heatmap_weight * hl / weight.sum().clamp_min(1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    bar.close()
    return total / max(count, 1), n_batches


@torch.inference_mode()
def predict_logits(model: nn.Module, data: PairSet, *, batch_size: int = 64, device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None) -> np.ndarray:
    """Raw site logits ``(N,)`` float64 of every pair in ``data`` (eval mode, no augmentation)."""
    model.eval()
    device = torch.device(device)
    out = []
    for start in range(0, len(data), batch_size):
        x = torch.from_numpy(data.images[start : start + batch_size]).float().div_(255.0).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out.append(model(x).logit.float().cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def _choose_device(name: str) -> torch.device:
    """``train.device`` through :func:`models.inference.choose_device`, naming the setting on error."""
    from models.inference import choose_device

    try:
        return choose_device(name)
    except UsageError as exc:
        raise InputError(f"train.device: {exc}") from None


def _lr_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def lr_at(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return lr_at


def _epoch_order(data: PairSet, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    n = cfg.epoch_pairs or len(data)
    if cfg.balance == "sampler" and 0 < data.positives < len(data):
        p = np.where(data.labels == 1, 0.5 / data.positives, 0.5 / (len(data) - data.positives))
        return rng.choice(len(data), size=n, replace=True, p=p / p.sum())
    if n <= len(data):
        return rng.permutation(len(data))[:n]
    return np.concatenate([rng.permutation(len(data)) for _ in range(math.ceil(n / len(data)))])[:n]


# ---- resume state (safetensors + JSON) -------------------------------------------------------


def _state_tensors(model: nn.Module, optimizer: torch.optim.Optimizer, best: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.contiguous() for k, v in best.items()})
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for key, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"opt.{pid}.{key}"] = t.detach().cpu().contiguous()
    tensors["torch_generator"] = gen.get_state().contiguous()
    return tensors


def _load_state_tensors(tensors: dict[str, torch.Tensor], model: nn.Module, optimizer: torch.optim.Optimizer, gen: torch.Generator) -> dict[str, torch.Tensor]:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
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


def _run_fingerprint(specs: list[str], ps: PairSet, job_dict: dict[str, Any], init_from: str | None) -> str:
    payload = json.dumps({"data": specs, "hash": ps.data_hash, "job": job_dict, "from": init_from}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _save_state(folder: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "state.safetensors.partial"))
    (folder / "state.safetensors.partial").replace(folder / "state.safetensors")
    (folder / "state.json.partial").write_text(json.dumps(info, indent=1), encoding="utf-8")
    (folder / "state.json.partial").replace(folder / "state.json")


# ---- the whole run ----------------------------------------------------------------------------


def build_start_model(job: Any, init_from: str | Path | None) -> tuple[nn.Module, Any]:
    """The network to train: from a checkpoint (``"default"`` or a folder) or freshly built.

    Returns:
        ``(model, the checkpoint's meta or None)``.
    """
    if init_from:
        from models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(init_from)
        if meta.arch != job.model.arch:
            log.info("fine-tuning %s from %s (model.arch %s ignored)", meta.arch, init_from, job.model.arch)
        return model, meta
    from models.factory import build_model

    return build_model(job.model.arch, pretrained=job.model.pretrained, in_channels=job.model.in_channels), None


def train_model(
    specs: list[str],
    out: Path,
    job: Any,
    *,
    init_from: str | Path | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[EpochSummary], None] | None = None,
    resume: bool = True,
    extra_sets: list[PairSet] | None = None,
) -> TrainResult:
    """Train (or fine-tune) a model and write a checkpoint folder.

    Args:
        specs: DATASET arguments (folders, ``synth:N``, ``xbd:PATH``).
        out: the checkpoint folder to write (``model.safetensors``, ``meta.json``,
            ``config.yaml``, ``train_log.json``).
        job: a :class:`sitewatch.jobs.TrainJob`.
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
    """
    from models.checkpoint import CheckpointMeta, save_checkpoint

    cfg: TrainConfig = job.train
    out = Path(out)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = _choose_device(cfg.device)
    torch.manual_seed(cfg.seed)
    cache_dir = default_cache_dir(cfg.cache_dir)

    sets = [load_datasets(specs, job.tiles, cache_dir=cache_dir, synth=job.synth, seed=cfg.seed, nuisance=cfg.synth_nuisance, progress=progress)] if specs else []
    sets += list(extra_sets or [])
    if not sets:
        raise InputError("no training data: pass --data DATASET (a folder, synth:N or xbd:PATH)")
    from train.datasets import concat_pairsets

    data = concat_pairsets(sets)
    log.info("training data %s", data.describe())
    if data.positives == 0 or data.positives == len(data):
        raise InputError(f"training data {data.name} has only one class ({data.positives} positive of {len(data)}); it needs both damaged and intact sites")
    if data.images.shape[-1] != job.tiles.chip_px:
        raise InputError(f"pairs are {data.images.shape[-1]} px but tiles.chip_px is {job.tiles.chip_px}")

    train_idx, val_idx, split_desc = choose_split(data, cfg)
    train_set, val_set = data.subset(train_idx), data.subset(val_idx)
    log.info("split %s: train %d (%d pos), validation %d (%d pos)", split_desc, len(train_set), train_set.positives, len(val_set), val_set.positives)
    if train_set.positives == 0 or val_set.positives == 0:
        raise InputError(
            f"the grouped split ({split_desc}) left no positive site on one side; add data, use "
            "fewer folds, or set train.split: block with a smaller train.block_size_m"
        )
    if val_set.positives == len(val_set):
        log.warning(
            "validation split (%s) holds no intact site: AUC/AP are undefined and the temperature and "
            "operating points cannot be fitted (review a random sample too, not only the top of the queue)",
            split_desc,
        )

    model, start_meta = build_start_model(job, init_from)
    model.to(device)
    for stage in _frozen_stages(model, cfg.freeze_encoder_stages):
        for p in stage.parameters():
            p.requires_grad_(False)
    from models.inference import choose_precision

    autocast_dtype = choose_precision(device, cfg.precision)
    log.info("training on %s, %s", device, "float32" if autocast_dtype is None else f"{autocast_dtype} autocast".replace("torch.", ""))
    arch = start_meta.arch if start_meta else job.model.arch
    in_channels = start_meta.in_channels if start_meta else job.model.in_channels
    encoder_params = [p for p in getattr(model, "encoder", nn.Identity()).parameters() if p.requires_grad]
    enc_ids = {id(p) for p in getattr(model, "encoder", nn.Identity()).parameters()}
    other = [p for p in model.parameters() if id(p) not in enc_ids]
    groups = [{"params": other, "base_lr": cfg.lr}]
    if encoder_params:
        groups.append({"params": encoder_params, "base_lr": cfg.lr * cfg.encoder_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    per_epoch = cfg.epoch_pairs or len(train_set)
    steps_per_epoch = max(1, per_epoch // cfg.batch_size)
    lr_at = _lr_schedule(cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch))
    neg = len(train_set) - train_set.positives
    pos_weight = float(neg / train_set.positives) if cfg.balance == "weighted_loss" else 1.0

    job_dict = config_to_dict(job)
    fingerprint = _run_fingerprint(list(specs), data, job_dict, str(init_from) if init_from else None)
    state_dir = out / STATE_DIR
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    history: list[EpochSummary] = []
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    best_ap, best_epoch, bad_epochs, start_epoch = -1.0, 0, 0, 0
    if resume and (state_dir / "state.json").is_file():
        try:
            info = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.warning("%s is unreadable (%s); starting afresh", state_dir / "state.json", exc)
            info = {}
        if info.get("fingerprint") == fingerprint:
            from safetensors.torch import load_file

            best_state = _load_state_tensors(load_file(str(state_dir / "state.safetensors")), model, optimizer, gen)
            rng.bit_generator.state = info["numpy_rng"]
            history = [EpochSummary(**h) for h in info["history"]]
            best_ap, best_epoch, bad_epochs, start_epoch = info["best_ap"], info["best_epoch"], info["bad_epochs"], info["epoch"]
            log.info("resuming from epoch %d of %d (state in %s)", start_epoch, cfg.epochs, state_dir)
        elif info:
            log.warning("%s belongs to a different run (data or config changed); starting afresh", state_dir)
    y_val = val_set.labels.astype(np.int64)

    for epoch in range(start_epoch, cfg.epochs):
        if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
            log.info("early stopping: no better validation AP for %d epochs", bad_epochs)
            break
        t0 = time.perf_counter()
        order = _epoch_order(train_set, cfg, rng)
        loss, steps = train_one_epoch(
            model, optimizer, lr_at, epoch * steps_per_epoch, train_set, order, cfg, gen,
            pos_weight=pos_weight, device=device, progress=progress, desc=f"epoch {epoch + 1}/{cfg.epochs}",
            autocast_dtype=autocast_dtype,
        )
        train_s = time.perf_counter() - t0
        logits = predict_logits(model, val_set, batch_size=max(cfg.batch_size, 64), device=device, autocast_dtype=autocast_dtype)
        val_loss = binary_nll(y_val, logits)
        auc, ap = roc_auc(y_val, logits), average_precision(y_val, logits)
        improved = ap > best_ap
        if improved:
            best_ap, best_epoch, bad_epochs = ap, epoch + 1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        summary = EpochSummary(
            epoch=epoch + 1, train_loss=loss, val_loss=val_loss, val_auc=auc, val_ap=ap,
            lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0,
            pairs_per_s=min(len(order), steps * cfg.batch_size) / max(train_s, 1e-9), best=improved,
        )
        history.append(summary)
        log.debug(summary.line(cfg.epochs))
        _save_state(
            state_dir,
            _state_tensors(model, optimizer, best_state, gen),
            {
                "fingerprint": fingerprint, "epoch": epoch + 1, "best_ap": best_ap, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "numpy_rng": rng.bit_generator.state,
                "history": [dataclasses.asdict(h) for h in history],
            },
        )
        if on_epoch:
            on_epoch(summary)

    model.load_state_dict(best_state)
    logits = predict_logits(model, val_set, batch_size=max(cfg.batch_size, 64), device=device, autocast_dtype=autocast_dtype)
    temperature = fit_temperature(y_val, logits)
    raw_p, cal_p = sigmoid(logits), sigmoid(logits / temperature)
    ece_before = expected_calibration_error(y_val, raw_p, cfg.calibration_bins)
    ece_after = expected_calibration_error(y_val, cal_p, cfg.calibration_bins)
    points = choose_operating_points(y_val, cal_p, screening_recall=cfg.screening_recall, evidence_precision=cfg.evidence_precision)
    report = binary_report(y_val, cal_p, threshold=points["screening"].threshold, top_k=cfg.top_k, bins=cfg.calibration_bins)
    log.info("calibration: temperature %.3f, ECE %.4f -> %.4f on %d validation pairs", temperature, ece_before, ece_after, len(val_set))

    metrics: dict[str, Any] = {
        "validation": report.to_dict(),
        "ece_before_calibration": ece_before,
        "ece_after_calibration": ece_after,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "split": split_desc,
        "n_train": len(train_set),
        "n_train_positive": train_set.positives,
        "n_val": len(val_set),
        "n_val_positive": val_set.positives,
        "operating_points": {k: dataclasses.asdict(v) for k, v in points.items()},
    }
    train_config = {**job_dict, "data": list(specs), "from": str(init_from) if init_from else None}
    meta = CheckpointMeta(
        arch=arch,
        in_channels=in_channels,
        input_px=job.tiles.chip_px,
        gsd_m=float(job.tiles.gsd_m),
        temperature=float(temperature),
        operating_points={k: float(v.threshold) for k, v in points.items()},
        metrics=metrics,
        data_hashes={s.name: s.data_hash for s in sets},
        train_config=train_config,
    )
    if start_meta is not None and start_meta.class_map:
        meta = dataclasses.replace(meta, class_map=dict(start_meta.class_map))
    model.cpu()
    save_checkpoint(model, meta, out)
    write_config(job, out)
    (out / LOG_FILE).write_text(
        json.dumps({"data": list(specs), "split": split_desc, "epochs": [dataclasses.asdict(h) for h in history]}, indent=1) + "\n",
        encoding="utf-8",
    )
    shutil.rmtree(state_dir, ignore_errors=True)
    from models.checkpoint import read_meta

    return TrainResult(out_dir=out, meta=read_meta(out), history=history, best_epoch=best_epoch, resumed_from_epoch=start_epoch)
