"""Cutting one batch of sites through the tiles stage, one bad site never stopping the batch.

The two things detect needs from the stages below, as protocols: a :class:`PairSource` (the tiles
stage's :class:`tiles.cut.PairCutter`) and a :class:`PairScorer` (the models stage's
:class:`models.inference.Scorer`). Used by the scoring pass (:mod:`detect.pipeline`), the Dask
workers (:mod:`detect.cluster`) and the chips of sites scored elsewhere (:mod:`detect.site_chips`).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from tiles.types import Pair, PairMeta, Site

log = logging.getLogger(__name__)

#: reason given to a site whose cut raised unexpectedly (the exception text goes to ``detail``).
CUT_FAILED = "cut_failed"


class PairScorer(Protocol):
    """What detect needs from :class:`models.inference.Scorer`."""

    def score(self, images: np.ndarray) -> Any:  # pragma: no cover - protocol
        ...


class PairSource(Protocol):
    """What detect needs from :class:`tiles.cut.PairCutter`."""

    def cut(self, site: Site) -> Pair:  # pragma: no cover - protocol
        ...

    def cut_many(self, sites: Sequence[Site]) -> Iterator[Pair]:  # pragma: no cover - protocol
        ...

    def close(self) -> None:  # pragma: no cover - protocol
        ...


def _failed_pair(site: Site, reason: str, detail: str) -> Pair:
    return Pair(site=site, meta=PairMeta(site_id=site.site_id, status="cannot_assess", reason=reason, detail=detail))


def cut_batch(cutter: PairSource, sites: Sequence[Site]) -> list[Pair]:
    """Cut one batch; a site whose cut raises becomes ``cannot_assess``/``cut_failed``.

    The cutter is documented never to raise for a site-level problem; this is the safety net
    that keeps one unexpected failure from stopping a batch of thousands.
    """
    try:
        pairs = list(cutter.cut_many(list(sites)))
        if len(pairs) == len(sites) and all(p.site.site_id == s.site_id for p, s in zip(pairs, sites)):
            return pairs
        log.warning("cut_many returned %d pairs for %d sites; cutting one by one", len(pairs), len(sites))
    except Exception as exc:  # noqa: BLE001 - isolate per site below
        log.warning("cutting a batch failed (%s); cutting its %d sites one by one", exc, len(sites))
    pairs = []
    for site in sites:
        try:
            pairs.append(cutter.cut(site))
        except Exception as exc:  # noqa: BLE001 - one bad site never stops a batch
            log.warning("site %r: cutting failed: %s", site.site_id, exc)
            pairs.append(_failed_pair(site, CUT_FAILED, f"{type(exc).__name__}: {exc}"))
    return pairs
