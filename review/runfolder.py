"""The review app's view of a run folder, read through the run folder contract.

Every file detect wrote is read with :mod:`detect.runfolder` (the one typed owner of
``scores.csv``, ``manifest.json`` and ``embeddings.npz``): :func:`detect.runfolder.read_scores`,
:func:`detect.runfolder.read_manifest`, :func:`detect.runfolder.read_embeddings`. This module
only adds what the app needs on top: a row index per site (the id in the app's URLs) and the
columns shown as metadata. Read-only; verdicts live in ``review.sqlite``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from detect.runfolder import (
    require_run_folder,
    CHIP_COLUMNS,
    PAIR_COLUMNS,
    Manifest,
    ScoreRow,
    read_embeddings,
    read_manifest,
    read_scores,
)
from sitewatch.errors import RunFolderError

log = logging.getLogger(__name__)

#: scores.csv columns the app reads itself; everything else is shown as metadata.
CORE_COLUMNS = (
    "site_id", "lon", "lat", "score", "rank", "status", "reason", "flagged",
    "name", "kind", "caution", *CHIP_COLUMNS,
)
#: metadata columns shown on the site page first, in this order, when present.
META_FIRST = (
    "before_time", "after_time", "before_scene", "after_scene", "chip_gsd_m", "shift_m",
    "shift_applied", "coreg_confidence", "valid_fraction", "cloud_fraction", "blank_fraction",
    "quality", "detail",
)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class RunSite:
    """One row of ``scores.csv``, as the app uses it.

    Attributes:
        index: 0-based row position in ``scores.csv`` (the id used in the app's URLs).
        site_id: the input's id.
        lon, lat: WGS84 degrees (NaN when the input row was invalid).
        score: calibrated probability of severe damage (NaN when not assessed).
        rank: 1-based rank, or 0 when not ranked.
        status: ``ok`` or ``cannot_assess``.
        reason: why it cannot be assessed, or "".
        flagged: whether detect flagged it at its operating point.
        name, kind: descriptive input fields ("" when absent).
        chips: relative paths of ``before``, ``after``, ``heatmap`` chips ("" where none).
        meta: every other column, as the text ``scores.csv`` holds.
        row: the typed row it was read from.
        caution: reasons the pair lies outside the model's training envelope (``;``-separated,
            :mod:`detect.caution`); "" for none or a run written before the column.
    """

    index: int
    site_id: str
    lon: float
    lat: float
    score: float
    rank: int
    status: str
    reason: str
    flagged: bool
    name: str = ""
    kind: str = ""
    chips: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)
    row: ScoreRow | None = None
    caution: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok" and not math.isnan(self.score)

    @classmethod
    def of(cls, index: int, row: ScoreRow) -> "RunSite":
        """The app's site for row ``index`` of ``scores.csv``."""
        meta: dict[str, str] = {}
        if row.radius_m is not None:
            meta["radius_m"] = repr(float(row.radius_m))
        if row.damage is not None:
            meta["damage"] = row.damage
        meta.update({c: row.pair[c] for c in PAIR_COLUMNS})
        meta.update(row.parts)
        meta.update(row.extra)
        return cls(
            index=index,
            site_id=row.site_id,
            lon=_nan(row.lon),
            lat=_nan(row.lat),
            score=_nan(row.score) if row.ok else math.nan,
            rank=row.rank or 0,
            status=row.status,
            reason=row.reason,
            flagged=row.flagged,
            name=row.name or "",
            kind=row.kind or "",
            chips={c.removeprefix("chip_"): getattr(row, c) for c in CHIP_COLUMNS},
            meta=meta,
            row=row,
            caution=row.caution,
        )


