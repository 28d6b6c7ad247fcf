"""Verdicts as a labelled dataset that ``sitewatch train`` reads (closing the loop).

The dataset folder holds ``sites.csv`` (``site_id, lon, lat, damage`` plus the run's ``name, kind,
radius_m`` where present, the reviewers' agreement, and the input's own extra columns such as
``tile``), the reviewers' marks on a facility's parts (``damaged_parts``: the decided damaged
parts, see :mod:`review.consensus`; ``part_marks``: each reviewer's, ``ann=p01,p03;ben=p03``; the
parts' geometry is in the run's ``part_scores``/``part_centres_m`` columns, carried through) and
``before/``, ``after/`` with symbolic
links to the rasters the run used (listed in its ``manifest.json``), so no imagery is copied.

A site is exported when it has a decision on the xBD scale: adjudicated, agreed, or a strict
majority. Sites judged ``cannot_assess``, and ties nobody has adjudicated, are left out (counted
in ``export.json``). ``export.json`` also records the verdict store's hash-chain head and count
(``verdict_chain``), so the labels can later be tied to exactly the verdicts they came from; a
store whose chain is broken (edited outside the app) is not exported.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from review.consensus import summarise
from review.runfolder import RunFolder
from review.store import VerdictStore, utc_now
from sitewatch.errors import InputError, RunFolderError
from tiles.formula_injection import neutralise_formula
from tiles.types import DAMAGE_CLASSES, PairMeta

log = logging.getLogger(__name__)

EXPORT_COLUMNS = (
    "site_id", "lon", "lat", "damage", "name", "kind", "radius_m",
    "n_reviewers", "agreement", "decision", "adjudicated", "verdicts", "run_score", "run_rank",
    "damaged_parts", "part_marks",
)


#: scores.csv columns that describe how detect made the pair, not the site (not exported).
_RUN_ONLY_COLUMNS = frozenset(f.name for f in dataclasses.fields(PairMeta)) | {
    "score", "rank", "flagged", "quality", "damage", "label", "scenes",
}


def passthrough_columns(run: RunFolder) -> list[str]:
    """The input's own extra columns (e.g. ``tile``) that the run carried through, in order."""
    seen: dict[str, None] = {}
    for site in run.sites[:1]:
        for key in site.meta:
            if key not in _RUN_ONLY_COLUMNS and key not in EXPORT_COLUMNS and not key.startswith(("before_", "after_")):
                seen[key] = None
    return list(seen)


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote.

    Attributes:
        out_dir: the dataset folder.
        exported: sites written to ``sites.csv``.
        by_damage: exported sites per damage class.
        skipped_cannot_assess: decided as ``cannot_assess`` (no label).
        skipped_undecided: tied without adjudication.
        before, after: raster links written.
    """

    out_dir: Path
    exported: int
    by_damage: dict[str, int]
    skipped_cannot_assess: int
    skipped_undecided: int
    before: int
    after: int


def _link_rasters(paths: list[Path], folder: Path) -> int:
    """Symlink each raster into ``folder`` (unique names); returns the count."""
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for i, src in enumerate(paths):
        src = src.resolve()
        if not src.exists():
            raise RunFolderError(
                f"raster {src} listed in the run's manifest.json no longer exists; put it back or "
                "re-run detect before exporting"
            )
        name = src.name
        if name in used:
            name = f"{i:04d}_{name}"
        used.add(name)
        link = folder / name
        if link.is_symlink() or link.exists():
            if link.is_symlink() and Path(os.readlink(link)) == src:
                continue
            raise InputError(f"{link} already exists and is not a link to {src}; export into an empty folder")
        link.symlink_to(src)
    return len(paths)


def export_dataset_summary(run_dir: Path, out_dir: Path) -> ExportSummary:
    """Write the labelled dataset and return what was written (see :func:`export_dataset`)."""
    run = RunFolder(run_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == run.path:
        raise InputError(f"--out {out_dir}: choose a folder other than the run folder")
    if out_dir.exists() and (out_dir / "sites.csv").exists():
        existing = (out_dir / "export.json")
        if not existing.is_file():
            raise InputError(f"--out {out_dir}: holds a sites.csv that no review export wrote; choose an empty folder")
    before = run.rasters("before")
    after = run.rasters("after")
    if not before or not after:
        raise RunFolderError(
            f"{run.path / 'manifest.json'}: lists no before/after rasters (inputs.before / inputs.after); "
            "a dataset cannot point at the imagery without them"
        )
    store = VerdictStore.for_run(run.path)
    chain = store.verify_chain()
    if not chain.ok:
        raise RunFolderError(
            f"{store.path}: the verdicts' hash chain is broken, so they are not exported as labels: "
            f"{chain.problems[0]}" + (f" (and {len(chain.problems) - 1} more)" if len(chain.problems) > 1 else "")
            + "; restore the store from a backup, or ask who changed it"
        )
    verdicts = [v for v in store.verdicts() if v.id <= chain.last_id]  # exactly the verdicts the head covers
    summaries = summarise(verdicts)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_before = _link_rasters(before, out_dir / "before")
    n_after = _link_rasters(after, out_dir / "after")
    by_damage = {c: 0 for c in DAMAGE_CLASSES}
    skipped_ca = skipped_undecided = exported = 0
    tmp = out_dir / "sites.csv.tmp"
    extra_columns = passthrough_columns(run)
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(EXPORT_COLUMNS) + extra_columns)
        writer.writeheader()
        for site in run.sites:
            c = summaries.get(site.site_id)
            if c is None:
                continue
            if c.final is None:
                skipped_undecided += 1
                continue
            if c.final not in DAMAGE_CLASSES:
                skipped_ca += 1
                continue
            by_damage[c.final] += 1
            exported += 1
            row = {
                "site_id": site.site_id,
                "lon": repr(site.lon),
                "lat": repr(site.lat),
                "damage": c.final,
                "name": site.name,
                "kind": site.kind,
                "radius_m": site.meta.get("radius_m", ""),
                "n_reviewers": len(c.votes),
                "agreement": "" if c.agreement != c.agreement else f"{c.agreement:.3f}",
                "decision": c.status,
                "adjudicated": "true" if c.adjudication is not None else "false",
                "verdicts": ";".join(f"{name}:{v}" for name, v in c.votes),
                "run_score": "" if site.score != site.score else f"{site.score:.6f}",
                "run_rank": site.rank or "",
                "damaged_parts": ";".join(c.damaged_parts),
                "part_marks": ";".join(f"{name}={','.join(parts)}" for name, parts in c.part_marks),
                **{k: site.meta.get(k, "") for k in extra_columns},
            }
            # no cell becomes a live spreadsheet formula (a site named =HYPERLINK(...))
            writer.writerow({k: neutralise_formula(str(v)) for k, v in row.items()})
    tmp.replace(out_dir / "sites.csv")
    summary = ExportSummary(out_dir, exported, by_damage, skipped_ca, skipped_undecided, n_before, n_after)
    record = {
        "created": utc_now(),
        "run": str(run.path),
        "model": run.manifest.to_json()["model"],
        "exported": exported,
        "by_damage": by_damage,
        "skipped_cannot_assess": skipped_ca,
        "skipped_undecided": skipped_undecided,
        "last_verdict_id": chain.last_id,
        "verdict_chain": {"verdicts": chain.verdicts, "head": chain.head, "last_verdict_id": chain.last_id},
    }
    (out_dir / "export.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    store.log_event("export", "export", {"out": str(out_dir.resolve()), "exported": exported, "by_damage": by_damage,
                                         "verdict_chain": record["verdict_chain"]})
    log.info("exported %d reviewed site(s) to %s", exported, out_dir)
    return summary


def export_dataset(run_dir: Path, out_dir: Path) -> Path:
    """Write a run's verdicts as a labelled dataset folder; returns ``out_dir``.

    Args:
        run_dir: the run folder (with ``review.sqlite``, ``scores.csv`` and ``manifest.json``).
        out_dir: the dataset folder to write (created; must not hold another dataset).

    Raises:
        RunFolderError: the run folder is unreadable or its rasters are gone.
        InputError: ``out_dir`` already holds a different dataset.
    """
    return export_dataset_summary(Path(run_dir), Path(out_dir)).out_dir
