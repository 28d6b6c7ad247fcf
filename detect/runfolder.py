"""The run folder contract: the one owner of ``scores.csv``, ``manifest.json`` and ``embeddings.npz``.

Everything that writes or reads a run folder goes through this module: detect writes it
(:mod:`detect.run`, :mod:`detect.recalibrate`), the review app, the dossiers, ``sitewatch
verify``, the CLI and the tests read it. Every ``scores.csv`` column and every ``manifest.json``
section is named here once, with its type.

Public API (readers first):

- :func:`read_scores` ``(path) -> list[ScoreRow]`` — ``scores.csv`` (the file or the run folder)
  as typed rows; a strict header; errors name the file and the line.
- :func:`read_manifest` ``(run_dir) -> Manifest`` — ``manifest.json`` with its
  :data:`FORMAT_VERSION` checked and every section typed (:class:`Inputs`, :class:`ModelInfo`,
  :class:`ConfigInfo`, :class:`OperatingPoint`, :class:`Execution`, :class:`Counts`,
  :class:`PerSite`, ``outputs``, ``calibration``).
- :func:`read_embeddings` ``(run_dir) -> (site_ids, (N, D) float32) | None``.
- :func:`read_scores_csv` ``(path) -> list[dict[str, str]]`` — the cells as text (what a
  spreadsheet shows; :mod:`detect.recalibrate` and ``verify`` work on these).
- :func:`read_manifest_json` — the manifest's raw JSON object (format checked, sections not):
  for ``verify``, which reports on a damaged manifest instead of refusing it.
- Writers: :class:`ScoresWriter` / :func:`write_scores_csv` + :func:`write_scores_geojson` (rows
  as ``{column: text}``, :meth:`ScoreRow.cells` makes them from typed rows),
  :func:`write_manifest`, :func:`write_embeddings`.

``scores.csv`` columns, in order: :data:`LEADING_COLUMNS`; :data:`CAUTION_COLUMN` (runs written
before it existed lack it and read as no caution); then, in first-seen order, the
:data:`SITE_DETAIL_COLUMNS` any input site has, the pair's metadata :data:`PAIR_COLUMNS` (owned by
``tiles.index``, text as the tiles stage formats it), the part and context columns
:data:`PART_COLUMNS` (:mod:`detect.parts`, when any site has parts or context), the input's own
further columns (text; renamed ``input_<name>`` when they collide with ours); last
:data:`CHIP_COLUMNS` (paths relative to the run folder). Cells a spreadsheet would run as a
formula start with ``'`` (:func:`tiles.formula_injection.neutralise_formula`); the readers give
the original text back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from sitewatch.errors import RunFolderError
from tiles.formula_injection import neutralise_formula, restore_formula
from tiles.index import PAIR_META_COLUMNS

SCORES_CSV = "scores.csv"
SCORES_GEOJSON = "scores.geojson"
MANIFEST_NAME = "manifest.json"
EMBEDDINGS_NAME = "embeddings.npz"
CONFIG_NAME = "config.yaml"

#: ``manifest.json["format"]``: what the file is.
MANIFEST_FORMAT = "sitewatch-run"
#: ``manifest.json["format_version"]``: bumped whenever a section or column changes meaning.
#: Version 1 was spelt ``"format": "sitewatch-run/1"`` without ``format_version``; it has the
#: same sections and is read as is.
FORMAT_VERSION = 2
_LEGACY_FORMAT_V1 = "sitewatch-run/1"
#: every ``format`` value a run manifest may carry (the current one first).
KNOWN_FORMATS = (MANIFEST_FORMAT, _LEGACY_FORMAT_V1)

#: the leading columns of ``scores.csv``, in order.
LEADING_COLUMNS = ("site_id", "lon", "lat", "score", "rank", "status", "reason", "flagged")
#: reasons an assessed pair lies outside the model's training envelope (:mod:`detect.caution`),
#: ``;``-separated, empty for none; right after the leading columns. Optional for readers.
CAUTION_COLUMN = "caution"
#: descriptive columns of the input sites, included when any input site has them.
SITE_DETAIL_COLUMNS = ("name", "kind", "radius_m", "damage")
#: the pair's metadata (``tiles.index.PAIR_META_COLUMNS`` without ``status``/``reason``), as text.
PAIR_COLUMNS = tuple(c for c in PAIR_META_COLUMNS if c not in ("status", "reason"))
#: a facility's parts and the ring around it (:mod:`detect.parts` explains each), as text;
#: present when any site of the run has parts or context.
PART_COLUMNS = (
    "score_source",
    "window_score",
    "parts",
    "parts_assessed",
    "damaged_fraction",
    "top_part",
    "top_part_score",
    "parts_stride_m",
    "parts_coarsened",
    "part_scores",
    "part_centres_m",
    "part_size_m",
    "context",
    "context_assessed",
    "context_damage",
    "targeted",
)
#: chip paths (relative to the run folder, posix), the last columns.
CHIP_COLUMNS = ("chip_before", "chip_after", "chip_heatmap")
#: every column name sitewatch itself writes (an input column of one of these names is renamed).
RESERVED_COLUMNS = frozenset(LEADING_COLUMNS + (CAUTION_COLUMN,) + SITE_DETAIL_COLUMNS + PAIR_COLUMNS + PART_COLUMNS + CHIP_COLUMNS)

STATUS_OK = "ok"
STATUS_CANNOT_ASSESS = "cannot_assess"


def format_number(value: float | None, decimals: int | None = None) -> str:
    """A float as text: empty for None/NaN, fixed decimals when given, else shortest round-trip."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if decimals is not None:
        return f"{value:.{decimals}f}"
    return repr(float(value))


