"""Job configs: the sections each command reads, matching the layout of ``configs/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

from detect.config import DetectConfig
from models.config import CalibrationConfig, ModelConfig
from review.config import ReviewConfig
from review.dossier.config import DossierConfig
from tiles.config import TilesConfig
from tiles.synth.config import SynthConfig
from tiles.synth.series import SeriesConfig
from train.config import EvaluateConfig, TrainConfig


@dataclass(frozen=True)
class TilesJob:
    """``sitewatch tiles``."""

    tiles: TilesConfig = field(default_factory=TilesConfig)


@dataclass(frozen=True)
class SynthJob:
    """``sitewatch synth``."""

    synth: SynthConfig = field(default_factory=SynthConfig)
    series: SeriesConfig = field(default_factory=SeriesConfig)


@dataclass(frozen=True)
class TrainJob:
    """``sitewatch train``."""

    tiles: TilesConfig = field(default_factory=TilesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass(frozen=True)
class EvaluateJob:
    """``sitewatch evaluate``."""

    tiles: TilesConfig = field(default_factory=TilesConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


@dataclass(frozen=True)
class DetectJob:
    """``sitewatch detect`` and ``sitewatch demo``."""

    tiles: TilesConfig = field(default_factory=TilesConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)


@dataclass(frozen=True)
class ReviewJob:
    """``sitewatch review``."""

    review: ReviewConfig = field(default_factory=ReviewConfig)


@dataclass(frozen=True)
class CalibrateJob:
    """``sitewatch calibrate``: the calibration policy, and the review settings that define the
    run's verified random sample (``review.validation_size`` / ``review.validation_seed``)."""

    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)


@dataclass(frozen=True)
class DossierJob:
    """``sitewatch dossier`` (the review section sizes the context view, as in the review app)."""

    review: ReviewConfig = field(default_factory=ReviewConfig)
    dossier: DossierConfig = field(default_factory=DossierConfig)
