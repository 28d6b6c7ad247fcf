"""A preview picture of synthetic before/after chips, one row per damage class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: chips are shown at this many pixels per side
CHIP_PX = 128


def write_gallery(chips: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: Path) -> Path:
    """Write a PNG grid: a row per damage class, before|after pairs side by side.

    Args:
        chips: damage class -> list of ``(before, after)`` uint8 chips, each ``(h, w, 3)``.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    classes = [c for c in chips if chips[c]]
    ncols = max((len(chips[c]) for c in classes), default=1)
    label_w, gap = 120, 6
    width = label_w + ncols * (2 * CHIP_PX + gap * 2)
    height = max(len(classes), 1) * (CHIP_PX + gap) + 24
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), "synthetic scenes: before | after, by xBD damage class (sitewatch synth)", fill=(0, 0, 0))
    for r, cls in enumerate(classes):
        y = 24 + r * (CHIP_PX + gap)
        draw.text((4, y + CHIP_PX // 2 - 6), cls, fill=(0, 0, 0))
        for c, (before, after) in enumerate(chips[cls]):
            x = label_w + c * (2 * CHIP_PX + gap * 2)
            for k, chip in enumerate((before, after)):
                im = Image.fromarray(chip).resize((CHIP_PX, CHIP_PX), Image.Resampling.BILINEAR)
                canvas.paste(im, (x + k * CHIP_PX, y))
            draw.rectangle([x + CHIP_PX // 2 - 2, y + CHIP_PX // 2 - 2, x + CHIP_PX // 2 + 2, y + CHIP_PX // 2 + 2], outline=(255, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
