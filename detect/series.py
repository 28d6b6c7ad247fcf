"""Image series in detect: score a site across its dates and bracket the change.

For every site, :class:`tiles.series.SeriesCutter` puts the usable dates on one reference grid;
here every pair of usable dates up to ``detect.series_pair_span`` apart is scored (span 1: the
consecutive pairs; span 2 adds the pairs that skip one date, which is what lets the fit tell a
single bad date from a change). :func:`fit_bracket` then fits a monotone step over the dates
(intact ... intact | damaged ... damaged), optionally with one *outlier* date (a date that
differs from every other one: cloud the quality gates missed, a bad co-registration) that is
left out of the step:

- the pair ``(a, b)`` is expected to look changed exactly when the step lies between ``a`` and
  ``b``: predicted probability ``1 - eps`` then, ``eps`` otherwise; a pair involving the outlier
  date is predicted 0.5 (uninformative) and the outlier costs ``series_outlier_penalty`` nats;
- each hypothesis is scored by the cross-entropy log-likelihood of the pairs' calibrated
  probabilities; the best step hypothesis must beat the best no-change hypothesis by
  ``series_min_llr`` nats for a bracket.

A bracket is ``last_intact`` (the last date before the step) and ``first_damaged`` (the first
after it, skipping the outlier), with the score of their pair. A site's ``score`` is the
strongest evidence: the bracket pair's score when there is a bracket, else the highest score of
a pair that does not involve the outlier date. With two usable dates there is one pair, so the
series path gives the score of ``--before`` / ``--after``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from detect.journal import BatchRecord
from detect.outputs import format_number

log = logging.getLogger(__name__)

__all__ = ["Bracket", "fit_bracket", "series_pairs", "score_series_batches", "SERIES_COLUMNS"]

#: the columns a series run adds to ``scores.csv`` (after the pair columns of the evidence pair).
SERIES_COLUMNS = (
    "last_intact",
    "first_damaged",
    "bracket_score",
    "series_dates",
    "series_llr",
    "series_outlier",
    "series_reference",
    "series_timeline",
    "series_dropped",
)


@dataclass(frozen=True)
class Bracket:
    """The fitted step over a site's dates.

    Attributes:
        last_intact: index of the last date before the change, or None (no change).
        first_damaged: index of the first date after it (the outlier skipped), or None.
        outlier: index of the date left out as an outlier, or None.
        llr: log-likelihood of the best change hypothesis minus that of the best no-change one
            (nats; negative: no change is more likely).
    """

    last_intact: int | None
    first_damaged: int | None
    outlier: int | None
    llr: float

    @property
    def changed(self) -> bool:
        return self.last_intact is not None


def series_pairs(n_dates: int, span: int) -> list[tuple[int, int]]:
    """Pairs ``(a, b)`` with ``0 < b - a <= span``, in order."""
    return [(a, b) for a in range(n_dates) for b in range(a + 1, min(n_dates, a + span + 1))]


def _xent(p: float, q: float) -> float:
    """Log-likelihood of a soft observation ``p`` under predicted probability ``q``."""
    return p * math.log(q) + (1.0 - p) * math.log(1.0 - q)


def fit_bracket(
    n_dates: int,
    scores: Mapping[tuple[int, int], float],
    *,
    eps: float = 0.05,
    outlier_penalty: float = 1.0,
    min_llr: float = 1.0,
    allow_outlier: bool = True,
) -> Bracket:
    """Fit a monotone step (with at most one outlier date) to pair probabilities.

    Args:
        n_dates: number of dates, oldest first.
        scores: ``{(a, b): probability the pair shows severe change}`` for ``a < b``.
        eps: predicted probability of a change-looking pair that does not straddle the step
            (and ``1 - eps`` for one that does).
        outlier_penalty: cost of leaving one date out as an outlier, in nats.
        min_llr: the best change hypothesis must beat no change by this many nats.
        allow_outlier: consider outlier dates at all (needs at least 4 dates).

    Returns:
        The :class:`Bracket` (indices into the dates).
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    pairs = [(a, b, min(1.0, max(0.0, float(p)))) for (a, b), p in scores.items() if math.isfinite(p)]
    outliers: list[int | None] = [None]
    if allow_outlier and n_dates >= 4:
        outliers += list(range(n_dates))
    best_change: tuple[float, int, int, int | None] | None = None
    best_none = -math.inf
    half = math.log(0.5)
    for o in outliers:
        kept = [d for d in range(n_dates) if d != o]
        penalty = 0.0 if o is None else outlier_penalty
        base = -penalty
        fixed = 0.0
        for a, b, p in pairs:
            if o is not None and (a == o or b == o):
                fixed += half
        # no change
        ll0 = base + fixed + sum(_xent(p, eps) for a, b, p in pairs if o is None or (a != o and b != o))
        best_none = max(best_none, ll0)
        for t in range(len(kept) - 1):
            j, nxt = kept[t], kept[t + 1]
            ll = base + fixed
            for a, b, p in pairs:
                if o is not None and (a == o or b == o):
                    continue
                straddles = a <= j < b
                ll += _xent(p, 1.0 - eps if straddles else eps)
            if best_change is None or ll > best_change[0] + 1e-12:
                best_change = (ll, j, nxt, o)
    if best_change is None:
        return Bracket(None, None, None, -math.inf)
    ll, j, nxt, o = best_change
    llr = ll - best_none
    if llr < min_llr:
        return Bracket(None, None, None, llr)
    return Bracket(j, nxt, o, llr)


