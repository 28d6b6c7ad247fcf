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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence
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


def _fields(rows: Sequence[Mapping[str, str]], columns: Sequence[str], threshold: float) -> tuple[list[np.ndarray], list[str], list[np.ndarray | None]]:
    """Typed field arrays (and null masks) for ``rows``, plus the ``band`` field."""
    data: list[np.ndarray] = []
    names: list[str] = []
    masks: list[np.ndarray | None] = []
    labels = band_labels(threshold)
    for column in columns:
        values = [row.get(column, "") or "" for row in rows]
        if column in REAL_COLUMNS:
            array = _reals(values)
            mask = None  # NaN is written as null
        elif column == "rank":
            ranks = [int(v) if v.strip().isdigit() else 0 for v in values]
            array = np.array(ranks, dtype=np.int32)
            mask = array == 0
        elif column in BOOL_COLUMNS:
            array = np.array([v.strip().lower() in ("true", "1", "yes") for v in values], dtype=bool)
            mask = np.array([v.strip() == "" for v in values], dtype=bool)
        elif column in TIME_COLUMNS:
            times = [_utc(v) for v in values]
            array = np.array([t if t is not None else datetime(1970, 1, 1) for t in times], dtype="datetime64[ms]")
            mask = np.array([t is None for t in times], dtype=bool)
        else:
            array = np.array(values, dtype=object)
            mask = None
        data.append(array)
        names.append(_field_name(column))
        masks.append(mask if mask is not None and mask.any() else None)
        if column == "flagged":
            bands = [labels[band_of(_float(r.get("score")), (r.get("status") or "ok"), threshold)] for r in rows]
            data.append(np.array(bands, dtype=object))
            names.append("band")
            masks.append(None)
    return data, names, masks


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


def write_gpkg(
    path: Path,
    rows: Sequence[Mapping[str, str]],
    columns: Sequence[str],
    *,
    threshold: float,
    footprints: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """Write ``scores.gpkg``; returns the number of point features.

    Args:
        path: the file to write (replaced).
        rows: ``scores.csv`` rows (text values), in rank order.
        columns: the ``scores.csv`` columns (become the fields).
        threshold: the run's operating threshold (for the score bands).
        footprints: ``{site_id: GeoJSON Polygon/MultiPolygon, or its WKB}`` of the sites that had one.
    """
    import pyogrio
    from pyogrio.raw import write

    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    located = [r for r in rows if _has_coordinates(r)]
    options = {"OGR_CURRENT_DATE": FIXED_GPKG_TIME}
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options(options)
    try:
        with warnings.catch_warnings():
            # the temporary name is not *.gpkg (GDAL warns); the file is renamed once complete
            warnings.filterwarnings("ignore", message=".*(extension|conformant).*", category=RuntimeWarning)
            geometry = np.array([_wkb_point(_float(r["lon"]), _float(r["lat"])) for r in located], dtype=object)
            data, names, masks = _fields(located, columns, threshold)
            write(str(tmp), geometry, data, names, field_mask=masks, layer="sites", driver="GPKG",
                  geometry_type="Point", crs="EPSG:4326", layer_options={"FID": "fid", "GEOMETRY_NAME": "geom"})
            layers = [("sites", "marker")]
            shaped = []
            for r in rows:
                shape = (footprints or {}).get(r.get("site_id", ""))
                wkb = shape if isinstance(shape, bytes) else _wkb_multipolygon(shape) if shape is not None else None
                if wkb is not None:
                    shaped.append((r, wkb))
            if shaped:
                data, names, masks = _fields([r for r, _ in shaped], columns, threshold)
                write(str(tmp), np.array([w for _, w in shaped], dtype=object), data, names, field_mask=masks,
                      layer="footprints", driver="GPKG", geometry_type="MultiPolygon", crs="EPSG:4326",
                      layer_options={"FID": "fid", "GEOMETRY_NAME": "geom"})
                layers.append(("footprints", "fill"))
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
    _add_styles(tmp, layers, threshold)
    os.replace(tmp, path)
    return len(located)


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


def write_kml(path: Path, rows: Sequence[Mapping[str, str]], *, threshold: float, title: str = "sitewatch run") -> int:
    """Write ``scores.kml``; returns the number of placemarks.

    Args:
        path: the file to write (replaced).
        rows: ``scores.csv`` rows (text values), in rank order.
        threshold: the run's operating threshold (for the score bands).
        title: the document's name.
    """
    labels = band_labels(threshold)
    colours = band_rgb(threshold)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        '<kml xmlns="http://www.opengis.net/kml/2.2">\n<Document>\n',
        f"<name>{escape(title)}</name>\n",
        f"<description>{escape(f'Sites coloured by score band; flagged at score ≥ {threshold:g}. Bands: ' + '; '.join(labels))}</description>\n",
    ]
    for k, (label, rgb) in enumerate(zip(labels, colours)):
        out.append(
            f'<Style id="band{k}"><IconStyle><color>{_kml_colour(rgb)}</color><scale>0.9</scale>'
            "<Icon><href>http://maps.google.com/mapfiles/kml/shapes/shaded_dot.png</href></Icon></IconStyle>"
            f"<LabelStyle><scale>0</scale></LabelStyle><BalloonStyle><text>$[description]</text></BalloonStyle></Style>\n"
        )
    count = 0
    for row in rows:
        if not _has_coordinates(row):
            continue
        k = band_of(_float(row.get("score")), row.get("status") or "ok", threshold)
        name = row.get("name") or row.get("site_id", "")
        description = _balloon(row, threshold, labels[k])
        out.append(
            f"<Placemark><name>{escape(name)}</name><styleUrl>#band{k}</styleUrl>"
            f"<description>{escape(description)}</description>"
            f"<ExtendedData><Data name=\"site_id\"><value>{escape(row.get('site_id', ''))}</value></Data>"
            f"<Data name=\"score\"><value>{escape(row.get('score', ''))}</value></Data>"
            f"<Data name=\"status\"><value>{escape(row.get('status', ''))}</value></Data></ExtendedData>"
            f"<Point><coordinates>{_float(row['lon'])!r},{_float(row['lat'])!r}</coordinates></Point></Placemark>\n"
        )
        count += 1
    out.append("</Document>\n</kml>\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(out), encoding="utf-8")
    os.replace(tmp, path)
    return count


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
        # the run's own text, not the quotes scores.csv puts before formula-like cells
        rows = [{k: restore_formula(v or "") for k, v in row.items()} for row in reader]
    write_gpkg(run_dir / GPKG_NAME, rows, columns, threshold=threshold, footprints=footprints)
    write_kml(run_dir / KML_NAME, rows, threshold=threshold, title="sitewatch scores")
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
