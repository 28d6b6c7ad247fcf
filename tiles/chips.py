"""PNG chips for people: before, after, and the two side by side."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from tiles.types import Pair

__all__ = ["chip_to_rgb_uint8", "safe_name", "write_pair_pngs", "INVALID_RGB", "MAX_NAME_CHARS"]

#: colour of pixels without data in the PNGs (dark grey, so it is not mistaken for burnt ground).
INVALID_RGB = (64, 64, 64)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: longest site id used unchanged as a file name stem (longer ones are cut and hashed).
MAX_NAME_CHARS = 100


def chip_to_rgb_uint8(chip: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """A chip as an 8-bit RGB image.

    Args:
        chip: float ``(C, H, W)`` in ``[0, 1]``; one band is shown as grey, the first three
            bands as RGB otherwise.
        valid: optional bool ``(H, W)``; invalid pixels are painted :data:`INVALID_RGB`.

    Returns:
        uint8 ``(H, W, 3)``.
    """
    if chip.ndim != 3:
        raise ValueError(f"chip must be shaped (C, H, W), got {chip.shape}")
    rgb = np.repeat(chip[:1], 3, axis=0) if chip.shape[0] < 3 else chip[:3]
    out = np.round(np.clip(np.nan_to_num(rgb, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    out = np.ascontiguousarray(out.transpose(1, 2, 0))
    if valid is not None:
        out[~valid] = INVALID_RGB
    return out


def safe_name(site_id: str) -> str:
    """A bounded, file-name-safe version of a site id that never collides with another id's.

    Characters outside ``[A-Za-z0-9._-]`` become ``_``; when anything was replaced (or the id
    is empty or starts with a dot), the first 80 characters get an 8-hex-digit hash of the
    original id appended. An id longer than :data:`MAX_NAME_CHARS` is cut to 80 characters plus
    a 16-hex-digit hash, so every name stays far below the file systems' 255-byte limit with
    the ``_before.png`` suffixes added.
    """
    text = str(site_id)
    cleaned = _UNSAFE.sub("_", text)
    if cleaned != text or not cleaned or cleaned.startswith("."):
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
        cleaned = f"{cleaned[:80]}_{digest}"
    elif len(cleaned) > MAX_NAME_CHARS:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
        cleaned = f"{cleaned[:80]}_{digest}"
    return cleaned


def write_pair_pngs(pair: Pair, folder: str | Path) -> dict[str, Path]:
    """Write ``<safe>_before.png``, ``<safe>_after.png`` and ``<safe>_pair.png`` (side by side).

    Returns:
        ``{"before": path, "after": path, "pair": path}``, or ``{}`` when the pair has no image.
    """
    from PIL import Image

    if pair.image is None:
        return {}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_name(pair.site.site_id)
    valid = pair.valid if pair.valid is not None else np.ones((2, *pair.image.shape[-2:]), bool)
    before = chip_to_rgb_uint8(pair.image[0], valid[0])
    after = chip_to_rgb_uint8(pair.image[1], valid[1])
    gap = np.full((before.shape[0], max(2, before.shape[1] // 32), 3), 255, np.uint8)
    paths = {
        "before": folder / f"{name}_before.png",
        "after": folder / f"{name}_after.png",
        "pair": folder / f"{name}_pair.png",
    }
    Image.fromarray(before).save(paths["before"])
    Image.fromarray(after).save(paths["after"])
    Image.fromarray(np.concatenate([before, gap, after], axis=1)).save(paths["pair"])
    return paths
