"""Synthetic before/after scenes: labelled GeoTIFF datasets the project makes itself.

Public API: :func:`generate_dataset` (writes ``before/*.tif``, ``after/*.tif``, ``sites.csv``),
:class:`SynthSummary`, :class:`SynthConfig`; :func:`plan_region` (one region's layout, damage,
sites and acquisitions) and :func:`render_region_epoch` (one epoch of it as uint8 RGB); and ``GENERATOR_VERSION`` (put it in the key of any
cache of generated datasets: it changes when the same config would give other pixels).
"""

from tiles.synth.config import SynthConfig
from tiles.synth.dataset import (
    GENERATOR_VERSION,
    DatasetExistsError,
    Region,
    SynthSummary,
    generate_dataset,
    plan_region,
    render_region_epoch,
)

__all__ = [
    "GENERATOR_VERSION", "DatasetExistsError", "Region", "SynthConfig", "SynthSummary", "generate_dataset", "plan_region",
    "render_region_epoch",
]
