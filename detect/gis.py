"""GIS files of a run: ``scores.gpkg`` for QGIS and ``scores.kml`` for Google Earth.

Both hold one feature per site that has valid coordinates (``cannot_assess`` sites included, with
their status and reason), in WGS84 (EPSG:4326), coloured by **score band**: the same bands as the
review app's run map (``>= 0.9``, the operating threshold, ``>= 0.1``, below; grey for
``cannot_assess``).

- ``scores.gpkg`` (GeoPackage, written through pyogrio/GDAL): layer ``sites`` (points) with typed
  fields (``score`` real, ``rank`` integer, ``flagged`` boolean, acquisition times as UTC
  date-times, quality figures as reals, everything else from ``scores.csv`` as text) and, when the
  input sites had footprints, layer ``footprints`` (polygons, same fields). A ``layer_styles``
  table holds a default QML style per layer, which QGIS applies when it opens the layer, so the
  sites appear coloured by band.
- ``scores.kml``: placemarks in one style per band, a balloon with score, rank, status, dates,
  scenes and the site's chips (``chips/...`` relative to the KML, so they show when the KML is
  opened from the run folder). Every text is XML-escaped.

Nothing time- or machine-dependent goes into either file (GDAL's "last change" dates are fixed),
so the same run gives byte-identical files.
"""

from __future__ import annotations

import math
import os
import sqlite3
import struct
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np

GPKG_NAME = "scores.gpkg"
KML_NAME = "scores.kml"
#: the GIS files, in the order they are written.
GIS_FILES = (GPKG_NAME, KML_NAME)

#: lower edges of the upper score bands besides the operating threshold (as the review map).
BAND_EDGES = (0.9, 0.1)
#: RGB colours of the bands, highest first (the review map's), and of ``cannot_assess``.
BAND_RGB = ((177, 0, 38), (253, 141, 60), (255, 237, 160), (44, 127, 184))
CANNOT_ASSESS_RGB = (153, 153, 153)
#: fixed "last change" time GDAL writes into the GeoPackage (keeps the file reproducible).
FIXED_GPKG_TIME = "2000-01-01T00:00:00.000Z"

#: scores.csv columns written as reals / booleans / UTC date-times in the GeoPackage.
REAL_COLUMNS = frozenset({
    "lon", "lat", "score", "radius_m", "before_gsd_m", "after_gsd_m", "chip_gsd_m", "chip_size_m", "gsd_ratio",
    "shift_dy_px", "shift_dx_px", "shift_m", "coreg_confidence", "valid_fraction", "cloud_fraction",
    "blank_fraction", "saturated_fraction",
})
BOOL_COLUMNS = frozenset({"flagged", "shift_applied", "gsd_mismatch"})
TIME_COLUMNS = frozenset({"before_time", "after_time"})


# -- bands --------------------------------------------------------------------------------------

def band_edges(threshold: float) -> list[float]:
    """Lower edges of the score bands, highest first (duplicates dropped)."""
    return sorted({*BAND_EDGES, float(threshold)}, reverse=True)


def band_labels(threshold: float) -> list[str]:
    """One label per band (highest first), plus ``cannot assess`` last."""
    edges = band_edges(threshold)
    labels = []
    for k, lo in enumerate(edges):
        text = f"≥ {lo:g}" if k == 0 else f"{lo:g} – {edges[k - 1]:g}"
        labels.append(text + (" (flagged)" if lo >= threshold else ""))
    labels.append(f"< {edges[-1]:g}")
    return labels + ["cannot assess"]


def band_of(score: float | None, status: str, threshold: float) -> int:
    """Index of the site's band in :func:`band_labels` (the last index: cannot assess)."""
    edges = band_edges(threshold)
    if status != "ok" or score is None or not math.isfinite(score):
        return len(edges) + 1
    for k, lo in enumerate(edges):
        if score >= lo:
            return k
    return len(edges)


