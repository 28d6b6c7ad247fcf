"""Refit a run's calibration on this event's verified sites (``sitewatch calibrate RUN``).

The bundled model's temperature and operating points come from synthetic validation scenes;
on a new event its probabilities can be far too confident. Given labelled sites of the run
(a ``site_id, damage`` CSV such as ``sitewatch review export`` writes, or the verified random
sample of the run's own review store, which the CLI reads), :func:`recalibrate_run`:

1. takes each site's raw logit: ``sitewatch detect`` writes calibrated probabilities only, so
   the first calibration of a run recovers each logit from the written score and the run's
   temperature (to within about ``5e-7 / (p (1 - p))`` for 6 written decimals, scores written as
   0 or 1 clipped, and says so) and keeps it in the ``logit`` column, which every later
   calibration of the run reads as is;
2. fits a temperature on one stratified part of the labelled sites and chooses the operating
   points on the other (:func:`models.calibration.fit_calibration`, policy
   :class:`models.config.CalibrationConfig`), and measures the reliability on that other part
   with bootstrap intervals, before and after;
3. rewrites ``scores.csv`` / ``scores.geojson`` (new ``score``, ``rank`` and ``flagged``; the raw
   ``logit`` kept beside them), ``report.html`` (which calibration the scores carry), writes
   ``calibration.txt``, ``calibration.json`` and ``reliability.png``, and records in
   ``manifest.json`` where the calibration came from (labels file and its SHA-256, sites,
   positives, fitted values, date) with every output re-hashed.

Temperature scaling is monotone, so the order of the sites does not change; which sites are
flagged does.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from detect.gis import GPKG_NAME, rewrite_gis_files
from detect.provenance import MANIFEST_NAME, SIGNATURE_NAME, hash_outputs
from detect.runfolder import (
    Manifest,
    format_number,
    read_manifest,
    read_scores_csv,
    score_columns,
    write_bytes_atomic,
    write_manifest,
    write_scores_csv,
    write_scores_geojson,
)
from detect.ranking import OperatingPoint, rank_rows
from detect.report import summarise_rows, write_report
from models.calibration import FittedCalibration, fit_calibration, sigmoid
from models.config import CalibrationConfig
from sitewatch.errors import InputError, RunFolderError
from sitewatch.hashing import sha256_file
from tiles.formula_injection import restore_formula
from tiles.types import DAMAGE_CLASSES, damage_to_label

log = logging.getLogger(__name__)

CALIBRATION_TXT = "calibration.txt"
CALIBRATION_JSON = "calibration.json"
RELIABILITY_PNG = "reliability.png"
#: the column of ``scores.csv`` that keeps the raw logit
LOGIT_COLUMN = "logit"
#: the column of ``scores.csv`` that says which calibration a score carries
CALIBRATION_COLUMN = "calibration"
#: written scores of 0 or 1 are clipped to this distance from them when the logit is recovered
_SCORE_CLIP = 1e-12


@dataclass(frozen=True)
class EventLabels:
    """Labelled sites of this event and where they came from.

    Attributes:
        damage: ``site_id`` -> xBD damage class (``no-damage`` ... ``destroyed``).
        source: ``"labels file"`` or ``"review store (validation sample)"`` and the like.
        path: the file the labels were read from.
        sha256: SHA-256 of that file (for the manifest); for a review store, of the exported
            labels text (the verdict chain's head is in ``detail``).
        detail: anything else to record (e.g. the verdict chain head).
    """

    damage: Mapping[str, str]
    source: str
    path: str
    sha256: str
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def read_labels_csv(path: str | Path) -> EventLabels:
    """A CSV with ``site_id`` and ``damage`` (or ``label`` 0/1) columns as :class:`EventLabels`.

    Raises:
        InputError: the file is missing, lacks the columns, repeats a site with different
            damage, or holds a damage value off the xBD scale (row named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--labels {path}: no such file; give a CSV with site_id and damage columns (e.g. from 'sitewatch review export')")
    damage: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if "site_id" not in cols or not ({"damage", "label"} & set(cols)):
            raise InputError(f"{path}: needs a site_id column and a damage (xBD scale) or label (0/1) column; found {', '.join(cols) or 'no header'}")
        for line, row in enumerate(reader, start=2):
            # ids as the run has them (review export writes formula-like ids with a leading ')
            sid = restore_formula((row.get("site_id") or "").strip())
            if not sid:
                raise InputError(f"{path}, row {line}: empty site_id")
            value = (row.get("damage") or "").strip()
            if not value and "label" in cols:
                lab = (row.get("label") or "").strip()
                if lab not in ("0", "1", ""):
                    raise InputError(f"{path}, row {line}: label {lab!r} must be 0 or 1")
                value = {"1": "destroyed", "0": "no-damage", "": ""}[lab]
            if value and value not in DAMAGE_CLASSES:
                raise InputError(f"{path}, row {line}: damage {value!r} is not one of {', '.join(DAMAGE_CLASSES)}")
            if not value:
                continue
            if sid in damage and damage[sid] != value:
                raise InputError(f"{path}, row {line}: site {sid!r} is labelled both {damage[sid]!r} and {value!r}")
            damage[sid] = value
    return EventLabels(damage=damage, source="labels file", path=str(path.resolve()), sha256=sha256_file(path))


# ---- the run folder's side (one place to port to detect.runfolder) -------------------------


@dataclass
class RunScores:
    """What recalibration reads from and writes back to a run folder."""

    run_dir: Path
    rows: list[dict[str, str]]
    manifest: Manifest
    temperature: float
    operating_point: OperatingPoint
    decimals: int


def read_run(run_dir: Path) -> RunScores:
    """``scores.csv`` rows, the manifest, the temperature the scores carry, the operating point.

    Raises:
        RunFolderError: no finished run here.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "scores.csv").is_file() or not (run_dir / MANIFEST_NAME).is_file():
        raise RunFolderError(f"{run_dir}: not a finished run folder (scores.csv and manifest.json are needed; run 'sitewatch detect' first)")
    manifest = read_manifest(run_dir)
    rows = read_scores_csv(run_dir / "scores.csv")
    previous = manifest.calibration or {}
    temperature = float(previous.get("temperature") or manifest.model.meta.get("temperature", 1.0))
    decimals = int(manifest.config.values.get("detect", {}).get("score_decimals", 6))
    return RunScores(run_dir, rows, manifest, temperature, manifest.operating_point, decimals)


def write_run(state: RunScores, *, extra_outputs: Sequence[str], calibration: Mapping[str, Any]) -> str:
    """Write the rewritten rows, the report and the manifest; returns the new manifest's SHA-256."""
    run_dir = state.run_dir
    columns = score_columns(state.rows)
    write_scores_csv(run_dir / "scores.csv", state.rows, columns)
    write_scores_geojson(run_dir / "scores.geojson", state.rows, columns)
    gis = rewrite_gis_files(run_dir, threshold=state.operating_point.threshold) if (run_dir / GPKG_NAME).is_file() else []
    manifest = state.manifest
    detect_cfg = manifest.config.values.get("detect", {})
    summary = summarise_rows(state.rows, int(detect_cfg.get("report_max_sites", 200)))
    model = manifest.model
    write_report(
        run_dir / "report.html", summary, operating_point=state.operating_point,
        model_info={"arch": model.meta.get("arch", ""), "weights_sha256": model.weights_sha256, "path": model.path},
        run_info={"sites_file": manifest.inputs.sites.path, "before": len(manifest.inputs.before), "after": len(manifest.inputs.after)},
        calibration=calibration,
    )
    files = sorted(set(manifest.outputs) | set(extra_outputs) | {"scores.csv", "scores.geojson", "report.html", *gis})
    manifest = replace(
        manifest,
        calibration=dict(calibration),
        operating_point=state.operating_point,
        counts=replace(manifest.counts, flagged=summary.flagged),
        outputs=hash_outputs(run_dir, [f for f in files if (run_dir / f).is_file()]),
    )
    signature = run_dir / SIGNATURE_NAME
    if signature.is_file():
        signature.unlink()  # it signed the manifest before calibration: void; sign the run again
        log.warning("%s removed: it signed the manifest before calibration; sign the run again", signature)
    write_manifest(run_dir, manifest)
    return sha256_file(run_dir / MANIFEST_NAME)


# ---- the calibration ------------------------------------------------------------------------


@dataclass(frozen=True)
class RecalibrationResult:
    """What :func:`recalibrate_run` did.

    Attributes:
        fit: the fitted calibration (temperature, operating points, reliability before/after).
        labelled: labelled sites used (assessed, on the binary scale).
        positives: damaged among them.
        left_out: labelled sites not used, by why (``cannot_assess``, ``minor-damage`` ...).
        flagged_before, flagged_after: flagged sites in the run before and after.
        operating_point: the run's new operating point.
        logits_recovered: True when the run had no ``logit`` column and logits were recovered
            from the scores.
        manifest_sha256: the new run digest.
    """

    fit: FittedCalibration
    labelled: int
    positives: int
    left_out: Mapping[str, int]
    flagged_before: int
    flagged_after: int
    operating_point: OperatingPoint
    logits_recovered: bool
    manifest_sha256: str

    def lines(self) -> list[str]:
        """A short summary for the terminal."""
        f = self.fit
        out = [
            f"calibrated on {self.labelled} labelled sites ({self.positives} damaged): temperature {f.temperature:.3f} "
            f"on {len(f.temperature_index)}, operating points on {len(f.points_index)}",
            "operating points: " + ", ".join(f"{k} p >= {v.threshold:.4f}" for k, v in f.points.items()),
            f.screening_rule.text,
            f"flagged at {self.operating_point.name}: {self.flagged_before} -> {self.flagged_after} sites",
            f"ECE on the held-out labelled sites: {f.reliability_before.ece.text()} before, {f.reliability.ece.text()} after",
        ]
        if self.left_out:
            out.append("labelled but not used: " + ", ".join(f"{n} {k}" for k, n in sorted(self.left_out.items())))
        if self.logits_recovered:
            out.append("note: raw logits recovered from the written scores and the run's temperature (first calibration of this run); kept in the logit column")
        return out


def parent_screening(state: RunScores) -> tuple[float, str] | None:
    """The screening threshold the run's scores carried before, on their scale, and whence.

    The run's own operating point when it flagged at ``screening``; else the screening point of
    the calibration the run carries (an earlier ``sitewatch calibrate``, else the model's). None
    when there is none (a model without operating points).
    """
    if state.operating_point.name == "screening":
        return float(state.operating_point.threshold), f"the run's operating point ({state.operating_point.source or 'screening'})"
    previous = state.manifest.calibration or {}
    points = previous.get("operating_points") if isinstance(previous, Mapping) else None
    if isinstance(points, Mapping) and isinstance(points.get("screening"), Mapping) and points["screening"].get("threshold") is not None:
        return float(points["screening"]["threshold"]), "the run's earlier event calibration"
    model_points = state.manifest.model.meta.get("operating_points") or {}
    if isinstance(model_points, Mapping) and model_points.get("screening") is not None:
        return float(model_points["screening"]), "the model's calibration"
    return None


def run_logits(rows: Sequence[Mapping[str, str]], temperature: float) -> tuple[dict[str, float], bool]:
    """``site_id -> raw logit`` of every assessed row, and whether they were recovered from scores."""
    out: dict[str, float] = {}
    recovered = False
    for row in rows:
        if row.get("status") != "ok" or not row.get("score"):
            continue
        text = row.get(LOGIT_COLUMN, "")
        if text:
            out[row["site_id"]] = float(text)
            continue
        recovered = True
        p = min(max(float(row["score"]), _SCORE_CLIP), 1 - _SCORE_CLIP)
        out[row["site_id"]] = temperature * math.log(p / (1 - p))
    return out, recovered


def recalibrate_run(
    run_dir: str | Path,
    labels: EventLabels,
    policy: CalibrationConfig,
    *,
    operating_point: str | None = None,
) -> RecalibrationResult:
    """Refit temperature and operating points on ``labels`` and rewrite the run (see module doc).

    Args:
        run_dir: a finished run folder.
        labels: this event's labelled sites.
        policy: the calibration policy.
        operating_point: which fitted point flags sites (``screening``/``evidence``); None =
            the point the run was flagged at (``screening`` when it used a custom threshold).

    Raises:
        InputError: labelled site ids that are not in the run (named), or too few usable labels,
            damaged or intact sites for the policy (how many are needed).
        RunFolderError: not a finished run folder.
    """
    state = read_run(Path(run_dir))
    by_id = {r["site_id"]: r for r in state.rows}
    unknown = sorted(set(labels.damage) - set(by_id))
    if unknown:
        shown = ", ".join(repr(s) for s in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise InputError(
            f"{labels.path}: {len(unknown)} labelled site id(s) are not in {state.run_dir / 'scores.csv'}: {shown}; "
            "labels must come from this run's sites (check the file belongs to this run)"
        )
    logits, recovered = run_logits(state.rows, state.temperature)
    left_out: dict[str, int] = {}
    ids, y = [], []
    for sid, damage in sorted(labels.damage.items()):
        label = damage_to_label(damage)
        if label is None:
            left_out[damage] = left_out.get(damage, 0) + 1
            continue
        if sid not in logits:
            left_out["cannot_assess in the run"] = left_out.get("cannot_assess in the run", 0) + 1
            continue
        ids.append(sid)
        y.append(label)
    labels_arr = np.asarray(y, dtype=np.int64)
    z = np.asarray([logits[s] for s in ids], dtype=np.float64)
    what = f"{labels.source} {labels.path}" + (f" (after leaving out {sum(left_out.values())} unusable)" if left_out else "")
    parent = parent_screening(state)
    fit = fit_calibration(
        labels_arr, z, policy, previous_temperature=state.temperature,
        previous_points={state.operating_point.name: state.operating_point.threshold},
        parent_screening=parent[0] if parent else None, what=what,
    )
    # thresholds floored to the written precision: a threshold is usually one site's exact
    # probability, and its written (rounded) score must still reach it (else the site that
    # defines "screening", or a site the held threshold kept, loses its flag to rounding)
    fit.points.update({k: dataclasses.replace(v, threshold=floor_to(v.threshold, state.decimals)) for k, v in fit.points.items()})
    name = operating_point or (state.operating_point.name if state.operating_point.name in fit.points else "screening")
    if name not in fit.points:
        raise InputError(f"calibration: no operating point {name!r}; choose one of {', '.join(fit.points)}", setting="detect.operating_point")
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    flagged_before = sum(1 for r in state.rows if r.get("flagged") == "true")
    point = OperatingPoint(name, float(fit.points[name].threshold), f"this event's labelled sites ({labels.source}, {created[:10]})")
    tag = f"event:{labels.sha256[:12]}"
    new_rows = []
    for row in state.rows:
        row = dict(row)
        sid = row["site_id"]
        if sid in logits:
            row[LOGIT_COLUMN] = format_number(logits[sid], 6)
            row["score"] = format_number(float(sigmoid(logits[sid] / fit.temperature)), state.decimals)
            row[CALIBRATION_COLUMN] = tag
        else:
            row.setdefault(LOGIT_COLUMN, "")
            row[CALIBRATION_COLUMN] = ""
        new_rows.append(row)
    state.rows = rank_rows(new_rows, point)
    state.operating_point = point
    flagged_after = sum(1 for r in state.rows if r.get("flagged") == "true")

    record = {
        "kind": "event",
        "description": f"this event's verified sample: {len(ids)} labelled sites ({int(labels_arr.sum())} damaged), {labels.source}",
        "created": created,
        "labels": {"source": labels.source, "path": labels.path, "sha256": labels.sha256, **dict(labels.detail)},
        "tag": tag,
        "n": len(ids),
        "positives": int(labels_arr.sum()),
        "left_out": left_out,
        "temperature": fit.temperature,
        "previous_temperature": state.temperature,
        "operating_points": {k: dataclasses.asdict(v) for k, v in fit.points.items()},
        "screening_rule": {**dataclasses.asdict(fit.screening_rule), "parent_source": parent[1] if parent else None},
        "screening_note": fit.screening_rule.text,
        "n_temperature": int(len(fit.temperature_index)),
        "n_operating_points": int(len(fit.points_index)),
        "policy": dataclasses.asdict(policy),
        "logits_recovered_from_scores": recovered,
        "reliability": fit.reliability.to_dict(),
        "reliability_before": fit.reliability_before.to_dict(),
        "files": [CALIBRATION_TXT, CALIBRATION_JSON, RELIABILITY_PNG],
    }
    (state.run_dir / CALIBRATION_JSON).write_text(json.dumps(_finite(record), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    write_bytes_atomic(state.run_dir / CALIBRATION_TXT, calibration_text(record, fit).encode("utf-8"))
    reliability_png(fit, state.run_dir / RELIABILITY_PNG)
    summary_record = {k: v for k, v in record.items() if k not in ("reliability", "reliability_before")}
    summary_record["ece"] = fit.reliability.ece.value
    summary_record["ece_before"] = fit.reliability_before.ece.value
    digest = write_run(state, extra_outputs=[CALIBRATION_TXT, CALIBRATION_JSON, RELIABILITY_PNG], calibration=_finite(summary_record))
    return RecalibrationResult(
        fit=fit, labelled=len(ids), positives=int(labels_arr.sum()), left_out=left_out,
        flagged_before=flagged_before, flagged_after=flagged_after, operating_point=point,
        logits_recovered=recovered, manifest_sha256=digest,
    )


def floor_to(value: float, decimals: int) -> float:
    """``value`` rounded down to ``decimals`` places (a score written with that many places and
    at least ``value`` before rounding still reaches it)."""
    scale = 10.0 ** decimals
    floored = math.floor(value * scale + 1e-9) / scale
    return float(min(floored, value))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def calibration_text(record: Mapping[str, Any], fit: FittedCalibration) -> str:
    """``calibration.txt``: where the calibration came from and the reliability before/after."""
    lab = record["labels"]
    lines = [
        "sitewatch calibrate: this event's calibration",
        f"created      {record['created']}",
        f"labels       {lab['source']}: {lab['path']}",
        f"labels sha256 {lab['sha256']}",
        f"sites        {record['n']} labelled and assessed ({record['positives']} damaged)"
        + (f"; left out: {', '.join(f'{n} {k}' for k, n in sorted(record['left_out'].items()))}" if record["left_out"] else ""),
        f"temperature  {fit.temperature:.4f} (was {record['previous_temperature']:.4f}), fitted on {record['n_temperature']} sites",
        f"operating points, chosen on the other {record['n_operating_points']} sites:",
    ]
    for name, pt in fit.points.items():
        lines.append(f"  {name:<9} p >= {pt.threshold:.4f}  target {pt.target}: {'met' if pt.met else 'NOT met'} (precision {pt.precision:.3f}, recall {pt.recall:.3f})")
    lines.append(f"  rule      {fit.screening_rule.text}")
    if record.get("logits_recovered_from_scores"):
        lines.append("note: raw logits recovered from the written scores and the run's temperature (first calibration of this run); kept in the logit column")
    lines += ["", "reliability BEFORE (the scores as the run carried them), on the operating-point sites:"]
    lines += ["  " + x for x in fit.reliability_before.lines()]
    lines += ["", "reliability AFTER (this calibration), on the same sites (not used for the temperature):"]
    lines += ["  " + x for x in fit.reliability.lines()]
    return "\n".join(lines) + "\n"


def reliability_png(fit: FittedCalibration, path: Path, *, size: int = 420) -> Path:
    """A reliability diagram (damaged share per probability bin with its interval, before and
    after) as a PNG drawn with PIL."""
    from PIL import Image, ImageDraw

    pad = 48
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    span = size - 2 * pad

    def px(x: float, y: float) -> tuple[float, float]:
        return pad + x * span, size - pad - y * span

    d.rectangle([px(0, 1), px(1, 0)], outline=(0, 0, 0))
    d.line([px(0, 0), px(1, 1)], fill=(170, 170, 170), width=1)
    for t in (0.0, 0.5, 1.0):
        d.text((px(t, 0)[0] - 8, size - pad + 6), f"{t:.1f}", fill=(0, 0, 0))
        d.text((pad - 28, px(0, t)[1] - 6), f"{t:.1f}", fill=(0, 0, 0))
    d.text((pad, 12), "reliability: damaged share per score bin", fill=(0, 0, 0))
    d.text((pad, size - 20), "score (calibrated probability)", fill=(0, 0, 0))
    for rep, colour, dx in ((fit.reliability_before, (200, 80, 60), -3), (fit.reliability, (40, 90, 200), 3)):
        for b in rep.bins:
            if b.count == 0:
                continue
            x, yv = b.mean_probability, b.positive_rate.value
            cx, cy = px(x, yv)
            cx += dx
            if math.isfinite(b.positive_rate.low) and math.isfinite(b.positive_rate.high):
                d.line([(cx, px(0, b.positive_rate.low)[1]), (cx, px(0, b.positive_rate.high)[1])], fill=colour, width=1)
            r = 2 + min(5, math.sqrt(b.count) / 2)
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    d.text((size - pad - 150, pad + 6), "before", fill=(200, 80, 60))
    d.text((size - pad - 150, pad + 20), "after (this event)", fill=(40, 90, 200))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return path
