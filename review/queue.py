"""The review queues and the state the web app shares between requests.

Views (``QUEUE_VIEWS``):

- ``score``: by the run's score, highest first (the default; sites that cannot be assessed last);
- ``uncertainty``: assessable sites by distance of their score from the threshold (most useful
  labels for learning);
- ``validation``: a seeded random sample of assessable sites, for estimating the flagged list's
  precision and recall without the bias of reviewing from the top;
- ``disputed``: sites where reviewers disagree and nobody has adjudicated yet;
- ``rerank``: by the quick re-rank fitted on stored embeddings (by score until one is fitted).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from review.config import ReviewConfig
from review.consensus import SiteConsensus, needs_adjudication, summarise
from review.rerank import Rerank, rerank
from review.runfolder import RunFolder, RunSite
from review.store import Verdict, VerdictStore

log = logging.getLogger(__name__)

QUEUE_VIEWS = ("score", "uncertainty", "validation", "disputed", "rerank")
QueueView = Literal["score", "uncertainty", "validation", "disputed", "rerank"]
#: ``todo``: sites the current reviewer has not judged (for ``disputed``: not yet adjudicated);
#: ``unreviewed``: sites nobody has judged (single review: split the work); ``all``: everything.
SHOW_CHOICES = ("todo", "unreviewed", "all")


def score_order(scores: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
    """The ``score`` view: positions of assessable sites, highest score first.

    Args:
        scores: ``(N,)`` scores of the assessable sites, in run order.
        ranks: ``(N,)`` the run's ranks (ties of equal score; ``inf`` for none), or None.

    Returns:
        ``(N,)`` positions into ``scores``; ties by rank, then run order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    tie = np.zeros_like(scores) if ranks is None else np.asarray(ranks, dtype=np.float64)
    return np.lexsort((np.arange(scores.size), tie, -scores))


