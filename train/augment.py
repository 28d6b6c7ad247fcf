"""Batch augmentation that mimics nuisance change between two acquisitions.

Geometry (flips, 90-degree rotations) is shared by both epochs: the site does not move.
Photometry (brightness, contrast, saturation, white balance, gamma, blur, noise) is drawn
independently for before and after, and after is shifted by a few pixels against before
(residual misregistration), so none of these alone can look like damage to the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from train.config import AugmentConfig

_BLUR_KERNEL = torch.tensor([1.0, 2.0, 1.0]) / 4.0


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen) * (high - low) + low


def flip_rotate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and rot90 per sample, identical for both epochs.

    Args:
        x: (B, 2, C, H, W) with H == W.

    Returns:
        A new tensor of the same shape.
    """
    out = torch.empty_like(x)
    k = torch.randint(0, 4, (x.shape[0],), generator=gen)
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    for i in range(x.shape[0]):
        xi = x[i]
        if flip[i]:
            xi = xi.flip(-1)
        out[i] = torch.rot90(xi, int(k[i]), dims=(-2, -1))
    return out


def misregister(x: torch.Tensor, max_px: int, gen: torch.Generator) -> torch.Tensor:
    """Shift the after epoch by up to ``max_px`` pixels (edge pixels repeated), per sample.

    Args:
        x: (B, 2, C, H, W).
    """
    if max_px <= 0:
        return x
    b, _, c, h, w = x.shape
    shifts = torch.randint(-max_px, max_px + 1, (b, 2), generator=gen)
    after = F.pad(x[:, 1], (max_px, max_px, max_px, max_px), mode="replicate")
    out = x.clone()
    for i in range(b):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        out[i, 1] = after[i, :, max_px + dy : max_px + dy + h, max_px + dx : max_px + dx + w]
    return out


def photometric(img: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Independent colour changes per sample for one epoch.

    Args:
        img: (B, C, H, W) in [0, 1].

    Returns:
        (B, C, H, W) in [0, 1].
    """
    b, c = img.shape[:2]
    out = img
    if cfg.contrast > 0:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * _uniform((b, 1, 1, 1), 1 - cfg.contrast, 1 + cfg.contrast, gen) + mean
    if cfg.saturation > 0 and c == 3:
        grey = out.mean(dim=1, keepdim=True)
        out = (out - grey) * _uniform((b, 1, 1, 1), 1 - cfg.saturation, 1 + cfg.saturation, gen) + grey
    if cfg.hue_shift > 0:
        out = out * _uniform((b, c, 1, 1), 1 - cfg.hue_shift, 1 + cfg.hue_shift, gen)
    if cfg.brightness > 0:
        out = out + _uniform((b, 1, 1, 1), -cfg.brightness, cfg.brightness, gen)
    out = out.clamp(0.0, 1.0)
    if cfg.gamma > 0:
        out = out.clamp_min(1e-6) ** _uniform((b, 1, 1, 1), 1 - cfg.gamma, 1 + cfg.gamma, gen)
    if cfg.blur_prob > 0:
        blur = torch.rand(b, generator=gen) < cfg.blur_prob
        if blur.any():
            k2 = (_BLUR_KERNEL[:, None] * _BLUR_KERNEL[None, :]).to(out.dtype)
            weight = k2.expand(c, 1, 3, 3).contiguous()
            sel = out[blur]
            blurred = F.conv2d(F.pad(sel, (1, 1, 1, 1), mode="replicate"), weight, groups=c)
            out = out.clone()
            out[blur] = blurred
    if cfg.noise_std > 0:
        std = _uniform((b, 1, 1, 1), 0.0, cfg.noise_std, gen)
        out = out + torch.randn(out.shape, generator=gen) * std
    return out.clamp(0.0, 1.0)


def augment_batch(x: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a training batch.

    Args:
        x: (B, 2, C, H, W) float in [0, 1] (before, after), on the CPU.
        labels: (B,) 0/1 float or int; negatives may have before and after swapped.
        cfg: augmentation settings.
        gen: seeded generator (the only source of randomness, for reproducible runs).

    Returns:
        (B, 2, C, H, W) float in [0, 1].
    """
    if not cfg.enabled:
        return x
    x = x.float()
    if cfg.flip_rotate and x.shape[-1] == x.shape[-2]:
        x = flip_rotate(x, gen)
    if cfg.swap_prob > 0:
        swap = (torch.rand(x.shape[0], generator=gen) < cfg.swap_prob) & (labels.reshape(-1) == 0)
        if swap.any():
            x = x.clone()
            x[swap] = x[swap].flip(1)
    x = misregister(x, cfg.misregistration_px, gen)
    before = photometric(x[:, 0], cfg, gen)
    after = photometric(x[:, 1], cfg, gen)
    return torch.stack([before, after], dim=1)
