"""Reading a run folder written by ``sitewatch detect`` (read-only; verdicts live elsewhere).

The run folder contract (DESIGN.md): ``scores.csv`` (one row per site, ``site_id, lon, lat, score,
rank, status, reason, flagged``, pair metadata columns, the input's extra columns and the relative
chip paths ``chip_before, chip_after, chip_heatmap``), ``chips/``, ``manifest.json`` (inputs with
their SHA-256, the model, per-site scenes), ``config.yaml`` and ``embeddings.npz``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sitewatch.errors import RunFolderError
from tiles.formula_injection import restore_formula

log = logging.getLogger(__name__)

#: scores.csv columns the app reads itself; everything else is shown as metadata.
CORE_COLUMNS = (
    "site_id", "lon", "lat", "score", "rank", "status", "reason", "flagged",
    "name", "kind", "chip_before", "chip_after", "chip_heatmap",
)
#: metadata columns shown on the site page first, in this order, when present.
META_FIRST = (
    "before_time", "after_time", "before_scene", "after_scene", "chip_gsd_m", "shift_m",
    "shift_applied", "coreg_confidence", "valid_fraction", "cloud_fraction", "blank_fraction",
    "quality", "detail",
)
CHIP_COLUMNS = ("chip_before", "chip_after", "chip_heatmap")


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "y", "t")


@dataclass(frozen=True)
class RunSite:
    """One row of ``scores.csv``.

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
        meta: every other column, as text.
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

    @property
    def ok(self) -> bool:
        return self.status == "ok" and not math.isnan(self.score)


def _raster_paths(entry: Any, run_dir: Path) -> list[Path]:
    """Raster paths from a manifest ``inputs.before``/``inputs.after`` entry (several shapes)."""
    if entry is None:
        return []
    if isinstance(entry, Mapping):
        for key in ("files", "rasters", "scenes", "paths"):
            if key in entry:
                return _raster_paths(entry[key], run_dir)
        if "path" in entry:
            p = Path(str(entry["path"]))
            return [p if p.is_absolute() else (run_dir / p)]
        return _raster_paths([str(k) for k in entry], run_dir)
    if isinstance(entry, (list, tuple)):
        out: list[Path] = []
        for item in entry:
            out.extend(_raster_paths(item, run_dir))
        return out
    p = Path(str(entry))
    return [p if p.is_absolute() else (run_dir / p)]


