"""Chips for people: before, after and a heatmap overlay PNG per site.

Chips are written for the top-ranked sites once ranking is known, so a run of 100k sites does not
write 300k images unless asked to (``detect.chips_top_n: -1``). While scoring, a
:class:`TopChipCache` keeps the images of the best sites so far; only sites scored elsewhere (an
earlier, interrupted invocation, or Dask workers) are cut and scored again for their chips.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from detect.cutting import PairScorer, PairSource, cut_batch
from tiles.types import Pair, Site

log = logging.getLogger(__name__)

CHIPS_DIR = "chips"

#: threads that write the chip PNGs at the end of a run (:func:`write_site_chips`)
CHIP_WRITERS = min(4, os.cpu_count() or 1)


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


@dataclass(frozen=True)
class ChipImages:
    """The three images of one site's chips.

    Attributes:
        before, after: uint8 ``(H, W, 3)`` RGB (pixels without data painted grey).
        heatmap: float32 ``(H, W)`` change heatmap in ``[0, 1]``.
    """

    before: np.ndarray
    after: np.ndarray
    heatmap: np.ndarray


def pair_images(pair: Pair, heatmap: np.ndarray) -> ChipImages:
    """RGB images of a pair (``image (2, C, H, W)``) and its heatmap ``(H, W)``."""
    from tiles.chips import chip_to_rgb_uint8

    valid = pair.valid if pair.valid is not None and pair.valid.shape[0] == 2 else None
    return ChipImages(
        before=chip_to_rgb_uint8(pair.image[0], None if valid is None else valid[0]),
        after=chip_to_rgb_uint8(pair.image[1], None if valid is None else valid[1]),
        heatmap=np.asarray(heatmap, dtype=np.float32),
    )


class TopChipCache:
    """Keeps the chip images of the ``capacity`` best-scored sites seen while scoring.

    Ordered like ``scores.csv`` (written score descending, then ``site_id``), so every site that
    ends in the run's top ``capacity`` and was scored in this invocation is here, and its chips
    are written without cutting and scoring it a second time. Memory: about 115 KB per site at
    128 px. ``capacity < 0`` keeps every site.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._heap: list[tuple[float, _Reversed, ChipImages]] = []
        self._lock = threading.Lock()

    def _key(self, score: float, site_id: str) -> tuple[float, "_Reversed"]:
        # min-heap whose smallest item is the worst kept: low score first, then the larger id
        return (score, _Reversed(site_id))

    def wants(self, score: float, site_id: str) -> bool:
        """Whether a site with this written score would be kept (cheap check before rendering)."""
        if self.capacity < 0:
            return True
        if self.capacity == 0:
            return False
        with self._lock:
            if len(self._heap) < self.capacity:
                return True
            return self._key(score, site_id) > self._heap[0][:2]

    def offer(self, score: float, site_id: str, images: ChipImages) -> None:
        """Keep a site's images if it is among the best ``capacity`` so far."""
        if not self.wants(score, site_id):
            return
        item = (*self._key(score, site_id), images)
        with self._lock:
            if self.capacity < 0 or len(self._heap) < self.capacity:
                heapq.heappush(self._heap, item)
            else:
                heapq.heappushpop(self._heap, item)

    def images(self) -> dict[str, ChipImages]:
        """``{site_id: images}`` of the kept sites."""
        with self._lock:
            return {rev.value: images for _, rev, images in self._heap}


class _Reversed:
    """A string that sorts in reverse (so ties on score keep the smaller site id)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: "_Reversed") -> bool:
        return self.value > other.value

    def __gt__(self, other: "_Reversed") -> bool:
        return self.value < other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value


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
    cached: Mapping[str, ChipImages] | None = None,
    batch_size: int = 32,
) -> dict[str, dict[str, str]]:
    """Write the chips of ``sites`` into ``run_dir/chips``.

    Sites in ``cached`` are drawn from their kept images; the others (scored by an earlier,
    interrupted invocation or on Dask workers) are cut and scored again for their heatmap.

    Args:
        sites: the sites to draw (normally the top-ranked assessable ones).
        run_dir: the run folder.
        make_cutter: builds a :class:`tiles.cut.PairCutter`.
        scorer: the model (for the heatmap).
        cached: images kept while scoring (:class:`TopChipCache`).
        batch_size: pairs scored at once.

    Returns:
        ``{site_id: {"chip_before": rel, "chip_after": rel, "chip_heatmap": rel}}`` with paths
        relative to ``run_dir`` (posix), for the sites whose chips were written.
    """
    from tiles.chips import safe_name

    folder = run_dir / CHIPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    cached = cached or {}
    images: dict[str, ChipImages] = {s.site_id: cached[s.site_id] for s in sites if s.site_id in cached}
    missing = [s for s in sites if s.site_id not in images]
    if missing:
        log.info("cutting %d sites again for their chips", len(missing))
        cutter = make_cutter()
        try:
            for start in range(0, len(missing), batch_size):
                pairs = [p for p in cut_batch(cutter, missing[start : start + batch_size]) if p.ok and p.image is not None]
                if not pairs:
                    continue
                by_shape: dict[tuple[int, ...], list[Pair]] = {}
                for pair in pairs:
                    by_shape.setdefault(tuple(pair.image.shape), []).append(pair)
                for group in by_shape.values():
                    batch = np.stack([p.image for p in group]).astype(np.float32, copy=False)
                    heatmaps = np.asarray(scorer.score(batch).heatmap, dtype=np.float32)
                    for pair, heat in zip(group, heatmaps):
                        images[pair.site.site_id] = pair_images(pair, heat)
        finally:
            cutter.close()
    written: dict[str, dict[str, str]] = {}
    jobs: list[tuple[ChipImages, dict[str, str]]] = []
    for site in sites:
        chip = images.get(site.site_id)
        if chip is None:
            continue
        name = safe_name(site.site_id)
        paths = {
            "chip_before": f"{CHIPS_DIR}/{name}_before.png",
            "chip_after": f"{CHIPS_DIR}/{name}_after.png",
            "chip_heatmap": f"{CHIPS_DIR}/{name}_heatmap.png",
        }
        jobs.append((chip, paths))
        written[site.site_id] = paths

    def save(job: tuple[ChipImages, dict[str, str]]) -> None:
        chip, paths = job
        _save_png(chip.before, run_dir / paths["chip_before"])
        _save_png(chip.after, run_dir / paths["chip_after"])
        _save_png(heatmap_overlay(chip.after, chip.heatmap), run_dir / paths["chip_heatmap"])

    # PIL encodes (zlib) without holding the GIL: the PNGs are written by a few threads at once
    # (each file's bytes do not depend on which thread or in what order)
    with ThreadPoolExecutor(max_workers=max(1, min(CHIP_WRITERS, len(jobs)))) as pool:
        for _ in pool.map(save, jobs):
            pass
    return written
