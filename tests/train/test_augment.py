from __future__ import annotations

import dataclasses

import torch

from train.augment import augment_batch
from train.config import AugmentConfig


def _batch(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((6, 2, 3, 32, 32), generator=g)


def test_shape_range_and_determinism():
    x = _batch()
    y = torch.tensor([0, 1, 0, 1, 0, 0])
    a = augment_batch(x, y, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment_batch(x, y, AugmentConfig(), torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    c = augment_batch(x, y, AugmentConfig(), torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)


def test_geometry_is_shared_by_both_epochs():
    x = _batch(1)
    x[:, 1] = x[:, 0]  # no change at all
    geometric_only = AugmentConfig(brightness=0, contrast=0, saturation=0, hue_shift=0, gamma=0, misregistration_px=0, blur_prob=0, noise_std=0)
    out = augment_batch(x, torch.zeros(6), geometric_only, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], out[:, 1])  # still no change
    assert not torch.equal(out[:, 0], x[:, 0])  # but flipped/rotated


def test_photometry_differs_per_epoch():
    x = _batch(2)
    x[:, 1] = x[:, 0]
    cfg = dataclasses.replace(AugmentConfig(), flip_rotate=False, misregistration_px=0, swap_prob=0)
    out = augment_batch(x, torch.zeros(6), cfg, torch.Generator().manual_seed(0))
    assert (out[:, 0] - out[:, 1]).abs().mean() > 0.01


def test_disabled_is_identity():
    x = _batch(3)
    assert torch.equal(augment_batch(x, torch.zeros(6), AugmentConfig(enabled=False), torch.Generator()), x)
