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
    """

    arch: str = "siam-mobilenetv2-lite"
    pretrained: bool = True
    in_channels: int = 3
    weights_dtype: Literal["float16", "float32"] = "float16"

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ValueError("in_channels must be at least 1")
