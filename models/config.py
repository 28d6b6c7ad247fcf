"""Settings of a model architecture (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build. The models helper owns and extends this class."""

    arch: str = "siam-mobilenetv2"
    pretrained: bool = True
    in_channels: int = 3
