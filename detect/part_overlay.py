"""A facility's parts and context as people see them: geometry, colours and words, read from a row.

:mod:`detect.parts` writes each facility's parts into ``scores.csv`` as text (``part_scores``,
``part_centres_m``, ``part_size_m``, ``top_part``, ``context_damage``, ``targeted``, ...). This
module is the one reader of those cells for drawing: ``report.html`` (:mod:`detect.report`), the
review app's site page and the dossier (:mod:`review`) all draw the same boxes in the same colours
and say the same words. Pure (standard library only): no pixels, no I/O.

Geometry: every chip is cut on a north-up local grid centred on the site's point (``tiles.grid``),
a square of ``chip_size_m`` metres. A part centred ``(east, north)`` metres from the point, of side
``size``, is the square ``x = east - size/2``, ``y = -north - size/2`` (SVG ``y`` is minus north) in
a view box ``-chip/2 .. chip/2``; :meth:`PartBox.square_m` gives it. Drawn in pixels of a ``px``
image of the chip: ``((east / chip + 0.5) * px, (0.5 - north / chip) * px)`` is the centre.

Colour: :func:`score_colour`, green (0) through yellow to red (1); a part that was not assessed is
grey and dashed (:data:`NOT_ASSESSED_COLOUR`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

__all__ = [
    "NOT_ASSESSED_COLOUR",
    "PartBox",
    "PartsOverlay",
    "read_parts_overlay",
    "score_colour",
]

#: outline of a part that could not be assessed (cloud, no data, ...).
NOT_ASSESSED_COLOUR = "#999999"


def score_colour(score: float) -> str:
    """``#rrggbb`` for a score: green (0) through yellow (0.5) to red (1); clipped to [0, 1]."""
    t = min(1.0, max(0.0, float(score))) if math.isfinite(score) else 0.0
    r = int(round(255 * min(1.0, 2 * t)))
    g = int(round(200 * min(1.0, 2 * (1 - t))))
    return f"#{r:02x}{g:02x}20"


def score_rgb(score: float) -> tuple[int, int, int]:
    """:func:`score_colour` as an ``(r, g, b)`` triple (for the PDF)."""
    text = score_colour(score)
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


@dataclass(frozen=True)
class PartBox:
    """One part window of a facility.

    Attributes:
        name: ``p00``, ``p01``, ... in plan order (the id reviewers mark).
        east_m, north_m: the part's centre, metres from the site's point.
        size_m: the part's side in metres.
        score: its calibrated probability, or None when it was not assessed.
        note: why it was not assessed (``cloud``, ``nodata`` ...), "" when assessed.
        top: the part that scored highest (``top_part``).
    """

    name: str
    east_m: float
    north_m: float
    size_m: float
    score: float | None
    note: str = ""
    top: bool = False

    @property
    def assessed(self) -> bool:
        return self.score is not None

    @property
    def colour(self) -> str:
        """Outline and fill colour (:func:`score_colour`, grey when not assessed)."""
        return score_colour(self.score) if self.score is not None else NOT_ASSESSED_COLOUR

    @property
    def label(self) -> str:
        """``p03: 0.951`` or ``p01: cloud`` (the tooltip and the accessible name)."""
        return f"{self.name}: {self.score:.3f}" if self.score is not None else f"{self.name}: {self.note or 'unknown'} (not assessed)"

    def square_m(self) -> tuple[float, float, float]:
        """``(x, y, side)`` of the part in chip metres, SVG orientation (``y`` is minus north)."""
        half = self.size_m / 2
        return self.east_m - half, -self.north_m - half, self.size_m

    def square_px(self, chip_m: float, px: float) -> tuple[float, float, float]:
        """``(x, y, side)`` in pixels of a ``px`` wide image of a chip ``chip_m`` metres across."""
        x, y, side = self.square_m()
        scale = px / chip_m
        return (x + chip_m / 2) * scale, (y + chip_m / 2) * scale, side * scale


