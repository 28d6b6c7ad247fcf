"""A non-learned reference score: normalised pixel difference over the chip centre.

Each epoch of a pair is standardised per channel (zero mean, unit variance over the chip), so a
global brightness or contrast change scores nothing; the absolute difference is then averaged
over channels and weighted by a centred gaussian, so the site counts more than its context.
Every figure of ``sitewatch evaluate`` is reported beside this baseline.
"""

from __future__ import annotations

import numpy as np


def centre_weights(size: int, sigma_frac: float = 0.25) -> np.ndarray:
    """Gaussian weights ``(size, size)`` summing to 1, sigma = ``sigma_frac * size``."""
    c = (size - 1) / 2.0
    ax = np.exp(-0.5 * ((np.arange(size) - c) / (sigma_frac * size)) ** 2)
    w = ax[:, None] * ax[None, :]
    return (w / w.sum()).astype(np.float32)


def pixel_difference_score(images: np.ndarray, *, sigma_frac: float = 0.25, chunk: int = 256) -> np.ndarray:
    """Baseline change score per pair.

    Args:
        images: ``(N, 2, C, H, W)`` float in [0, 1] or uint8 (before, after).
        sigma_frac: centre weighting width as a fraction of the chip side.
        chunk: pairs processed at once (bounds memory).

    Returns:
        ``(N,)`` float64, higher = more change; not a probability.
    """
    if images.ndim != 5 or images.shape[1] != 2:
        raise ValueError(f"expected pairs shaped (N, 2, C, H, W), got {images.shape}")
    n, _, _, h, w = images.shape
    weights = centre_weights(h, sigma_frac) if h == w else np.outer(centre_weights(h, sigma_frac).sum(1), centre_weights(w, sigma_frac).sum(0))
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        x = images[start : start + chunk].astype(np.float32)
        mean = x.mean(axis=(-2, -1), keepdims=True)
        std = x.std(axis=(-2, -1), keepdims=True) + 1e-3 * (255.0 if images.dtype == np.uint8 else 1.0)
        z = (x - mean) / std
        diff = np.abs(z[:, 1] - z[:, 0]).mean(axis=1)  # (n, H, W)
        out[start : start + chunk] = (diff * weights).sum(axis=(-2, -1))
    return out
