"""Quick re-rank: a logistic head on stored embeddings learns from a few verdicts."""

from __future__ import annotations

import numpy as np

from review.rerank import rerank


def test_rerank_learns_a_direction_in_embedding_space() -> None:
    rng = np.random.default_rng(0)
    n, d = 400, 32
    truth = rng.uniform(size=n) < 0.3
    emb = rng.normal(size=(n, d))
    emb[:, 5] += np.where(truth, 2.5, -0.5)  # damage shows along one embedding axis
    scores = np.full(n, 0.5)  # the run's scores carry no information here
    ids = [f"s{i}" for i in range(n)]
    labelled = {ids[i]: int(truth[i]) for i in range(60)}
    rr = rerank(ids, emb.astype(np.float16), scores, labelled, l2=1.0, min_labels=10)
    assert rr is not None and rr.labelled == 60 and rr.positives == int(truth[:60].sum())
    held_out = np.arange(60, n)
    prob = np.array([rr.prob[ids[i]] for i in held_out])
    pos, neg = prob[truth[held_out]], prob[~truth[held_out]]
    auc = (pos[:, None] > neg[None, :]).mean()
    assert auc > 0.9


def test_rerank_waits_for_both_classes() -> None:
    ids = [f"s{i}" for i in range(20)]
    emb = np.random.default_rng(1).normal(size=(20, 4))
    only_positive = {s: 1 for s in ids[:15]}
    assert rerank(ids, emb, np.full(20, 0.5), only_positive, min_labels=10) is None
    assert rerank(ids, emb, np.full(20, 0.5), {ids[0]: 1, ids[1]: 0}, min_labels=10) is None


def test_biased_verdicts_do_not_invert_the_runs_ranking() -> None:
    # verdicts only on the run's top sites (the top of the queue): the correction must not
    # turn the ranking of everything else upside down
    rng = np.random.default_rng(2)
    n, d = 600, 16
    truth = rng.uniform(size=n) < 0.25
    scores = 1 / (1 + np.exp(-(4 * (truth - 0.5) + rng.normal(0, 1.2, n))))
    emb = rng.normal(size=(n, d))
    ids = [f"s{i}" for i in range(n)]
    top = np.argsort(-scores)[:150]
    labelled = {ids[i]: int(truth[i]) for i in top}
    rr = rerank(ids, emb, scores, labelled, min_labels=10)
    assert rr is not None
    rest = np.setdiff1d(np.arange(n), top)

    def auc(s: np.ndarray) -> float:
        pos, neg = s[truth[rest]], s[~truth[rest]]
        return float((pos[:, None] > neg[None, :]).mean())

    # embeddings here are pure noise (worst case): fitting it may cost a little, never invert
    assert auc(np.array([rr.prob[ids[i]] for i in rest])) >= auc(scores[rest]) - 0.05