def _iso(day: Any) -> str:
    return day.isoformat() if day is not None else ""


def _site_rows(
    series: Any,
    probs: Mapping[tuple[int, int], float],
    results: Mapping[tuple[int, int], tuple[Any, int]],
    cfg: Any,
    decimals: int,
) -> tuple[dict[str, str], tuple[int, int] | None, Bracket | None]:
    """The ``scores.csv`` row of one site's series, and the evidence pair's key."""
    from detect.pipeline import pair_row

    n = len(series.days)
    bracket = fit_bracket(
        n,
        probs,
        eps=cfg.series_eps,
        outlier_penalty=cfg.series_outlier_penalty,
        min_llr=cfg.series_min_llr,
    )
    if bracket.changed:
        key = (bracket.last_intact, bracket.first_damaged)
        if key not in probs:  # the outlier sat between them and the span did not reach across
            key = max(
                (k for k in probs if k[0] <= bracket.last_intact < k[1] and bracket.outlier not in k),  # type: ignore[operator]
                key=lambda k: probs[k],
                default=max(probs, key=lambda k: probs[k]),
            )
    else:
        clean = [k for k in probs if bracket.outlier is None or bracket.outlier not in k]
        key = max(clean or list(probs), key=lambda k: probs[k])
    pair = series.pair(*key)
    row = pair_row(pair, probs[key], decimals=decimals)
    timeline = ";".join(
        f"{series.days[a].isoformat()}/{series.days[b].isoformat()}:{format_number(probs[(a, b)], 4)}" for a, b in sorted(probs)
    )
    row.update(
        last_intact=_iso(series.days[bracket.last_intact]) if bracket.changed else "",
        first_damaged=_iso(series.days[bracket.first_damaged]) if bracket.changed else "",  # type: ignore[index]
        bracket_score=format_number(probs[key], decimals) if bracket.changed else "",
        series_dates=str(n),
        series_llr=format_number(bracket.llr, 3) if math.isfinite(bracket.llr) else "",
        series_outlier=_iso(series.days[bracket.outlier]) if bracket.outlier is not None else "",
        series_reference=_iso(series.days[series.reference]),
        series_timeline=timeline,
        series_dropped=";".join(f"{d.isoformat()}:{reason}" for d, reason, _ in series.dropped),
    )
    return row, key, bracket


