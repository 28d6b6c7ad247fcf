"""Black scene borders: exact-zero pixels connected to the scene edge, treated as nodata.

Orthorectified scenes are often delivered with a black collar around the imaged footprint and
no nodata value. Pixels that are exactly 0 in every band read and connected (8-neighbourhood)
to the scene's edge through such pixels are that collar; a black roof or shadow inside the
scene is not connected to the edge and stays data.

Pair cutting reads small windows, so connection to the scene edge is decided in two steps
(pure array maths here, the reads in :mod:`tiles.cut`):

1. within the window: a zero component that touches a window side lying on the scene edge is
   collar; one that touches no window side is interior;
2. a component that leaves the window elsewhere is decided by a coarse map of the whole scene
   (:func:`coarse_border_map`, from one decimated read per scene, made only when needed): it is
   collar when it overlaps a coarse cell whose sample is collar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

__all__ = ["BorderMap", "coarse_border_map", "black_border_mask"]

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class BorderMap:
    """Collar cells of a whole scene on a coarse grid.

    Attributes:
        cells: bool ``(h, w)``; True where the cell's sample is a zero pixel connected to the
            scene edge.
        height, width: the scene's size in native pixels.
    """

    cells: np.ndarray
    height: int
    width: int

    def window(self, row_off: int, col_off: int, height: int, width: int, out_shape: tuple[int, int]) -> np.ndarray:
        """The map looked up for every pixel of a (possibly decimated) native window.

        Returns:
            bool ``out_shape``: True where that pixel's coarse cell is collar.
        """
        ch, cw = self.cells.shape
        hd, wd = out_shape
        rows = row_off + (np.arange(hd) + 0.5) * (height / hd)
        cols = col_off + (np.arange(wd) + 0.5) * (width / wd)
        ri = np.clip((rows * ch / self.height).astype(np.intp), 0, ch - 1)
        ci = np.clip((cols * cw / self.width).astype(np.intp), 0, cw - 1)
        return self.cells[np.ix_(ri, ci)]


def coarse_border_map(zero: np.ndarray, height: int, width: int) -> BorderMap:
    """The collar of a scene from a decimated read.

    Args:
        zero: bool ``(h, w)``: the decimated sample is exactly 0 in every band.
        height, width: the scene's size in native pixels.
    """
    labels, n = ndimage.label(zero, structure=_EIGHT)
    keep = np.zeros(n + 1, dtype=bool)
    for side in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        keep[side] = True
    keep[0] = False
    return BorderMap(keep[labels], height, width)


def black_border_mask(
    zero: np.ndarray,
    window: tuple[int, int, int, int],
    scene_shape: tuple[int, int],
    border_map: Callable[[], BorderMap | None],
) -> np.ndarray:
    """Which zero pixels of a window belong to the scene's black collar.

    Args:
        zero: bool ``(hd, wd)``: the window's pixels that are exactly 0 in every band (the
            window may be read decimated; an averaged pixel is 0 only when all its pixels are).
        window: ``(row_off, col_off, height, width)`` of the window in native pixels.
        scene_shape: ``(height, width)`` of the scene in native pixels.
        border_map: gives the scene's :class:`BorderMap` (called only when a zero component
            leaves the window away from the scene edge), or None when it cannot be made.

    Returns:
        bool ``(hd, wd)``: True for collar pixels (to be treated as nodata).
    """
    labels, n = ndimage.label(zero, structure=_EIGHT)
    if n == 0:
        return np.zeros(zero.shape, dtype=bool)
    r0, c0, h, w = window
    sh, sw = scene_shape
    sides = (
        (labels[0], r0 <= 0),
        (labels[-1], r0 + h >= sh),
        (labels[:, 0], c0 <= 0),
        (labels[:, -1], c0 + w >= sw),
    )
    collar = np.zeros(n + 1, dtype=bool)
    leaves = np.zeros(n + 1, dtype=bool)
    for side, on_scene_edge in sides:
        (collar if on_scene_edge else leaves)[side] = True
    collar[0] = leaves[0] = False
    open_ = leaves & ~collar
    if open_.any():
        bm = border_map()
        if bm is not None:
            cells = bm.window(r0, c0, h, w, zero.shape)
            hit = np.zeros(n + 1, dtype=bool)
            hit[labels[cells & zero]] = True
            collar |= open_ & hit
    return collar[labels]
