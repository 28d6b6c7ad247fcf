"""Smooth random fields for textures and layouts (vectorised, resolution independent).

A field is drawn as coarse gaussian noise and upsampled with PIL's bicubic filter, which is fast
for large outputs (a 4096 x 4096 octave takes tens of milliseconds).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def upsample(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bicubic upsampling of a 2-D float array.

    Args:
        coarse: array of shape ``(h, w)``.
        shape: output ``(H, W)``.

    Returns:
        float32 array of shape ``(H, W)``.
    """
    img = Image.fromarray(np.ascontiguousarray(coarse, dtype=np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BICUBIC), dtype=np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Gaussian-like noise with features about ``scale_px`` pixels wide, roughly unit variance.

    Args:
        rng: random generator.
        shape: output ``(H, W)``.
        scale_px: feature size in output pixels (>= 1).

    Returns:
        float32 array of shape ``(H, W)``.
    """
    scale_px = max(float(scale_px), 1.0)
    h = max(int(np.ceil(shape[0] / scale_px)) + 3, 4)
    w = max(int(np.ceil(shape[1] / scale_px)) + 3, 4)
    coarse = rng.standard_normal((h, w)).astype(np.float32)
    # upsample the coarse grid to a slightly larger canvas, then crop at a random sub-cell offset
    big = (int(round((h - 1) * scale_px)), int(round((w - 1) * scale_px)))
    big = (max(big[0], shape[0] + 1), max(big[1], shape[1] + 1))
    field = upsample(coarse, big)
    oy = int(rng.integers(0, big[0] - shape[0] + 1))
    ox = int(rng.integers(0, big[1] - shape[1] + 1))
    out = field[oy : oy + shape[0], ox : ox + shape[1]]
    return _standardise(out)


def _standardise(field: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, with statistics from a strided sample (cheap on big fields)."""
    step = max(1, int(np.sqrt(field.size / 250_000)))
    sample = field[::step, ::step]
    mean, std = float(sample.mean()), float(sample.std()) or 1.0
    out = field - mean
    out *= 1.0 / std
    return out


def fractal_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    scale_px: float,
    *,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Sum of ``octaves`` smooth noises, each half the feature size and ``persistence`` the weight.

    Args:
        rng: random generator.
        shape: output ``(H, W)``.
        scale_px: feature size of the coarsest octave in pixels.
        octaves: number of octaves (finer octaves below 1 px are skipped).
        persistence: amplitude ratio between successive octaves.

    Returns:
        float32 array of shape ``(H, W)``, zero mean, unit variance.
    """
    total: np.ndarray | None = None
    amp = 1.0
    scale = float(scale_px)
    for _ in range(octaves):
        if scale < 1.0:
            break
        layer = smooth_noise(rng, shape, scale)
        if total is None:
            total = layer
        else:
            layer *= amp
            total += layer
        amp *= persistence
        scale /= 2.0
    if total is None:
        return np.zeros(shape, dtype=np.float32)
    return _standardise(total)


def pixel_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Independent standard-normal noise per pixel, float32, of the given shape."""
    return rng.standard_normal(shape, dtype=np.float32)
