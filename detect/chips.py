"""Chips for people: before, after and a heatmap overlay PNG per site.

Chips are written for the top-ranked sites after scoring (re-cutting only those pairs), so a run
of 100k sites does not write 300k images unless asked to (``detect.chips_top_n: -1``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from detect.pipeline import PairScorer, PairSource, cut_batch
from tiles.types import Site

log = logging.getLogger(__name__)

CHIPS_DIR = "chips"


def heatmap_overlay(after_rgb: np.ndarray, heatmap: np.ndarray, *, strength: float = 0.65) -> np.ndarray:
    """Blend a change heatmap over the after chip: red where the model sees change.

    Args:
        after_rgb: uint8 array of shape ``(H, W, 3)``.
        heatmap: float array of shape ``(h, w)`` in ``[0, 1]`` (resized to ``(H, W)`` if needed).
        strength: opacity of the red overlay where the heatmap is 1.

    Returns:
        uint8 array of shape ``(H, W, 3)``.
    """
    h, w = after_rgb.shape[:2]
    heat = np.clip(np.nan_to_num(heatmap.astype(np.float32), nan=0.0), 0.0, 1.0)
    if heat.shape != (h, w):
        from PIL import Image

        heat = np.asarray(Image.fromarray(heat, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)
    base = after_rgb.astype(np.float32) * 0.75
    alpha = (heat * strength)[..., None]
    red = np.array([255.0, 32.0, 0.0], dtype=np.float32)
    out = base * (1.0 - alpha) + red * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG", optimize=False)
    tmp.replace(path)


def write_site_chips(
    sites: Sequence[Site],
    run_dir: Path,
    make_cutter: Callable[[], PairSource],
    scorer: PairScorer,
    *,
    batch_size: int = 32,
) -> dict[str, dict[str, str]]:
    """Re-cut and re-score ``sites`` and write their chips into ``run_dir/chips``.

    Args:
        sites: the sites to draw (normally the top-ranked assessable ones).
        run_dir: the run folder.
        make_cutter: builds a :class:`tiles.cut.PairCutter`.
        scorer: the model (for the heatmap).
        batch_size: pairs scored at once.

    Returns:
        ``{site_id: {"chip_before": rel, "chip_after": rel, "chip_heatmap": rel}}`` with paths
        relative to ``run_dir`` (posix), for the sites whose chips were written.
    """
    from tiles.chips import chip_to_rgb_uint8, safe_name

    folder = run_dir / CHIPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, str]] = {}
    if not sites:
        return written
    cutter = make_cutter()
    try:
        for start in range(0, len(sites), batch_size):
            pairs = [p for p in cut_batch(cutter, sites[start : start + batch_size]) if p.ok and p.image is not None]
            if not pairs:
                continue
            images = np.stack([p.image for p in pairs]).astype(np.float32, copy=False)
            heatmaps = np.asarray(scorer.score(images).heatmap, dtype=np.float32)
            for pair, heat in zip(pairs, heatmaps):
                name = safe_name(pair.site.site_id)
                before = chip_to_rgb_uint8(pair.image[0])
                after = chip_to_rgb_uint8(pair.image[1])
                paths = {
                    "chip_before": f"{CHIPS_DIR}/{name}_before.png",
                    "chip_after": f"{CHIPS_DIR}/{name}_after.png",
                    "chip_heatmap": f"{CHIPS_DIR}/{name}_heatmap.png",
                }
                _save_png(before, run_dir / paths["chip_before"])
                _save_png(after, run_dir / paths["chip_after"])
                _save_png(heatmap_overlay(after, heat), run_dir / paths["chip_heatmap"])
                written[pair.site.site_id] = paths
    finally:
        cutter.close()
    return written


def chip_rows(rows: Sequence[Mapping[str, str]], chips: Mapping[str, Mapping[str, str]]) -> list[dict[str, str]]:
    """Rows with their ``chip_*`` columns filled from ``chips`` (empty where none was written)."""
    out = []
    for row in rows:
        new = dict(row)
        paths = chips.get(row["site_id"], {})
        for column in ("chip_before", "chip_after", "chip_heatmap"):
            new[column] = paths.get(column, "")
        out.append(new)
    return out
