"""Siamese change-detection networks, the factory, the checkpoint format and the default model.

Must not read rasters. Importing this package does not import torch; the submodules do:
``models.factory`` (``build_model``, ``ARCHITECTURES``), ``models.checkpoint``
(``CheckpointMeta``, ``save_checkpoint``, ``load_checkpoint``) and ``models.inference``
(``Scorer``, ``ScoreBatch``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["default_model_dir"]


def default_model_dir() -> Path:
    """The bundled default model folder (``models/default/``, shipped as package data)."""
    return Path(__file__).resolve().parent / "default"
