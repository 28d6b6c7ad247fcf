"""Facilities scored part by part, and the damage around them (issue 15).

A facility's single window of ``2 * radius * tiles.radius_scale`` metres is resampled to
``tiles.chip_px`` (a 150 m compound at ~2.3 m/px, five times coarser than the model's 0.5 m), so
the hole a strike leaves in one wing is lost. Here each facility is also covered by the part
windows of :mod:`tiles.parts` (chips at the model's own scale) and, optionally, a ring of context
chips around it. Every window is an ordinary point site: it is cut, co-registered and gated by
the run's :class:`tiles.cut.PairCutter` (:func:`detect.cutting.cut_batch`) and scored by
:func:`detect.pipeline.score_batch`, exactly like a site; there is no second cut path.

**Aggregation rule** (``detect.parts_aggregate``): the site's score is the **maximum** of its
assessed parts' calibrated probabilities. Overlapping parts of one compound are strongly
correlated (they share pixels, scene, date and radiometry), so a noisy-or ``1 - prod(1 - p)``
over them double-counts the same evidence and rises with the number of parts: a large intact
compound of 25 parts at p = 0.05 each would score 0.72. The maximum keeps the calibrated meaning
of one chip ("the most damaged part shows damage with probability p") and does not depend on the
compound's size. ``noisy_or`` is available for comparison.

Columns added to a facility's row (empty strings when not applicable):

* ``parts``, ``parts_assessed``: planned and assessed part windows; ``parts_stride_m``,
  ``parts_coarsened``: the grid stride and whether ``tiles.parts.max_parts`` widened it.
* ``damaged_fraction``: share of the assessed parts flagged at the run's operating point.
* ``top_part``, ``top_part_score``: the part that scored highest (``p03``) and its score.
* ``window_score``: the single-window score of the whole site (what ``score`` was before).
* ``score_source``: ``parts`` (``score`` aggregates the parts) or ``window``.
* ``part_scores``: ``p00=0.123456;p01=cloud;...`` (the score, or the reason a part was not
  assessed), in plan order; ``part_centres_m``: ``east,north`` of each part's centre in metres
  from the site's point, same order, and ``part_size_m`` their side (the report outlines the
  parts on the site's chip).
* ``context``, ``context_assessed``, ``context_damage``: ring chips planned, assessed, and the
  share of the assessed ones flagged.
* ``targeted``: ``true`` when the site is flagged and at most ``detect.targeted_max_context_damage``
  of its surroundings is; ``false`` when the site is not flagged or its surroundings are damaged
  too; empty when the site or fewer than ``detect.context_min_assessed`` ring chips were assessed.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from detect.config import DetectConfig
from detect.cutting import PairScorer, PairSource, cut_batch
from detect.journal import BatchRecord
from detect.runfolder import PART_COLUMNS, format_number
from tiles.config import TilesConfig
from tiles.parts import SitePlan, needs_parts, plan_site, site_extent
from tiles.types import Site

__all__ = [
    "PART_COLUMNS",
    "SiteWindows",
    "aggregate_parts",
    "is_facility",
    "summarise_site",
]

# the columns this step adds to scores.csv are declared by the run folder contract:
# detect.runfolder.PART_COLUMNS


def aggregate_parts(probs: Sequence[float], rule: str) -> float:
    """A site's probability from its assessed parts' probabilities.

    Args:
        probs: calibrated probabilities of the assessed parts (at least one).
        rule: ``max`` or ``noisy_or``.

    Raises:
        ValueError: no probabilities, or an unknown rule.
    """
    if len(probs) == 0:
        raise ValueError("aggregate_parts needs at least one assessed part")
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if rule == "max":
        return float(p.max())
    if rule == "noisy_or":
        return float(1.0 - np.prod(1.0 - p))
    raise ValueError(f"unknown parts aggregation rule {rule!r} (max or noisy_or)")


def is_facility(site: Site, tiles: TilesConfig) -> bool:
    """A site whose ``kind`` is listed in ``tiles.parts.kind_radius_m``, or whose footprint is
    larger than one chip."""
    if tiles.parts.radius_for_kind(site.kind) is not None:
        return True
    if site.footprint is None:
        return False
    ext = site_extent(site, tiles)
    return ext is not None and ext.source == "footprint" and ext.side_m > tiles.chip_size_m


@dataclass(frozen=True)
class SiteWindows:
    """The parts-and-context step of a run (picklable, so Dask workers get it in their spec).

    Args:
        tiles: the run's tiles settings (``tiles.parts`` holds the geometry).
        detect: the run's detect settings (``parts``, ``context``, thresholds).
        threshold: the run's operating threshold: a window is *flagged* at or above it.
    """

    tiles: TilesConfig
    detect: DetectConfig
    threshold: float

    @property
    def active(self) -> bool:
        return self.detect.parts != "off" or self.detect.context != "off"

    def plan(self, site: Site) -> SitePlan:
        """The windows of one site under the run's ``detect.parts`` / ``detect.context``."""
        facility = is_facility(site, self.tiles)
        mode_p, mode_c = self.detect.parts, self.detect.context
        parts = mode_p == "on" or (mode_p == "auto" and facility)
        parts = parts and needs_parts(site, self.tiles)
        context = mode_c == "on" or (mode_c == "auto" and facility)
        return plan_site(site, self.tiles, parts=parts, context=context)

    def score(
        self,
        record: BatchRecord,
        sites: Sequence[Site],
        cutter: PairSource,
        scorer: PairScorer,
        *,
        decimals: int,
        lock: Any = None,
    ) -> BatchRecord:
        """The batch's record with each planned site's row completed from its windows.

        The windows of the batch's sites are cut with ``cutter`` (:func:`detect.cutting.cut_batch`)
        and scored by :func:`detect.pipeline.score_batch` (the same gating: empty chips and
        invalid model outputs are ``cannot_assess``) in chunks of ``detect.batch_size`` windows,
        so at most one chunk of window images is held at a time.

        Args:
            record: the batch's scored rows (one per site, in ``sites`` order).
            sites: the batch's sites.
            cutter: a :class:`tiles.cut.PairCutter` owned by the calling thread.
            scorer: the model.
            decimals: decimals of the written scores.
            lock: held around each call of the model (the Dask workers' shared scorer), or None.
        """
        from detect.pipeline import score_batch

        plans = [self.plan(s) for s in sites]
        window_sites = [w.site for plan in plans for w in plan.windows]
        if not window_sites:
            return record
        window_rows: list[Mapping[str, str]] = []
        step = max(1, self.detect.batch_size)
        for start in range(0, len(window_sites), step):
            pairs = cut_batch(cutter, window_sites[start : start + step])
            with lock if lock is not None else nullcontext():
                window_rows.extend(score_batch(record.batch, pairs, scorer, decimals=decimals).rows)
            del pairs
        by_site: dict[str, tuple[SitePlan, Sequence[Mapping[str, str]]]] = {}
        start = 0
        for plan in plans:
            n = len(plan.windows)
            by_site[plan.site.site_id] = (plan, window_rows[start : start + n])
            start += n
        rows = []
        for row in record.rows:
            entry = by_site.get(row["site_id"])
            if entry is None or not entry[0].windows:
                rows.append(row)
                continue
            rows.append(summarise_site(row, entry[0], entry[1], self.detect, self.threshold, decimals=decimals))
        return BatchRecord(record.batch, tuple(rows), record.embedding_ids, record.embeddings)