def written_score(probability: float, decimals: int) -> float:
    """The score as ``scores.csv`` holds it (``decimals`` places): ranking and flags use this
    value, so equal printed scores are ordered by ``site_id``."""
    return float(f"{probability:.{decimals}f}")


@dataclass(frozen=True)
class ScoreRow:
    """One site of ``scores.csv``.

    Attributes:
        site_id: the input's id.
        lon, lat: WGS84 degrees (None when the input row had no valid coordinates).
        score: calibrated probability of severe damage as written (``detect.score_decimals``
            places); None unless ``status == "ok"``.
        rank: 1-based rank among the assessed sites (None before ranking and when not assessed).
        status: ``"ok"`` or ``"cannot_assess"``.
        reason: why the site cannot be assessed ("" when ok).
        flagged: score at or above the run's operating threshold.
        name, kind, damage: descriptive input fields (None when absent).
        radius_m: the input's radius in metres (None when absent).
        pair: the pair's metadata, ``{column: text}`` for every :data:`PAIR_COLUMNS` column.
        parts: the part and context columns the run has (:data:`PART_COLUMNS`), ``{column: text}``.
        extra: the input's own further columns, ``{column: text}``, in input order.
        chip_before, chip_after, chip_heatmap: chip paths relative to the run folder ("" if none).
        caution: why the pair lies outside the model's training envelope, ``;``-separated
            reasons (:mod:`detect.caution`); "" for none and for runs written before the column.
    """

    site_id: str
    lon: float | None
    lat: float | None
    score: float | None
    rank: int | None
    status: str
    reason: str
    flagged: bool = False
    name: str | None = None
    kind: str | None = None
    radius_m: float | None = None
    damage: str | None = None
    pair: Mapping[str, str] = field(default_factory=dict)
    parts: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)
    chip_before: str = ""
    chip_after: str = ""
    chip_heatmap: str = ""
    caution: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.pair) - set(PAIR_COLUMNS))
        if unknown:
            raise ValueError(f"ScoreRow.pair: {unknown} are not pair columns ({', '.join(PAIR_COLUMNS)})")
        object.__setattr__(self, "pair", {c: self.pair.get(c, "") for c in PAIR_COLUMNS})
        unknown = sorted(set(self.parts) - set(PART_COLUMNS))
        if unknown:
            raise ValueError(f"ScoreRow.parts: {unknown} are not part columns ({', '.join(PART_COLUMNS)})")
        object.__setattr__(self, "parts", dict(self.parts))
        object.__setattr__(self, "extra", dict(self.extra))

    @property
    def ok(self) -> bool:
        """Assessed and scored."""
        return self.status == STATUS_OK and self.score is not None

    def sort_key(self) -> tuple[int, float, str]:
        """The order of ``scores.csv``: assessed sites by score descending, then ``site_id``;
        then the others by ``site_id``."""
        if not self.ok:
            return (1, 0.0, self.site_id)
        return (0, -float(self.score), self.site_id)  # type: ignore[arg-type]

    def chips(self) -> dict[str, str]:
        """``{"chip_before": path, ...}`` (paths "" where none)."""
        return {c: getattr(self, c) for c in CHIP_COLUMNS}

    def cells(self, score_decimals: int) -> dict[str, str]:
        """The row as ``scores.csv`` text, ``{column: text}`` (missing values empty)."""
        out = {
            "site_id": self.site_id,
            "lon": format_number(self.lon),
            "lat": format_number(self.lat),
            "score": format_number(self.score, score_decimals) if self.ok else "",
            "rank": "" if self.rank is None else str(self.rank),
            "status": self.status,
            "reason": self.reason,
            "flagged": "true" if self.flagged else "false",
            CAUTION_COLUMN: self.caution,
        }
        details = {"name": self.name, "kind": self.kind, "radius_m": format_number(self.radius_m) or None, "damage": self.damage}
        out.update({c: v for c, v in details.items() if v is not None})
        out.update({c: self.pair.get(c, "") for c in PAIR_COLUMNS})
        out.update(self.parts)
        out.update(self.extra)
        out.update(self.chips())
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON object (floats as JSON numbers, which round-trip exactly): the journal form."""
        return {f.name: (dict(v) if isinstance(v, Mapping) else v) for f in fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ScoreRow":
        """The inverse of :meth:`to_json`."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["pair"] = {str(k): str(v) for k, v in (data.get("pair") or {}).items()}
        kwargs["parts"] = {str(k): str(v) for k, v in (data.get("parts") or {}).items()}
        kwargs["extra"] = {str(k): str(v) for k, v in (data.get("extra") or {}).items()}
        for name in ("lon", "lat", "score", "radius_m"):
            if kwargs.get(name) is not None:
                kwargs[name] = float(kwargs[name])
        if kwargs.get("rank") is not None:
            kwargs["rank"] = int(kwargs["rank"])
        return cls(**kwargs)

    def ranked(self, rank: int | None, flagged: bool) -> "ScoreRow":
        """A copy with ``rank`` and ``flagged`` set."""
        return replace(self, rank=rank, flagged=flagged)

    def with_chips(self, paths: Mapping[str, str]) -> "ScoreRow":
        """A copy with the chip paths ``{"chip_before": ..., ...}`` set."""
        return replace(self, **{c: paths.get(c, "") for c in CHIP_COLUMNS})