def _failed_row(series: Any, decimals: int) -> dict[str, str]:
    from detect.pipeline import pair_row

    row = pair_row(series.failure, None, decimals=decimals)
    row.update({c: "" for c in SERIES_COLUMNS})
    row["series_dates"] = str(len(series.days) if series.chips is not None else 0)
    row["series_dropped"] = ";".join(f"{d.isoformat()}:{reason}" for d, reason, _ in series.dropped)
    return row


def score_series_batch(
    batch_index: int,
    site_series: Sequence[Any],
    scorer: Any,
    *,
    cfg: Any,
    decimals: int,
    chip_cache: Any | None = None,
) -> BatchRecord:
    """Score every site's series of one batch and build its journal record.

    Args:
        batch_index: the batch's index in the plan.
        site_series: :class:`tiles.series.SiteSeries` per site, in plan order.
        scorer: a :class:`models.inference.Scorer`.
        cfg: the :class:`detect.config.DetectConfig` (series settings, batch size).
        decimals: decimals of the written scores.
        chip_cache: keeps the evidence pair's images of the best sites for their chips.
    """
    jobs: list[tuple[int, tuple[int, int]]] = []
    images: list[np.ndarray] = []
    for i, ser in enumerate(site_series):
        if not ser.ok:
            continue
        for key in series_pairs(len(ser.days), cfg.series_pair_span):
            jobs.append((i, key))
            images.append(ser.pair(*key).image)
    probs: dict[int, dict[tuple[int, int], float]] = {}
    results: dict[int, dict[tuple[int, int], tuple[Any, int]]] = {}
    step = max(1, cfg.batch_size)
    for start in range(0, len(jobs), step):
        chunk = jobs[start : start + step]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for j in range(len(chunk)):
            by_shape.setdefault(tuple(images[start + j].shape), []).append(j)
        for members in by_shape.values():
            res = scorer.score(np.stack([images[start + j] for j in members]).astype(np.float32, copy=False))
            for m, j in enumerate(members):
                i, key = chunk[j]
                p = float(np.asarray(res.prob)[m])
                if math.isfinite(p):
                    probs.setdefault(i, {})[key] = p
                    results.setdefault(i, {})[key] = (res, m)
    rows = []
    emb_ids: list[str] = []
    embs: list[np.ndarray] = []
    for i, ser in enumerate(site_series):
        if not ser.ok:
            rows.append(_failed_row(ser, decimals))
            continue
        if not probs.get(i):
            from detect.pipeline import MODEL_OUTPUT_INVALID, pair_row

            row = pair_row(ser.pair(0, 1), None, decimals=decimals, status_override=("cannot_assess", MODEL_OUTPUT_INVALID))
            row.update({c: "" for c in SERIES_COLUMNS})
            rows.append(row)
            continue
        row, key, _ = _site_rows(ser, probs[i], results[i], cfg, decimals)
        rows.append(row)
        res, m = results[i][key]  # type: ignore[index]
        emb = np.asarray(res.embedding, dtype=np.float32)[m]
        if np.isfinite(emb).all():
            emb_ids.append(ser.site.site_id)
            embs.append(emb.astype(np.float16))
        if chip_cache is not None:
            written = float(format_number(probs[i][key], decimals))  # type: ignore[index]
            if chip_cache.wants(written, ser.site.site_id):
                from detect.chips import pair_images

                chip_cache.offer(written, ser.site.site_id, pair_images(ser.pair(*key), res.heatmap[m]))  # type: ignore[misc]
    emb_array = np.stack(embs) if embs else np.zeros((0, 0), dtype=np.float16)
    return BatchRecord(batch=batch_index, rows=tuple(rows), embedding_ids=tuple(emb_ids), embeddings=emb_array)


