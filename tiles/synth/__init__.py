"""Synthetic before/after scenes: labelled GeoTIFF datasets the project makes itself.

Public API: :func:`generate_dataset` (writes ``before/*.tif``, ``after/*.tif``, ``sites.csv``),
:class:`SynthSummary`, :class:`SynthConfig`.
"""

from tiles.synth.config import SynthConfig
from tiles.synth.dataset import SynthSummary, generate_dataset

__all__ = ["SynthConfig", "SynthSummary", "generate_dataset"]