def score_columns(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """All columns of ``scores.csv``: leading, the caution column when any row has it, then the
    others in first-seen order, then chips."""
    columns = list(LEADING_COLUMNS)
    if any(CAUTION_COLUMN in row for row in rows):
        columns.append(CAUTION_COLUMN)
    seen = set(columns) | {CAUTION_COLUMN} | set(CHIP_COLUMNS)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    columns.extend(CHIP_COLUMNS)
    return columns


def write_scores_csv(path: Path, rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> None:
    """Write ``scores.csv`` (UTF-8, ``\\n`` line ends, missing values empty, formulas made inert)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: neutralise_formula(row.get(c, "")) for c in columns})
    write_bytes_atomic(path, buf.getvalue().encode("utf-8"))


def _typed(column: str, value: str) -> object:
    if column in ("score", "lon", "lat"):
        if value == "":
            return None
        number = float(value)
        return number if math.isfinite(number) else None
    if column == "rank":
        return int(value) if value else None
    if column == "flagged":
        return value == "true"
    return value


def write_scores_geojson(path: Path, rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> None:
    """Write ``scores.geojson``: one Point feature per site in ``scores.csv`` order (WGS84).

    Sites without valid coordinates get ``"geometry": null`` (valid GeoJSON; QGIS skips them).
    """
    body = ",".join(geojson_feature(row, columns) for row in rows)
    text = '{"type":"FeatureCollection","features":[' + body + "]}\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def geojson_feature(row: Mapping[str, str], columns: Sequence[str]) -> str:
    """One GeoJSON Point feature (compact JSON text) for a ``scores.csv`` row."""
    props = {c: _typed(c, row.get(c, "")) for c in columns}
    lon, lat = props.get("lon"), props.get("lat")
    geometry = None
    if isinstance(lon, float) and isinstance(lat, float):
        geometry = {"type": "Point", "coordinates": [lon, lat]}
    feature = {"type": "Feature", "geometry": geometry, "properties": props}
    return json.dumps(feature, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class ScoresWriter:
    """Streams ranked rows into ``scores.csv`` and ``scores.geojson`` at once (bounded memory).

    Both files are written to temporary names and renamed into place by :meth:`close`, so an
    interrupted write never leaves a half file under the final name.

    Args:
        run_dir: the run folder.
        columns: the columns of ``scores.csv`` (also the GeoJSON properties).
    """

    def __init__(self, run_dir: Path, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self._csv_path = run_dir / SCORES_CSV
        self._gj_path = run_dir / SCORES_GEOJSON
        self._csv = open(self._csv_path.with_name(SCORES_CSV + ".tmp"), "w", newline="", encoding="utf-8")
        self._gj = open(self._gj_path.with_name(SCORES_GEOJSON + ".tmp"), "w", encoding="utf-8")
        self._writer = csv.DictWriter(self._csv, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore")
        self._writer.writeheader()
        self._gj.write('{"type":"FeatureCollection","features":[')
        self._first = True

    def add(self, row: Mapping[str, str]) -> None:
        """Write one row (in ``scores.csv`` order)."""
        self._writer.writerow({c: neutralise_formula(row.get(c, "")) for c in self.columns})
        self._gj.write(("" if self._first else ",") + geojson_feature(row, self.columns))
        self._first = False

    def close(self) -> None:
        """Finish both files and move them into place."""
        self._gj.write("]}\n")
        for fh, final in ((self._csv, self._csv_path), (self._gj, self._gj_path)):
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(final.with_name(final.name + ".tmp"), final)


def write_scores(run_dir: Path, rows: Sequence[ScoreRow], *, score_decimals: int) -> Path:
    """Write typed ``rows`` (already ranked) as ``scores.csv`` and ``scores.geojson`` through the
    same writers as a run (small tables: tests, fixtures); returns the CSV's path."""
    cells = [row.cells(score_decimals) for row in rows]
    columns = score_columns(cells)
    write_scores_csv(run_dir / SCORES_CSV, cells, columns)
    write_scores_geojson(run_dir / SCORES_GEOJSON, cells, columns)
    return run_dir / SCORES_CSV


def _number(text: str, column: str, where: str) -> float | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise RunFolderError(f"{where}: column {column!r} holds {text!r}, not a number") from None
    return value if math.isfinite(value) else None


def read_scores(path: str | Path) -> list[ScoreRow]:
    """Read ``scores.csv`` (the file, or the run folder holding it) back into :class:`ScoreRow`\\ s.

    Raises:
        RunFolderError: the file is missing, not UTF-8 CSV, lacks a column sitewatch writes, or a
            cell is not of its column's type; the message names the file and the row.
    """
    path = Path(path)
    if path.is_dir():
        path = path / SCORES_CSV
    if not path.is_file():
        raise RunFolderError(f"{path.parent}: no scores.csv in it; is this a `sitewatch detect` run folder?")
    rows: list[ScoreRow] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, None) or []
            required = [*LEADING_COLUMNS, *PAIR_COLUMNS, *CHIP_COLUMNS]
            missing = [c for c in required if c not in header]
            if missing:
                raise RunFolderError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected the scores.csv that "
                    "`sitewatch detect` writes"
                )
            extras = [c for c in header if c not in RESERVED_COLUMNS]
            part_columns = [c for c in PART_COLUMNS if c in header]
            for n, values in enumerate(reader, start=2):
                if len(values) != len(header):
                    raise RunFolderError(f"{path}, line {n}: {len(values)} cells for {len(header)} columns")
                cell = {c: restore_formula(v) for c, v in zip(header, values)}
                where = f"{path}, line {n}"
                rank_text = cell["rank"]
                try:
                    rank = int(rank_text) if rank_text else None
                except ValueError:
                    raise RunFolderError(f"{where}: column 'rank' holds {rank_text!r}, not a whole number") from None
                rows.append(
                    ScoreRow(
                        site_id=cell["site_id"],
                        lon=_number(cell["lon"], "lon", where),
                        lat=_number(cell["lat"], "lat", where),
                        score=_number(cell["score"], "score", where),
                        rank=rank,
                        status=cell["status"],
                        reason=cell["reason"],
                        flagged=cell["flagged"] == "true",
                        name=cell.get("name") or None,
                        kind=cell.get("kind") or None,
                        radius_m=_number(cell.get("radius_m", ""), "radius_m", where),
                        damage=cell.get("damage") or None,
                        pair={c: cell[c] for c in PAIR_COLUMNS},
                        parts={c: cell[c] for c in part_columns},
                        extra={c: cell[c] for c in extras},
                        chip_before=cell["chip_before"],
                        chip_after=cell["chip_after"],
                        chip_heatmap=cell["chip_heatmap"],
                        caution=cell.get(CAUTION_COLUMN, ""),
                    )
                )
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise RunFolderError(f"{path}: not a readable CSV ({exc})") from None
    return rows


