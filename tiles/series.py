"""Image series per site: many dated scenes, every usable date on one reference grid.

A :class:`SeriesCatalog` groups dated scenes by acquisition day (one :class:`RasterCatalog` per
day; several files of one day mosaic as usual). For a site, :class:`SeriesCutter` cuts the pair
(reference day, day k) for every other day with :class:`tiles.cut.PairCutter`: so every day's
chip is resampled onto the reference's grid, co-registered to the reference and radiometrically
matched to it, and passes the usual quality gates against it (a cloudy, blank or misregistered
day drops out with its reason). The reference is the first covered day; when too few days pass
against it (the reference itself is cloudy there) the next days are tried as reference.

Any two usable days then form a pair ``(2, C, H, W)`` from their aligned chips
(:meth:`SiteSeries.pair`). With the first day as reference and two days, the pair is exactly
what :class:`~tiles.cut.PairCutter` cuts for ``--before`` / ``--after``, so the two-date case of a
series scores identically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sitewatch.errors import RasterError
from tiles.catalog import RasterCatalog, SceneInfo
from tiles.config import TilesConfig
from tiles.cut import PairCutter
from tiles.types import Pair, Site

log = logging.getLogger(__name__)

__all__ = ["SeriesCatalog", "SeriesCutter", "SiteSeries", "SERIES_TOO_SHORT", "drop_passing_clouds"]

#: reason of a site with fewer than two usable dates whose pairs failed for different reasons.
SERIES_TOO_SHORT = "series_too_short"


@dataclass(frozen=True)
class SeriesDay:
    """The scenes of one acquisition day, as a before and an after catalogue."""

    day: date
    before: RasterCatalog
    after: RasterCatalog


class SeriesCatalog:
    """Dated scenes grouped by UTC acquisition day, oldest first.

    Attributes:
        days: one :class:`SeriesDay` per day.
        scenes: every dated scene, in day order.
        skipped: ``(path, reason)`` of inputs that were not usable (undated scenes included).
    """

    def __init__(self, scenes: Sequence[SceneInfo], skipped: Sequence[tuple[Path, str]] = ()) -> None:
        by_day: dict[date, list[SceneInfo]] = {}
        for s in scenes:
            if s.acquired is None:
                raise ValueError(f"scene {s.scene_id} has no acquisition time")
            by_day.setdefault(s.acquired.date(), []).append(s)
        self.days = [
            SeriesDay(d, RasterCatalog(by_day[d], epoch="before"), RasterCatalog(by_day[d], epoch="after"))
            for d in sorted(by_day)
        ]
        self.scenes = [s for d in self.days for s in d.before.scenes]
        self.skipped = list(skipped)

    @classmethod
    def from_paths(cls, paths: str | Path | Iterable[str | Path]) -> "SeriesCatalog":
        """Index the scenes of a series (files, folders, globs, STAC files).

        Scenes whose acquisition time is unknown cannot be placed in the series: they are
        skipped with a warning naming them.

        Raises:
            RasterError: fewer than two dated days remain (the message lists what was skipped).
        """
        cat = RasterCatalog.from_paths(paths, epoch="before", flag="--series")
        dated = [s for s in cat.scenes if s.acquired is not None]
        skipped = list(cat.skipped)
        for s in cat.scenes:
            if s.acquired is None:
                reason = (
                    "acquisition time unknown (no ACQUISITION_DATETIME tag, sidecar, STAC datetime or date in the "
                    "file name): a series needs dated scenes"
                )
                skipped.append((s.path, reason))
                log.warning("--series raster %s skipped: %s", s.path, reason)
        out = cls(dated, skipped)
        if len(out.days) < 2:
            listing = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
            raise RasterError(
                f"--series: {len(out.days)} dated acquisition day(s) among the inputs; a series needs at least two"
                + (f" ({listing})" if listing else "")
            )
        return out

    def __len__(self) -> int:
        return len(self.days)

    def __getstate__(self) -> dict:
        return {"scenes": self.scenes, "skipped": self.skipped}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["scenes"], state["skipped"])  # type: ignore[misc]


@dataclass(frozen=True)
class SiteSeries:
    """One site across its usable days, on the reference day's grid.

    Attributes:
        site: the site.
        days: the usable days, oldest first (the reference included).
        times: each usable day's primary acquisition time.
        reference: index into ``days`` of the reference day.
        chips: float32 ``(M, C, H, W)``: each usable day's chip, aligned and matched to the
            reference (M = ``len(days)``).
        valid: bool ``(M, H, W)``.
        pairs: per usable day, the pair (reference, day) it came from (None for the reference
            itself).
        dropped: ``(day, reason, detail)`` of covered days that did not pass against the
            reference.
        failure: when fewer than two days are usable, a cannot_assess :class:`Pair` that says
            why; else None.
    """

    site: Site
    days: tuple[date, ...]
    times: tuple[datetime | None, ...]
    reference: int
    chips: np.ndarray | None
    valid: np.ndarray | None
    pairs: tuple[Pair | None, ...]
    dropped: tuple[tuple[date, str, str], ...]
    failure: Pair | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and len(self.days) >= 2

    def pair(self, a: int, b: int) -> Pair:
        """The pair of usable days ``a`` (before) and ``b`` (after), ``a < b``, as a :class:`Pair`.

        ``(reference, b)`` is exactly the pair cut against the reference; other pairs take the
        two aligned chips and the metadata of both days (scenes, times, quality: the worse).
        """
        if not self.ok or self.chips is None or self.valid is None:
            raise ValueError("a series with fewer than two usable days has no pairs")
        r = self.reference
        if a == r:
            p = self.pairs[b]
            assert p is not None
            return p
        if b == r:
            src = self.pairs[a]
            assert src is not None
            m = src.meta
            meta = replace(
                m,
                before_scene=m.after_scene, after_scene=m.before_scene,
                before_time=m.after_time, after_time=m.before_time,
                before_time_source=m.after_time_source, after_time_source=m.before_time_source,
                before_gsd_m=m.after_gsd_m, after_gsd_m=m.before_gsd_m,
                before_extra_scenes=m.after_extra_scenes, after_extra_scenes=m.before_extra_scenes,
            )
        else:
            pa, pb = self.pairs[a], self.pairs[b]
            assert pa is not None and pb is not None
            ma, mb = pa.meta, pb.meta
            meta = replace(
                mb,
                before_scene=ma.after_scene, before_time=ma.after_time, before_time_source=ma.after_time_source,
                before_gsd_m=ma.after_gsd_m, before_extra_scenes=ma.after_extra_scenes,
                valid_fraction=min(ma.valid_fraction, mb.valid_fraction),
                cloud_fraction=max(ma.cloud_fraction, mb.cloud_fraction),
                blank_fraction=max(ma.blank_fraction, mb.blank_fraction),
                saturated_fraction=max(ma.saturated_fraction, mb.saturated_fraction),
            )
        image = np.stack([self.chips[a], self.chips[b]]).astype(np.float32, copy=False)
        valid = np.stack([self.valid[a], self.valid[b]])
        return Pair(site=self.site, meta=meta, image=image, valid=valid)


def drop_passing_clouds(reference: int, pairs: dict[int, Pair], limit: float | None) -> dict[int, Pair]:
    """Drop cloud-suspect days that no neighbouring usable day backs up.

    A day whose cloud-like fraction against the reference exceeds ``limit`` is a suspect.
    Rubble and dust look cloud-like too, but they persist: the next usable day is a suspect as
    well. A cloud comes and goes. So a suspect whose previous and next usable days are not
    suspects is dropped (``cloud``), and only while at least three days are usable (two days
    are a plain before/after pair and keep the tiles rule).

    Args:
        reference: the reference day (index into the series' days).
        pairs: ``{day: pair (reference, day)}`` of one site.
        limit: the cloud-like fraction above which a day is a suspect (None: drop nothing).
    """
    ok = sorted(k for k, p in pairs.items() if p.ok)
    if limit is None or len(ok) + 1 < 3:
        return pairs
    order = sorted([reference, *ok])
    suspect = {k for k in ok if pairs[k].meta.cloud_fraction > limit}
    out = dict(pairs)
    for k in suspect:
        i = order.index(k)
        prev_s = i > 0 and order[i - 1] in suspect
        next_s = i + 1 < len(order) and order[i + 1] in suspect
        if not (prev_s or next_s):
            p = pairs[k]
            detail = (
                f"cloud-like fraction {p.meta.cloud_fraction:.0%} against the reference (> "
                f"detect.series_max_cloud_fraction {limit:g}) and not on the neighbouring dates: a passing cloud"
            )
            out[k] = replace(p, meta=replace(p.meta, status="cannot_assess", reason="cloud", detail=detail))
    return out


class SeriesCutter:
    """Cuts every site's series (one per process; holds open datasets, so close it).

    Args:
        catalog: the dated scenes.
        config: how pairs are cut (the same settings as for ``--before`` / ``--after``).
        max_reference_tries: how many days are tried as the reference, oldest first, when too
            few days pass against the first covered one.
        max_cloud_fraction: a day whose cloud-like fraction against the reference exceeds this
            while its neighbouring days' do not is dropped (``cloud``; a passing cloud, where
            rubble persists), stricter than ``tiles.max_cloud_fraction`` for a pair: a partly
            clouded day looks like a change. Never below three usable days. None: the tiles
            setting alone.
    """

    def __init__(
        self,
        catalog: SeriesCatalog,
        config: TilesConfig | None = None,
        *,
        max_reference_tries: int = 3,
        max_cloud_fraction: float | None = None,
    ) -> None:
        self.catalog = catalog
        self.config = TilesConfig() if config is None else config
        # incident windows choose scenes around an event; a series looks at every date
        if self.config.incident_window is not None:
            log.warning(
                "tiles.incident_window %s is not used with --series: every date is scored and the change bracketed",
                self.config.incident_window,
            )
            self.config = replace(self.config, incident_window=None)
        self.max_reference_tries = max(1, max_reference_tries)
        self.max_cloud_fraction = max_cloud_fraction
        self._cutters: dict[tuple[int, int], PairCutter] = {}

    def _cutter(self, r: int, k: int) -> PairCutter:
        c = self._cutters.get((r, k))
        if c is None:
            days = self.catalog.days
            c = PairCutter(days[r].before, days[k].after, self.config)
            self._cutters[(r, k)] = c
        return c

    def close(self) -> None:
        for c in self._cutters.values():
            c.close()
        self._cutters.clear()

    def __enter__(self) -> "SeriesCutter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cut_series(self, sites: Sequence[Site]) -> list[SiteSeries]:
        """The series of every site, in input order (never raises for a site-level problem)."""
        n_days = len(self.catalog.days)
        site_list = [replace(s, incident=None) if s.incident is not None else s for s in sites]
        results: list[SiteSeries | None] = [None] * len(site_list)
        best: list[tuple[int, int, dict[int, Pair]] | None] = [None] * len(site_list)  # (usable, ref, pairs)
        todo = list(range(len(site_list)))
        tries = [0] * len(site_list)
        for r in range(n_days):
            if not todo:
                break
            cuts: dict[int, dict[int, Pair]] = {i: {} for i in todo}
            subset = [site_list[i] for i in todo]
            for k in range(n_days):
                if k != r:
                    for i, pair in zip(todo, self._cut(r, k, subset)):
                        cuts[i][k] = pair
            still = []
            for i in todo:
                pairs = cuts[i]
                covered = [k for k, p in pairs.items() if not p.meta.reason.startswith("outside_")]
                usable = sum(1 for p in pairs.values() if p.ok)
                if best[i] is None or usable > best[i][0]:  # type: ignore[index]
                    best[i] = (usable, r, pairs)
                if not covered:  # this day does not hold the site (or holds nothing else): next one
                    still.append(i)
                    continue
                tries[i] += 1
                # enough days pass against this reference: at least half of the covered ones
                if usable + 1 < max(2, (len(covered) + 2) // 2) and tries[i] < self.max_reference_tries:
                    still.append(i)
            todo = still
        for i in range(len(site_list)):
            results[i] = self._assemble(sites[i], best[i])
        return [r for r in results if r is not None]

    def _cut(self, r: int, k: int, sites: list[Site]) -> list[Pair]:
        return self._cut_pairs(r, k, sites)

    def _cut_pairs(self, r: int, k: int, sites: list[Site]) -> list[Pair]:
        cutter = self._cutter(r, k)
        try:
            pairs = list(cutter.cut_many(sites))
            if len(pairs) == len(sites):
                return pairs
        except Exception as exc:  # noqa: BLE001 - isolate per site below
            log.warning("cutting days %d/%d failed (%s); cutting site by site", r, k, exc)
        out = []
        for s in sites:
            try:
                out.append(cutter.cut(s))
            except Exception as exc:  # noqa: BLE001 - one bad site never stops a batch
                out.append(Pair.cannot_assess(s, "read_error", f"{type(exc).__name__}: {exc}"))
        return out

    def _assemble(self, site: Site, found: tuple[int, int, dict[int, Pair]] | None) -> SiteSeries:
        days = self.catalog.days
        if found is None:
            fail = Pair.cannot_assess(site, "outside_before_coverage", "no date of the series covers the site")
            return SiteSeries(site, (), (), 0, None, None, (), (), fail)
        _, r, pairs = found
        pairs = drop_passing_clouds(r, pairs, self.max_cloud_fraction)
        ok = {k: p for k, p in pairs.items() if p.ok and p.image is not None and p.valid is not None}
        dropped = tuple(
            (days[k].day, p.meta.reason, p.meta.detail)
            for k, p in sorted(pairs.items())
            if k not in ok and not p.meta.reason.startswith("outside_after")
        )
        if not ok:
            covering = [p for p in pairs.values() if not p.meta.reason.startswith("outside_")]
            if not covering:
                first = next(iter(pairs.values()))
                fail = replace(first, meta=replace(first.meta, detail=first.meta.detail or "fewer than two dates cover the site"))
            else:
                common = max(set(p.meta.reason for p in covering), key=[p.meta.reason for p in covering].count)
                uniform = all(p.meta.reason == common for p in covering)
                listing = "; ".join(f"{days[k].day}: {p.meta.reason}" for k, p in sorted(pairs.items()) if p.meta.reason)
                fail = Pair.cannot_assess(
                    site,
                    common if uniform else SERIES_TOO_SHORT,
                    f"fewer than two usable dates against reference {days[r].day} ({listing})",
                )
            return SiteSeries(site, (days[r].day,), (None,), 0, None, None, (None,), dropped, fail)
        order = sorted([r, *ok])
        first_pair = next(iter(ok.values()))
        assert first_pair.image is not None and first_pair.valid is not None
        chips, valid, times, per_day = [], [], [], []
        for k in order:
            if k == r:
                chips.append(first_pair.image[0])
                valid.append(first_pair.valid[0])
                times.append(first_pair.meta.before_time)
                per_day.append(None)
            else:
                p = ok[k]
                assert p.image is not None and p.valid is not None
                chips.append(p.image[1])
                valid.append(p.valid[1])
                times.append(p.meta.after_time)
                per_day.append(p)
        return SiteSeries(
            site=site,
            days=tuple(days[k].day for k in order),
            times=tuple(times),
            reference=order.index(r),
            chips=np.stack(chips).astype(np.float32, copy=False),
            valid=np.stack(valid),
            pairs=tuple(per_day),
            dropped=dropped,
        )
