"""Generalisation benchmark: every labelled real set, zero-shot, adapted and after N verdicts.

One table (and ``--json OUT``) for one or more models side by side. Per labelled set and model:

* ``zero-shot``: the model as shipped. Pairs are cut and cached exactly as ``sitewatch evaluate``
  cuts them (``train.datasets.load_labelled_folder``) and scored by the same function
  (``train.evaluation.score_pair_set``), so the figures are the ones users see.
* ``adapted``: after the model's run-time adaptation on the set's own pairs, when the scorer
  offers one (``models.inference.Scorer.adapt(images)``, or a ``Scorer(adapt...=True)``
  keyword); detected at run time, ``n/a`` otherwise.
* ``N QUEUE METHOD``: after ``N`` reviewed sites, evaluated on every site nobody reviewed. Sites
  come cumulatively (25, then 25 more, ...) from one of the review app's queues, ordered by the
  app's own code (``review.queue``) under the previous round's scores: ``top`` (the app's default
  ``score`` view, highest first: what reviewers work first), ``uncertainty`` (nearest the
  ``screening`` threshold first) or ``random`` (the app's seeded ``validation`` sample); the app
  has no mixed queue. ``METHOD`` is what the round learns: ``finetune`` =
  ``train.trainer.train_model`` with ``configs/train-finetune.yaml`` from the starting model, the
  code and settings of ``sitewatch train --from-review RUN``; ``head`` = the same with the encoder
  frozen and 4 epochs (``HEAD_OVERRIDES``); ``rerank`` = the review app's quick re-rank
  (``review.rerank``: a logistic correction on the starting model's embeddings, no CNN). A round
  that cannot learn (e.g. one class only) is printed with the library's message. Minutes per
  round are measured on this machine.

Columns: ROC AUC with a 95 % bootstrap interval, average precision, and at each of the model's
operating points (``screening``, ``evidence``) the false-alarm share (intact sites flagged) and
the recall; beside them the non-learned pixel-difference baseline (``train.baseline``) on the same
pairs, its false-alarm share and recall taken where it flags as many sites as the model does at
``screening`` (as ``sitewatch evaluate`` does). Sites whose pair comes back ``cannot_assess`` are
not scored; they are counted per reason in the set's header line and in the JSON.

Sets (found in ``../shared/data``, or ``$SITEWATCH_SHARED_DATA``):

* ``xbd-santa-rosa-dev``: xBD labels (major-damage/destroyed vs no-damage; truth);
* ``turkey-eq-2023-dev``: the vendor detector's weak labels (weak);
* ``turkey-eq-2023-dev-byeye``: ``benchmarks/labels/turkey-eq-2023-dev-byeye.csv`` (by eye);
* ``joplin-tornado``: ``xview2_model_damage``, another model's output (reference, not truth);
* any ``--data NAME=FOLDER[:LABELS.csv]`` (a labelled folder, or its sites joined by ``site_id``
  to a CSV with a ``damage`` column, e.g. a ``sitewatch review export``).

    python benchmarks/bench_generalisation.py [--model default] [--model DIR ...]
        [--sets NAME,...] [--data NAME=FOLDER[:LABELS.csv]] [--limit N]
        [--verdicts 25,50,100,200] [--queues top,uncertainty,random] [--verdict-sets NAME,...]
        [--methods finetune,head,rerank] [--no-finetune] [--no-adapted] [--threads 1] [--work DIR] [--json OUT]
    python benchmarks/bench_generalisation.py --show OUT   # the table of an earlier run
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fnmatch
import inspect
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SITEWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
LABELS_DIR = REPO / "benchmarks" / "labels"
FINETUNE_CONFIG = REPO / "configs" / "train-finetune.yaml"
OPERATING_POINTS = ("screening", "evidence")
#: simulated review queues, each the review app's own order (``review.queue``): ``top`` is the
#: app's ``score`` view (highest first), ``uncertainty`` its ``uncertainty`` view, ``random`` its
#: ``validation`` sample. The app has no mixed queue.
QUEUES = ("top", "uncertainty", "random")
#: what a round does with its verdicts: ``finetune`` = ``sitewatch train --from-review`` with the
#: fine-tuning recipe; ``head`` = the same recipe with the encoder frozen (``HEAD_OVERRIDES``);
#: ``rerank`` = the review app's quick re-rank (``review.rerank``: a logistic correction on the
#: starting model's embeddings, no CNN training).
METHODS = ("finetune", "head", "rerank")
#: the ``head`` method's changes to the fine-tuning recipe: encoder weights and statistics fixed,
#: only the fusion and heads learn, for fewer epochs
HEAD_OVERRIDES: dict[str, Any] = {"train.encoder_lr_scale": 0.0, "train.freeze_encoder_stages": 99, "train.freeze_bn": True, "train.epochs": 4}

#: what the labels of a shared set are (anything else found is reported as "labels")
KNOWN_KINDS = {"xbd-santa-rosa-dev": "truth", "turkey-eq-2023-dev": "weak", "joplin-tornado": "reference"}

log = logging.getLogger("bench_generalisation")


# ---- the labelled sets ----------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledSet:
    """A labelled set to benchmark on.

    Attributes:
        name: short name used in ``--sets`` and the table.
        folder: the dataset folder (``sites.csv`` with ``site_id, lon, lat``, ``before/``, ``after/``).
        kind: what the labels are: ``truth``, ``weak``, ``by-eye``, ``reference`` (another model's
            output, not ground truth) or ``labels``.
        label_column: the column of ``sites.csv`` holding the damage class (when ``labels_csv`` is None).
        labels_csv: a CSV with ``site_id, damage`` joined to the folder's sites (overrides the column).
    """

    name: str
    folder: Path
    kind: str
    label_column: str = "damage"
    labels_csv: Path | None = None


def label_column_of(sites_csv: Path) -> str | None:
    """``damage``, else the first ``*_damage`` column (e.g. ``xview2_model_damage``), else None."""
    with sites_csv.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    if "damage" in header:
        return "damage"
    return next((c for c in header if c.endswith("_damage")), None)


def discover_sets(shared: Path, labels_dir: Path) -> list[LabelledSet]:
    """Every labelled set of the shared data folder, plus the project's own label files.

    A folder counts when it holds ``sites.csv`` with a damage column, ``before/`` and ``after/``.
    ``labels_dir/<folder>-byeye.csv`` adds the set ``<folder>-byeye`` on the same imagery.
    """
    sets: list[LabelledSet] = []
    if not shared.is_dir():
        return sets
    for folder in sorted(p for p in shared.iterdir() if p.is_dir()):
        sites = folder / "sites.csv"
        if not (sites.is_file() and (folder / "before").is_dir() and (folder / "after").is_dir()):
            continue
        column = label_column_of(sites)
        if column is not None:
            kind = KNOWN_KINDS.get(folder.name, "reference" if column != "damage" else "labels")
            sets.append(LabelledSet(folder.name, folder, kind, label_column=column))
        own = labels_dir / f"{folder.name}-byeye.csv"
        if own.is_file():
            sets.append(LabelledSet(f"{folder.name}-byeye", folder, "by-eye", labels_csv=own))
    return sets


def parse_data_arg(text: str) -> LabelledSet:
    """``NAME=FOLDER`` or ``NAME=FOLDER:LABELS.csv`` as a :class:`LabelledSet`.

    Raises:
        SystemExit: the argument is malformed or names a missing file (the message says which).
    """
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--data {text}: expected NAME=FOLDER or NAME=FOLDER:LABELS.csv")
    labels: Path | None = None
    head, colon, tail = rest.rpartition(":")
    if colon and tail.lower().endswith(".csv"):
        rest, labels = head, Path(tail)
    folder = Path(rest)
    if not (folder / "sites.csv").is_file():
        raise SystemExit(f"--data {text}: {folder} holds no sites.csv; give a labelled dataset folder (sites.csv, before/, after/)")
    if labels is not None and not labels.is_file():
        raise SystemExit(f"--data {text}: no such labels file {labels}")
    column = "damage"
    if labels is None:
        found = label_column_of(folder / "sites.csv")
        if found is None:
            raise SystemExit(f"--data {text}: {folder}/sites.csv has no damage column; add one or give :LABELS.csv (site_id, damage)")
        column = found
    return LabelledSet(name, folder, "labels", label_column=column, labels_csv=labels)


@dataclass(frozen=True)
class SetCounts:
    """How many sites of a set are usable.

    Attributes:
        sites: rows of the set's ``sites.csv``.
        positives, negatives: sites with a binary label (major-damage/destroyed vs no-damage).
        left_out: other labels (minor-damage, un-classified, unsure/empty) by class.
    """

    sites: int
    positives: int
    negatives: int
    left_out: dict[str, int]


def read_labels(ls: LabelledSet) -> dict[str, str]:
    """``{site_id: damage}`` from the labels CSV or the set's label column."""
    path = ls.labels_csv or ls.folder / "sites.csv"
    column = "damage" if ls.labels_csv else ls.label_column
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "site_id" not in reader.fieldnames or column not in reader.fieldnames:
            raise SystemExit(f"{path}: needs the columns site_id and {column}")
        return {r["site_id"]: (r[column] or "").strip() for r in reader}