def _number(cells: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(cells.get(key) or "nan")
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _count(cells: Mapping[str, str], key: str) -> int | None:
    value = _number(cells, key)
    return int(value) if value is not None else None


@dataclass(frozen=True)
class PartsOverlay:
    """What a facility's row says about its parts and its surroundings.

    Attributes:
        parts: the part windows in plan order (empty when the row has no usable geometry).
        planned, assessed: parts planned and assessed (None without parts).
        damaged_fraction: share of the assessed parts flagged (None when none assessed).
        top_part, top_part_score: the highest part and its score as written ("" when none).
        window_score: the single-window score of the whole site as written ("").
        context, context_assessed: ring chips planned and assessed (None without context).
        context_damage: share of the assessed ring chips flagged (None when none assessed).
        targeted: ``true``, ``false`` or "" as written.
        flagged: the site itself is flagged (``flagged`` column).
        coarsened: the grid was widened to stay within ``tiles.parts.max_parts``.
    """

    parts: tuple[PartBox, ...] = ()
    planned: int | None = None
    assessed: int | None = None
    damaged_fraction: float | None = None
    top_part: str = ""
    top_part_score: str = ""
    window_score: str = ""
    context: int | None = None
    context_assessed: int | None = None
    context_damage: float | None = None
    targeted: str = ""
    flagged: bool = False
    coarsened: bool = False

    @property
    def has_parts(self) -> bool:
        """True when there are parts to draw."""
        return bool(self.parts)

    @property
    def has_context(self) -> bool:
        return self.context is not None and self.context > 0

    @property
    def part_ids(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)

    def drawing_order(self) -> tuple[PartBox, ...]:
        """The parts with the top one last (drawn over its overlapping neighbours)."""
        return tuple(p for p in self.parts if not p.top) + tuple(p for p in self.parts if p.top)

    def parts_text(self) -> str:
        """One line about the parts ("" without parts), e.g. ``8 of 9 assessed, 11% flagged, top
        p02 (0.950000); whole-site window 0.120000``."""
        if self.planned is None:
            return ""
        text = f"{self.assessed if self.assessed is not None else 0} of {self.planned} assessed"
        if self.damaged_fraction is not None:
            text += f", {self.damaged_fraction:.0%} flagged"
        if self.top_part:
            text += f", top {self.top_part} ({self.top_part_score})"
        if self.window_score:
            text += f"; whole-site window {self.window_score}"
        if self.coarsened:
            text += "; grid widened to stay within tiles.parts.max_parts"
        return text

    def context_share_text(self) -> str:
        """The surroundings as a share (``3 of 12 surrounding chips flagged (25%)``), "" without context."""
        if not self.has_context:
            return ""
        n = self.context_assessed or 0
        if self.context_damage is None or n == 0:
            return f"none of {self.context} surrounding chips could be assessed"
        flagged = int(round(self.context_damage * n))
        text = f"{flagged} of {n} surrounding chips flagged ({self.context_damage:.0%})"
        if n < (self.context or 0):
            text += f"; {self.context - n} of {self.context} not assessable"
        return text

    def targeted_text(self) -> str:
        """Whether the site was hit alone, in plain words ("" without context)."""
        if not self.has_context:
            return ""
        if self.targeted == "true":
            return "hit alone (targeted): damaged while its surroundings are not"
        if self.targeted == "false":
            if self.flagged:
                return "not targeted: damaged along with its surroundings (area damage)"
            return "not targeted: the site itself is not flagged as damaged"
        return "cannot tell whether it was hit alone: too few surrounding chips assessed"


def read_parts_overlay(cells: Mapping[str, str]) -> PartsOverlay | None:
    """The parts and context of a ``scores.csv`` row (its cells as text), or None when the row has
    neither (a house, or a run without parts).

    Parts are drawn only when ``part_scores``, ``part_centres_m`` and ``part_size_m`` agree (same
    count, positive side); otherwise ``parts`` is empty and only the counts are kept.
    """
    planned = _count(cells, "parts")
    context = _count(cells, "context")
    if planned is None and context is None:
        return None
    top = cells.get("top_part", "") or ""
    entries = [e.split("=", 1) for e in (cells.get("part_scores") or "").split(";") if "=" in e]
    centres = [c.split(",") for c in (cells.get("part_centres_m") or "").split(";") if "," in c]
    side = _number(cells, "part_size_m")
    boxes: list[PartBox] = []
    if entries and len(entries) == len(centres) and side is not None and side > 0:
        try:
            for (name, value), (east, north) in zip(entries, centres):
                try:
                    score: float | None = float(value)
                    if not math.isfinite(score):
                        score = None
                except ValueError:
                    score = None
                boxes.append(PartBox(name.strip(), float(east), float(north), side, score,
                                     "" if score is not None else value.strip(), name.strip() == top))
        except ValueError:
            boxes = []
    return PartsOverlay(
        parts=tuple(boxes),
        planned=planned,
        assessed=_count(cells, "parts_assessed"),
        damaged_fraction=_number(cells, "damaged_fraction"),
        top_part=top,
        top_part_score=cells.get("top_part_score", "") or "",
        window_score=cells.get("window_score", "") or "",
        context=context,
        context_assessed=_count(cells, "context_assessed"),
        context_damage=_number(cells, "context_damage"),
        targeted=cells.get("targeted", "") or "",
        flagged=(cells.get("flagged") or "") == "true",
        coarsened=(cells.get("parts_coarsened") or "") == "true",
    )
