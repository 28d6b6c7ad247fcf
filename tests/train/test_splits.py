from __future__ import annotations

import numpy as np
import pytest

from sitewatch.errors import InputError
from train.splits import grouped_holdout, grouped_kfold, spatial_block_groups


def _groups(seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.array([f"tile{g}" for g in rng.integers(0, 12, 500)])
    labels = rng.integers(0, 2, 500)
    return groups, labels


def test_kfold_never_leaks_groups_and_covers_everything():
    groups, labels = _groups()
    folds = grouped_kfold(groups, 5, seed=1, labels=labels)
    seen = np.zeros(groups.size, int)
    for train_idx, val_idx in folds:
        assert not set(groups[train_idx]) & set(groups[val_idx])
        assert np.intersect1d(train_idx, val_idx).size == 0
        assert train_idx.size + val_idx.size == groups.size
        assert labels[val_idx].sum() > 0
        seen[val_idx] += 1
    assert (seen == 1).all()


def test_holdout_is_grouped_and_seeded():
    groups, labels = _groups(2)
    tr, va = grouped_holdout(groups, 0.2, seed=3, labels=labels)
    assert not set(groups[tr]) & set(groups[va])
    assert 0.05 < va.size / groups.size < 0.4
    tr2, va2 = grouped_holdout(groups, 0.2, seed=3, labels=labels)
    assert np.array_equal(va, va2)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(InputError, match="one group"):
        grouped_holdout(np.array(["a"] * 10), 0.2)
    with pytest.raises(InputError, match="3 grouped folds"):
        grouped_kfold(np.array(["a", "b"] * 5), 3)


def test_spatial_blocks_keep_neighbours_together():
    rng = np.random.default_rng(0)
    # a cluster of 50 sites within ~10 m, and a second cluster ~2 km east
    lon = np.r_[10.0 + rng.random(50) * 1e-4, 10.03 + rng.random(50) * 1e-4]
    lat = np.r_[50.0 + rng.random(50) * 1e-4, 50.0 + rng.random(50) * 1e-4]
    g = spatial_block_groups(lon, lat, 256.0)
    assert len(set(g[:50])) <= 4 and len(set(g[50:])) <= 4  # a cluster spans at most 2 x 2 blocks
    assert not set(g[:50]) & set(g[50:])
    assert len(set(spatial_block_groups(lon, lat, 10_000.0))) <= 2
