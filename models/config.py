"""Settings of a model architecture and of inference (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build, and how to run and store it.

    Attributes:
        arch: a name from ``models.factory.ARCHITECTURES``. The default,
            ``siam-mobilenetv2-lite`` (MobileNetV2 cut at stride 16), is the fastest on a CPU
            (see ``benchmarks/bench_model.py``) and is what the bundled default model uses.
        pretrained: start the encoder from ImageNet weights when they are available.
        in_channels: image channels ``C`` of the pairs ``(B, 2, C, H, W)``.
        weights_dtype: storage type of learned weights in ``model.safetensors`` written by
            ``sitewatch train`` (``float16`` halves the file; batch-norm statistics always stay
            float32).
        epoch_head: add the per-epoch building head: each epoch's own features give the logit of
            "an intact building stands at the centre", and the site logit adds
            ``epoch_gain * logit(p_before * (1 - p_after))`` (see :mod:`models.siamese`). Trained
            by ``train.epoch_head_weight`` on datasets with per-epoch targets (synthetic ones).
            Recorded in the checkpoint (``meta.json`` ``epoch_head``); off = the bundled model's
            network.
    """

    arch: str = "siam-mobilenetv2-lite"
    pretrained: bool = True
    in_channels: int = 3
    epoch_head: bool = False
    weights_dtype: Literal["float16", "float32"] = "float16"

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ValueError("in_channels must be at least 1")


@dataclass(frozen=True)
class CalibrationConfig:
    """The calibration policy: what the operating points aim for and which data fits what.

    Used by training (on its validation split) and by ``sitewatch calibrate`` (on a new event's
    verified sites). Probability = ``sigmoid(logit / temperature)``; the operating points are
    thresholds on that probability.

    Attributes:
        screening_recall: target recall of the ``screening`` operating point (a first pass that
            should miss few damaged sites).
        evidence_precision: target precision of the ``evidence`` operating point (also its
            lowest threshold: on a calibrated score, p >= 0.9 means about 0.9 precision).
        screening_max_threshold: the ``screening`` threshold is never above this (a screening
            pass flags every site the model thinks more likely damaged than not).
        temperature_share: share of the labelled sites (stratified by class, seeded) that fits
            the temperature; the other sites choose the operating points and measure the
            reliability, so no figure is judged on the data that fitted it. null = both on all
            labelled sites (only for comparisons: the reliability is then optimistic).
        min_labels: fewest labelled sites a calibration accepts.
        min_positives: fewest damaged (positive) labelled sites a calibration accepts. 3 (with
            the default share: two fit the temperature, one takes part in choosing the points) is
            safe because of ``trust_positives``: so few cannot tighten screening. 2 (one on each
            side) would leave the temperature to a single damaged site.
        trust_positives: fewest damaged sites in the operating-point part for which the fitted
            ``screening`` threshold is trusted to make screening stricter than the threshold the
            scores carried before (the parent's ``screening``, mapped onto the new temperature's
            probability scale through its logit). With fewer, screening is held: it never flags
            fewer sites than before (``min(fitted, parent)``). Why 10: below about 10 damaged
            sites even a threshold that flags every one of them cannot show recall 0.8 -- the
            one-sided 90 % Clopper-Pearson lower bound on recall with k of k flagged is
            ``0.1 ** (1 / k)``: 0.32 at 2, 0.63 at 5, 0.79 at 10 -- so the recall-based threshold is
            poorly determined and must not tighten screening. 0 = always trust the fit.
        screening_recall_confidence: null (default) = ``screening`` is the highest threshold
            whose recall on the operating-point part reaches ``screening_recall``. A level (e.g.
            0.9) = the highest threshold whose one-sided Clopper-Pearson lower bound on recall at
            that level reaches it (the lowest damaged score when none does): more conservative,
            measured in benchmarks/bench_calibrate.py and not the default (it flags more intact
            sites for little recall, see the README).
        min_negatives: fewest intact (negative) labelled sites a calibration accepts.
        bins: equal-width probability bins of the reliability table and the ECE.
        bootstrap: bootstrap resamples for the confidence intervals of the reliability report.
        confidence: two-sided level of those intervals (0.9 = 5th to 95th percentile).
        seed: seeds the split and the bootstrap (the same labels give the same calibration).
    """

    screening_recall: float = 0.9
    evidence_precision: float = 0.9
    screening_max_threshold: float = 0.5
    temperature_share: float | None = 0.5
    min_labels: int = 30
    min_positives: int = 3
    trust_positives: int = 10
    screening_recall_confidence: float | None = None
    min_negatives: int = 8
    bins: int = 10
    bootstrap: int = 1000
    confidence: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("screening_recall", "evidence_precision", "screening_max_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"calibration.{name} must be in (0, 1]")
        if self.temperature_share is not None and not 0.0 < self.temperature_share < 1.0:
            raise ValueError("calibration.temperature_share must be between 0 and 1 (exclusive), or null")
        for name in ("min_labels", "min_positives", "min_negatives", "bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"calibration.{name} must be at least 1")
        if self.trust_positives < 0:
            raise ValueError("calibration.trust_positives must be 0 (always trust the fitted screening threshold) or more")
        if self.screening_recall_confidence is not None and not 0.0 < self.screening_recall_confidence < 1.0:
            raise ValueError("calibration.screening_recall_confidence must be between 0 and 1 (exclusive), or null")
        if self.bootstrap < 0:
            raise ValueError("calibration.bootstrap must be 0 (no intervals) or more")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError("calibration.confidence must be between 0 and 1 (exclusive)")