def band_rgb(threshold: float) -> list[tuple[int, int, int]]:
    """Colours of :func:`band_labels`, in order."""
    n = len(band_edges(threshold)) + 1
    colours = list(BAND_RGB[:n]) + [BAND_RGB[-1]] * max(0, n - len(BAND_RGB))
    return colours + [CANNOT_ASSESS_RGB]


# -- reading the rows ---------------------------------------------------------------------------

def _float(text: str | None) -> float:
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _reals(values: Sequence[str]) -> np.ndarray:
    """Float64 array of text values (NaN for empty, unparsable or infinite ones)."""
    try:  # numpy parses the whole column at C speed; any odd value falls back to one by one
        array = np.array([v or "nan" for v in values], dtype=np.str_).astype(np.float64)
    except ValueError:
        return np.array([_float(v) for v in values], dtype=np.float64)
    array[~np.isfinite(array)] = np.nan
    return array


def _has_coordinates(row: Mapping[str, str]) -> bool:
    lon, lat = _float(row.get("lon")), _float(row.get("lat"))
    return math.isfinite(lon) and math.isfinite(lat) and -180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0


def _utc(text: str) -> datetime | None:
    """An ISO-8601 time as naive UTC (naive input is taken as UTC), or None."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


# -- WKB ----------------------------------------------------------------------------------------

def _wkb_point(lon: float, lat: float) -> bytes:
    return struct.pack("<BIdd", 1, 1, lon, lat)


def _wkb_polygon_body(rings: Sequence[Sequence[Sequence[float]]]) -> bytes:
    parts = [struct.pack("<I", len(rings))]
    for ring in rings:
        parts.append(struct.pack("<I", len(ring)))
        parts.extend(struct.pack("<dd", float(p[0]), float(p[1])) for p in ring)
    return b"".join(parts)


def _wkb_multipolygon(geometry: Mapping[str, Any]) -> bytes | None:
    """WKB MultiPolygon of a GeoJSON Polygon or MultiPolygon (None for anything else)."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates") or []
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    polygons = [[ring for ring in poly if len(ring) >= 4] for poly in polygons]
    polygons = [poly for poly in polygons if poly]
    if not polygons:
        return None
    body = [struct.pack("<BII", 1, 6, len(polygons))]
    body.extend(struct.pack("<BI", 1, 3) + _wkb_polygon_body(poly) for poly in polygons)
    return b"".join(body)


# -- GeoPackage ---------------------------------------------------------------------------------

def _field_name(column: str) -> str:
    return f"{column}_input" if column.lower() in ("fid", "geom") else column


#: rows converted to typed arrays at a time while a layer is gathered (bounds the text held).
CHUNK_ROWS = 4096
#: distinct values remembered per text column (a repeated value is then held once).
DISTINCT_CAP = 4096


