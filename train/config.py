"""Settings of training and evaluation (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. The training helper owns and extends this class."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class EvaluateConfig:
    """How a model is evaluated on a labelled dataset."""

    batch_size: int = 64