def read_scores_csv(path: str | Path) -> list[dict[str, str]]:
    """``scores.csv`` as text cells, one dict per row, every cell as the run had it
    (formula-neutralising quotes removed): what :mod:`detect.recalibrate` rewrites and ``verify``
    checks; sitewatch otherwise reads it typed with :func:`read_scores`."""
    path = Path(path)
    if path.is_dir():
        path = path / SCORES_CSV
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: restore_formula(v or "") for k, v in row.items()} for row in csv.DictReader(fh)]


def unassessed_reasons(path: str | Path) -> dict[str, tuple[int, str, str]]:
    """``reason -> (sites, first site_id, its detail)`` over the ``cannot_assess`` rows of
    ``scores.csv``, most frequent first; streamed, so a run of any size costs no memory (what
    ``sitewatch detect`` prints at the end so that nobody has to open the file to learn why)."""
    path = Path(path)
    if path.is_dir():
        path = path / SCORES_CSV
    found: dict[str, list] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        at = {c: header.index(c) for c in ("site_id", "status", "reason", "detail") if c in header}
        if len(at) < 4:
            return {}
        for values in reader:
            if len(values) != len(header) or values[at["status"]] != "cannot_assess":
                continue
            reason = restore_formula(values[at["reason"]]) or "unknown"
            entry = found.get(reason)
            if entry is None:
                found[reason] = [1, restore_formula(values[at["site_id"]]), restore_formula(values[at["detail"]])]
            else:
                entry[0] += 1
    ordered = sorted(found.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return {reason: (n, site, detail) for reason, (n, site, detail) in ordered}


# -- embeddings.npz ------------------------------------------------------------------------------


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` through a temporary file, fsync'd and renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


#: rows of ``embeddings.npz`` encoded at a time by :func:`write_embeddings_rows`.
EMBEDDING_CHUNK_ROWS = 8192


def write_embeddings(path: Path, site_ids: Sequence[str], embeddings: np.ndarray) -> None:
    """Write ``embeddings.npz``: ``site_id`` (N,) unicode and ``embedding`` (N, D) float16.

    The zip entries carry a fixed timestamp so the file is byte-identical across runs.
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float16)
    write_embeddings_rows(path, site_ids, emb, np.arange(len(emb)))


def _npy_member(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], chunks: Iterable[np.ndarray]) -> None:
    """One ``.npy`` zip entry written chunk by chunk: the same bytes as ``np.save`` of the whole
    array (a version 1.0 header, then the C-order data), deflated as :meth:`ZipFile.writestr` does."""
    header = io.BytesIO()
    meta = np.lib.format.header_data_from_array_1_0(np.empty((0,), dtype))
    meta["shape"] = shape
    np.lib.format.write_array_header_1_0(header, meta)
    info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = len(header.getvalue()) + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    with zf.open(info, "w") as dest:
        dest.write(header.getvalue())
        for chunk in chunks:
            dest.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())


def write_embeddings_rows(path: Path, site_ids: Sequence[str], embeddings: np.ndarray, rows: Sequence[int] | np.ndarray) -> None:
    """Write ``embeddings.npz`` with ``embeddings[rows[i]]`` as site ``site_ids[i]``'s row, streamed
    in chunks (no copy of the whole matrix; the file as :func:`write_embeddings` writes it).

    Args:
        path: the file (written through a temporary file, fsync'd, renamed into place).
        site_ids: the ids, in file order.
        embeddings: ``(M, D)`` float16 store the rows are taken from.
        rows: ``(N,)`` row of each id in ``embeddings``.
    """
    n = len(site_ids)
    if len(rows) != n:
        raise ValueError(f"{len(rows)} embedding rows for {n} site ids")
    width = max((len(s) for s in site_ids), default=0)
    id_dtype = np.asarray(list(site_ids[:1]) or [], dtype=np.str_).dtype if width == 0 else np.dtype(f"<U{width}")
    emb_dtype = np.dtype(np.float16)
    dim = int(embeddings.shape[1]) if embeddings.ndim == 2 else 0
    rows = np.asarray(rows, dtype=np.int64)
    step = EMBEDDING_CHUNK_ROWS
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            _npy_member(zf, "site_id", id_dtype, (n,), (np.asarray(list(site_ids[i : i + step]), dtype=id_dtype) for i in range(0, n, step)))
            _npy_member(zf, "embedding", emb_dtype, (n, dim), (embeddings[rows[i : i + step]] for i in range(0, n, step)))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_embeddings(run_dir: str | Path) -> tuple[list[str], np.ndarray] | None:
    """``(site_ids, embedding (N, D) float32)`` from ``embeddings.npz``; None when absent.

    Raises:
        RunFolderError: the file is there but unreadable, or its shapes disagree.
    """
    path = Path(run_dir) / EMBEDDINGS_NAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(x) for x in data["site_id"]]
            emb = np.asarray(data["embedding"], dtype=np.float32)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc})") from None
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise RunFolderError(f"{path}: embedding shape {emb.shape} does not match {len(ids)} site ids")
    return ids, emb


# -- manifest.json -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    """``operating_point``: the threshold that turns a calibrated score into ``flagged``
    (chosen by :func:`detect.ranking.resolve_operating_point`).

    Attributes:
        name: the operating point's name (``"screening"``, ``"evidence"``) or ``"custom"``.
        threshold: flagged when ``score >= threshold``.
        source: where the threshold came from, for the manifest and the report.
    """

    name: str
    threshold: float
    source: str


@dataclass(frozen=True)
class FileHash:
    """A file and its SHA-256 (``model.files[]``, a raster's ``sidecars[]``)."""

    path: str
    sha256: str


#: a STAC scene's catalogue facts, recorded for scenes from a catalogue (``catalog_id`` set).
CATALOGUE_FIELDS = ("catalog_id", "catalog_source", "platform", "stated_gsd_m", "off_nadir", "cloud_cover", "credit")


@dataclass(frozen=True)
class RasterInput:
    """One input raster: ``inputs.before[]`` / ``inputs.after[]``.

    Attributes:
        scene_id, path, sha256: the scene and its file, hashed.
        crs: the raster's CRS.
        acquired: acquisition time (ISO-8601) or None; ``time_source`` says where it came from.
        sidecars: JSON sidecars beside the raster (they can set the time, so they are inputs).
        catalog_id ... credit: a STAC scene's catalogue facts (None for plain files).
    """

    scene_id: str
    path: str
    sha256: str
    crs: str | None
    acquired: str | None
    time_source: str | None
    sidecars: tuple[FileHash, ...] = ()
    catalog_id: str | None = None
    catalog_source: str | None = None
    platform: str | None = None
    stated_gsd_m: float | None = None
    off_nadir: float | None = None
    cloud_cover: float | None = None
    credit: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "scene_id": self.scene_id,
            "path": self.path,
            "sha256": self.sha256,
            "sidecars": [_plain(f) for f in self.sidecars],
            "crs": self.crs,
            "acquired": self.acquired,
            "time_source": self.time_source,
        }
        if self.catalog_id:
            data.update({name: getattr(self, name) for name in CATALOGUE_FIELDS})
        return data

    @classmethod
    def from_json(cls, data: Any) -> "RasterInput":
        if not isinstance(data, Mapping):
            raise TypeError(f"a raster entry must be an object, not {type(data).__name__}")
        plain = {k: v for k, v in data.items() if k != "sidecars"}
        entry = _build(cls, plain)
        return replace(entry, sidecars=tuple(_build(FileHash, f) for f in data.get("sidecars") or ()))


@dataclass(frozen=True)
class SkippedRaster:
    """A raster given but not used, and why: ``inputs.skipped_rasters.{before,after}[]`` as
    ``[path, reason]``."""

    path: str
    reason: str


@dataclass(frozen=True)
class SitesInput:
    """``inputs.sites``: the sites file."""

    path: str
    sha256: str
    count: int


@dataclass(frozen=True)
class Inputs:
    """``inputs``: the sites file and the rasters of each epoch, hashed."""

    sites: SitesInput
    before: tuple[RasterInput, ...]
    after: tuple[RasterInput, ...]
    skipped_before: tuple[SkippedRaster, ...] = ()
    skipped_after: tuple[SkippedRaster, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """``model``: which model scored the run.

    Attributes:
        argument: what was given (``"default"`` or a folder).
        path: the model folder, resolved.
        weights_sha256: SHA-256 of the weights.
        files: every weights/metadata file of the folder, hashed.
        meta: the checkpoint's metadata as JSON (the models stage's ``CheckpointMeta``).
    """

    argument: str
    path: str
    weights_sha256: str
    files: tuple[FileHash, ...]
    meta: Mapping[str, Any]


@dataclass(frozen=True)
class ConfigInfo:
    """``config``: the effective settings (``values``: ``{"tiles": ..., "detect": ...}``) and
    the file they were saved to."""

    file: str
    sha256: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Execution:
    """``execution``: how the run was scored (``mode``: ``"local"`` or ``"dask"``)."""

    mode: str
    workers: int | None
    dask_address: str | None
    batches_resumed: int


@dataclass(frozen=True)
class Counts:
    """``counts``: sites by outcome."""

    sites: int
    ok: int
    cannot_assess: int
    flagged: int


#: ``per_site_columns``: the columns of each ``per_site`` entry.
PER_SITE_COLUMNS = ("site_id", "status", "before_scene", "after_scene", "before_time", "after_time")


@dataclass(frozen=True, slots=True)
class PerSite:
    """One ``per_site`` entry: which scenes (and when) each site was judged on."""

    site_id: str
    status: str
    before_scene: str
    after_scene: str
    before_time: str
    after_time: str

    @classmethod
    def of(cls, row: ScoreRow) -> "PerSite":
        return cls(row.site_id, row.status, *(row.pair.get(c, "") for c in PER_SITE_COLUMNS[2:]))


class PerSiteSpool(Sequence[PerSite]):
    """``per_site`` entries spooled to an anonymous temporary file as they are made (one JSON
    line each), so a run of any size keeps none of them in memory; iterating reads them back in
    order. A :class:`Manifest` takes it as its ``per_site`` and :func:`write_manifest` streams
    it into ``manifest.json``. Closed (the file removed) by :meth:`close` or when collected."""

    def __init__(self) -> None:
        import tempfile

        self._fh = tempfile.TemporaryFile("w+b")
        self._count = 0
        self._unflushed = False

    def add(self, entry: PerSite) -> None:
        line = json.dumps([getattr(entry, c) for c in PER_SITE_COLUMNS], ensure_ascii=False, separators=(",", ":"))
        self._fh.write(line.encode("utf-8") + b"\n")
        self._count += 1
        self._unflushed = True

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Any:
        if self._unflushed:
            self._fh.flush()
            self._unflushed = False
        fd, offset, rest = self._fh.fileno(), 0, b""
        while True:  # pread: every iterator keeps its own position in the one file
            block = os.pread(fd, 1 << 20, offset)
            if not block:
                break
            offset += len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield PerSite(*json.loads(line))
        if rest:  # pragma: no cover - every line ends with a newline
            yield PerSite(*json.loads(rest))

    def __getitem__(self, index: Any) -> Any:  # pragma: no cover - reads the file up to ``index``
        return tuple(self)[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def close(self) -> None:
        self._fh.close()


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: everything needed to trace every figure of a run back to its inputs.

    Attributes:
        sitewatch_version: the software that wrote the run.
        run_fingerprint: SHA-256 over ``fingerprint_components`` (what makes a run this run).
        fingerprint_components: ``{"sites", "before", "after", "model", "config", "software"}``.
        started, finished: UTC ISO times.
        inputs: the sites file and rasters, hashed.
        model: the model, hashed.
        config: the effective settings.
        operating_point: the threshold behind ``flagged``.
        software: versions of Python, the platform, GDAL and the recorded distributions.
        execution: local or Dask, resumed batches.
        counts: sites by outcome.
        per_site: scenes and times of each site, in ``scores.csv`` order.
        outputs: ``{relative posix path: sha256}`` of every output file (the review app serves
            only these).
        calibration: where the scores' calibration came from when ``sitewatch calibrate``
            refitted it on this event (:mod:`detect.recalibrate` owns its fields), else None.
        series: the days of an image-series run and the fit settings (:mod:`detect.series`
            owns its fields), else None.
        format_version: the version the file was read with (:data:`FORMAT_VERSION` when made
            here; the writer always writes the current version).
    """

    sitewatch_version: str
    run_fingerprint: str
    fingerprint_components: Mapping[str, str]
    started: str
    finished: str
    inputs: Inputs
    model: ModelInfo
    config: ConfigInfo
    operating_point: OperatingPoint
    software: Mapping[str, str]
    execution: Execution
    counts: Counts
    per_site: Sequence[PerSite]  # a tuple, or a :class:`PerSiteSpool` for a run just written
    outputs: Mapping[str, str]
    calibration: Mapping[str, Any] | None = None
    series: Mapping[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def rasters(self, epoch: str) -> list[Path]:
        """The ``"before"`` or ``"after"`` raster paths."""
        entries = {"before": self.inputs.before, "after": self.inputs.after}[epoch]
        return [Path(e.path) for e in entries]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json``."""
        return self._to_json([[getattr(p, c) for c in PER_SITE_COLUMNS] for p in self.per_site])

    def _to_json(self, per_site: Any) -> dict[str, Any]:
        inputs = self.inputs
        return {
            "format": MANIFEST_FORMAT,
            "format_version": FORMAT_VERSION,  # the sections written are always the current ones
            "sitewatch_version": self.sitewatch_version,
            "run_fingerprint": self.run_fingerprint,
            "fingerprint_components": dict(self.fingerprint_components),
            "started": self.started,
            "finished": self.finished,
            "inputs": {
                "sites": _plain(inputs.sites),
                "before": [r.to_json() for r in inputs.before],
                "after": [r.to_json() for r in inputs.after],
                "skipped_rasters": {
                    "before": [[s.path, s.reason] for s in inputs.skipped_before],
                    "after": [[s.path, s.reason] for s in inputs.skipped_after],
                },
            },
            "model": {**_plain(self.model), "files": [_plain(f) for f in self.model.files]},
            "config": _plain(self.config),
            "operating_point": _plain(self.operating_point),
            "software": dict(self.software),
            "execution": _plain(self.execution),
            "counts": _plain(self.counts),
            "per_site_columns": list(PER_SITE_COLUMNS),
            "per_site": per_site,
            "outputs": dict(self.outputs),
            **({} if self.calibration is None else {"calibration": dict(self.calibration)}),
            **({} if self.series is None else {"series": dict(self.series)}),
        }

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> "Manifest":
        """Parse ``manifest.json``'s object, checking its format, version and every section.

        Raises:
            RunFolderError: not a sitewatch manifest, a version this sitewatch does not read,
                or a missing or mistyped section (the message names the file and the key).
        """
        where = str(where)
        if not isinstance(data, dict):
            raise RunFolderError(f"{where}: not a sitewatch run manifest (a JSON object with format {MANIFEST_FORMAT!r})")
        fmt = data.get("format")
        if fmt == _LEGACY_FORMAT_V1 and "format_version" not in data:
            version = 1
        elif fmt == MANIFEST_FORMAT:
            version = data.get("format_version")
            if not isinstance(version, int) or isinstance(version, bool):
                raise RunFolderError(f"{where}: format_version {version!r} is not a whole number")
        else:
            raise RunFolderError(f"{where}: not a sitewatch run manifest (format {fmt!r}, expected {MANIFEST_FORMAT!r})")
        if version > FORMAT_VERSION:
            raise RunFolderError(
                f"{where}: format_version {version} was written by a newer sitewatch (this one reads up "
                f"to {FORMAT_VERSION}); upgrade sitewatch to read this run"
            )
        if version < 1:
            raise RunFolderError(f"{where}: format_version {version} is not a version sitewatch ever wrote")
        get = _Reader(data, where)
        inputs = get.obj("inputs")
        sites = get.sub(inputs, "inputs", "sites")
        skipped = get.sub(inputs, "inputs", "skipped_rasters")
        model = get.obj("model")
        columns = get.list("per_site_columns")
        if tuple(columns) != PER_SITE_COLUMNS:
            raise RunFolderError(f"{where}: per_site_columns {columns!r}, expected {list(PER_SITE_COLUMNS)!r}")
        try:
            return cls(
                format_version=version,
                sitewatch_version=get.str("sitewatch_version"),
                run_fingerprint=get.str("run_fingerprint"),
                fingerprint_components={str(k): str(v) for k, v in get.obj("fingerprint_components").items()},
                started=get.str("started"),
                finished=get.str("finished"),
                inputs=Inputs(
                    sites=SitesInput(str(sites["path"]), str(sites["sha256"]), int(sites["count"])),
                    before=tuple(RasterInput.from_json(r) for r in get.sub_list(inputs, "inputs", "before")),
                    after=tuple(RasterInput.from_json(r) for r in get.sub_list(inputs, "inputs", "after")),
                    skipped_before=tuple(SkippedRaster(str(p), str(r)) for p, r in skipped.get("before", [])),
                    skipped_after=tuple(SkippedRaster(str(p), str(r)) for p, r in skipped.get("after", [])),
                ),
                model=ModelInfo(
                    argument=str(model["argument"]),
                    path=str(model["path"]),
                    weights_sha256=str(model["weights_sha256"]),
                    files=tuple(_build(FileHash, f) for f in model["files"]),
                    meta=dict(model["meta"]),
                ),
                config=_build(ConfigInfo, get.obj("config")),
                operating_point=_build(OperatingPoint, get.obj("operating_point")),
                software={str(k): str(v) for k, v in get.obj("software").items()},
                execution=_build(Execution, get.obj("execution")),
                counts=_build(Counts, get.obj("counts")),
                per_site=tuple(PerSite(*(str(v) for v in values)) for values in get.list("per_site")),
                outputs={str(k): str(v) for k, v in get.obj("outputs").items()},
                calibration=dict(data["calibration"]) if isinstance(data.get("calibration"), dict) else None,
                series=dict(data["series"]) if isinstance(data.get("series"), dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFolderError(f"{where}: a section is incomplete or mistyped ({type(exc).__name__}: {exc})") from None


def _plain(obj: Any) -> dict[str, Any]:
    return {f.name: (dict(v) if isinstance(v, Mapping) else v) for f in fields(obj) for v in [getattr(obj, f.name)]}


def _build(cls: type, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} must be an object, not {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    missing = [n for n in names if n not in data and _required(cls, n)]
    if missing:
        raise KeyError(f"{cls.__name__} lacks {', '.join(missing)}")
    return cls(**{n: data[n] for n in names if n in data})


def _required(cls: type, name: str) -> bool:
    from dataclasses import MISSING

    f = next(f for f in fields(cls) if f.name == name)
    return f.default is MISSING and f.default_factory is MISSING  # type: ignore[misc]


class _Reader:
    """Typed access to the sections of a manifest object, with errors naming the file and key."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def _get(self, key: str, kind: type, what: str) -> Any:
        if key not in self.data:
            raise RunFolderError(f"{self.where}: section {key!r} is missing")
        value = self.data[key]
        if not isinstance(value, kind):
            raise RunFolderError(f"{self.where}: section {key!r} must be {what}")
        return value

    def obj(self, key: str) -> dict[str, Any]:
        return self._get(key, dict, "an object")

    def list(self, key: str) -> list[Any]:
        return self._get(key, list, "a list")

    def str(self, key: str) -> str:
        return self._get(key, str, "text")

    def sub(self, holder: Mapping[str, Any], prefix: str, key: str) -> dict[str, Any]:
        value = holder.get(key)
        if not isinstance(value, dict):
            raise RunFolderError(f"{self.where}: section {prefix}.{key} is missing or not an object")
        return value

    def sub_list(self, holder: Mapping[str, Any], prefix: str, key: str) -> list[Any]:
        value = holder.get(key)
        if not isinstance(value, list):
            raise RunFolderError(f"{self.where}: section {prefix}.{key} is missing or not a list")
        return value


def require_run_folder(path: str | Path) -> Path:
    """``path`` as a Path when it is a folder, else a :class:`RunFolderError` that says whether
    it is missing or a file, and what to give instead."""
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a run folder" if path.exists() else "no such run folder"
        raise RunFolderError(f"{path}: {what}; give the folder `sitewatch detect --out` wrote")
    return path


def write_json_atomic(path: Path, data: Any, *, splice: tuple[str, Callable[[Any], None]] | None = None) -> None:
    """Write JSON (sorted keys, indented) via a temporary file and an atomic rename.

    ``splice=(placeholder, write)``: where ``data`` holds the string ``placeholder``, ``write(fh)``
    writes that value's JSON text itself (streamed, e.g. rows kept on disk) instead.
    """
    encoder = json.JSONEncoder(indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    slot = encoder.encode(splice[0]) if splice is not None else None
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for chunk in encoder.iterencode(data):
            if splice is not None and chunk == slot:
                splice[1](fh)
            else:
                fh.write(chunk)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


#: stands for the ``per_site`` rows while the rest of ``manifest.json`` is encoded.
_PER_SITE_SLOT = "\x00sitewatch per_site rows\x00"


def _write_per_site_rows(fh: Any, per_site: Iterable[PerSite]) -> None:
    """The ``per_site`` array exactly as ``json.dump(..., indent=2)`` writes it at the top
    level of ``manifest.json`` (one value per line), row by row."""
    encode = json.encoder.encode_basestring  # what the indenting encoder uses with ensure_ascii=False
    first = True
    for p in per_site:
        values = "".join(("\n      " if k == 0 else ",\n      ") + encode(str(getattr(p, c))) for k, c in enumerate(PER_SITE_COLUMNS))
        fh.write(("[\n    [" if first else ",\n    [") + values + "\n    ]")
        first = False
    fh.write("[]" if first else "\n  ]")


def write_manifest(run_dir: str | Path, manifest: Manifest) -> Path:
    """The one writer of ``manifest.json`` (atomic); returns its path.

    The bytes are those of :func:`write_json_atomic` of :meth:`Manifest.to_json`, but the
    ``per_site`` rows are streamed from ``manifest.per_site`` (a :class:`PerSiteSpool` keeps them
    on disk) instead of being gathered into one JSON object first.
    """
    path = Path(run_dir) / MANIFEST_NAME
    write_json_atomic(
        path, manifest._to_json(_PER_SITE_SLOT), splice=(_PER_SITE_SLOT, lambda fh: _write_per_site_rows(fh, manifest.per_site))
    )
    return path


def read_manifest_json(run_dir: str | Path) -> dict[str, Any]:
    """``manifest.json``'s raw JSON object, its ``format`` checked but not its sections (for
    ``sitewatch verify``, which reports on a damaged manifest instead of refusing it). Give the
    run folder or the file.

    Raises:
        RunFolderError: the folder or its manifest is missing, unreadable or not a sitewatch
            run manifest.
    """
    run_dir = Path(run_dir)
    path = run_dir if run_dir.name == MANIFEST_NAME and run_dir.is_file() else run_dir / MANIFEST_NAME
    require_run_folder(path.parent)
    if not path.is_file():
        raise RunFolderError(
            f"{path}: missing; this is not a finished sitewatch run folder (run `sitewatch detect` "
            "to completion first)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") not in (MANIFEST_FORMAT, _LEGACY_FORMAT_V1):
        raise RunFolderError(f"{path}: not a sitewatch run manifest (format {MANIFEST_FORMAT!r})")
    return data


def read_manifest(run_dir: str | Path) -> Manifest:
    """The one reader of ``manifest.json`` (give the run folder or the file).

    Raises:
        RunFolderError: the folder or its manifest is missing, unreadable, not a sitewatch
            manifest, of an unknown ``format_version``, or a section is missing or mistyped.
    """
    run_dir = Path(run_dir)
    path = run_dir if run_dir.name == MANIFEST_NAME and run_dir.is_file() else run_dir / MANIFEST_NAME
    return Manifest.from_json(read_manifest_json(run_dir), path)