def score_series_batches(
    sites: Sequence[Any],
    batches: Sequence[Any],
    make_cutter: Callable[[], Any],
    scorer: Any,
    *,
    cfg: Any,
    decimals: int,
    chip_cache: Any | None = None,
) -> Iterator[BatchRecord]:
    """Cut and score the series of every planned batch, yielding records in plan order."""
    cutter = make_cutter()
    try:
        for batch in batches:
            site_series = cutter.cut_series([sites[i] for i in batch.site_indices])
            yield score_series_batch(batch.index, site_series, scorer, cfg=cfg, decimals=decimals, chip_cache=chip_cache)
    finally:
        cutter.close()


class SeriesEvidenceSource:
    """A :class:`detect.cutting.PairSource` that gives each site's evidence pair (for chips).

    Used for the chips of sites whose images were not kept while scoring (a resumed run): the
    series is cut and scored again and the pair that gave the site's score is returned.
    """

    def __init__(self, cutter: Any, scorer: Any, cfg: Any, decimals: int) -> None:
        self.cutter = cutter
        self.scorer = scorer
        self.cfg = cfg
        self.decimals = decimals

    def cut_many(self, sites: Sequence[Any]) -> Iterator[Any]:
        from tiles.types import Pair

        for ser in self.cutter.cut_series(list(sites)):
            if not ser.ok:
                yield ser.failure
                continue
            probs = {}
            keys = series_pairs(len(ser.days), self.cfg.series_pair_span)
            res = self.scorer.score(np.stack([ser.pair(*k).image for k in keys]).astype(np.float32, copy=False))
            for m, k in enumerate(keys):
                p = float(np.asarray(res.prob)[m])
                if math.isfinite(p):
                    probs[k] = p
            if not probs:
                yield Pair.cannot_assess(ser.site, "model_output_invalid")
                continue
            _, key, _ = _site_rows(ser, probs, {}, self.cfg, self.decimals)
            yield ser.pair(*key)

    def cut(self, site: Any) -> Any:
        return next(iter(self.cut_many([site])))

    def close(self) -> None:
        self.cutter.close()


@dataclass(frozen=True)
class TimelineDate:
    """One date of a site's timeline strip (report.html, the review app).

    Attributes:
        day: ISO date.
        state: ``intact`` (up to ``last_intact``), ``damaged`` (from ``first_damaged``),
            ``unchanged`` (a series without a bracket), ``outlier`` (left out by the fit) or
            ``dropped`` (failed the quality gates; ``note`` says why).
        bracket: this date is ``last_intact`` or ``first_damaged``.
        note: the reason a date was dropped, or ``""``.
    """

    day: str
    state: str
    bracket: bool
    note: str = ""


def timeline_dates(row: Mapping[str, str]) -> list[TimelineDate]:
    """The timeline of a ``scores.csv`` row of a series run (empty for a two-epoch run)."""
    usable: set[str] = set()
    for item in filter(None, (row.get("series_timeline") or "").split(";")):
        span = item.rsplit(":", 1)[0]
        if "/" in span:
            usable.update(span.split("/"))
    if not usable and row.get("series_reference"):
        usable.add(row["series_reference"])
    dropped: dict[str, str] = {}
    for item in filter(None, (row.get("series_dropped") or "").split(";")):
        day, _, reason = item.partition(":")
        dropped[day] = reason
    if not usable and not dropped:
        return []
    li, fd, outlier = row.get("last_intact") or "", row.get("first_damaged") or "", row.get("series_outlier") or ""
    out = []
    for day in sorted(usable | set(dropped)):
        if day in dropped and day not in usable:
            out.append(TimelineDate(day, "dropped", False, dropped[day]))
        elif day == outlier:
            out.append(TimelineDate(day, "outlier", False, "left out by the fit (differs from every other date)"))
        elif not li:
            out.append(TimelineDate(day, "unchanged", False))
        else:
            out.append(TimelineDate(day, "intact" if day <= li else "damaged", day in (li, fd)))
    return out
