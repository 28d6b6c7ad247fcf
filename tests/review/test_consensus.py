"""Decisions per site, agreement figures and interval estimates (known answers)."""

from __future__ import annotations

import math

import pytest

from review.consensus import agreement, list_quality, needs_adjudication, summarise, wilson_interval
from review.store import Verdict


def _v(i: int, site: str, who: str, verdict: str, kind: str = "review") -> Verdict:
    return Verdict(i, site, who, verdict, "", kind, f"2026-01-01T00:00:{i:02d}")


def test_decisions_majority_ties_adjudication_and_changed_minds() -> None:
    rows = [
        _v(1, "agree", "a", "destroyed"), _v(2, "agree", "b", "destroyed"),
        _v(3, "maj", "a", "destroyed"), _v(4, "maj", "b", "destroyed"), _v(5, "maj", "c", "no-damage"),
        _v(6, "tie", "a", "destroyed"), _v(7, "tie", "b", "no-damage"),
        _v(8, "adj", "a", "destroyed"), _v(9, "adj", "b", "no-damage"), _v(10, "adj", "lead", "major-damage", "adjudication"),
        _v(11, "changed", "a", "no-damage"), _v(12, "changed", "a", "destroyed"),
    ]
    s = summarise(rows)
    assert (s["agree"].final, s["agree"].status, s["agree"].agreement) == ("destroyed", "agreed", 1.0)
    assert (s["maj"].final, s["maj"].status) == ("destroyed", "majority")
    assert s["maj"].agreement == pytest.approx(2 / 3)
    assert needs_adjudication(s["maj"])  # any disagreement goes to adjudication
    assert (s["tie"].final, s["tie"].status) == (None, "disputed")
    assert (s["adj"].final, s["adj"].status, s["adj"].adjudicator) == ("major-damage", "adjudicated", "lead")
    assert not needs_adjudication(s["adj"])
    assert s["changed"].votes == (("a", "destroyed"),) and s["changed"].status == "agreed"
    assert s["adj"].label == 1 and s["tie"].label is None


def test_agreement_and_fleiss_kappa_known_answer() -> None:
    # two sites, two raters each: one agreement, one disagreement
    rows = [_v(1, "x", "a", "destroyed"), _v(2, "x", "b", "destroyed"), _v(3, "y", "a", "destroyed"), _v(4, "y", "b", "no-damage")]
    ag = agreement(summarise(rows).values())
    assert (ag.sites, ag.pairs) == (2, 2)
    assert ag.exact == 0.5 and ag.binary == 0.5
    # P_bar = 0.5; p_destroyed = 3/4, p_no = 1/4 -> P_e = 0.625; kappa = (0.5 - 0.625) / 0.375
    assert ag.kappa == pytest.approx(-1 / 3)
    perfect = agreement(summarise([_v(1, "x", "a", "destroyed"), _v(2, "x", "b", "destroyed"),
                                   _v(3, "y", "a", "no-damage"), _v(4, "y", "b", "no-damage")]).values())
    assert perfect.kappa == pytest.approx(1.0)


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(8, 10, 0.95)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    lo, hi = wilson_interval(0, 20, 0.95)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_list_quality_from_a_sample() -> None:
    # flagged: s1 (severe), s2 (no damage); not flagged: s3 (severe), s4 (no damage), s5 unreviewed
    rows = [_v(1, "s1", "a", "destroyed"), _v(2, "s2", "a", "no-damage"), _v(3, "s3", "a", "major-damage"),
            _v(4, "s4", "a", "no-damage"), _v(5, "s6", "a", "cannot_assess")]
    q = list_quality([("s1", True), ("s2", True), ("s3", False), ("s4", False), ("s5", False), ("s6", True)], summarise(rows))
    assert q.sample_size == 6 and q.decided == 4
    assert q.precision.value == 0.5 and q.precision.trials == 2
    assert q.recall.value == 0.5 and q.recall.trials == 2
    assert q.prevalence.value == 0.5
