"""The Siamese change-detection network: shared encoder, multi-scale fusion, decoder, site head.

Input contract (DESIGN.md): ``x`` of shape ``(B, 2, C, H, W)``, float in ``[0, 1]``, time first
(before, after). The network normalises internally (ImageNet mean/std), runs before and after
through one encoder as a single batch of ``2B`` images (shared weights, one pass), fuses the two
at every scale from ``[a, b, |a - b|]``, decodes the fused maps top-down (FPN-like, light
depthwise-separable convolutions) into a change heatmap, and pools a site score with a learned
Gaussian centre weighting, so the facility at the centre of the chip counts more than context.

Optionally (``epoch_head=True``, :class:`EpochBuildingHead`) each epoch is also judged on its
own: a small head on each epoch's encoder features (shared weights for both epochs) gives the
logit of "an intact building stands at the chip centre", and the site logit adds
``epoch_gain * logit(p_before * (1 - p_after))``, the log-odds of "standing before, not after"
(see :func:`gone_logit`), which view angle, colour and sharpness fool far less than pixel change.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.encoders import Encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelOutput(NamedTuple):
    """What every architecture returns.

    Attributes:
        logit: site score logit ``(B,)`` (uncalibrated; divide by the checkpoint's temperature).
        heatmap: change heatmap logits ``(B, 1, H, W)`` at the input size.
        embedding: site descriptor ``(B, D)`` used for quick re-ranking by similarity.
        standing: with the per-epoch building head, logits ``(B, 2)`` of "an intact building
            stands at the centre" in the before and in the after epoch; None without the head.
    """

    logit: torch.Tensor
    heatmap: torch.Tensor
    embedding: torch.Tensor
    standing: torch.Tensor | None = None


def channel_stats(in_channels: int) -> tuple[list[float], list[float]]:
    """Per-channel normalisation mean and std: ImageNet RGB, extra channels their average."""
    mean = list(IMAGENET_MEAN[:in_channels])
    std = list(IMAGENET_STD[:in_channels])
    while len(mean) < in_channels:
        mean.append(sum(IMAGENET_MEAN) / 3)
        std.append(sum(IMAGENET_STD) / 3)
    return mean, std


class ConvBNReLU(nn.Sequential):
    """``k x k`` convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SeparableBlock(nn.Sequential):
    """Depthwise ``3 x 3`` then pointwise ``1 x 1`` convolution (cheap spatial mixing)."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            ConvBNReLU(channels, channels, 3, groups=channels),
            ConvBNReLU(channels, channels, 1),
        )


class TemporalFusion(nn.Module):
    """Fuses before/after features of one scale: ``conv1x1([a, b, |a - b|])``.

    The concatenation keeps the direction of change (built vs destroyed); the absolute
    difference makes "nothing changed" easy to represent.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.project = ConvBNReLU(3 * cin, cout, 1)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Args: before, after: ``(B, c, h, w)``. Returns: ``(B, cout, h, w)``."""
        return self.project(torch.cat([before, after, (after - before).abs()], dim=1))


class CentreWeightedPool(nn.Module):
    """Weighted average over pixels with a learned isotropic Gaussian centred on the chip.

    The weights are ``softmax(-r^2 / (2 sigma^2))`` over pixels, ``r`` the distance from the
    chip centre with both axes scaled to ``[-1, 1]``. The
    width ``sigma`` is learned (initially ``init_sigma``), so training decides how much context
    counts; it cannot drift to zero or infinity because it is clamped.
    """

    def __init__(self, init_sigma: float = 0.35) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.tensor(math.log(init_sigma)))

    def weights(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Pixel weights ``(h, w)`` summing to one."""
        ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=torch.float32)
        xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=torch.float32)
        r2 = ys[:, None] ** 2 + xs[None, :] ** 2
        sigma = self.log_sigma.float().clamp(math.log(0.05), math.log(4.0)).exp()
        logits = -r2 / (2 * sigma**2)
        return torch.softmax(logits.flatten(), dim=0).view(h, w).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, c, h, w)``. Returns: ``(B, c)``."""
        wts = self.weights(x.shape[-2], x.shape[-1], x.device, x.dtype)
        return (x * wts).sum(dim=(-2, -1))


def gone_logit(standing: torch.Tensor) -> torch.Tensor:
    """Log-odds of "standing before, not standing after" from per-epoch standing logits.

    With ``p_b = sigmoid(l_b)`` and ``p_a = sigmoid(l_a)`` (the epochs judged independently),
    ``q = p_b * (1 - p_a)`` and the result is ``log(q / (1 - q))``, computed in log space
    (``log q = logsigmoid(l_b) + logsigmoid(-l_a)``) so it stays finite for any logits.

    Args:
        standing: ``(B, 2)`` logits (before, after).

    Returns:
        ``(B,)`` logits.
    """
    s = standing.float()
    log_q = (F.logsigmoid(s[:, 0]) + F.logsigmoid(-s[:, 1])).clamp(max=-1e-6)
    return log_q - torch.log(-torch.expm1(log_q))


class EpochBuildingHead(nn.Module):
    """Per-epoch "intact building at the centre" logit from one epoch's encoder features.

    The two finest-but-deepest scales (strides 8 and 16 of the MobileNetV2 encoders) are
    projected to ``width`` channels, the deeper one upsampled and added, mixed by a separable
    block, turned into a one-channel roof map and pooled with its own learned centre weighting.
    Both epochs go through the same weights (they are rows of one ``2B`` batch).

    Args:
        channels: channels of the encoder's feature maps, finest first.
        width: width of the head.
    """

    def __init__(self, channels: tuple[int, ...], width: int) -> None:
        super().__init__()
        deep, mid = channels[-1], channels[-2] if len(channels) > 1 else channels[-1]
        self.deep = ConvBNReLU(deep, width, 1)
        self.mid = ConvBNReLU(mid, width, 1)
        self.mix = SeparableBlock(width)
        self.roof = nn.Conv2d(width, 1, 1)
        self.pool = CentreWeightedPool(init_sigma=0.25)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Args: feats: encoder outputs for ``2B`` images, finest first. Returns: ``(2B,)`` logits."""
        mid = self.mid(feats[-2] if len(feats) > 1 else feats[-1])
        deep = F.interpolate(self.deep(feats[-1]), size=mid.shape[-2:], mode="bilinear", align_corners=False)
        roof = self.roof(self.mix(mid + deep))
        return self.pool(roof).squeeze(1)