def _score(row: Mapping[str, str]) -> float | None:
    if row.get("status") != "ok" or not row.get("score"):
        return None
    value = float(row["score"])
    return value if math.isfinite(value) else None


def summarise_site(
    row: Mapping[str, str],
    plan: SitePlan,
    window_rows: Sequence[Mapping[str, str]],
    detect: DetectConfig,
    threshold: float,
    *,
    decimals: int,
) -> dict[str, str]:
    """A site's row with its parts aggregated into ``score`` and the part/context columns.

    Args:
        row: the site's own (single window) row.
        plan: its windows.
        window_rows: the scored rows of ``plan.windows``, in the same order.
        detect: ``parts_aggregate``, ``targeted_max_context_damage``, ``context_min_assessed``.
        threshold: a window (and the site) is flagged at or above it.
        decimals: decimals of the written scores.
    """
    out = dict(row)
    n_parts = len(plan.parts)
    part_rows = window_rows[:n_parts]
    ctx_rows = window_rows[n_parts:]
    window_score = _score(row)
    cols = {c: "" for c in PART_COLUMNS}
    cols["window_score"] = row.get("score", "") if window_score is not None else ""
    cols["score_source"] = "window"
    if n_parts:
        scores = [_score(r) for r in part_rows]
        assessed = [(w, s) for w, s in zip(plan.parts, scores) if s is not None]
        cols["parts"] = str(n_parts)
        cols["parts_assessed"] = str(len(assessed))
        cols["parts_stride_m"] = format_number(plan.stride_m, 1)
        cols["parts_coarsened"] = "true" if plan.coarsened else "false"
        cols["part_scores"] = ";".join(
            f"{w.name}={r['score'] if s is not None else (r.get('reason') or r.get('status', ''))}"
            for w, r, s in zip(plan.parts, part_rows, scores)
        )
        cols["part_centres_m"] = ";".join(f"{w.east_m:.1f},{w.north_m:.1f}" for w in plan.parts)
        cols["part_size_m"] = format_number(plan.parts[0].size_m, 1)
        if assessed:
            probs = [s for _, s in assessed]
            site_p = aggregate_parts(probs, detect.parts_aggregate)
            top_w, top_s = max(assessed, key=lambda ws: (ws[1], -ws[0].index))
            cols["damaged_fraction"] = format_number(sum(p >= threshold for p in probs) / len(probs), 4)
            cols["top_part"] = top_w.name
            cols["top_part_score"] = format_number(top_s, decimals)
            cols["score_source"] = "parts"
            out["score"] = format_number(site_p, decimals)
            out["status"], out["reason"] = "ok", ""
        elif window_score is None:
            reasons = sorted({r.get("reason", "") for r in part_rows} - {""})
            out["detail"] = (str(row.get("detail", "")) + f"; none of {n_parts} parts assessed ({', '.join(reasons)})").lstrip("; ")
    if ctx_rows:
        ctx = [s for s in (_score(r) for r in ctx_rows) if s is not None]
        cols["context"] = str(len(ctx_rows))
        cols["context_assessed"] = str(len(ctx))
        damage = sum(p >= threshold for p in ctx) / len(ctx) if ctx else None
        cols["context_damage"] = format_number(damage, 4) if damage is not None else ""
        site_score = _score(out)
        if site_score is not None:
            site_flagged = float(out["score"]) >= threshold
            if not site_flagged:
                cols["targeted"] = "false"
            elif damage is not None and len(ctx) >= detect.context_min_assessed:
                cols["targeted"] = "true" if damage <= detect.targeted_max_context_damage else "false"
    out.update(cols)
    return out


