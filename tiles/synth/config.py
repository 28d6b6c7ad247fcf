"""Settings of the synthetic scene generator (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SynthConfig:
    """What ``sitewatch synth`` generates. Strength knobs are 0 (off) .. 1 (strong).

    The synthetic-scene helper owns and extends this class.
    """

    sites: int = 200
    seed: int = 0
    size_px: int = 2048
    gsd_m: float = 0.5
    crs: str = "EPSG:32633"
    after_crs: str = ""
    after_gsd_m: float = 0.0
    scenes: int = 1
    destroyed_fraction: float = 0.2
    major_fraction: float = 0.05
    minor_fraction: float = 0.05
