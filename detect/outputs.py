"""Writing the tabular outputs of a run: ``scores.csv``, ``scores.geojson``, ``embeddings.npz``.

Everything is written through a temporary file and renamed into place, and nothing time- or
machine-dependent goes into these files, so the same inputs give byte-identical outputs.

Cells of ``scores.csv`` that a spreadsheet would run as a formula (a site named ``=HYPERLINK(...)``)
start with ``'`` (:func:`tiles.formula_injection.neutralise_formula`); :func:`read_scores_csv`
gives the original text back. ``scores.geojson`` holds the text as it is.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tiles.formula_injection import neutralise_formula, restore_formula

#: the leading columns of ``scores.csv``, in order.
LEADING_COLUMNS = ("site_id", "lon", "lat", "score", "rank", "status", "reason", "flagged")
#: descriptive site columns, included when any input site has them.
SITE_COLUMNS = ("name", "kind", "radius_m", "damage")
#: chip paths (relative to the run folder), the last columns.
CHIP_COLUMNS = ("chip_before", "chip_after", "chip_heatmap")


def score_columns(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """All columns of ``scores.csv``: leading, then the others in first-seen order, then chips."""
    columns = list(LEADING_COLUMNS)
    seen = set(columns) | set(CHIP_COLUMNS)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    columns.extend(CHIP_COLUMNS)
    return columns


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_scores_csv(path: Path, rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> None:
    """Write ``scores.csv`` (UTF-8, ``\\n`` line ends, missing values empty)."""
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
        self._csv_path = run_dir / "scores.csv"
        self._gj_path = run_dir / "scores.geojson"
        self._csv = open(self._csv_path.with_name("scores.csv.tmp"), "w", newline="", encoding="utf-8")
        self._gj = open(self._gj_path.with_name("scores.geojson.tmp"), "w", encoding="utf-8")
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


def write_embeddings(path: Path, site_ids: Sequence[str], embeddings: np.ndarray) -> None:
    """Write ``embeddings.npz``: ``site_id`` (N,) unicode and ``embedding`` (N, D) float16.

    The zip entries carry a fixed timestamp so the file is byte-identical across runs.
    """
    ids = np.asarray(list(site_ids), dtype=np.str_)
    emb = np.ascontiguousarray(embeddings, dtype=np.float16)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in (("site_id", ids), ("embedding", emb)):
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    write_bytes_atomic(path, buf.getvalue())


def read_scores_csv(path: Path) -> list[dict[str, str]]:
    """Read ``scores.csv`` back as a list of row dicts (for tests, demo and verification), with
    every cell's text as the run had it (formula-neutralising quotes removed)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: restore_formula(v or "") for k, v in row.items()} for row in csv.DictReader(fh)]


def format_number(value: float | None, decimals: int | None = None) -> str:
    """A float as text: empty for None/NaN, fixed decimals when given, else shortest round-trip."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if decimals is not None:
        return f"{value:.{decimals}f}"
    return repr(float(value))