def parts_overlay_html(row: Mapping[str, str], *, px: int = 192) -> tuple[str, str]:
    """The site's after chip with its parts outlined and coloured by score, and summary lines.

    Returns ``(figure, lines)`` HTML (each empty when the row has no parts / no context). The
    geometry, colours and words are :mod:`detect.part_overlay`'s (shared with the review app and
    the dossier). The chip is the site's single window (``chip_size_m`` metres centred on the
    site's point). Parts not assessed are dashed grey; the top part has a thick outline.
    """
    import html

    from detect.part_overlay import read_parts_overlay

    def esc(v: object) -> str:
        return html.escape(str(v), quote=True)

    overlay = read_parts_overlay(row)
    if overlay is None:
        return "", ""
    figure = ""
    try:
        size = float(row.get("chip_size_m") or "nan")
    except ValueError:
        size = float("nan")
    if overlay.has_parts and size > 0:
        rects: list[str] = []
        for part in overlay.drawing_order():
            x, y, w = part.square_px(size, px)
            if part.assessed:
                thick = 3 if part.top else 1.5
                style = f'stroke="{part.colour}" stroke-width="{thick}" fill="{part.colour}" fill-opacity="0.15"'
            else:
                style = 'stroke="#999" stroke-dasharray="3,3" stroke-width="1" fill="none"'
            rects.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{w:.1f}" {style}>'
                f"<title>{esc(part.label)}</title></rect>"
            )
        image = row.get("chip_after", "")
        back = f'<image href="{esc(image)}" x="0" y="0" width="{px}" height="{px}"/>' if image else ""
        figure = (
            f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{px}" height="{px}" viewBox="0 0 {px} {px}" '
            f'role="img" aria-label="parts of {esc(row.get("site_id", ""))}">{back}{"".join(rects)}</svg>'
            "<figcaption>parts by score</figcaption></figure>"
        )
    lines = []
    if overlay.planned is not None:
        lines.append(f"parts: {esc(overlay.parts_text())}")
    if overlay.has_context:
        lines.append(f"surroundings: {esc(overlay.context_share_text())} &rarr; {esc(overlay.targeted_text())}")
    return figure, "".join(f'<div class="muted">{line}</div>' for line in lines)
