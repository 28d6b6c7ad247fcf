"""Synthetic before/after scenes: labelled GeoTIFF datasets the project makes itself.

Public API: :func:`generate_dataset` (writes ``before/*.tif``, ``after/*.tif``, ``sites.csv``),
:class:`SynthSummary`, :class:`SynthConfig`, and ``GENERATOR_VERSION`` (put it in the key of any
cache of generated datasets: it changes when the same config would give other pixels).
"""

from tiles.synth.config import SynthConfig
from tiles.synth.dataset import GENERATOR_VERSION, SynthSummary, generate_dataset

__all__ = ["GENERATOR_VERSION", "SynthConfig", "SynthSummary", "generate_dataset"]