def uncertainty_order(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The ``uncertainty`` view: positions of assessable sites, nearest ``threshold`` first.

    Args:
        scores: ``(N,)`` scores of the assessable sites, in run order.
        threshold: the flagging threshold (``ReviewQueues.threshold``).

    Returns:
        ``(N,)`` positions into ``scores``; ties in run order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    return np.lexsort((np.arange(scores.size), np.abs(scores - threshold)))


def validation_sample(n: int, size: int, seed: int) -> np.ndarray:
    """The ``validation`` view: a seeded random sample of ``size`` of ``n`` assessable sites.

    Returns:
        ``(min(size, n),)`` positions in ``range(n)``, in queue order (the first ``k`` of a
        larger ``size`` are the same sites for the same seed).
    """
    k = min(size, n)
    return np.random.default_rng(seed).permutation(n)[:k] if k > 0 else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class QueuePage:
    """One page of a queue.

    Attributes:
        view, show: which queue and filter.
        page: 1-based page number.
        pages: number of pages (at least 1).
        total: sites in the filtered queue.
        sites: the sites on this page, in queue order.
    """

    view: str
    show: str
    page: int
    pages: int
    total: int
    sites: list[RunSite]


class ReviewQueues:
    """Orders the run's sites for review and caches what the verdicts imply.

    Built once per app; safe to use from the server's worker threads.

    Args:
        run: the run folder.
        store: its verdict store.
        config: review settings.
    """

    def __init__(self, run: RunFolder, store: VerdictStore, config: ReviewConfig) -> None:
        self.run = run
        self.store = store
        self.config = config
        run_threshold = run.threshold()
        self.threshold: float = (
            config.threshold if config.threshold is not None else (run_threshold if run_threshold is not None else 0.5)
        )
        self.threshold_source = (
            "config" if config.threshold is not None else ("run" if run_threshold is not None else "default 0.5")
        )
        sites = run.sites
        ok = [s for s in sites if s.ok]
        not_ok = [s for s in sites if not s.ok]
        ok_scores = np.array([s.score for s in ok], dtype=np.float64)
        ok_ranks = np.array([s.rank or math.inf for s in ok], dtype=np.float64)
        self._orders: dict[str, list[int]] = {
            "score": [ok[int(i)].index for i in score_order(ok_scores, ok_ranks)] + [s.index for s in not_ok],
            "uncertainty": [ok[int(i)].index for i in uncertainty_order(ok_scores, self.threshold)],
        }
        self._score_pos = {idx: i for i, idx in enumerate(self._orders["score"])}
        picked = validation_sample(len(ok), config.validation_size, config.validation_seed)
        self._orders["validation"] = [ok[int(i)].index for i in picked]
        self.validation_ids: frozenset[str] = frozenset(sites[i].site_id for i in self._orders["validation"])
        self._lock = threading.Lock()
        self._summary_version = -1
        self._summaries: dict[str, SiteConsensus] = {}
        self._rows_by_site: dict[str, list[Verdict]] = {}
        self._rerank: Rerank | None = None
        self._rerank_order: list[int] | None = None
        self._embeddings = run.embeddings()

    # -- verdict-derived state ---------------------------------------------------------------

    def summaries(self) -> dict[str, SiteConsensus]:
        """Decisions per site, updated incrementally for the sites with new verdicts.

        The returned dict is replaced, never mutated, so callers may keep using it.
        """
        with self._lock:
            new_rows = self.store.verdicts_after(self._summary_version if self._summary_version > 0 else 0)
            if self._summary_version < 0 or new_rows:
                touched = {v.site_id for v in new_rows}
                for v in new_rows:
                    self._rows_by_site.setdefault(v.site_id, []).append(v)
                updated = dict(self._summaries)
                updated.update(summarise(r for sid in touched for r in self._rows_by_site[sid]))
                self._summaries = updated
                self._summary_version = max([self._summary_version, 0] + [v.id for v in new_rows])
            return self._summaries

    def disputed_order(self) -> list[int]:
        """Sites needing adjudication, by score (highest first)."""
        summaries = self.summaries()
        out = [self.run.by_id[sid].index for sid, c in summaries.items() if needs_adjudication(c) and sid in self.run.by_id]
        return sorted(out, key=lambda idx: self._score_pos.get(idx, 0))

    def order(self, view: str) -> list[int]:
        """Site indices of a view in queue order (unfiltered)."""
        if view == "disputed":
            return self.disputed_order()
        if view == "rerank":
            with self._lock:
                return self._rerank_order if self._rerank_order is not None else self._orders["score"]
        if view not in self._orders:
            raise KeyError(view)
        return self._orders[view]

    def filtered(self, view: str, show: str, reviewer: str) -> list[int]:
        """The view's order, minus what ``reviewer`` already judged when ``show`` is ``todo``."""
        order = self.order(view)
        if show == "all" or view == "disputed":
            return order
        done = self.store.reviewed_by(reviewer) if show == "todo" else set(self.summaries())
        if not done:
            return order
        by_index = self.run.sites
        return [i for i in order if by_index[i].site_id not in done]

    def page(self, view: str, show: str, reviewer: str, page: int) -> QueuePage:
        """One page of a filtered view."""
        order = self.filtered(view, show, reviewer)
        size = self.config.page_size
        pages = max(1, math.ceil(len(order) / size))
        page = min(max(1, page), pages)
        chunk = order[(page - 1) * size : page * size]
        return QueuePage(view, show, page, pages, len(order), [self.run.sites[i] for i in chunk])

    def neighbours(self, view: str, show: str, reviewer: str, index: int) -> tuple[int | None, int | None]:
        """``(previous, next)`` site indices around ``index`` in the filtered view.

        When ``index`` is no longer in the filtered view (just judged), ``next`` is the first
        filtered site after its position in the unfiltered view.
        """
        full = self.order(view)
        filtered = self.filtered(view, show, reviewer)
        if index in full:
            pos = full.index(index)
            after = set(full[pos + 1 :])
            before = full[:pos]
            nxt = next((i for i in filtered if i in after and i != index), None)
            keep = set(filtered)
            prev = next((i for i in reversed(before) if i in keep), None)
        else:
            nxt = filtered[0] if filtered else None
            prev = None
        if nxt is None and filtered and filtered[0] != index:
            nxt = filtered[0]
        return prev, nxt

    # -- quick re-rank -----------------------------------------------------------------------

    @property
    def current_rerank(self) -> Rerank | None:
        with self._lock:
            return self._rerank

    @property
    def rerank_available(self) -> bool:
        return self._embeddings is not None

    def refit_rerank(self) -> Rerank | None:
        """Refit the logistic head on the verdicts so far; None when it cannot be fitted yet."""
        if self._embeddings is None:
            return None
        version = self.store.last_id()
        labels = {sid: c.label for sid, c in self.summaries().items() if c.label is not None}
        ids, emb = self._embeddings
        scores = np.array([self.run.by_id[s].score if s in self.run.by_id else math.nan for s in ids])
        result = rerank(
            ids,
            emb,
            scores,
            labels,  # type: ignore[arg-type]
            l2=self.config.rerank_l2,
            min_labels=self.config.rerank_min_labels,
            based_on_verdict=version,
        )
        if result is None:
            return None
        have = [self.run.by_id[s].index for s in result.prob if s in self.run.by_id]
        have_set = set(have)
        order = sorted(have, key=lambda i: -result.prob[self.run.sites[i].site_id])
        order += [i for i in self._orders["score"] if i not in have_set]
        with self._lock:
            self._rerank = result
            self._rerank_order = order
        return result

    def maybe_refit(self) -> None:
        """Refit when ``rerank_every`` verdicts were added since the last fit."""
        every = self.config.rerank_every
        if not every or self._embeddings is None:
            return
        current = self.current_rerank
        base = current.based_on_verdict if current is not None else 0
        if self.store.last_id() - base >= every:
            try:
                self.refit_rerank()
            except Exception:  # a failed refit must never break reviewing
                log.exception("quick re-rank failed")
