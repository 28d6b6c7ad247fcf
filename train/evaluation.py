"""``sitewatch evaluate``: a checkpoint on a labelled dataset, beside a non-learned baseline.

Writes into the output folder: ``metrics.json`` (model and baseline figures, ECE, the
checkpoint's identity and the data hash), ``scores.csv`` (one row per pair), ``pr_curve.png``,
``reliability.png`` and the effective ``config.yaml``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.checkpoint import CheckpointMeta, read_meta
from sitewatch.config import config_to_dict, write_config
from sitewatch.errors import ConfigError
from tiles.config import TilesConfig
from train.baseline import pixel_difference_score
from train.calibration import sigmoid
from train.config import EvaluateConfig
from train.datasets import default_cache_dir, load_dataset
from train.pairs import PairSet
from train.metrics import (
    BinaryReport,
    binary_report,
    expected_calibration_error,
    precision_recall_curve,
    reliability_bins,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """Figures of one evaluation run."""

    out_dir: Path
    model: BinaryReport
    baseline: BinaryReport | None
    ece_uncalibrated: float
    n_pairs: int

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [f"model    {self.model.summary()} (ECE without temperature {self.ece_uncalibrated:.3f})"]
        if self.baseline is not None:
            out.append(f"baseline {self.baseline.summary()}")
        return out


def score_pair_set(model_dir: str | Path, data: PairSet, *, batch_size: int, device: str, tta: bool) -> tuple[np.ndarray, np.ndarray, CheckpointMeta]:
    """Score every pair of ``data`` with a checkpoint through :class:`models.inference.Scorer`.

    Returns:
        ``(calibrated probabilities (N,), raw logits (N,), the checkpoint's meta)``.
    """
    from models.inference import Scorer

    scorer = Scorer(model_dir, device=device, tta=tta, batch_size=batch_size)
    probs, logits = [], []
    for start in range(0, len(data), batch_size):
        batch = scorer.score(data.as_float(slice(start, start + batch_size)))
        probs.append(batch.prob)
        logits.append(batch.logit)
    return np.concatenate(probs), np.concatenate(logits), scorer.meta


def baseline_report(labels: np.ndarray, base: np.ndarray, *, flagged: int, top_k: int) -> BinaryReport:
    """Baseline figures; its F1 is taken where it flags as many sites as the model does."""
    order = np.sort(base)[::-1]
    thr = float(order[min(max(flagged, 1), len(order)) - 1]) if len(order) else 0.0
    return binary_report(labels, base, threshold=thr, top_k=top_k, probabilities=False)


def check_model_fits(model_dir: str | Path, tiles: TilesConfig, evaluate: EvaluateConfig) -> CheckpointMeta:
    """The checkpoint's meta, after checking it can be evaluated with these settings.

    Raises:
        ConfigError: ``evaluate.operating_point`` is not one of the model's (and no
            ``evaluate.threshold`` is set).
        ModelError: the checkpoint's metadata cannot be read.
    """
    meta = read_meta(model_dir)
    if evaluate.threshold is None and evaluate.operating_point not in meta.operating_points:
        known = ", ".join(meta.operating_points) or "none"
        raise ConfigError(
            f"evaluate.operating_point: {evaluate.operating_point!r}: model {model_dir} has operating points: {known}; "
            "pick one of them, or set a probability with evaluate.threshold",
            setting="evaluate.operating_point",
        )
    if meta.input_px != tiles.chip_px:
        log.warning("model was trained on %d px chips but tiles.chip_px is %d", meta.input_px, tiles.chip_px)
    if abs(meta.gsd_m - tiles.gsd_m) > 0.25 * meta.gsd_m:
        log.warning("model was trained at %.2f m/px but the chips are %.2f m/px", meta.gsd_m, tiles.gsd_m)
    return meta


def evaluate_model(
    model_dir: str | Path,
    out: Path,
    *,
    tiles: TilesConfig,
    evaluate: EvaluateConfig,
    progress: bool | None = None,
) -> EvaluationResult:
    """Evaluate a checkpoint on the DATASET ``evaluate.data`` and write the report files into ``out``.

    Args:
        model_dir: checkpoint folder or ``"default"``.
        out: output folder (``metrics.json``, ``scores.csv``, ``pr_curve.png``,
            ``reliability.png``, ``config.yaml``).
        tiles: how the pairs are cut (should match the model's training chips).
        evaluate: the evaluation settings; ``evaluate.data`` is the DATASET (a folder,
            ``synth:N`` or ``xbd:PATH``).
        progress: progress bars (None = automatic).

    Raises:
        ConfigError: no ``evaluate.data``, or an operating point the model does not have.
        InputError: the dataset cannot be used.
        ModelError: the checkpoint cannot be loaded.
    """
    cfg = evaluate
    if cfg.data is None:
        raise ConfigError("evaluate.data: no dataset to evaluate on; give a folder, synth:N or xbd:PATH", setting="evaluate.data")
    meta = check_model_fits(model_dir, tiles, cfg)
    data = load_dataset(cfg.data, tiles, cache_dir=default_cache_dir(cfg.cache_dir), progress=progress, setting="evaluate.data")
    labels = data.labels.astype(np.int64)
    probs, logits, meta = score_pair_set(model_dir, data, batch_size=cfg.batch_size, device=cfg.device, tta=cfg.tta)
    threshold = cfg.threshold if cfg.threshold is not None else float(meta.operating_points[cfg.operating_point])
    model_rep = binary_report(labels, probs, threshold=threshold, top_k=cfg.top_k, bins=cfg.calibration_bins)
    ece_raw = expected_calibration_error(labels, sigmoid(logits), cfg.calibration_bins)
    base = pixel_difference_score(data.images) if cfg.baseline else None
    base_rep = None if base is None else baseline_report(labels, base, flagged=int((probs >= threshold).sum()), top_k=cfg.top_k)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_plots(out, data, probs, logits, base, model_rep=model_rep, base_rep=base_rep, ece_raw=ece_raw, temperature=meta.temperature, bins=cfg.calibration_bins)
    _write_scores(out / "scores.csv", data, probs, logits, base)
    sections = {"tiles": tiles, "evaluate": evaluate}
    metrics = {
        "dataset": cfg.data,
        "dataset_name": data.name,
        "data_hash": data.data_hash,
        "model": str(model_dir),
        "arch": meta.arch,
        "weights_sha256": meta.weights_sha256,
        "temperature": meta.temperature,
        "operating_point": cfg.operating_point if cfg.threshold is None else None,
        "model_metrics": model_rep.to_dict(),
        "ece_uncalibrated": ece_raw,
        "baseline_metrics": base_rep.to_dict() if base_rep else None,
        "config": config_to_dict(sections),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_config(sections, out)
    return EvaluationResult(out_dir=out, model=model_rep, baseline=base_rep, ece_uncalibrated=ece_raw, n_pairs=len(data))


def _write_plots(
    out: Path, data: PairSet, probs: np.ndarray, logits: np.ndarray, base: np.ndarray | None, *,
    model_rep: BinaryReport, base_rep: BinaryReport | None, ece_raw: float, temperature: float, bins: int,
) -> None:
    """``pr_curve.png`` (model and baseline) and ``reliability.png`` (with and without the temperature)."""
    from train.plots import Curve, pr_curve_png, reliability_png

    labels = data.labels.astype(np.int64)
    p, r, _ = precision_recall_curve(labels, probs)
    curves = [Curve(f"model (AP {model_rep.average_precision:.3f})", r, p)]
    if base is not None and base_rep is not None:
        p, r, _ = precision_recall_curve(labels, base)
        curves.append(Curve(f"pixel-difference baseline (AP {base_rep.average_precision:.3f})", r, p))
    pr_curve_png(curves, out / "pr_curve.png", title=f"precision-recall on {data.name} ({len(data)} pairs)")
    conf, rate, _ = reliability_bins(labels, probs, bins)
    conf0, rate0, _ = reliability_bins(labels, sigmoid(logits), bins)
    reliability_png(
        [Curve(f"calibrated, T={temperature:.2f} (ECE {model_rep.ece:.3f})", conf, rate), Curve(f"uncalibrated (ECE {ece_raw:.3f})", conf0, rate0)],
        out / "reliability.png",
        title=f"reliability on {data.name}",
    )


def _write_scores(path: Path, data: PairSet, probs: np.ndarray, logits: np.ndarray, base: np.ndarray | None) -> None:
    """``scores.csv``: one row per pair (``site_id, group, damage, label, score, logit, baseline``)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["site_id", "group", "damage", "label", "score", "logit", "baseline"])
        for i in range(len(data)):
            w.writerow([data.site_ids[i], data.groups[i], data.damage[i], int(data.labels[i]), f"{probs[i]:.6f}", f"{logits[i]:.6f}", "" if base is None else f"{base[i]:.6f}"])
