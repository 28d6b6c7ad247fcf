"""From verdict rows to one decision per site, reviewer agreement and list-quality estimates.

A site's decision: an adjudication wins; otherwise the reviewers' latest verdicts, where all agree
(``agreed``) or one verdict has a strict majority (``majority``); a tie is ``disputed`` and waits for
adjudication. Any disagreement among reviewers puts the site in the disputed queue until it is
adjudicated, even when a majority exists.

A facility's damaged parts (optional marks on a verdict): the adjudicator's marks when the
adjudication marked any; otherwise the parts that more than half of the reviewers who marked
parts (on their latest review) marked. A reviewer who marked no part does not count: marking is
optional, so no mark is not a "no".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from review.store import Verdict
from tiles.types import damage_to_label

ConsensusStatus = Literal["unreviewed", "agreed", "majority", "disputed", "adjudicated"]


@dataclass(frozen=True)
class SiteConsensus:
    """Everything the reviewers said about one site.

    Attributes:
        site_id: the site.
        votes: ``(reviewer, verdict)`` of each reviewer's latest review, by reviewer name.
        adjudication: the latest adjudicated verdict, or None.
        adjudicator: who adjudicated, or "".
        final: the decided verdict, or None while unreviewed or tied.
        status: how ``final`` was reached.
        agreement: fraction of reviewers whose verdict equals ``final`` (NaN without a decision).
        disagree: True when the reviewers' verdicts are not all the same.
        notes: ``(reviewer, note)`` of every non-empty note, oldest first.
        last_at: time of the latest verdict.
        part_marks: ``(reviewer, part ids)`` of each reviewer's latest review that marked parts,
            by reviewer name.
        adjudicated_parts: the parts the latest adjudication marked (empty when none).
    """

    site_id: str
    votes: tuple[tuple[str, str], ...]
    adjudication: str | None
    adjudicator: str
    final: str | None
    status: ConsensusStatus
    agreement: float
    disagree: bool
    notes: tuple[tuple[str, str], ...]
    last_at: str
    part_marks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    adjudicated_parts: tuple[str, ...] = ()

    @property
    def damaged_parts(self) -> tuple[str, ...]:
        """The decided damaged parts (see the module doc), in part order."""
        if self.adjudication is not None and self.adjudicated_parts:
            return self.adjudicated_parts
        if not self.part_marks:
            return ()
        counts = Counter(p for _, parts in self.part_marks for p in parts)
        need = len(self.part_marks) / 2
        return tuple(sorted((p for p, n in counts.items() if n > need), key=_part_order))

    @property
    def label(self) -> int | None:
        """1 severe damage, 0 no damage, None otherwise (the binary task the model learns)."""
        return damage_to_label(self.final)


def summarise(verdicts: Iterable[Verdict]) -> dict[str, SiteConsensus]:
    """One :class:`SiteConsensus` per site that has at least one verdict.

    Args:
        verdicts: verdict rows in submission order (as :meth:`VerdictStore.verdicts` returns).
    """
    latest: dict[str, dict[str, str]] = {}
    marks: dict[str, dict[str, tuple[str, ...]]] = {}
    adjudicated: dict[str, tuple[str, str]] = {}
    adjudicated_parts: dict[str, tuple[str, ...]] = {}
    notes: dict[str, list[tuple[str, str]]] = {}
    last_at: dict[str, str] = {}
    for v in verdicts:
        if v.kind == "adjudication":
            adjudicated[v.site_id] = (v.verdict, v.reviewer)
            adjudicated_parts[v.site_id] = tuple(v.damaged_parts)
        else:
            latest.setdefault(v.site_id, {})[v.reviewer] = v.verdict
            marks.setdefault(v.site_id, {})[v.reviewer] = tuple(v.damaged_parts)
        if v.note:
            notes.setdefault(v.site_id, []).append((v.reviewer, v.note))
        last_at[v.site_id] = v.created_at
    out: dict[str, SiteConsensus] = {}
    for site_id in last_at:
        votes = latest.get(site_id, {})
        counts = Counter(votes.values())
        disagree = len(counts) > 1
        adj = adjudicated.get(site_id)
        final: str | None
        status: ConsensusStatus
        if adj is not None:
            final, status = adj[0], "adjudicated"
        elif not counts:
            final, status = None, "unreviewed"
        else:
            ranked = counts.most_common()
            if len(ranked) == 1:
                final, status = ranked[0][0], "agreed"
            elif ranked[0][1] > ranked[1][1]:
                final, status = ranked[0][0], "majority"
            else:
                final, status = None, "disputed"
        agreement = (
            sum(1 for x in votes.values() if x == final) / len(votes) if final is not None and votes else math.nan
        )
        out[site_id] = SiteConsensus(
            site_id=site_id,
            votes=tuple(sorted(votes.items())),
            adjudication=adj[0] if adj else None,
            adjudicator=adj[1] if adj else "",
            final=final,
            status=status,
            agreement=agreement,
            disagree=disagree,
            notes=tuple(notes.get(site_id, ())),
            last_at=last_at[site_id],
            part_marks=tuple(sorted((who, parts) for who, parts in marks.get(site_id, {}).items() if parts)),
            adjudicated_parts=adjudicated_parts.get(site_id, ()) if adj else (),
        )
    return out


def _part_order(part: str) -> tuple[int, str]:
    """``p2`` before ``p10``: by the number after the letter."""
    digits = part[1:]
    return (int(digits) if digits.isdigit() else 1 << 30, part)


def needs_adjudication(c: SiteConsensus) -> bool:
    """Reviewers disagree and nobody has adjudicated yet."""
    return c.disagree and c.adjudication is None


@dataclass(frozen=True)
class Agreement:
    """How well reviewers agree, over sites that two or more reviewers saw.

    Attributes:
        sites: sites with at least two reviewers.
        pairs: reviewer pairs compared (a site with k reviewers gives k*(k-1)/2).
        exact: fraction of pairs giving the same verdict (NaN without pairs).
        binary: fraction of pairs agreeing on severe vs no damage, over pairs where both
            verdicts map to the binary task (NaN without such pairs).
        kappa: Fleiss' kappa on the exact verdicts (chance-corrected; NaN when undefined).
    """

    sites: int
    pairs: int
    exact: float
    binary: float
    kappa: float


def agreement(summaries: Iterable[SiteConsensus]) -> Agreement:
    """Pairwise agreement and Fleiss' kappa (variable number of raters per site)."""
    sites = pairs = same = bin_pairs = bin_same = 0
    p_items: list[float] = []
    totals: Counter[str] = Counter()
    n_ratings = 0
    for c in summaries:
        verdicts = [v for _, v in c.votes]
        k = len(verdicts)
        if k < 2:
            continue
        sites += 1
        counts = Counter(verdicts)
        pairs += k * (k - 1) // 2
        same += sum(n * (n - 1) // 2 for n in counts.values())
        p_items.append(sum(n * (n - 1) for n in counts.values()) / (k * (k - 1)))
        totals.update(counts)
        n_ratings += k
        labels = [damage_to_label(v) for v in verdicts]
        for i in range(k):
            for j in range(i + 1, k):
                if labels[i] is not None and labels[j] is not None:
                    bin_pairs += 1
                    bin_same += labels[i] == labels[j]
    exact = same / pairs if pairs else math.nan
    binary = bin_same / bin_pairs if bin_pairs else math.nan
    kappa = math.nan
    if p_items and n_ratings:
        p_bar = sum(p_items) / len(p_items)
        p_e = sum((n / n_ratings) ** 2 for n in totals.values())
        if p_e < 1.0:
            kappa = (p_bar - p_e) / (1.0 - p_e)
    return Agreement(sites=sites, pairs=pairs, exact=exact, binary=binary, kappa=kappa)


def normal_quantile(confidence: float) -> float:
    """The two-sided z value of a confidence level (0.95 -> 1.96)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; ``(nan, nan)`` when ``trials`` is 0."""
    if trials <= 0:
        return (math.nan, math.nan)
    z = normal_quantile(confidence)
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Estimate:
    """A proportion with its interval: ``value`` = ``successes / trials``."""

    successes: int
    trials: int
    value: float
    low: float
    high: float


def estimate(successes: int, trials: int, confidence: float = 0.95) -> Estimate:
    """A proportion and its Wilson interval."""
    low, high = wilson_interval(successes, trials, confidence)
    return Estimate(successes, trials, successes / trials if trials else math.nan, low, high)


@dataclass(frozen=True)
class ListQuality:
    """Precision and recall of the flagged list, estimated on the random validation sample.

    Because the sample is drawn uniformly among assessable sites, precision (severe among flagged
    sample sites) and recall (flagged among severe sample sites) estimate the whole list's.

    Attributes:
        sample_size: sites in the validation sample.
        decided: sample sites whose decision maps to the binary task.
        precision: true positives / flagged, with its interval.
        recall: true positives / severe, with its interval.
        prevalence: severe / decided, with its interval.
    """

    sample_size: int
    decided: int
    precision: Estimate
    recall: Estimate
    prevalence: Estimate


def list_quality(
    sample: Sequence[tuple[str, bool]],
    summaries: dict[str, SiteConsensus],
    confidence: float = 0.95,
) -> ListQuality:
    """Estimate precision/recall from the validation sample's decisions.

    Args:
        sample: ``(site_id, flagged)`` of every validation-sample site.
        summaries: decisions per site (from :func:`summarise`).
        confidence: interval confidence level.
    """
    tp = fp = fn = tn = 0
    for site_id, flagged in sample:
        c = summaries.get(site_id)
        label = c.label if c is not None else None
        if label is None:
            continue
        if flagged and label == 1:
            tp += 1
        elif flagged:
            fp += 1
        elif label == 1:
            fn += 1
        else:
            tn += 1
    decided = tp + fp + fn + tn
    return ListQuality(
        sample_size=len(sample),
        decided=decided,
        precision=estimate(tp, tp + fp, confidence),
        recall=estimate(tp, tp + fn, confidence),
        prevalence=estimate(tp + fn, decided, confidence),
    )
