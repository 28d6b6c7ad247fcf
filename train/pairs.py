"""Labelled before/after pairs in memory (:class:`PairSet`) and their ``.npz`` cache files.

A pair set is what every DATASET argument becomes (see :mod:`train.datasets`): uint8 pairs
``(N, 2, C, H, W)`` with their labels, groups for grouped splits, and where they came from.
The cache file is one uncompressed ``.npz`` read without pickle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sitewatch.errors import InputError

__all__ = ["PairSet", "concat_pairsets", "save_pairset", "load_pairset"]


@dataclass(frozen=True)
class PairSet:
    """Labelled before/after pairs held in memory.

    Attributes:
        images: uint8 array ``(N, 2, C, H, W)`` (before, after), ``value / 255`` is the pair.
        labels: int8 ``(N,)``: 1 = major-damage/destroyed, 0 = no-damage.
        groups: ``(N,)`` str: the area each site belongs to (tile or scene), for grouped splits.
        site_ids: ``(N,)`` str.
        lon, lat: float64 ``(N,)`` WGS84 degrees of each site (NaN where unknown).
        scenes: ``(N,)`` str: before scene id of each pair.
        damage: ``(N,)`` str: the original damage class.
        name: short name of the source (for logs and reports).
        data_hash: SHA-256 over the contents of the source files (a folder's sites and rasters,
            an xBD folder's label files and images); the cache key adds the cutting settings.
        gsd_m: chip ground sample distance in metres per pixel.
        standing: int8 ``(N, 2)``: whether an intact building stands at the site in the before
            and in the after epoch (1 / 0, -1 = unknown), the targets of the per-epoch building
            head; from a dataset's ``standing_before`` / ``standing_after`` columns, which the
            synthetic generator writes. None = unknown for every pair (real labelled sets).
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    site_ids: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    scenes: np.ndarray
    damage: np.ndarray
    name: str
    data_hash: str
    gsd_m: float
    standing: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def has_standing(self) -> bool:
        """Whether any pair has a known per-epoch target."""
        return self.standing is not None and bool((self.standing >= 0).any())

    def standing_targets(self) -> np.ndarray:
        """int8 ``(N, 2)`` per-epoch targets, -1 where unknown (all of them when ``standing`` is None)."""
        if self.standing is None:
            return np.full((len(self), 2), -1, dtype=np.int8)
        return self.standing

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    def subset(self, idx: np.ndarray) -> PairSet:
        """The pairs at ``idx`` (same name and hash)."""
        idx = np.asarray(idx, dtype=np.int64)
        return dataclasses.replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            groups=self.groups[idx],
            site_ids=self.site_ids[idx],
            lon=self.lon[idx],
            lat=self.lat[idx],
            scenes=self.scenes[idx],
            damage=self.damage[idx],
            standing=None if self.standing is None else self.standing[idx],
        )

    def as_float(self, idx: np.ndarray | slice | None = None) -> np.ndarray:
        """float32 ``(n, 2, C, H, W)`` in [0, 1]."""
        arr = self.images if idx is None else self.images[idx]
        return arr.astype(np.float32) / 255.0

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self)} pairs ({self.positives} positive), "
            f"{np.unique(self.groups).size} groups"
        )


def concat_pairsets(sets: list[PairSet]) -> PairSet:
    """Concatenate pair sets (group ids are prefixed with each set's name so they stay apart)."""
    if not sets:
        raise InputError("no pair sets to concatenate: give at least one DATASET")
    if len(sets) == 1:
        return sets[0]
    shapes = {s.images.shape[1:] for s in sets if len(s)}
    if len(shapes) > 1:
        raise InputError(f"datasets have different pair shapes {sorted(shapes)}; cut them with the same tiles settings")
    return PairSet(
        images=np.concatenate([s.images for s in sets]),
        labels=np.concatenate([s.labels for s in sets]),
        groups=np.concatenate([np.array([f"{s.name}/{g}" for g in s.groups], dtype=object) for s in sets]),
        site_ids=np.concatenate([s.site_ids for s in sets]),
        lon=np.concatenate([s.lon for s in sets]),
        lat=np.concatenate([s.lat for s in sets]),
        scenes=np.concatenate([s.scenes for s in sets]),
        damage=np.concatenate([s.damage for s in sets]),
        name="+".join(s.name for s in sets),
        data_hash=hashlib.sha256("".join(s.data_hash for s in sets).encode()).hexdigest(),
        gsd_m=sets[0].gsd_m,
        standing=np.concatenate([s.standing_targets() for s in sets]) if any(s.standing is not None for s in sets) else None,
    )


def save_pairset(ps: PairSet, path: Path) -> None:
    """Write a pair set as one uncompressed ``.npz`` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        images=ps.images,
        labels=ps.labels,
        groups=ps.groups.astype(str),
        site_ids=ps.site_ids.astype(str),
        lon=ps.lon,
        lat=ps.lat,
        scenes=ps.scenes.astype(str),
        damage=ps.damage.astype(str),
        info=np.array(json.dumps({"name": ps.name, "data_hash": ps.data_hash, "gsd_m": ps.gsd_m})),
        **({} if ps.standing is None else {"standing": ps.standing.astype(np.int8)}),
    )
    os.replace(tmp, path)


def load_pairset(path: Path) -> PairSet:
    """Read a pair set written by :func:`save_pairset` (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        return PairSet(
            images=z["images"],
            labels=z["labels"],
            groups=z["groups"].astype(object),
            site_ids=z["site_ids"].astype(object),
            lon=z["lon"],
            lat=z["lat"],
            scenes=z["scenes"].astype(object),
            damage=z["damage"].astype(object),
            name=info["name"],
            data_hash=info["data_hash"],
            gsd_m=float(info["gsd_m"]),
            # caches written before the per-epoch targets existed have no such array
            standing=z["standing"] if "standing" in z.files else None,
        )