class _LayerFields:
    """The typed fields of one layer, gathered row by row (:meth:`add`) in bounded chunks.

    Every :data:`CHUNK_ROWS` rows the text of the real, integer, boolean and time columns is
    converted to numpy arrays (as a whole column would convert, value by value); text columns
    hold one string object per repeated value (scene ids, statuses, bands repeat over thousands
    of sites). So a layer of N sites holds a few bytes per site and typed column, and a pointer
    per site and text column, instead of every row's dict of strings.
    """

    def __init__(self, columns: Sequence[str], threshold: float) -> None:
        self.columns = list(columns)
        self.threshold = threshold
        self.labels = band_labels(threshold)
        self._text: dict[str, list[str]] = {c: [] for c in self.columns}
        self._bands: list[str] = []
        self._chunks: dict[str, list[np.ndarray]] = {c: [] for c in self.columns if _column_kind(c) != "text"}
        self._distinct: dict[str, dict[str, str]] = {c: {} for c in self.columns if _column_kind(c) == "text"}
        self._pending = 0
        self.count = 0

    def add(self, row: Mapping[str, str]) -> None:
        for column in self.columns:
            value = row.get(column, "") or ""
            seen = self._distinct.get(column)
            if seen is not None:
                if len(seen) >= DISTINCT_CAP:  # a column of unique values (site ids): keep the cache small
                    seen.clear()
                value = seen.setdefault(value, value)
            self._text[column].append(value)
        if "flagged" in self._text:
            self._bands.append(self.labels[band_of(_float(row.get("score")), (row.get("status") or "ok"), self.threshold)])
        self._pending += 1
        self.count += 1
        if self._pending >= CHUNK_ROWS:
            self._convert()

    def _convert(self) -> None:
        for column, chunks in self._chunks.items():
            chunks.append(_typed_chunk(column, self._text[column]))
            self._text[column] = []
        self._pending = 0

    def finish(self) -> tuple[list[np.ndarray], list[str], list[np.ndarray | None]]:
        """Typed field arrays (and null masks) in column order, plus the ``band`` field, of the
        rows added since the last call (the layer is written chunk by chunk)."""
        self._convert()
        data: list[np.ndarray] = []
        names: list[str] = []
        masks: list[np.ndarray | None] = []
        for column in self.columns:
            if column in self._chunks:
                parts = self._chunks[column]
                self._chunks[column] = []
                array = np.concatenate(parts) if parts else _typed_chunk(column, [])
            else:
                array = np.array(self._text[column], dtype=object)
                self._text[column] = []
            array, mask = _field_and_mask(column, array)
            data.append(array)
            names.append(_field_name(column))
            masks.append(mask if mask is not None and mask.any() else None)
            if column == "flagged":
                data.append(np.array(self._bands, dtype=object))
                self._bands = []
                names.append("band")
                masks.append(None)
        return data, names, masks


def _column_kind(column: str) -> str:
    if column in REAL_COLUMNS:
        return "real"
    if column == "rank":
        return "rank"
    if column in BOOL_COLUMNS:
        return "bool"
    if column in TIME_COLUMNS:
        return "time"
    return "text"


#: the date-time written for a missing time (masked as null).
_NO_TIME = np.datetime64(datetime(1970, 1, 1), "ms")


def _typed_chunk(column: str, values: Sequence[str]) -> np.ndarray:
    """A typed column's values: reals (NaN = null), ranks (0 = null), booleans as codes (0 false,
    1 true, 2 null), times (``NaT`` = null)."""
    kind = _column_kind(column)
    if kind == "real":
        return _reals(values)
    if kind == "rank":
        return np.array([int(v) if v.strip().isdigit() else 0 for v in values], dtype=np.int32)
    if kind == "bool":
        return np.array([2 if v.strip() == "" else int(v.strip().lower() in ("true", "1", "yes")) for v in values], dtype=np.int8)
    return np.array([t if (t := _utc(v)) is not None else np.datetime64("NaT") for v in values], dtype="datetime64[ms]")