class RunFolder:
    """A finished run folder's sites, manifest and embeddings, loaded once.

    Args:
        path: the folder ``sitewatch detect --out`` wrote.

    Raises:
        RunFolderError: not a folder, or its ``scores.csv`` or ``manifest.json`` is missing or
            does not follow the run folder contract (the message names the file).
    """

    def __init__(self, path: str | Path) -> None:
        require_run_folder(path)
        self.path = Path(path).resolve()
        rows = read_scores(self.path)
        seen: set[str] = set()
        for i, row in enumerate(rows):
            if not row.site_id.strip() or row.site_id in seen:
                raise RunFolderError(
                    f"{self.path / 'scores.csv'}, row {i + 1}: site_id {row.site_id!r} is empty or repeated; "
                    "scores.csv must have one row per site"
                )
            seen.add(row.site_id)
        self.sites: list[RunSite] = [RunSite.of(i, row) for i, row in enumerate(rows)]
        self.by_id: dict[str, RunSite] = {s.site_id: s for s in self.sites}
        self.manifest: Manifest = read_manifest(self.path)

    @classmethod
    def open(cls, path: str | Path) -> "RunFolder":
        """Read the run folder at ``path`` (same as ``RunFolder(path)``)."""
        return cls(path)

    # -- provenance --------------------------------------------------------------------------

    def rasters(self, epoch: str) -> list[Path]:
        """The ``before`` or ``after`` rasters the run used (from ``manifest.json``)."""
        return [p if p.is_absolute() else self.path / p for p in self.manifest.rasters(epoch)]

    def threshold(self) -> float:
        """The flagging threshold the run used (``manifest.json``'s ``operating_point``)."""
        return float(self.manifest.operating_point.threshold)

    def model_label(self) -> str:
        """A short description of the model that scored the run."""
        model = self.manifest.model
        return f"{model.path} ({model.weights_sha256[:12]})" if model.weights_sha256 else model.path

    def calibration_label(self) -> str:
        """Which calibration the run's scores carry: the model's own (synthetic validation
        scenes) or this event's labelled sites (``sitewatch calibrate``, manifest ``calibration``)."""
        cal = self.manifest.calibration
        if not isinstance(cal, Mapping) or cal.get("kind") != "event":
            return "synthetic (the model's own, not fitted on this event)"
        label = f"this event's verified sample ({cal.get('n', '?')} sites, {cal.get('positives', '?')} damaged, {str(cal.get('created', ''))[:10]})"
        rule = cal.get("screening_rule")
        if isinstance(rule, Mapping) and rule.get("rule") == "held":
            label += f"; screening held at the earlier threshold (only {rule.get('positives', '?')} damaged sites to choose it)"
        elif isinstance(rule, Mapping) and rule.get("rule") in ("fitted, not stricter", "fitted, no parent"):
            label += f"; screening fitted on only {rule.get('positives', '?')} damaged sites"
        return label

    def tiles_config(self) -> dict[str, Any]:
        """The run's effective ``tiles`` settings (from ``manifest.json``'s config), or {}."""
        tiles = self.manifest.config.values.get("tiles")
        if isinstance(tiles, dict):
            return tiles
        return self._tiles_from_config_yaml()

    def _tiles_from_config_yaml(self) -> dict[str, Any]:
        import yaml

        path = self.path / "config.yaml"
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            return {}
        tiles = data.get("tiles") if isinstance(data, dict) else None
        return tiles if isinstance(tiles, dict) else {}

    def embeddings(self) -> tuple[list[str], np.ndarray] | None:
        """``(site_ids, embedding (N, D) float32)`` from ``embeddings.npz``, or None if absent
        or unreadable (the quick re-rank is then off)."""
        try:
            return read_embeddings(self.path)
        except RunFolderError as exc:
            log.warning("%s: quick re-rank disabled", exc)
            return None

    # -- files -------------------------------------------------------------------------------

    def resolve_inside(self, relative: str) -> Path | None:
        """``RUN/relative`` when it is a file inside the run folder, else None.

        Refuses absolute paths, ``..`` components and symlinks that lead outside the folder.
        """
        if not relative or "\x00" in relative or relative.startswith(("/", "\\")):
            return None
        parts = Path(relative).parts
        if any(p in ("..", "") for p in parts) or "\\" in relative:
            return None
        candidate = (self.path / relative).resolve()
        try:
            candidate.relative_to(self.path)
        except ValueError:
            return None
        return candidate if candidate.is_file() else None
