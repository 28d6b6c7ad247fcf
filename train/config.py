"""Settings of training and evaluation (defaults live here and nowhere else)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from models.config import CalibrationConfig


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation that mimics nuisance change between two acquisitions.

    Geometric flips and 90-degree rotations are applied identically to both epochs (the site
    does not move); photometric changes are drawn independently per epoch, so the network learns
    that a brighter or hazier after image is not damage.

    Attributes:
        enabled: switch all augmentation off (validation never augments).
        flip_rotate: random horizontal/vertical flips and rot90, the same for both epochs.
        brightness: max additive brightness change per epoch (fraction of the [0, 1] range).
        contrast: max relative contrast change per epoch (0.2 = x0.8 .. x1.2).
        saturation: max relative saturation change per epoch.
        hue_shift: max per-channel gain difference per epoch (a crude white-balance change).
        gamma: max relative gamma change per epoch.
        misregistration_px: max shift of after against before in chip pixels (integer roll).
        blur_prob: probability that one epoch is blurred (3x3 box or gaussian-like kernel).
        noise_std: max standard deviation of additive gaussian noise per epoch.
        swap_prob: probability of swapping before and after for a negative (no change) pair.
    """

    enabled: bool = True
    flip_rotate: bool = True
    brightness: float = 0.12
    contrast: float = 0.25
    saturation: float = 0.3
    hue_shift: float = 0.08
    gamma: float = 0.25
    misregistration_px: int = 3
    blur_prob: float = 0.25
    noise_std: float = 0.03
    swap_prob: float = 0.5

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation", "hue_shift", "gamma", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0")
        for name in ("blur_prob", "swap_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} must be between 0 and 1")
        if self.misregistration_px < 0:
            raise ValueError("augment.misregistration_px must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained (``sitewatch train``).

    Attributes:
        data: DATASET arguments used when ``--data`` is not given (folders, ``synth:N``,
            ``synth:N@PROFILE``, ``xbd:PATH``), so one config file reproduces a model.
        synth_profiles: named synthetic worlds for ``synth:N@PROFILE`` datasets: each maps
            synth settings (``tiles.synth.config.SynthConfig`` fields other than ``sites`` and
            ``seed``, which the DATASET argument sets) to the values that replace the job's
            ``synth`` section for that dataset, e.g. ``{concrete: {concrete_fraction: 0.6}}``.
            So one training set can mix several worlds, each generated once into the cache.
        epochs: maximum number of passes over the training split.
        batch_size: pairs per optimiser step.
        lr: peak learning rate (AdamW, cosine decay after a short warm-up).
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length in epochs (fractions allowed).
        encoder_lr_scale: learning rate of the encoder relative to ``lr`` (lower keeps the
            ImageNet features when fine-tuning).
        seed: seeds splits, sampling, augmentation and initialisation (deterministic runs).
        split: how validation sites are held out; always grouped by area, never by site:
            ``group`` uses each dataset's group column (tile / scene), ``block`` groups sites in
            square spatial blocks of ``block_size_m``.
        block_size_m: side of a spatial block for ``split: block`` (metres).
        val_fraction: share of groups held out for validation (when ``folds`` is 1).
        folds: number of grouped folds; with ``folds > 1`` training runs on fold ``fold``'s
            training part and validates on its held-out part.
        fold: which fold (0-based) is held out when ``folds > 1``.
        balance: class imbalance handling: ``weighted_loss`` (positive weight = neg/pos),
            ``sampler`` (class-balanced sampling) or ``none``.
        heatmap_weight: weight of the weak heatmap loss (positive sites: centre disc is change,
            negative sites: nothing is change); 0 turns it off.
        heatmap_radius_frac: radius of the centre disc for the heatmap target (fraction of side).
        epoch_head_weight: weight of the per-epoch building loss (BCE of "an intact building
            stands at the centre" per epoch, on pairs whose dataset gives ``standing_before`` /
            ``standing_after``, as synthetic ones do; pairs without them add nothing). Used
            only when the network has the head (``model.epoch_head``); 0 = the head learns
            through the site loss alone.
        early_stopping_patience: stop after this many epochs without a better validation AP
            (null = never stop early).
        epoch_pairs: pairs drawn per epoch (null = the whole training split once).
        threads: torch CPU threads (null = torch's default).
        cache_dir: where cut pairs, converted xBD folders and generated synthetic scenes are
            cached (null = ``$SITEWATCH_CACHE``, else ``~/.cache/sitewatch``).
        synth_nuisance: randomise the synthetic generator's nuisance settings per ``synth:N``
            dataset (seasonal colour, misregistration, haze) when the generator supports them.
        freeze_bn: keep BatchNorm statistics of the encoder fixed (helps small fine-tuning sets).
        calibration_bins: number of bins for the expected calibration error.
        screening_recall: target recall of the ``screening`` operating point.
        evidence_precision: target precision of the ``evidence`` operating point (also its lowest
            threshold: on a calibrated score, p >= 0.9 means about 0.9 precision).
        screening_max_threshold: the ``screening`` threshold is never above this (a screening
            pass flags every site the model thinks more likely damaged than not).
        calibration_holdout: share of the validation groups (tiles/scenes, else spatial blocks)
            kept out of epoch selection: the temperature and operating points are fitted on
            them only, so no figure is chosen on the data that picked the epoch. null = the whole
            validation split does both (as the bundled model was made).
        temperature_share: of the calibration pairs, the share (stratified by class) that fits
            the temperature; the rest choose the operating points and measure the reported
            validation figures (``calibration.temperature_share`` of
            :class:`models.config.CalibrationConfig`). null = both on all calibration pairs.
        feature_stats_pairs: training pairs (a seeded sample) whose embeddings give the
            checkpoint's ``feature_stats`` (mean and principal axes), against which the scorer
            measures how far a new pair's features are from anything trained on; 0 = none.
        top_k: k for precision/recall at top-k (the sites a reviewer would check).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        precision: training arithmetic: ``auto`` = bfloat16 autocast where the device runs it
            natively (CPUs with AVX512-BF16/AMX, recent GPUs), else float32.
        freeze_encoder_stages: number of leading encoder stages kept fixed (their ImageNet
            features are generic; skipping their gradients speeds up CPU training).
    """

    data: tuple[str, ...] = ()
    synth_profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    encoder_lr_scale: float = 0.3
    seed: int = 0
    split: Literal["group", "block"] = "group"
    block_size_m: float = 256.0
    val_fraction: float = 0.2
    folds: int = 1
    fold: int = 0
    balance: Literal["weighted_loss", "sampler", "none"] = "weighted_loss"
    heatmap_weight: float = 0.3
    heatmap_radius_frac: float = 0.18
    epoch_head_weight: float = 0.5
    early_stopping_patience: int | None = 5
    epoch_pairs: int | None = None
    threads: int | None = None
    cache_dir: str | None = None
    synth_nuisance: bool = True
    freeze_bn: bool = False
    calibration_bins: int = 10
    screening_recall: float = CalibrationConfig.screening_recall
    evidence_precision: float = CalibrationConfig.evidence_precision
    screening_max_threshold: float = CalibrationConfig.screening_max_threshold
    calibration_holdout: float | None = None
    temperature_share: float | None = None
    feature_stats_pairs: int = 2000
    top_k: int = 50
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    freeze_encoder_stages: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError("train.epochs must be at least 1")
        if self.batch_size < 1:
            raise ValueError("train.batch_size must be at least 1")
        if self.lr <= 0:
            raise ValueError("train.lr must be positive")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError("train.val_fraction must be between 0 and 1 (exclusive)")
        if self.folds < 1:
            raise ValueError("train.folds must be at least 1")
        if not 0 <= self.fold < self.folds:
            raise ValueError(f"train.fold must be in [0, {self.folds - 1}] for folds={self.folds}")
        if self.block_size_m <= 0:
            raise ValueError("train.block_size_m must be positive (metres)")
        for name in ("screening_recall", "evidence_precision", "screening_max_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"train.{name} must be in (0, 1]")
        for name in ("calibration_holdout", "temperature_share"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"train.{name} must be between 0 and 1 (exclusive), or null")
        if not (self.epoch_head_weight >= 0 and self.epoch_head_weight < float("inf")):
            raise ValueError("train.epoch_head_weight must be a finite number >= 0 (0 = no per-epoch building loss)")
        if self.feature_stats_pairs < 0:
            raise ValueError("train.feature_stats_pairs must be 0 (none) or more")
        for name in ("early_stopping_patience", "epoch_pairs", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"train.{name} must be at least 1, or null (see its description)")
        if self.cache_dir is not None and not self.cache_dir.strip():
            raise ValueError("train.cache_dir is empty; give a folder, or null for $SITEWATCH_CACHE / ~/.cache/sitewatch")
        self._check_synth_profiles()

    def _check_synth_profiles(self) -> None:
        """Profile names and keys are usable, and every ``synth:N@PROFILE`` names one of them
        (the values are checked against the job's ``synth`` section when the data is loaded)."""
        from tiles.synth.config import SynthConfig

        settable = [f.name for f in fields(SynthConfig) if f.name not in SYNTH_SPEC_KEYS]
        for name, overrides in self.synth_profiles.items():
            if not PROFILE_NAME.fullmatch(name):
                raise ValueError(f"train.synth_profiles: {name!r} is not a usable profile name (letters, digits, '-', '_')")
            for key in overrides:
                if key in SYNTH_SPEC_KEYS:
                    raise ValueError(
                        f"train.synth_profiles.{name}.{key}: set by the DATASET argument (synth:N@{name} gives the "
                        "sites; the seed is train.seed + the argument's position), not by a profile"
                    )
                if key not in settable:
                    raise ValueError(f"train.synth_profiles.{name}.{key}: not a synth setting; valid keys are: {', '.join(settable)}")
        for i, spec in enumerate(self.data):
            if spec.startswith("synth:") and "@" in spec:
                profile = spec.split("@", 1)[1]
                if profile not in self.synth_profiles:
                    known = ", ".join(sorted(self.synth_profiles)) or "none defined"
                    raise ValueError(f"train.data[{i}]: {spec}: no synth profile {profile!r} in train.synth_profiles ({known})")


#: synth settings a ``synth:N[@PROFILE]`` DATASET argument sets itself (never a profile)
SYNTH_SPEC_KEYS = ("sites", "seed")
#: what a synth profile may be called
PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class EvaluateConfig:
    """How a model is evaluated on a labelled dataset (``sitewatch evaluate``).

    Attributes:
        batch_size: pairs per forward pass.
        threshold: probability threshold for F1 / precision / recall; null = the model's
            ``operating_point`` threshold.
        operating_point: which of the checkpoint's operating points sets the threshold.
        top_k: k for precision/recall at top-k.
        calibration_bins: bins of the reliability plot and ECE.
        baseline: compute the non-learned pixel-difference baseline in the same run.
        tta: test-time augmentation (flips / rot90) in the scorer.
        device: ``auto``, ``cpu`` or ``cuda``.
        cache_dir: cache of cut pairs (null = ``$SITEWATCH_CACHE``, else ``~/.cache/sitewatch``).
        data: the DATASET evaluated when ``--data`` is not given (a folder, ``synth:N`` or
            ``xbd:PATH``).
    """

    batch_size: int = 64
    threshold: float | None = None
    operating_point: str = "screening"
    top_k: int = 50
    calibration_bins: int = 10
    baseline: bool = True
    tta: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cache_dir: str | None = None
    data: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("evaluate.batch_size must be at least 1")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"evaluate.threshold must be a probability in [0, 1], got {self.threshold}")
        if self.cache_dir is not None and not self.cache_dir.strip():
            raise ValueError("evaluate.cache_dir is empty; give a folder, or null for $SITEWATCH_CACHE / ~/.cache/sitewatch")
        if self.data is not None and not self.data.strip():
            raise ValueError("evaluate.data is empty; give a folder, synth:N or xbd:PATH")
