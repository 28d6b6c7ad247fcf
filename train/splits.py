"""Train/validation splits grouped by area, so neighbouring buildings never straddle a split.

A *group* is a tile, a scene or a square spatial block. Every function here returns index arrays
into the dataset, and all sites of one group always land on the same side of a split.
"""

from __future__ import annotations

import numpy as np

from sitewatch.errors import InputError

_EARTH_RADIUS_M = 6_371_008.8


def spatial_block_groups(lon: np.ndarray, lat: np.ndarray, block_size_m: float, *, prefix: str = "") -> np.ndarray:
    """Group sites into square blocks of ``block_size_m`` on a local equirectangular grid.

    Args:
        lon, lat: (N,) WGS84 degrees.
        block_size_m: block side in metres.
        prefix: prepended to every group id (e.g. the dataset name, so blocks of different
            datasets never merge).

    Returns:
        (N,) array of group ids like ``"blk_12_-4"``.
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.size == 0:
        return np.array([], dtype=object)
    lat0 = np.deg2rad(np.nanmean(lat))
    x = np.deg2rad(lon) * _EARTH_RADIUS_M * np.cos(lat0)
    y = np.deg2rad(lat) * _EARTH_RADIUS_M
    bx = np.floor(x / block_size_m).astype(np.int64)
    by = np.floor(y / block_size_m).astype(np.int64)
    return np.array([f"{prefix}blk_{a}_{b}" for a, b in zip(bx, by)], dtype=object)


def _group_table(groups: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    groups = np.asarray(groups).astype(str)
    names, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse, minlength=names.size)
    pos = np.bincount(inverse, weights=np.asarray(labels, dtype=np.float64), minlength=names.size) if labels is not None else np.zeros(names.size)
    return names, inverse, sizes, pos


def grouped_kfold(groups: np.ndarray, folds: int, *, seed: int = 0, labels: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K grouped folds, balanced in size and (when ``labels`` are given) in positives.

    Groups are visited in a seeded random order, largest first, and each goes to the fold whose
    share of all positives plus share of all sites is currently smallest.

    Args:
        groups: (N,) group id per site.
        folds: number of folds (at least 2, at most the number of groups).
        seed: shuffles the assignment.
        labels: optional (N,) 0/1 labels to balance positives across folds.

    Returns:
        ``folds`` pairs ``(train_idx, val_idx)``; every index appears in exactly one val set.

    Raises:
        InputError: fewer groups than folds.
    """
    names, inverse, sizes, pos = _group_table(groups, labels)
    if folds < 2:
        raise InputError("grouped k-fold needs at least 2 folds")
    if names.size < folds:
        raise InputError(
            f"cannot make {folds} grouped folds from {names.size} group(s); use fewer folds or "
            "split: block with a smaller block_size_m"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(names.size)
    order = order[np.argsort(-(pos[order] * 1e6 + sizes[order]), kind="stable")]
    fold_of_group = np.empty(names.size, dtype=np.int64)
    fold_pos = np.zeros(folds)
    fold_size = np.zeros(folds)
    total_pos = max(float(pos.sum()), 1.0)
    total_size = float(sizes.sum())
    for g in order:
        # the fold whose share of positives plus share of sites is smallest
        f = int(np.argmin(fold_pos / total_pos + fold_size / total_size))
        fold_of_group[g] = f
        fold_pos[f] += pos[g]
        fold_size[f] += sizes[g]
    site_fold = fold_of_group[inverse]
    all_idx = np.arange(inverse.size)
    return [(all_idx[site_fold != f], all_idx[site_fold == f]) for f in range(folds)]


def grouped_holdout(groups: np.ndarray, val_fraction: float, *, seed: int = 0, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One grouped train/validation split holding out about ``val_fraction`` of the sites.

    Built from ``round(1 / val_fraction)`` grouped folds (fold 0 is validation), so positives
    are spread over both sides when ``labels`` are given.

    Returns:
        ``(train_idx, val_idx)``.

    Raises:
        InputError: fewer than two groups (nothing can be held out without leaking).
    """
    names = np.unique(np.asarray(groups).astype(str))
    if names.size < 2:
        raise InputError(
            "cannot hold out validation data: all sites are in one group (tile/scene); add more "
            "tiles, or use split: block with a smaller block_size_m"
        )
    folds = int(min(max(2, round(1.0 / val_fraction)), names.size))
    return grouped_kfold(groups, folds, seed=seed, labels=labels)[0]