class RunFolder:
    """A run folder's sites, provenance and embeddings, loaded once.

    Args:
        path: the folder ``sitewatch detect --out`` wrote.

    Raises:
        RunFolderError: no ``scores.csv``, or one without the required columns.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        scores = self.path / "scores.csv"
        if not self.path.is_dir():
            raise RunFolderError(f"{path}: no such run folder; give the folder `sitewatch detect --out` wrote")
        if not scores.is_file():
            raise RunFolderError(f"{path}: no scores.csv in it; is this a `sitewatch detect` run folder?")
        self.sites: list[RunSite] = self._read_scores(scores)
        self.by_id: dict[str, RunSite] = {s.site_id: s for s in self.sites}
        self.manifest: dict[str, Any] = self._read_json(self.path / "manifest.json")

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        if not path.is_file():
            log.warning("%s is missing: provenance, rasters and the threshold are unknown", path)
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunFolderError(f"{path}: not valid JSON ({exc}); the run folder is damaged") from None
        return data if isinstance(data, dict) else {}

    def _read_scores(self, path: Path) -> list[RunSite]:
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                header = reader.fieldnames or []
                missing = [c for c in ("site_id", "lon", "lat", "score") if c not in header]
                if missing:
                    raise RunFolderError(
                        f"{path}: missing column(s) {', '.join(missing)}; expected the scores.csv "
                        "that `sitewatch detect` writes"
                    )
                sites: list[RunSite] = []
                seen: set[str] = set()
                for i, raw in enumerate(reader):
                    # cells sitewatch made inert for spreadsheets ('=x) read back as written by the run
                    row = {k: restore_formula(v or "") if k is not None else v for k, v in raw.items()}
                    site_id = (row.get("site_id") or "").strip()
                    if not site_id or site_id in seen:
                        raise RunFolderError(
                            f"{path}, row {i + 1}: site_id {site_id!r} is empty or repeated; "
                            "scores.csv must have one row per site"
                        )
                    seen.add(site_id)
                    rank_text = (row.get("rank") or "").strip()
                    try:
                        rank = int(float(rank_text)) if rank_text else 0
                    except ValueError:
                        rank = 0
                    meta = {k: (v or "") for k, v in row.items() if k is not None and k not in CORE_COLUMNS}
                    sites.append(
                        RunSite(
                            index=i,
                            site_id=site_id,
                            lon=_float(row.get("lon")),
                            lat=_float(row.get("lat")),
                            score=_float(row.get("score")),
                            rank=rank,
                            status=(row.get("status") or "ok").strip() or "ok",
                            reason=(row.get("reason") or "").strip(),
                            flagged=_truthy(row.get("flagged")),
                            name=row.get("name") or "",
                            kind=row.get("kind") or "",
                            chips={c.removeprefix("chip_"): (row.get(c) or "").strip() for c in CHIP_COLUMNS},
                            meta=meta,
                        )
                    )
        except UnicodeDecodeError as exc:
            raise RunFolderError(f"{path}: not UTF-8 text ({exc})") from None
        except csv.Error as exc:
            raise RunFolderError(f"{path}: not a readable CSV ({exc})") from None
        return sites

    # -- provenance --------------------------------------------------------------------------

    def rasters(self, epoch: str) -> list[Path]:
        """The ``before`` or ``after`` rasters the run used (from ``manifest.json``)."""
        inputs = self.manifest.get("inputs") or {}
        return _raster_paths(inputs.get(epoch), self.path)

    def threshold(self) -> float | None:
        """The flagging threshold the run used, if the run records or implies one."""
        m = self.manifest
        for holder in (m.get("operating_point") or {}, m, m.get("detect") or {}):
            if isinstance(holder, Mapping):
                for key in ("threshold", "flag_threshold"):
                    if isinstance(holder.get(key), (int, float)):
                        return float(holder[key])
        model = m.get("model") or {}
        meta = model.get("meta") if isinstance(model, Mapping) else None
        points = meta.get("operating_points") if isinstance(meta, Mapping) else None
        if isinstance(points, Mapping) and points:
            config = m.get("config") or {}
            detect_cfg = config.get("detect") if isinstance(config, Mapping) else None
            name = m.get("operating_point") or (detect_cfg or {}).get("operating_point") or "screening"
            if isinstance(points.get(name), (int, float)):
                return float(points[name])
        flagged = [s.score for s in self.sites if s.flagged and not math.isnan(s.score)]
        return min(flagged) if flagged else None

    def model_label(self) -> str:
        """A short description of the model that scored the run."""
        model = self.manifest.get("model") or {}
        if not isinstance(model, Mapping):
            return str(model)
        sha = str(model.get("weights_sha256") or model.get("sha256") or "")
        return f"{model.get('path', '?')} ({sha[:12]})" if sha else str(model.get("path", "unknown"))

    def calibration_label(self) -> str:
        """Which calibration the run's scores carry: the model's own (synthetic validation
        scenes) or this event's labelled sites (``sitewatch calibrate``, manifest ``calibration``)."""
        cal = self.manifest.get("calibration")
        if not isinstance(cal, Mapping) or cal.get("kind") != "event":
            return "synthetic (the model's own, not fitted on this event)"
        return f"this event's verified sample ({cal.get('n', '?')} sites, {cal.get('positives', '?')} damaged, {str(cal.get('created', ''))[:10]})"

    def tiles_config(self) -> dict[str, Any]:
        """The run's effective ``tiles`` settings (from ``config.yaml``), or {}."""
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
        """``(site_ids, embedding (N, D) float32)`` from ``embeddings.npz``, or None if absent."""
        path = self.path / "embeddings.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                ids = [str(x) for x in data["site_id"]]
                emb = np.asarray(data["embedding"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as exc:
            log.warning("%s unreadable (%s): quick re-rank disabled", path, exc)
            return None
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            log.warning("%s: embedding shape %s does not match %d ids", path, emb.shape, len(ids))
            return None
        return ids, emb

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
