"""MobileNetV2 (Sandler et al., 2018) built without importing torchvision.

Importing torchvision costs 1.5-2 s per process on the 2-core reference machine (its ``ops``
package pulls in ``torch._dynamo``), a tenth of a 3,000-site ``sitewatch detect`` run. Scoring
only needs the network's layout, since the weights come from the checkpoint, so the layout is
built here.

What this module keeps equal to ``torchvision.models.mobilenet_v2(weights=None)`` (checked by
``tests/models/test_mobilenetv2.py``):

* the module tree and parameter names (``features.N.conv.M...``), so torchvision's ImageNet state
  dict and every sitewatch checkpoint load unchanged;
* the order in which modules are built and initialised. The global torch random generator is
  left in the same state, so a seeded training run (the bundled model's recipe) draws the same
  decoder initialisation as before.

Training with ImageNet weights still reads torchvision's weights entry (its URL and cache file
name; ``models.encoders``), which imports torchvision only then.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MobileNetV2", "ConvBNReLU6", "InvertedResidual", "BLOCK_SETTINGS"]

#: the network's stages after the stem: (expansion t, output channels c, repeats n, first stride s)
BLOCK_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class ConvBNReLU6(nn.Sequential):
    """Convolution (no bias, "same" padding), batch norm, in-place ReLU6: children ``0, 1, 2``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, dilation=1, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = cout


class InvertedResidual(nn.Module):
    """Expand (1x1, skipped when ``t == 1``), depthwise 3x3, project (1x1, linear), in ``conv``;
    the input is added back when the block keeps stride and width."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, not {stride}")
        self.stride = stride
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = [ConvBNReLU6(cin, hidden, kernel=1)] if expand != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_res_connect else y


class MobileNetV2(nn.Module):
    """``features`` (stem, 17 inverted residual blocks, 1280-channel head: 19 children) and an
    ImageNet ``classifier`` (dropout, linear), at width 1.0.

    Initialisation as in the reference implementation: convolutions He-normal (fan out) with zero
    bias, batch norms one and zero, the linear layer normal(0, 0.01) with zero bias.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        blocks: list[nn.Module] = [ConvBNReLU6(3, STEM_CHANNELS, stride=2)]
        cin = STEM_CHANNELS
        for t, c, n, s in BLOCK_SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        blocks.append(ConvBNReLU6(cin, HEAD_CHANNELS, kernel=1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(HEAD_CHANNELS, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))