def _field_and_mask(column: str, array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A finished column as GDAL gets it, and its null mask (None: no mask)."""
    kind = _column_kind(column)
    if kind == "rank":
        return array, array == 0
    if kind == "bool":
        return array == 1, array == 2
    if kind == "time":
        mask = np.isnat(array)
        array[mask] = _NO_TIME
        return array, mask
    return array, None


def _fields(rows: Iterable[Mapping[str, str]], columns: Sequence[str], threshold: float) -> tuple[list[np.ndarray], list[str], list[np.ndarray | None]]:
    """Typed field arrays (and null masks) for ``rows``, plus the ``band`` field."""
    layer = _LayerFields(columns, threshold)
    for row in rows:
        layer.add(row)
    return layer.finish()


def _qml(kind: str, attr: str, labels: Sequence[str], colours: Sequence[tuple[int, int, int]]) -> str:
    """A QGIS style (QML): a categorised renderer on ``attr``, one symbol per band."""
    categories = "".join(
        f'      <category value={quoteattr(label)} symbol="{i}" label={quoteattr(label)} render="true" type="string"/>\n'
        for i, label in enumerate(labels)
    )
    symbols = []
    for i, (r, g, b) in enumerate(colours):
        colour = f"{r},{g},{b},255"
        if kind == "marker":
            props = {"name": "circle", "color": colour, "outline_color": "35,35,35,255", "outline_width": "0.3",
                     "size": "3.2", "size_unit": "MM", "outline_width_unit": "MM"}
            layer_class = "SimpleMarker"
        else:
            props = {"color": f"{r},{g},{b},90", "outline_color": colour, "outline_width": "0.6", "style": "solid",
                     "outline_style": "solid", "outline_width_unit": "MM"}
            layer_class = "SimpleFill"
        options = "".join(f'            <Option name="{k}" type="QString" value={quoteattr(v)}/>\n' for k, v in props.items())
        legacy = "".join(f'          <prop k="{k}" v={quoteattr(v)}/>\n' for k, v in props.items())
        symbols.append(
            f'      <symbol type="{"marker" if kind == "marker" else "fill"}" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
            f'        <layer class="{layer_class}" enabled="1" pass="0" locked="0">\n'
            f'          <Option type="Map">\n{options}          </Option>\n{legacy}'
            "        </layer>\n      </symbol>\n"
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">\n'
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(attr)} symbollevels="0" enableorderby="0" forceraster="0">\n'
        f"    <categories>\n{categories}    </categories>\n"
        f'    <symbols>\n{"".join(symbols)}    </symbols>\n'
        "  </renderer-v2>\n</qgis>\n"
    )


def _add_styles(path: Path, layers: Sequence[tuple[str, str]], threshold: float) -> None:
    """Add QGIS's ``layer_styles`` table (registered as a GeoPackage attributes table) with a
    default style for each ``(layer, kind)``."""
    labels = band_labels(threshold)
    colours = band_rgb(threshold)
    con = sqlite3.connect(path)
    try:
        con.execute(
            "CREATE TABLE layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), "
            "f_table_schema TEXT(256), f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), "
            "styleQML TEXT, styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), "
            "update_time DATETIME)"
        )
        for layer, kind in layers:
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, "
                "styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                "VALUES ('', '', ?, 'geom', ?, ?, '', 1, ?, 'sitewatch', '', ?)",
                (layer, f"{layer} by score band", _qml(kind, "band", labels, colours),
                 "sites coloured by score band (sitewatch)", FIXED_GPKG_TIME),
            )
        con.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles', ?)",
            (FIXED_GPKG_TIME,),
        )
        con.commit()
    finally:
        con.close()


#: features written to ``scores.gpkg`` per GDAL call: a layer is written chunk by chunk, so the
#: arrays handed to GDAL, and what GDAL holds while it writes them, stay bounded for any number of
#: sites (one call for the whole layer held ~0.8 KB per site: +80 MiB at 100,000 sites).
GPKG_CHUNK_ROWS = 8192


@contextmanager
def _fixed_gdal_dates() -> Iterator[None]:
    """GDAL writes :data:`FIXED_GPKG_TIME` as the GeoPackage's "last change" dates meanwhile."""
    import pyogrio

    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_GPKG_TIME})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