def materialise(ls: LabelledSet, work: Path, *, limit: int = 0, seed: int = 0) -> tuple[Path, SetCounts]:
    """A labelled dataset folder for ``ls`` whose ``sites.csv`` has its labels in ``damage``.

    Rasters are symlinked (nothing is copied); the other columns (``tile``...) are kept so the
    fine-tuning split groups by tile as it does for a review export. With ``limit``, a seeded
    sample of that many binary-labelled sites, stratified by class, is kept.

    Returns:
        ``(folder, counts of the full set)``.
    """
    from tiles.types import damage_to_label

    labels = read_labels(ls)
    with (ls.folder / "sites.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = [f for f in (reader.fieldnames or []) if f != "damage"] + ["damage"]
        rows = [{**r, "damage": labels.get(r["site_id"], "")} for r in reader]
    binary = [damage_to_label(r["damage"]) for r in rows]
    counts = SetCounts(
        sites=len(rows),
        positives=sum(1 for b in binary if b == 1),
        negatives=sum(1 for b in binary if b == 0),
        left_out=dict(Counter(r["damage"] or "(none)" for r, b in zip(rows, binary) if b is None)),
    )
    if limit:
        rng = np.random.default_rng(seed)
        pos = [i for i, b in enumerate(binary) if b == 1]
        neg = [i for i, b in enumerate(binary) if b == 0]
        n_pos = min(len(pos), max(2, round(limit * len(pos) / max(len(pos) + len(neg), 1))))
        keep = set(rng.permutation(pos)[:n_pos].tolist()) | set(rng.permutation(neg)[: max(limit - n_pos, 0)].tolist())
        rows = [r for i, r in enumerate(rows) if i in keep]
    out = work / "sets" / (ls.name + (f"-limit{limit}" if limit else ""))
    for epoch in ("before", "after"):
        (out / epoch).mkdir(parents=True, exist_ok=True)
        for src in sorted((ls.folder / epoch).iterdir()):
            link = out / epoch / src.name
            if src.is_file() and not link.exists():
                link.symlink_to(src.resolve())
    text = _csv_text(fields, rows)
    sites = out / "sites.csv"
    if not sites.is_file() or sites.read_text(encoding="utf-8") != text:  # unchanged file: cache hit
        sites.write_text(text, encoding="utf-8")
    return out, counts


def _csv_text(fields: list[str], rows: list[dict[str, str]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def not_assessed(folder: Path, assessed: set[str], tiles: Any) -> dict[str, dict[str, int]]:
    """Why the binary-labelled sites without a pair were not assessed.

    The tiles stage is asked again for just those sites (``cannot_assess`` reason per site).

    Returns:
        ``{reason: {"positive": n, "negative": n}}``.
    """
    from tiles.catalog import RasterCatalog
    from tiles.cut import PairCutter
    from tiles.sites import read_sites
    from tiles.types import damage_to_label

    missing = [s for s in read_sites(folder / "sites.csv") if damage_to_label(s.damage) is not None and s.site_id not in assessed]
    out: dict[str, dict[str, int]] = {}
    if not missing:
        return out
    for s in missing:
        if s.problem is not None:
            out.setdefault("invalid_row", {"positive": 0, "negative": 0})["positive" if damage_to_label(s.damage) else "negative"] += 1
    cuttable = [s for s in missing if s.problem is None]
    before = RasterCatalog.from_paths([folder / "before"], epoch="before")
    after = RasterCatalog.from_paths([folder / "after"], epoch="after")
    with PairCutter(before, after, tiles) as cutter:
        for pair in cutter.cut_many(cuttable):
            reason = pair.meta.reason or ("ok" if pair.ok else "cannot_assess")
            key = "positive" if damage_to_label(pair.site.damage) else "negative"
            out.setdefault(reason, {"positive": 0, "negative": 0})[key] += 1
    return out


# ---- figures --------------------------------------------------------------------------------


def auc_interval(labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the ROC AUC (resampling positives and negatives separately)."""
    from train.metrics import roc_auc

    y = np.asarray(labels, dtype=np.int64)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if pos.size < 2 or neg.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        aucs[b] = roc_auc(y[idx], scores[idx])
    lo, hi = np.nanpercentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def flag_figures(labels: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    """``(false-alarm share = intact flagged / intact, recall = damaged flagged / damaged)``."""
    y = np.asarray(labels, dtype=bool)
    fa = float(flagged[~y].mean()) if (~y).any() else float("nan")
    rec = float(flagged[y].mean()) if y.any() else float("nan")
    return fa, rec


def figures(labels: np.ndarray, probs: np.ndarray, points: dict[str, float], base: np.ndarray, *, seed: int) -> dict[str, Any]:
    """Every column of one table row for scores ``probs`` and baseline ``base`` on the same pairs."""
    from train.metrics import average_precision, roc_auc

    y = np.asarray(labels, dtype=np.int64)
    lo, hi = auc_interval(y, probs, seed=seed)
    row: dict[str, Any] = {
        "n": int(y.size), "positives": int(y.sum()), "negatives": int(y.size - y.sum()),
        "auc": roc_auc(y, probs), "auc_lo": lo, "auc_hi": hi, "ap": average_precision(y, probs),
    }
    for name in OPERATING_POINTS:
        if name in points:
            fa, rec = flag_figures(y, probs >= points[name])
            row[f"{name}_threshold"], row[f"{name}_false_alarm"], row[f"{name}_recall"] = float(points[name]), fa, rec
            row[f"{name}_flagged"] = int((probs >= points[name]).sum())
    row["baseline_auc"], row["baseline_ap"] = roc_auc(y, base), average_precision(y, base)
    k = row.get("screening_flagged")
    if k is not None:  # the baseline flags as many sites as the model does at screening
        order = np.argsort(-base, kind="mergesort")
        flagged = np.zeros(y.size, dtype=bool)
        flagged[order[:k]] = True
        row["baseline_screening_false_alarm"], row["baseline_screening_recall"] = flag_figures(y, flagged)
    return row


# ---- scoring and adapting -------------------------------------------------------------------


def score_model(model: str | Path, pairs: Any, *, batch_size: int = 64) -> tuple[np.ndarray, dict[str, float]]:
    """Calibrated probabilities ``(N,)`` and operating points, as ``sitewatch evaluate`` scores."""
    from train.evaluation import score_pair_set

    probs, _, meta = score_pair_set(model, pairs, batch_size=batch_size, device="cpu", tta=False)
    return probs, {k: float(v) for k, v in meta.operating_points.items()}


def adaptation_option() -> tuple[str, Callable[[str | Path, Any], tuple[np.ndarray, dict[str, float]]]] | None:
    """The scorer's run-time adaptation, when it has one: ``(description, score function)``.

    Recognised: a ``Scorer.adapt(images)`` method (``images`` float ``(N, 2, C, H, W)`` in
    ``[0, 1]``: the run's own pairs), or a boolean ``Scorer`` keyword whose name starts with
    ``adapt``. None when the installed scorer offers neither.
    """
    from models.inference import Scorer

    def run(scorer: Any, pairs: Any) -> tuple[np.ndarray, dict[str, float]]:
        probs = np.concatenate([scorer.score(pairs.as_float(slice(i, i + 64))).prob for i in range(0, len(pairs), 64)])
        return probs, {k: float(v) for k, v in scorer.meta.operating_points.items()}

    if callable(getattr(Scorer, "adapt", None)):
        def by_method(model: str | Path, pairs: Any) -> tuple[np.ndarray, dict[str, float]]:
            scorer = Scorer(model, device="cpu")
            adapted = scorer.adapt(pairs.as_float())
            return run(adapted if isinstance(adapted, Scorer) else scorer, pairs)

        return "Scorer.adapt(the set's pairs)", by_method
    for name, param in inspect.signature(Scorer.__init__).parameters.items():
        if name.startswith("adapt") and (param.default is None or isinstance(param.default, bool)):
            def by_keyword(model: str | Path, pairs: Any, _name: str = name) -> tuple[np.ndarray, dict[str, float]]:
                return run(Scorer(model, device="cpu", **{_name: True}), pairs)

            return f"Scorer({name}=True)", by_keyword
    return None


# ---- verdict rounds -------------------------------------------------------------------------


class WarningsCaught(logging.Handler):
    """Collects the warning messages of a logger tree while attached (e.g. the trainer's)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def finetune_job(config: Path, *, threads: int, cache_dir: Path, seed: int, overrides: dict[str, Any]) -> Any:
    """The ``sitewatch train`` job of ``config`` (the fine-tuning recipe) with run settings."""
    from sitewatch.config import load_config
    from sitewatch.jobs import TrainJob

    return load_config(TrainJob, config, {"train.threads": threads, "train.cache_dir": str(cache_dir), "train.seed": seed, "train.device": "cpu", **overrides})


def queue_order(queue: str, current: np.ndarray, threshold: float, *, seed: int) -> np.ndarray:
    """The review app's order of the sites for ``queue`` under the current scores ``(N,)``.

    ``top``: ``review.queue.score_order`` (the app's default ``score`` view); ``uncertainty``:
    ``review.queue.uncertainty_order`` around ``threshold``; ``random``:
    ``review.queue.validation_sample`` (the app's ``validation`` view, seeded). The code is the
    app's, so the simulated reviewers see what people would.
    """
    from review.queue import score_order, uncertainty_order, validation_sample

    if queue == "top":
        return score_order(current)
    if queue == "uncertainty":
        return uncertainty_order(current, threshold)
    if queue == "random":
        return validation_sample(current.size, current.size, seed)
    raise ValueError(f"unknown queue {queue!r}; choose from {', '.join(QUEUES)}")


def pick_verdicts(queue: str, current: np.ndarray, threshold: float, reviewed: np.ndarray, need: int, *, seed: int) -> np.ndarray:
    """The next ``need`` sites nobody reviewed yet, in the queue's order (positions)."""
    order = queue_order(queue, current, threshold, seed=seed)
    return np.array([i for i in order if not reviewed[i]][: max(need, 0)], dtype=np.int64)


def embed_model(model: str | Path, pairs: Any, *, batch_size: int = 64) -> np.ndarray:
    """The model's site embeddings ``(N, D)`` (what ``sitewatch detect`` stores in embeddings.npz)."""
    from models.inference import Scorer

    scorer = Scorer(model, device="cpu", batch_size=batch_size)
    return np.concatenate([scorer.score(pairs.as_float(slice(i, i + batch_size))).embedding for i in range(0, len(pairs), batch_size)])


def rerank_round(pairs: Any, embeddings: np.ndarray, start_probs: np.ndarray, reviewed: np.ndarray) -> np.ndarray | None:
    """The review app's quick re-rank fitted on the reviewed sites, or None when it cannot fit yet.

    Uses ``review.rerank.rerank`` with the app's default ``review.rerank_l2`` and
    ``review.rerank_min_labels``; the starting model's scores are the prior it corrects.
    """
    from review.config import ReviewConfig
    from review.rerank import rerank

    cfg = ReviewConfig()
    ids = [str(s) for s in pairs.site_ids]
    labels = {ids[i]: int(pairs.labels[i]) for i in np.flatnonzero(reviewed)}
    fitted = rerank(ids, embeddings, start_probs, labels, l2=cfg.rerank_l2, min_labels=cfg.rerank_min_labels)
    if fitted is None:
        return None
    return np.array([fitted.prob.get(s, float("nan")) for s in ids], dtype=np.float64)


def verdict_rounds(
    pairs: Any, base: np.ndarray, model: str | Path, start_probs: np.ndarray, start_points: dict[str, float], *,
    queue: str, counts: list[int], job: Any, work: Path, seed: int, method: str = "finetune",
    embeddings: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Simulated review rounds on one set: pick verdicts, learn from them, score the unreviewed rest.

    Args:
        pairs: the set's :class:`train.datasets.PairSet` (assessable, binary-labelled sites).
        base: the baseline score of every pair ``(N,)``.
        model: the starting checkpoint (fine-tuning always starts from it, as
            ``sitewatch train --from-review RUN`` starts from the run's model).
        start_probs, start_points: the starting model's probabilities and operating points.
        queue: ``top``, ``uncertainty`` or ``random`` (:func:`queue_order`); each round's queue
            is ordered by the previous round's scores.
        counts: cumulative numbers of verdicts, ascending.
        job: the fine-tuning :class:`sitewatch.jobs.TrainJob` (``finetune`` and ``head``).
        work: where the fine-tuned checkpoints go.
        method: ``finetune``, ``head`` (both train ``job``) or ``rerank`` (the app's quick
            re-rank on ``embeddings``, the starting model's operating points).
        embeddings: the starting model's embeddings ``(N, D)`` (``rerank`` only).

    Returns:
        One row dict per round (``figures`` on the rest, plus ``verdicts``, ``reviewed_positive``,
        ``minutes``, ``zero_shot_auc_on_rest`` and ``note``).
    """
    from sitewatch.errors import SitewatchError
    from train.metrics import roc_auc
    from train.trainer import train_model

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "rerank" and embeddings is None:
        raise ValueError("method rerank needs the starting model's embeddings")
    labels = pairs.labels.astype(np.int64)
    reviewed = np.zeros(len(pairs), dtype=bool)
    current, threshold = start_probs, float(start_points.get("screening", 0.5))
    rows = []
    for n in counts:
        if n >= len(pairs):
            rows.append({"verdicts": n, "note": f"only {len(pairs)} assessable sites"})
            break
        reviewed[pick_verdicts(queue, current, threshold, reviewed, n - int(reviewed.sum()), seed=seed)] = True
        rest = ~reviewed
        row: dict[str, Any] = {"verdicts": n, "reviewed_positive": int(labels[reviewed].sum())}
        t0 = time.perf_counter()
        caught = WarningsCaught()
        if method == "rerank":
            probs = rerank_round(pairs, embeddings, start_probs, reviewed)  # type: ignore[arg-type]
            points = dict(start_points)
            if probs is None:
                row.update(minutes=(time.perf_counter() - t0) / 60.0, note="re-rank not fitted: fewer than review.rerank_min_labels verdicts or under 2 of a class")
                rows.append(row)
                continue
        else:
            out = work / f"{queue}-{method}-{n}"
            trainer_log = logging.getLogger("train")
            trainer_log.addHandler(caught)
            try:
                train_model([], out, tiles=job.tiles, model=job.model, train=job.train, synth=job.synth, init_from=model, extra_sets=[pairs.subset(np.flatnonzero(reviewed))], progress=False, resume=False)
                probs, points = score_model(out, pairs)
            except SitewatchError as exc:
                row.update(minutes=(time.perf_counter() - t0) / 60.0, note=f"fine-tuning failed: {exc}", warnings=caught.messages)
                rows.append(row)
                continue
            finally:
                trainer_log.removeHandler(caught)
        row["minutes"] = (time.perf_counter() - t0) / 60.0
        row.update(figures(labels[rest], probs[rest], points, base[rest], seed=seed))
        row["zero_shot_auc_on_rest"] = roc_auc(labels[rest], start_probs[rest])
        row["warnings"] = caught.messages
        row["note"] = f"trainer warned: {caught.messages[0][:100]}" if caught.messages else ""
        rows.append(row)
        current, threshold = probs, float(points.get("screening", threshold))
    return rows


# ---- the table ------------------------------------------------------------------------------


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


def _pct(v: Any) -> str:
    return _num(v, "{:.0%}")


HEADER = (
    f"{'set':<26} {'labels':<9} {'model':<14} {'row':<26} {'n':>5} {'pos':>4} "
    f"{'AUC':>5} {'[95% CI]':<13} {'AP':>5} {'scrFA':>5} {'scrRec':>6} {'eviFA':>5} {'eviRec':>6} | "
    f"{'bAUC':>5} {'bAP':>5} {'bFA':>4} {'bRec':>4} | {'zsAUC':>5} {'rvPos':>5} {'min':>5}"
)


def table_line(r: dict[str, Any]) -> str:
    """One row of the printed table (``n/a`` for figures that do not exist)."""
    head = f"{r['set'][:26]:<26} {r['kind']:<9} {r['model'][-14:]:<14} {r['row'][:26]:<26} "
    if "auc" not in r:
        reviewed = f"(reviewed {r['reviewed_positive']} damaged) " if "reviewed_positive" in r else ""
        return head + reviewed + (r.get("note") or "n/a")
    ci = f"[{_num(r.get('auc_lo'))}-{_num(r.get('auc_hi'))}]"
    return (
        head + f"{r['n']:>5} {r['positives']:>4} {_num(r['auc']):>5} {ci:<13} {_num(r['ap']):>5} "
        f"{_pct(r.get('screening_false_alarm')):>5} {_pct(r.get('screening_recall')):>6} "
        f"{_pct(r.get('evidence_false_alarm')):>5} {_pct(r.get('evidence_recall')):>6} | "
        f"{_num(r.get('baseline_auc')):>5} {_num(r.get('baseline_ap')):>5} "
        f"{_pct(r.get('baseline_screening_false_alarm')):>4} {_pct(r.get('baseline_screening_recall')):>4} | "
        f"{_num(r.get('zero_shot_auc_on_rest')) if 'verdicts' in r else '':>5} {r.get('reviewed_positive', ''):>5} "
        f"{_num(r.get('minutes'), '{:.1f}'):>5}" + (f"  {r['note']}" if r.get("note") else "")
    )


def set_line(s: dict[str, Any]) -> str:
    """The header line of one set: counts, left-out labels and sites that could not be assessed."""
    c = s["counts"]
    na = s["not_assessed"]
    na_n = sum(v["positive"] + v["negative"] for v in na.values())
    text = (
        f"{s['name']} ({s['kind']}): {c['sites']} sites, {c['positives']} positive / {c['negatives']} negative"
        + (f", limited to {s['limit']}" if s.get("limit") else "")
        + (f"; not in the binary task: {', '.join(f'{k} {v}' for k, v in sorted(c['left_out'].items()))}" if c["left_out"] else "")
        + f"; scored {s['pairs']}"
    )
    if na_n:
        text += f"; cannot_assess {na_n}: " + ", ".join(f"{k} {v['positive']} pos/{v['negative']} neg" for k, v in sorted(na.items()))
    return text


def json_safe(obj: Any) -> Any:
    """NaN/inf become None; numpy scalars become Python numbers; paths become strings."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def print_table(payload: dict[str, Any]) -> None:
    """The whole table of a run (the payload that ``--json`` writes): legend, sets, rows."""
    print(f"models: {', '.join(payload['models'])}; fine-tuning recipe {Path(str(payload['finetune_config'])).name}"
          + (f" (epochs {payload['epochs']})" if payload.get("epochs") else "")
          + f"; {payload['threads']} torch thread(s), {payload.get('machine', '')}")
    print("scrFA/eviFA: share of intact sites flagged at the screening/evidence operating point; scrRec/eviRec: recall there;")
    print("b*: pixel-difference baseline on the same pairs (bFA/bRec where it flags as many sites as the model at screening);")
    print("verdict rows: fine-tuned on N reviewed sites (rvPos of them damaged), figures on the unreviewed rest, zsAUC: the")
    print("starting model on that rest;")
    print("min: minutes (scoring, or fine-tuning + rescoring per round)")
    print()
    for info in payload["sets"]:
        print(set_line(info))
    print()
    print(HEADER)
    print("-" * len(HEADER))
    last = None
    for r in payload["rows"]:
        if last is not None and r["set"] != last:
            print()
        print(table_line(r))
        last = r["set"]


# ---- main -----------------------------------------------------------------------------------


def select(sets: list[LabelledSet], patterns: str | None) -> list[LabelledSet]:
    """The sets whose name matches one of the comma-separated names or globs (all when None)."""
    if not patterns:
        return sets
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [s for s in sets if any(fnmatch.fnmatchcase(s.name, p) for p in wanted)]
    unknown = [p for p in wanted if not any(fnmatch.fnmatchcase(s.name, p) for s in sets)]
    if unknown:
        known = ", ".join(s.name for s in sets) or f"none (no labelled set in {SHARED}; set SITEWATCH_SHARED_DATA)"
        raise SystemExit(f"--sets: no set matches {', '.join(unknown)}; known: {known}")
    return chosen


def parse_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"--verdicts {text}: expected whole numbers separated by commas, e.g. 25,50,100") from None
    if not counts or counts[0] < 1:
        raise SystemExit(f"--verdicts {text}: numbers must be at least 1")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, help="checkpoint folder or 'default' (repeatable; default: the bundled model)")
    parser.add_argument("--sets", help="comma-separated set names or globs (default: every labelled set)")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=FOLDER[:LABELS.csv]", help="another labelled set (repeatable)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many binary-labelled sites per set (seeded, stratified)")
    parser.add_argument("--verdicts", default="25,50,100,200", help="cumulative verdict counts of the fine-tuning rounds")
    parser.add_argument("--queues", default=",".join(QUEUES), help="review queues to simulate: top (the app's score view), uncertainty, random (its validation sample)")
    parser.add_argument("--methods", default="finetune", help=f"what a round does with its verdicts: {', '.join(METHODS)} (comma-separated)")
    parser.add_argument("--verdict-sets", help="sets that get the verdict rounds (default: all but reference sets)")
    parser.add_argument("--no-finetune", action="store_true", help="zero-shot and adapted rows only")
    parser.add_argument("--no-adapted", "--no-adapt", dest="no_adapted", action="store_true", help="leave out the adapted row (run-time adaptation re-scores every pair); --no-adapt is an alias")
    parser.add_argument("--finetune-config", type=Path, default=FINETUNE_CONFIG, help="the fine-tuning recipe (default: configs/train-finetune.yaml)")
    parser.add_argument("--epochs", type=int, help="override train.epochs of the fine-tuning recipe")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sitewatch-bench-generalisation", help="scratch folder (set folders, fine-tuned models)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--show", type=Path, metavar="JSON", help="print the table of an earlier --json run and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="library info messages")
    args = parser.parse_args(argv)
    if args.show:
        print_table(json.loads(args.show.read_text(encoding="utf-8")))
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    import torch

    torch.set_num_threads(args.threads)
    from tiles.config import TilesConfig
    from train.baseline import pixel_difference_score
    from train.datasets import default_cache_dir, load_labelled_folder

    models = args.model or ["default"]
    for m in models:
        if m != "default" and not (Path(m) / "meta.json").is_file():
            raise SystemExit(f"--model {m}: not a checkpoint folder (no meta.json); give 'default' or a folder written by sitewatch train")
    sets = select(discover_sets(SHARED, LABELS_DIR) + [parse_data_arg(d) for d in args.data], args.sets)
    if not sets:
        raise SystemExit(f"no labelled set found in {SHARED} (set SITEWATCH_SHARED_DATA) and none given with --data")
    counts = [] if args.no_finetune else parse_counts(args.verdicts)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if not queues or any(q not in QUEUES for q in queues):
        raise SystemExit(f"--queues {args.queues}: choose from {', '.join(QUEUES)}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        raise SystemExit(f"--methods {args.methods}: choose from {', '.join(METHODS)}")
    verdict_sets = {s.name for s in (select(sets, args.verdict_sets) if args.verdict_sets else [s for s in sets if s.kind != "reference"])}
    tiles = TilesConfig()
    cache = default_cache_dir()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    job = finetune_job(args.finetune_config, threads=args.threads, cache_dir=cache, seed=args.seed, overrides={"train.epochs": args.epochs})
    jobs = {
        "finetune": job,
        "head": finetune_job(args.finetune_config, threads=args.threads, cache_dir=cache, seed=args.seed, overrides={**HEAD_OVERRIDES, **({"train.epochs": args.epochs} if args.epochs else {})}),
        "rerank": None,
    }
    adapt = adaptation_option()

    set_infos: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for ls in sets:
        folder, set_counts = materialise(ls, work, limit=args.limit, seed=args.seed)
        t0 = time.perf_counter()
        pairs = load_labelled_folder(folder, tiles, cache_dir=cache, progress=False, name=ls.name)
        na = not_assessed(folder, {str(s) for s in pairs.site_ids}, tiles)
        info = {
            "name": ls.name, "kind": ls.kind, "folder": ls.folder, "labels": ls.labels_csv or f"sites.csv:{ls.label_column}",
            "limit": args.limit, "counts": dataclasses.asdict(set_counts), "pairs": len(pairs), "not_assessed": na,
            "cut_seconds": time.perf_counter() - t0,
        }
        set_infos.append(info)
        print(set_line(info), flush=True)
        labels = pairs.labels.astype(np.int64)
        base = pixel_difference_score(pairs.images)
        for model in models:
            common = {"set": ls.name, "kind": ls.kind, "model": str(model)}
            t0 = time.perf_counter()
            probs, points = score_model(model, pairs)
            row = {**common, "row": "zero-shot", **figures(labels, probs, points, base, seed=args.seed), "minutes": (time.perf_counter() - t0) / 60.0}
            rows.append(row)
            print(table_line(row), flush=True)
            if args.no_adapted:
                row = {**common, "row": "adapted", "note": "not run (--no-adapted)"}
            elif adapt is None:
                row = {**common, "row": "adapted", "note": "n/a (the scorer offers no run-time adaptation)"}
            else:
                t0 = time.perf_counter()
                a_probs, a_points = adapt[1](model, pairs)
                row = {**common, "row": "adapted", **figures(labels, a_probs, a_points, base, seed=args.seed),
                       "minutes": (time.perf_counter() - t0) / 60.0, "note": adapt[0]}
            rows.append(row)
            print(table_line(row), flush=True)
            if not counts or ls.name not in verdict_sets:
                continue
            embeddings = embed_model(model, pairs) if "rerank" in methods else None
            for method in methods:
                for queue in queues:
                    tag = "".join(c if c.isalnum() else "_" for c in f"{ls.name}-{Path(str(model)).name}")
                    for r in verdict_rounds(pairs, base, model, probs, points, queue=queue, counts=counts, job=jobs[method], work=work / "finetuned" / tag, seed=args.seed, method=method, embeddings=embeddings):
                        row = {**common, "row": f"{r['verdicts']} {queue} {method}", "queue": queue, "method": method, **r}
                        rows.append(row)
                        print(table_line(row), flush=True)

    payload = {
        "command": "python benchmarks/bench_generalisation.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "models": models,
        "adaptation": adapt[0] if adapt else None,
        "finetune_config": args.finetune_config,
        "methods": methods,
        "head_overrides": HEAD_OVERRIDES,
        "epochs": args.epochs,
        "threads": args.threads,
        "sets": set_infos,
        "rows": rows,
    }
    print()
    print_table(json_safe(payload))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(json_safe(payload), indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