class SiameseChangeNet(nn.Module):
    """Shared encoder, per-scale temporal fusion, top-down decoder, heatmap and site heads.

    Args:
        encoder: multi-scale encoder (see :mod:`models.encoders`).
        in_channels: image channels ``C``.
        decoder_channels: width of the fused maps and the decoder.
        embedding_dim: size ``D`` of the site embedding.
        arch: the factory name this network was built under (stored in checkpoints).
        epoch_head: add the per-epoch building head (:class:`EpochBuildingHead`) and fuse its
            "standing before, not after" log-odds into the site logit; False builds exactly the
            network the bundled model was trained as (same tensors, same outputs).
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        arch: str = "",
        in_channels: int = 3,
        decoder_channels: int = 48,
        embedding_dim: int = 64,
        epoch_head: bool = False,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.epoch_head = bool(epoch_head)
        self.in_channels = in_channels
        mean, std = channel_stats(in_channels)
        self.register_buffer("mean", torch.tensor(mean).view(1, in_channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, in_channels, 1, 1), persistent=False)
        self.encoder = encoder
        d = decoder_channels
        self.fusions = nn.ModuleList(TemporalFusion(c, d) for c in encoder.spec.channels)
        self.smooth = nn.ModuleList(SeparableBlock(d) for _ in encoder.spec.channels[:-1])
        self.heatmap_head = nn.Conv2d(d, 1, 1)
        self.centre_pool = CentreWeightedPool()
        self.embed = nn.Sequential(nn.Linear(2 * d, embedding_dim), nn.ReLU(inplace=True))
        self.score = nn.Linear(embedding_dim, 1)
        # weight of the centre-pooled heatmap logit in the site score; starts useful
        self.heatmap_gain = nn.Parameter(torch.tensor(1.0))
        if self.epoch_head:
            self.building_head = EpochBuildingHead(encoder.spec.channels, d)
            # weight of logit(p_before * (1 - p_after)) in the site score (learned)
            self.epoch_gain = nn.Parameter(torch.tensor(1.0))

    def _channels_last(self) -> bool:
        """Whether the weights were converted with ``.to(memory_format=torch.channels_last)``."""
        first = next(self.encoder.parameters())
        return first.dim() == 4 and not first.is_contiguous() and first.is_contiguous(
            memory_format=torch.channels_last
        )

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Score before/after pairs.

        Args:
            x: ``(B, 2, C, H, W)`` float in ``[0, 1]`` (before, after). Any ``H, W >= 16``.

        Returns:
            :class:`ModelOutput` with ``logit (B,)``, ``heatmap (B, 1, H, W)`` logits,
            ``embedding (B, D)`` and, with the per-epoch head, ``standing (B, 2)`` logits.
        """
        if x.dim() != 5 or x.shape[1] != 2 or x.shape[2] != self.in_channels:
            raise ValueError(
                f"expected input (B, 2, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        b, _, c, h, w = x.shape
        images = x.reshape(b * 2, c, h, w)
        if self._channels_last():
            images = images.contiguous(memory_format=torch.channels_last)
        images = (images - self.mean) / self.std
        feats = self.encoder(images)
        # (2B, ...) is laid out pair by pair: rows 2i (before) and 2i + 1 (after)
        fused = [
            fuse(f.view(b, 2, *f.shape[1:])[:, 0], f.view(b, 2, *f.shape[1:])[:, 1])
            for fuse, f in zip(self.fusions, feats)
        ]
        deepest = fused[-1]
        y = deepest
        for level in range(len(fused) - 2, -1, -1):
            lateral = fused[level]
            y = F.interpolate(y, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            y = self.smooth[level](y + lateral)
        heat_small = self.heatmap_head(y)  # (B, 1, h', w') at the finest stride
        heatmap = F.interpolate(heat_small, size=(h, w), mode="bilinear", align_corners=False)
        centre_feat = self.centre_pool(y)  # (B, d)
        context_feat = deepest.mean(dim=(-2, -1))  # (B, d)
        embedding = self.embed(torch.cat([centre_feat, context_feat], dim=1))
        centre_heat = self.centre_pool(heat_small).squeeze(1)  # (B,)
        logit = self.score(embedding).squeeze(1) + self.heatmap_gain * centre_heat
        if not self.epoch_head:
            return ModelOutput(logit=logit, heatmap=heatmap, embedding=embedding)
        standing = self.building_head(feats).view(b, 2)  # rows 2i, 2i + 1 -> (before, after)
        logit = logit + self.epoch_gain * gone_logit(standing).to(logit.dtype)
        return ModelOutput(logit=logit, heatmap=heatmap, embedding=embedding, standing=standing)
