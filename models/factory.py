"""Named architectures: ``build_model("siam-mobilenetv2-lite")`` and friends.

Every architecture takes ``(B, 2, C, H, W)`` float in ``[0, 1]`` and returns
:class:`models.siamese.ModelOutput` (``logit (B,)``, ``heatmap (B, 1, H, W)`` logits,
``embedding (B, D)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from models.encoders import Encoder, mobilenetv2_encoder, resnet_encoder
from models.siamese import SiameseChangeNet
from sitewatch.errors import ModelError


@dataclass(frozen=True)
class ArchitectureSpec:
    """How one named architecture is built.

    Attributes:
        description: one line for ``--help`` texts and error messages.
        encoder: builds the encoder from ``(pretrained, in_channels, arch, log_init)``.
        decoder_channels: width of the fused maps and the decoder.
        embedding_dim: size ``D`` of the site embedding.
    """

    description: str
    encoder: Callable[[bool, int, str, bool], Encoder]
    decoder_channels: int = 48
    embedding_dim: int = 64


ARCHITECTURE_SPECS: dict[str, ArchitectureSpec] = {
    "siam-mobilenetv2-lite": ArchitectureSpec(
        "MobileNetV2 encoder cut at stride 16 (fastest; the default)",
        lambda p, c, a, log: mobilenetv2_encoder(depth=4, pretrained=p, in_channels=c, arch=a, log_init=log),
        decoder_channels=32,
    ),
    "siam-mobilenetv2": ArchitectureSpec(
        "MobileNetV2 encoder to stride 32",
        lambda p, c, a, log: mobilenetv2_encoder(depth=5, pretrained=p, in_channels=c, arch=a, log_init=log),
    ),
    "siam-resnet18": ArchitectureSpec(
        "ResNet-18 encoder to stride 32",
        lambda p, c, a, log: resnet_encoder(
            layers=18, depth=4, pretrained=p, in_channels=c, arch=a, log_init=log
        ),
        decoder_channels=64,
    ),
}

#: Valid architecture names, in a stable order.
ARCHITECTURES: tuple[str, ...] = tuple(ARCHITECTURE_SPECS)


def check_arch(arch: str) -> ArchitectureSpec:
    """The spec of ``arch``, or ModelError listing the valid names."""
    spec = ARCHITECTURE_SPECS.get(arch)
    if spec is None:
        raise ModelError(
            f"unknown architecture {arch!r}; valid names are: {', '.join(ARCHITECTURES)}"
        )
    return spec


def build_model(
    arch: str, *, pretrained: bool = True, in_channels: int = 3, log_init: bool = True, epoch_head: bool = False,
) -> nn.Module:
    """Build a named Siamese change-detection network.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        pretrained: initialise the encoder from ImageNet weights when they are available
            (offline cache or download); random otherwise, with one log line saying which.
        in_channels: image channels ``C`` of the input ``(B, 2, C, H, W)``.
        log_init: log the initialisation line (checkpoint loading turns it off, since the
            weights are about to be replaced).
        epoch_head: add the per-epoch building head (``model.epoch_head``; see
            :class:`models.siamese.EpochBuildingHead`).

    Returns:
        a :class:`models.siamese.SiameseChangeNet` in training mode.

    Raises:
        ModelError: unknown ``arch`` (the message lists the valid names) or bad ``in_channels``.
    """
    spec = check_arch(arch)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ModelError(f"in_channels must be a positive integer, got {in_channels!r}")
    encoder = spec.encoder(pretrained, in_channels, arch, log_init)
    model = SiameseChangeNet(
        encoder,
        arch=arch,
        in_channels=in_channels,
        decoder_channels=spec.decoder_channels,
        embedding_dim=spec.embedding_dim,
        epoch_head=epoch_head,
    )
    return model
