"""Signals that say when a pair is out of the model's depth (numpy only, no torch).

* :func:`sharpness_log_ratio`: ``log(after / before)`` of the high-frequency energy of the two
  epochs (a Laplacian), so a blurred or resampled epoch stands out (0 = equally sharp).
* :class:`FeatureStats` / :func:`feature_distance`: the Mahalanobis distance of a pair's site
  embedding from the embeddings of the model's training pairs, in units of the training pairs'
  own spread (stored in the checkpoint's ``meta.json`` at train time).
* the test-time-augmentation spread of the logit is computed by
  :class:`models.inference.Scorer` (it needs the network).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sitewatch.errors import ModelError

#: the variance floor of the principal axes, relative to the largest (keeps near-zero axes from
#: turning rounding into huge distances)
VARIANCE_FLOOR = 1e-4


def sharpness_log_ratio(images: np.ndarray) -> np.ndarray:
    """``log(energy(after) / energy(before))`` of a 4-neighbour Laplacian over the chip.

    Args:
        images: ``(B, 2, C, H, W)`` float in ``[0, 1]``.

    Returns:
        ``(B,)`` float64: 0 for equally sharp epochs, negative when the after image is blurrier,
        positive when the before image is.
    """
    x = np.nan_to_num(np.asarray(images, dtype=np.float32).mean(axis=2))  # (B, 2, H, W) grey
    lap = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    energy = np.mean(lap.astype(np.float64) ** 2, axis=(-2, -1)) + 1e-10  # (B, 2)
    return np.log(energy[:, 1] / energy[:, 0])


@dataclass(frozen=True)
class FeatureStats:
    """Mean and principal axes of the training pairs' site embeddings.

    Attributes:
        mean: ``(D,)`` mean embedding.
        axes: ``(D, D)`` principal axes as rows.
        variances: ``(D,)`` variance along each axis (floored).
        n: how many training pairs gave them.
        typical: the median distance of those pairs themselves (a distance of 3x this is far).
    """

    mean: np.ndarray
    axes: np.ndarray
    variances: np.ndarray
    n: int
    typical: float

    @classmethod
    def fit(cls, embeddings: np.ndarray) -> "FeatureStats":
        """Fit on ``(N, D)`` embeddings (N > D recommended)."""
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2 or e.shape[0] < 2:
            raise ModelError(f"feature statistics need (N >= 2, D) embeddings, got {e.shape}")
        mean = e.mean(axis=0)
        cov = np.cov(e - mean, rowvar=False)
        var, vecs = np.linalg.eigh(np.atleast_2d(cov))
        var = np.maximum(var, VARIANCE_FLOOR * max(float(var.max()), 1e-12))
        stats = cls(mean=mean, axes=vecs.T, variances=var, n=int(e.shape[0]), typical=1.0)
        typical = float(np.median(stats.distance(e)))
        return cls(mean=mean, axes=vecs.T, variances=var, n=int(e.shape[0]), typical=typical)

    def distance(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance ``(N,)`` of ``(N, D)`` embeddings."""
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != self.mean.shape[0]:
            raise ModelError(f"embeddings {e.shape} do not match feature statistics of size {self.mean.shape[0]}")
        proj = (e - self.mean) @ self.axes.T
        return np.sqrt(np.sum(proj**2 / self.variances, axis=1))

    def relative(self, embeddings: np.ndarray) -> np.ndarray:
        """Distance over the training pairs' median distance ``(N,)`` (1 = typical, 3 = far)."""
        return self.distance(embeddings) / max(self.typical, 1e-12)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (rounded to 6 significant digits) for ``meta.json``."""
        def r(a: np.ndarray) -> list[Any]:
            return np.asarray(a, dtype=np.float64).round(6).tolist()

        return {"mean": r(self.mean), "axes": r(self.axes), "variances": [float(f"{v:.6g}") for v in self.variances],
                "n": self.n, "typical": float(f"{self.typical:.6g}")}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "meta.json") -> "FeatureStats":
        """Read back what :meth:`to_dict` wrote.

        Raises:
            ModelError: keys missing or shapes inconsistent.
        """
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
            axes = np.asarray(data["axes"], dtype=np.float64)
            var = np.asarray(data["variances"], dtype=np.float64)
            n, typical = int(data["n"]), float(data["typical"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: feature_stats is incomplete ({exc}); retrain or remove the key") from None
        d = mean.shape[0]
        if mean.ndim != 1 or axes.shape != (d, d) or var.shape != (d,) or (var <= 0).any():
            raise ModelError(f"{where}: feature_stats shapes do not agree (mean {mean.shape}, axes {axes.shape}, variances {var.shape})")
        return cls(mean=mean, axes=axes, variances=var, n=n, typical=typical)
