"""Settings of batch detection (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectConfig:
    """How ``sitewatch detect`` runs. The detection helper owns and extends this class."""

    batch_size: int = 64
    operating_point: str = "screening"
    chips_top_n: int = 200