class _GpkgLayer:
    """One layer of a GeoPackage being written, every :data:`GPKG_CHUNK_ROWS` features (the first
    write creates the layer, the later ones append to it).

    Args:
        first: a layer that must be created in the file before this one (layer order).
    """

    def __init__(self, path: Path, name: str, geometry_type: str, columns: Sequence[str], threshold: float, first: "_GpkgLayer | None" = None) -> None:
        self.path, self.name, self.geometry_type, self.first = path, name, geometry_type, first
        self.fields = _LayerFields(columns, threshold)
        self.geometries: list[bytes] = []
        self.created = False

    def add(self, wkb: bytes, row: Mapping[str, str]) -> None:
        self.geometries.append(wkb)
        self.fields.add(row)
        if len(self.geometries) >= GPKG_CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the features gathered since the last write (creating the layer, even empty, if
        it is not yet in the file)."""
        if self.created and not self.geometries:
            return
        if self.first is not None and not self.first.created:
            self.first.flush()
        from pyogrio.raw import write

        geometry = np.array(self.geometries, dtype=object)
        self.geometries = []
        data, names, masks = self.fields.finish()
        options: dict[str, Any] = {"append": True} if self.created else {"layer_options": {"FID": "fid", "GEOMETRY_NAME": "geom"}}
        with _fixed_gdal_dates(), warnings.catch_warnings():
            # the temporary name is not *.gpkg (GDAL warns); the file is renamed once complete
            warnings.filterwarnings("ignore", message=".*(extension|conformant).*", category=RuntimeWarning)
            write(str(self.path), geometry, data, names, field_mask=masks, layer=self.name, driver="GPKG",
                  geometry_type=self.geometry_type, crs="EPSG:4326", **options)
        self.created = True


class _GpkgLayers:
    """``scores.gpkg`` gathered row by row and written in chunks into a temporary file beside
    ``path``, which :meth:`close` completes (styles) and renames to ``path``: the located sites
    (layer ``sites``, always, if empty, the first) and the footprints (layer ``footprints``, only
    when a site has one). The same rows give the same bytes (GDAL's dates are fixed)."""

    def __init__(self, path: Path, columns: Sequence[str], threshold: float, footprints: Mapping[str, Any] | None) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.tmp.unlink(missing_ok=True)
        self.threshold = threshold
        self.footprints = footprints or {}
        self.sites = _GpkgLayer(self.tmp, "sites", "Point", columns, threshold)
        self.shapes = _GpkgLayer(self.tmp, "footprints", "MultiPolygon", columns, threshold, first=self.sites)

    def add(self, row: Mapping[str, str]) -> None:
        if _has_coordinates(row):
            self.sites.add(_wkb_point(_float(row["lon"]), _float(row["lat"])), row)
        shape = self.footprints.get(row.get("site_id", "")) if self.footprints else None
        wkb = shape if isinstance(shape, bytes) else _wkb_multipolygon(shape) if shape is not None else None
        if wkb is not None:
            self.shapes.add(wkb, row)

    def close(self) -> int:
        """Write what is left and the styles, and rename the file into place; returns the number
        of point features."""
        self.sites.flush()
        layers = [("sites", "marker")]
        if self.shapes.created or self.shapes.geometries:
            self.shapes.flush()
            layers.append(("footprints", "fill"))
        _add_styles(self.tmp, layers, self.threshold)
        os.replace(self.tmp, self.path)
        return self.sites.fields.count

    def discard(self) -> None:
        """Remove the temporary file (after a failure)."""
        self.tmp.unlink(missing_ok=True)


def write_gpkg(
    path: Path,
    rows: Iterable[Mapping[str, str]],
    columns: Sequence[str],
    *,
    threshold: float,
    footprints: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """Write ``scores.gpkg``; returns the number of point features.

    Args:
        path: the file to write (replaced).
        rows: ``scores.csv`` rows (text values), in rank order (any iterable: it is read once,
            and only typed columns and distinct texts are kept, see :class:`_LayerFields`).
        columns: the ``scores.csv`` columns (become the fields).
        threshold: the run's operating threshold (for the score bands).
        footprints: ``{site_id: GeoJSON Polygon/MultiPolygon, or its WKB}`` of the sites that had one.
    """
    layers = _GpkgLayers(path, columns, threshold, footprints)
    try:
        for row in rows:
            layers.add(row)
        return layers.close()
    except BaseException:
        layers.discard()
        raise


# -- KML ----------------------------------------------------------------------------------------

def _kml_colour(rgb: tuple[int, int, int], alpha: int = 255) -> str:
    r, g, b = rgb
    return f"{alpha:02x}{b:02x}{g:02x}{r:02x}"  # KML is aabbggrr


def _score_text(score: float) -> str:
    if not math.isfinite(score):
        return "–"
    tail = min(score, 1.0 - score)
    digits = 3 if tail >= 0.01 else min(7, max(3, math.floor(-math.log10(max(tail, 1e-300))) + 2))
    return f"{score:.{digits}f}"


def _balloon(row: Mapping[str, str], threshold: float, label: str) -> str:
    """The placemark's balloon: an HTML table (escaped), with the chips when the run has them."""
    score = _float(row.get("score"))
    status = row.get("status") or "ok"
    facts = [
        ("site", row.get("site_id", "")),
        ("name", row.get("name", "")),
        ("score", f"{_score_text(score)} (band {label}; flagged at ≥ {threshold:g})" if math.isfinite(score) else "not assessed"),
        ("rank", row.get("rank", "") or "–"),
        ("status", status + (f": {row.get('reason')}" if row.get("reason") else "")),
        ("flagged", "yes" if (row.get("flagged") or "") == "true" else "no"),
        ("before image taken", (row.get("before_time") or "unknown").replace("T", " ")),
        ("after image taken", (row.get("after_time") or "unknown").replace("T", " ")),
        ("before scene", row.get("before_scene", "")),
        ("after scene", row.get("after_scene", "")),
        ("coordinates (lat, lon)", f"{_float(row.get('lat')):.6f}, {_float(row.get('lon')):.6f}"),
    ]
    cells = "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts if v)
    chips = ""
    images = [(label_, row.get(col, "")) for label_, col in (("before", "chip_before"), ("after", "chip_after"), ("change heatmap", "chip_heatmap"))]
    images = [(k, v) for k, v in images if v]
    if images:
        chips = "<p>" + "".join(
            f"<span style='display:inline-block;margin-right:6px'>{escape(k)}<br/><img src={quoteattr(v)} width='160' height='160'/></span>"
            for k, v in images
        ) + "</p>"
    return f"<table>{cells}</table>{chips}"


class _KmlWriter:
    """Streams ``scores.kml`` placemark by placemark into a temporary file (bounded memory)."""

    def __init__(self, path: Path, *, threshold: float, title: str) -> None:
        self.path = path
        self.threshold = threshold
        self.labels = band_labels(threshold)
        self.count = 0
        self._tmp = path.with_name(path.name + ".tmp")
        self._fh = open(self._tmp, "w", encoding="utf-8")
        labels = self.labels
        self._fh.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<kml xmlns="http://www.opengis.net/kml/2.2">\n<Document>\n'
            f"<name>{escape(title)}</name>\n"
            f"<description>{escape(f'Sites coloured by score band; flagged at score ≥ {threshold:g}. Bands: ' + '; '.join(labels))}</description>\n"
        )
        for k, (label, rgb) in enumerate(zip(labels, band_rgb(threshold))):
            self._fh.write(
                f'<Style id="band{k}"><IconStyle><color>{_kml_colour(rgb)}</color><scale>0.9</scale>'
                "<Icon><href>http://maps.google.com/mapfiles/kml/shapes/shaded_dot.png</href></Icon></IconStyle>"
                f"<LabelStyle><scale>0</scale></LabelStyle><BalloonStyle><text>$[description]</text></BalloonStyle></Style>\n"
            )

    def add(self, row: Mapping[str, str]) -> None:
        if not _has_coordinates(row):
            return
        threshold = self.threshold
        k = band_of(_float(row.get("score")), row.get("status") or "ok", threshold)
        name = row.get("name") or row.get("site_id", "")
        description = _balloon(row, threshold, self.labels[k])
        self._fh.write(
            f"<Placemark><name>{escape(name)}</name><styleUrl>#band{k}</styleUrl>"
            f"<description>{escape(description)}</description>"
            f"<ExtendedData><Data name=\"site_id\"><value>{escape(row.get('site_id', ''))}</value></Data>"
            f"<Data name=\"score\"><value>{escape(row.get('score', ''))}</value></Data>"
            f"<Data name=\"status\"><value>{escape(row.get('status', ''))}</value></Data></ExtendedData>"
            f"<Point><coordinates>{_float(row['lon'])!r},{_float(row['lat'])!r}</coordinates></Point></Placemark>\n"
        )
        self.count += 1

    def close(self) -> int:
        """Finish the file and move it into place; returns the number of placemarks."""
        self._fh.write("</Document>\n</kml>\n")
        self._fh.close()
        os.replace(self._tmp, self.path)
        return self.count

    def discard(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


def write_kml(path: Path, rows: Iterable[Mapping[str, str]], *, threshold: float, title: str = "sitewatch run") -> int:
    """Write ``scores.kml``; returns the number of placemarks.

    Args:
        path: the file to write (replaced).
        rows: ``scores.csv`` rows (text values), in rank order (streamed: any iterable).
        threshold: the run's operating threshold (for the score bands).
        title: the document's name.
    """
    writer = _KmlWriter(path, threshold=threshold, title=title)
    try:
        for row in rows:
            writer.add(row)
    except BaseException:
        writer.discard()
        raise
    return writer.close()


def write_gis_files(
    run_dir: Path,
    *,
    threshold: float,
    footprints: Mapping[str, Mapping[str, Any]] | None = None,
    scores_csv: Path | None = None,
) -> list[str]:
    """Write ``scores.gpkg`` and ``scores.kml`` into ``run_dir`` from its ``scores.csv``.

    Args:
        run_dir: the folder to write into.
        threshold: the run's operating threshold.
        footprints: ``{site_id: GeoJSON geometry}`` of sites with footprints.
        scores_csv: the scores to read (default ``run_dir/scores.csv``).

    Returns:
        The names of the files written (relative to ``run_dir``).
    """
    import csv

    from tiles.formula_injection import restore_formula

    source = scores_csv or run_dir / "scores.csv"
    with open(source, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        # one pass over scores.csv: the KML streams out, the GeoPackage keeps typed columns
        layers = _GpkgLayers(run_dir / GPKG_NAME, columns, threshold, footprints)
        kml = _KmlWriter(run_dir / KML_NAME, threshold=threshold, title="sitewatch scores")
        try:
            for raw in reader:
                # the run's own text, not the quotes scores.csv puts before formula-like cells
                row = {k: restore_formula(v or "") for k, v in raw.items()}
                layers.add(row)
                kml.add(row)
            layers.close()
        except BaseException:
            layers.discard()
            kml.discard()
            raise
    kml.close()
    return list(GIS_FILES)


def recorded_footprints(path: Path) -> dict[str, bytes]:
    """``{site_id: WKB}`` of the ``footprints`` layer of an existing ``scores.gpkg`` ({} if none)."""
    import pyogrio
    from pyogrio.raw import read

    if not path.is_file():
        return {}
    if "footprints" not in {str(name) for name, _ in pyogrio.list_layers(path)}:
        return {}
    meta, _, geometry, fields = read(path, layer="footprints", columns=["site_id"])
    return {str(sid): bytes(wkb) for sid, wkb in zip(fields[0], geometry) if wkb is not None}


def rewrite_gis_files(run_dir: Path, *, threshold: float) -> list[str]:
    """Write ``scores.gpkg``/``scores.kml`` again from the run's (rewritten) ``scores.csv``,
    keeping the footprints the earlier ``scores.gpkg`` held (e.g. after ``sitewatch calibrate``)."""
    return write_gis_files(run_dir, threshold=threshold, footprints=recorded_footprints(run_dir / GPKG_NAME))
