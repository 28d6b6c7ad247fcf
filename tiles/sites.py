"""Reading the list of sites: CSV (``site_id, lon, lat, ...``) or GeoJSON (points, polygons).

File-level problems (missing file or columns, empty file, wrong encoding, duplicate or empty
ids) raise :class:`~sitewatch.errors.InputError` naming the file, the row and the field. Row-level
problems (NaN, non-numeric or out-of-range coordinates, a missing geometry) do not stop anything:
the row becomes a :class:`~tiles.types.Site` with NaN ``lon``/``lat`` and ``problem`` set, a
warning names the row, and later stages report it as ``cannot_assess`` / ``invalid_site``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from sitewatch.errors import InputError
from tiles.incident import IncidentWindow, site_window
from tiles.types import DAMAGE_CLASSES, Site

log = logging.getLogger(__name__)

__all__ = ["read_sites", "read_sites_csv", "read_sites_geojson", "KNOWN_COLUMNS", "INCIDENT_COLUMNS", "decimal_number", "geometry_centroid"]

#: accepted spellings of the coordinate columns (first match wins), all compared lower-case.
LON_ALIASES = ("lon", "longitude", "lng", "long")
LAT_ALIASES = ("lat", "latitude")
#: columns with a meaning; every other column is passed through in ``Site.extra``.
KNOWN_COLUMNS = ("site_id", "lon", "lat", "name", "kind", "radius_m", "damage", "label")
#: optional incident window columns (ISO dates); parsed into ``Site.incident`` and passed through.
INCIDENT_COLUMNS = ("incident_start", "incident_end")
#: a binary ``label`` column is mapped onto the xBD scale so ``damage_to_label`` gives it back.
_BINARY_LABELS = {"1": "destroyed", "0": "no-damage", "true": "destroyed", "false": "no-damage"}
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


#: the ``extra`` of every site without other columns: one empty mapping shared by all (never
#: written to), not one per site (80 bytes each).
_NO_EXTRA: dict[str, str] = {}


def read_sites(path: str | Path) -> list[Site]:
    """Read sites from a CSV or GeoJSON file (chosen by extension; ``.json``/``.geojson``).

    Args:
        path: the sites file.

    Returns:
        One :class:`Site` per data row / feature, in file order. Rows with a problem have NaN
        coordinates and ``problem`` set.

    Raises:
        InputError: the file is missing, empty, not UTF-8, lacks a required column, or repeats a
            site id. The message names the file, the row and the field and says what to do.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"sites file {path}: no such file; pass a CSV (site_id, lon, lat) or GeoJSON")
    if path.is_dir():
        raise InputError(f"sites file {path}: is a folder; pass a CSV or GeoJSON file")
    if path.suffix.lower() in (".json", ".geojson"):
        return read_sites_geojson(path)
    return read_sites_csv(path)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(f"sites file {path}: is empty; it needs a header row and at least one site")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw[:nul].count(b"\n") + 1
        raise InputError(
            f"sites file {path}: line {line} holds a NUL byte (byte {nul}); the file is binary or UTF-16, "
            "not UTF-8 text: re-save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            f"sites file {path}: line {line} is not valid UTF-8 (byte {exc.start}); "
            "re-save the file as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)"
        ) from None


def decimal_number(text: str) -> float | None:
    """The value of a plain decimal number written with ASCII digits, else None.

    ``15.005``, ``-45``, ``+1.5e1`` and ``nan``/``inf`` (which give NaN/inf for the caller to
    refuse) are numbers; ``1_5.005``, ``0x1F``, ``15,5`` and other digit systems are not,
    although Python's ``float()`` accepts several of them (``float("1_5.005") == 15.005``).
    """
    t = text.strip()
    if t.lstrip("+-").lower() in ("nan", "inf", "infinity"):
        return float(t)
    if not _DECIMAL.fullmatch(t):
        return None
    return float(t)


def _parse_coordinate(text: str | None, field: str, low: float, high: float) -> tuple[float, str | None]:
    """A coordinate value, or NaN plus a problem description."""
    if text is None or not str(text).strip():
        return math.nan, f"{field} is empty"
    value = decimal_number(str(text))
    if value is None:
        return math.nan, f"{field} {text!r} is not a number (write decimal degrees with a point, e.g. 15.005)"
    return _check_coordinate(value, text, field, low, high)


def _looks_projected(lon_text: Any, lat_text: Any) -> bool:
    """Both values numbers and at least one far beyond any degree (easting/northing in metres)."""
    values = [decimal_number(str(t)) if t is not None else None for t in (lon_text, lat_text)]
    if any(v is None or not math.isfinite(v) for v in values):
        return False
    return max(abs(v) for v in values) > 1000.0  # type: ignore[arg-type] - no None left


def _check_coordinate(value: float, text: Any, field: str, low: float, high: float) -> tuple[float, str | None]:
    if not math.isfinite(value):
        return math.nan, f"{field} {text!r} is not a finite number"
    if not low <= value <= high:
        return math.nan, f"{field} {value:g} out of range [{low:g}, {high:g}]"
    return value, None


def _parse_radius(text: Any, where: str) -> float | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, str):
        parsed = decimal_number(text)
        value = math.nan if parsed is None else parsed
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        log.warning("%s: radius_m %r is not a positive number of metres; ignored", where, text)
        return None
    return value


def _parse_damage(damage: Any, label: Any, where: str) -> str | None:
    value = damage if damage not in (None, "") else None
    if value is None and label not in (None, ""):
        text = str(label).strip()
        value = _BINARY_LABELS.get(text.lower(), text)
    if value is None:
        return None
    value = str(value).strip()
    if value and value not in DAMAGE_CLASSES:
        log.warning(
            "%s: damage %r is not on the xBD scale (%s); kept as is, left out of training",
            where,
            value,
            ", ".join(DAMAGE_CLASSES),
        )
    return value or None


def _parse_incident(start: Any, end: Any, where: str) -> IncidentWindow | None:
    """A site's incident window from its ``incident_start`` / ``incident_end`` cells.

    Raises:
        InputError: a cell is not an ISO date or the window ends before it starts (a wrong
            date would silently choose the wrong scenes, so it stops the run with the row).
    """
    try:
        return site_window(None if start is None else str(start), None if end is None else str(end))
    except ValueError as exc:
        raise InputError(
            f"{where}: incident_start/incident_end: {exc}; write dates as YYYY-MM-DD (UTC), e.g. 2023-02-06"
        ) from None


def _find_column(header: list[str], aliases: Iterable[str]) -> str | None:
    lower = {h.strip().lower(): h for h in header}
    for alias in aliases:
        if alias in lower:
            return lower[alias]
    return None


def _csv_rows(reader: Any, path: Path) -> Iterable[list[str]]:
    """The data rows of a CSV reader; a row the csv module refuses is an InputError naming it."""
    row_no = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(
                f"sites file {path}: row {row_no + 1} (line {reader.line_num}) cannot be read as CSV ({exc}); "
                "check that row's quotes and field lengths"
            ) from None
        row_no += 1
        yield values


def read_sites_csv(path: str | Path) -> list[Site]:
    """Read a CSV with ``site_id, lon, lat`` (WGS84 degrees) and optional columns.

    Optional: ``name, kind, radius_m, damage`` (xBD scale) or ``label`` (0/1 or xBD names).
    ``longitude``/``lng`` and ``latitude`` are accepted for ``lon``/``lat``. Every other column
    goes to ``Site.extra`` unchanged. Rows are numbered from 1 after the header.

    Raises:
        InputError: see :func:`read_sites`.
    """
    path = Path(path)
    text = _read_text(path)
    # keeps newlines inside quoted fields; strict: an unclosed quote is an error, not a field that
    # silently swallows every row after it
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"sites file {path}: is empty; it needs a header row and at least one site") from None
    except csv.Error as exc:
        raise InputError(f"sites file {path}: the header row cannot be read as CSV ({exc})") from None
    header = [h.strip() for h in header]
    if not text.split("\n", 1)[0].strip() and text.strip():
        raise InputError(
            f"sites file {path}: line 1 is empty; the header row (site_id,lon,lat,...) must be the "
            "first line: remove the blank line(s) above it"
        )
    id_col = _find_column(header, ("site_id",))
    lon_col = _find_column(header, LON_ALIASES)
    lat_col = _find_column(header, LAT_ALIASES)
    missing = [n for n, c in (("site_id", id_col), ("lon", lon_col), ("lat", lat_col)) if c is None]
    if missing and len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        raise InputError(
            f"sites file {path}: the header row {header[0]!r} is not comma-separated; save the file "
            "as CSV with commas (site_id,lon,lat)"
        )
    if missing:
        raise InputError(
            f"sites file {path}: missing required column(s) {', '.join(missing)} in the header row; "
            f"found: {', '.join(h for h in header if h) or '(none)'}; a sites CSV needs site_id, lon, lat "
            "(WGS84 degrees)"
        )
    blank = [i + 1 for i, h in enumerate(header) if not h]
    if blank:
        raise InputError(f"sites file {path}: header column(s) {blank} have no name; name every column")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(f"sites file {path}: column(s) {', '.join(dupes)} appear more than once in the header")
    named = {id_col, lon_col, lat_col}
    optional = {k: _find_column(header, (k,)) for k in ("name", "kind", "radius_m", "damage", "label")}
    named.update(c for c in optional.values() if c)
    # parsed, and also passed through in extra (they travel to the outputs as given)
    incident_cols = {k: _find_column(header, (k,)) for k in INCIDENT_COLUMNS}

    sites: list[Site] = []
    seen: dict[str, int] = {}
    for row_no, values in enumerate(_csv_rows(reader, path), start=1):
        if not values or all(not v.strip() for v in values):
            continue  # blank line
        if len(values) != len(header):
            raise InputError(
                f"sites file {path}: row {row_no} has {len(values)} fields but the header has "
                f"{len(header)}; check for unquoted commas in that row"
            )
        rec = dict(zip(header, values))
        where = f"sites file {path}: row {row_no}"
        site_id = rec[id_col].strip()
        if not site_id:
            raise InputError(f"{where}: field site_id is empty; every site needs a unique id")
        if site_id in seen:
            raise InputError(
                f"{where}: site_id {site_id!r} duplicates row {seen[site_id]}; site ids must be unique"
            )
        seen[site_id] = row_no
        lon, lon_problem = _parse_coordinate(rec[lon_col], "lon", -180.0, 180.0)
        lat, lat_problem = _parse_coordinate(rec[lat_col], "lat", -90.0, 90.0)
        problems = [p for p in (lon_problem, lat_problem) if p]
        if lat_problem and "out of range" in lat_problem and lon_problem is None and abs(lon) <= 90:
            problems.append("are the lon and lat columns swapped?")
        elif _looks_projected(rec[lon_col], rec[lat_col]):
            problems.append("these look like projected coordinates (metres, e.g. UTM): give WGS84 longitude and latitude in degrees")
        problem = "; ".join(problems) or None
        if problem:
            log.warning("%s (site %s): %s; reported as cannot_assess/invalid_site", where, site_id, problem)
            lon = lat = math.nan
        get = lambda k: rec[optional[k]].strip() if optional[k] else None  # noqa: E731
        sites.append(
            Site(
                site_id=site_id,
                lon=lon,
                lat=lat,
                row=row_no,
                name=get("name") or None,
                kind=get("kind") or None,
                radius_m=_parse_radius(get("radius_m"), where),
                damage=_parse_damage(get("damage"), get("label"), where),
                extra={h: rec[h] for h in header if h not in named} or _NO_EXTRA,
                problem=problem,
                incident=_parse_incident(
                    *(rec[incident_cols[k]] if incident_cols[k] else None for k in INCIDENT_COLUMNS), where
                ),
            )
        )
    if not sites:
        raise InputError(f"sites file {path}: has a header but no site rows; add at least one site")
    return sites


def _ring_centroid(ring: list[list[float]]) -> tuple[float, float, float]:
    """Signed area (degrees², x scaled by cos(lat)) and centroid of a closed lon/lat ring."""
    if len(ring) < 3:
        raise ValueError("a polygon ring needs at least 3 positions")
    lat0 = math.radians(sum(p[1] for p in ring) / len(ring))
    k = math.cos(lat0)
    area = cx = cy = 0.0
    ox, oy = float(ring[0][0]), float(ring[0][1])  # local origin: avoids cancellation
    pts = [((float(p[0]) - ox) * k, float(p[1]) - oy) for p in ring]
    if pts[0] != pts[-1]:
        pts.append(pts[0])
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        cross = x0 * y1 - x1 * y0
        area += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    area *= 0.5
    if abs(area) < 1e-18:
        xs, ys = zip(*pts[:-1])
        return 0.0, ox + sum(xs) / len(xs) / k, oy + sum(ys) / len(ys)
    return area, ox + cx / (6 * area) / k, oy + cy / (6 * area)


def _describe(value: Any) -> str:
    """A short, non-recursive description of a JSON value for messages."""
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return repr(value)


def _json_number(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} {_describe(value)} is not a JSON number")
    v, problem = _check_coordinate(float(value), value, field, low, high)
    if problem:
        raise ValueError(problem)
    return v


def _position(p: Any, where: str) -> tuple[float, float]:
    """A GeoJSON position ``[lon, lat]`` or ``[lon, lat, z]`` of finite in-range numbers."""
    if not isinstance(p, list) or len(p) not in (2, 3):
        raise ValueError(f"{where} must be [lon, lat] (two or three numbers), got {_describe(p)}")
    lon = _json_number(p[0], "lon", -180.0, 180.0)
    lat = _json_number(p[1], "lat", -90.0, 90.0)
    if len(p) == 3:
        _json_number(p[2], "height", -math.inf, math.inf)
    return lon, lat


def _polygon(coords: Any, where: str) -> list[list[tuple[float, float]]]:
    if not isinstance(coords, list) or not coords or not all(isinstance(r, list) for r in coords):
        raise ValueError(f"{where} coordinates must be a list of rings (lists of [lon, lat]), got {_describe(coords)}")
    rings = []
    for k, ring in enumerate(coords, start=1):
        if not isinstance(ring, list) or len(ring) < 3 or not all(isinstance(p, list) for p in ring):
            raise ValueError(f"{where} ring {k} must be a list of at least 3 [lon, lat] positions, got {_describe(ring)}")
        rings.append([_position(p, f"{where} ring {k} position {i}") for i, p in enumerate(ring, start=1)])
    return rings


def validated_geometry(geometry: Any) -> dict[str, Any]:
    """A clean copy of a GeoJSON Point, Polygon or MultiPolygon with checked coordinates.

    Every position must be two (or three) finite JSON numbers in WGS84 range; rings need at
    least 3 positions. The copy holds only ``type`` and ``coordinates`` (as lists of floats), so
    nothing else of the input travels on.

    Raises:
        ValueError: the message says what is wrong (no recursion: any depth is safe).
    """
    if not isinstance(geometry, dict):
        raise ValueError(f"geometry is not a GeoJSON geometry object (got {_describe(geometry)})")
    gtype = geometry.get("type")
    coords = geometry.get("coordinates")
    if gtype == "Point":
        if not isinstance(coords, list) or len(coords) not in (2, 3) or any(isinstance(c, list) for c in coords):
            raise ValueError(f"Point coordinates must be [lon, lat], got {_describe(coords)}")
        return {"type": "Point", "coordinates": list(_position(coords, "Point coordinates"))}
    if gtype == "Polygon":
        return {"type": "Polygon", "coordinates": [[list(p) for p in r] for r in _polygon(coords, "Polygon")]}
    if gtype == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise ValueError(f"MultiPolygon coordinates must be a non-empty list of polygons, got {_describe(coords)}")
        polys = [_polygon(c, f"MultiPolygon polygon {k}") for k, c in enumerate(coords, start=1)]
        return {"type": "MultiPolygon", "coordinates": [[[list(p) for p in r] for r in poly] for poly in polys]}
    shown = gtype if isinstance(gtype, str) else _describe(gtype)
    raise ValueError(f"geometry type {shown!r} is not supported (use Point, Polygon or MultiPolygon)")


def geometry_centroid(geometry: Mapping[str, Any]) -> tuple[float, float]:
    """Centroid ``(lon, lat)`` of a GeoJSON Point, Polygon or MultiPolygon (WGS84).

    Raises:
        ValueError: unsupported or malformed geometry (see :func:`validated_geometry`).
    """
    clean = validated_geometry(geometry)
    coords = clean["coordinates"]
    if clean["type"] == "Point":
        return float(coords[0]), float(coords[1])
    polys = [coords] if clean["type"] == "Polygon" else list(coords)
    total = sx = sy = 0.0
    for poly in polys:
        a, x, y = _ring_centroid(poly[0])
        a = abs(a)
        for hole in poly[1:]:
            ha, hx, hy = _ring_centroid(hole)
            ha = abs(ha)
            x = (x * a - hx * ha) / max(a - ha, 1e-30)
            y = (y * a - hy * ha) / max(a - ha, 1e-30)
            a -= ha
        total += a
        sx += x * a
        sy += y * a
    if total <= 0:
        a, x, y = _ring_centroid(polys[0][0])
        return x, y
    return sx / total, sy / total


def _property_text(value: Any, where: str, key: str) -> str:
    """A property value as text: strings as they are, numbers as Python writes them, lists and
    objects as compact JSON, null as empty."""
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError, TypeError) as exc:
        raise InputError(f"{where}: property {key!r} cannot be kept as text ({type(exc).__name__}); simplify it") from None


def _load_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"sites file {path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise InputError(
            f"sites file {path}: JSON nested too deeply to read (hundreds of levels of [ or {{); a GeoJSON "
            "sites file needs only a few levels: check how it was made"
        ) from None


def _declared_crs(doc: dict, path: Path) -> str:
    crs = doc.get("crs")
    if crs is None:
        return ""
    if isinstance(crs, str):
        return crs
    props = crs.get("properties") if isinstance(crs, dict) else None
    name = props.get("name") if isinstance(props, dict) else None
    if not isinstance(name, str):
        raise InputError(
            f"sites file {path}: 'crs' is not a GeoJSON crs object ({{\"type\": \"name\", \"properties\": "
            '{"name": ...}}); remove it (GeoJSON is WGS84) or fix it'
        )
    return name


def _feature_id(feat: dict, props: dict, where: str) -> str:
    raw = props.get("site_id")
    if raw is None:
        raw = feat.get("id")
    if raw is None:
        raise InputError(f"{where}: no site_id property and no feature id; every site needs a unique id")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InputError(f"{where}: site_id must be a string or an integer, got {_describe(raw)}")
    site_id = str(raw).strip()
    if not site_id:
        raise InputError(f"{where}: site_id is empty; every site needs a unique id")
    return site_id


def read_sites_geojson(path: str | Path) -> list[Site]:
    """Read a GeoJSON FeatureCollection of points or (multi)polygons in WGS84.

    The id comes from the property ``site_id``, else the feature's ``id`` (a string or an
    integer). A polygon gives its centroid as ``lon, lat`` and the geometry as ``footprint``.
    Properties ``name, kind, radius_m, damage, label`` are read; other properties go to
    ``extra`` as text (lists and objects as compact JSON).

    A malformed geometry (not an object, an unsupported type, positions that are not two finite
    JSON numbers in range, rings of fewer than 3 positions) makes that feature an invalid site;
    a structural problem (not JSON, nested too deeply, not a FeatureCollection, a feature or its
    properties not an object, a bad id) is an InputError naming the file and the feature.

    Raises:
        InputError: see :func:`read_sites`; also the structural problems above.
    """
    path = Path(path)
    text = _read_text(path)
    doc = _load_json(path, text)
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list):
        features = doc["features"]
    else:
        raise InputError(f"sites file {path}: expected a GeoJSON FeatureCollection with a 'features' list")
    crs_name = _declared_crs(doc, path)
    if crs_name and not any(s in crs_name.upper() for s in ("CRS84", "4326")):
        raise InputError(
            f"sites file {path}: declares crs {crs_name!r}; GeoJSON sites must be WGS84 lon/lat (CRS84); "
            "reproject the file"
        )
    if not features:
        raise InputError(f"sites file {path}: the FeatureCollection has no features; add at least one site")
    sites: list[Site] = []
    seen: dict[str, int] = {}
    known = {"site_id", "name", "kind", "radius_m", "damage", "label"}
    for row_no, feat in enumerate(features, start=1):
        where = f"sites file {path}: feature {row_no}"
        if not isinstance(feat, dict):
            raise InputError(f"{where}: is not a GeoJSON Feature object (got {_describe(feat)})")
        props = feat.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            raise InputError(f"{where}: properties must be a JSON object ({{...}}) or null, got {_describe(props)}")
        site_id = _feature_id(feat, props, where)
        if site_id in seen:
            raise InputError(f"{where}: site_id {site_id!r} duplicates feature {seen[site_id]}; site ids must be unique")
        seen[site_id] = row_no
        geometry = feat.get("geometry")
        footprint = None
        problem = None
        lon = lat = math.nan
        if geometry is None or geometry == {}:
            problem = "geometry is missing"
        else:
            try:
                clean = validated_geometry(geometry)
                lon, lat = geometry_centroid(clean)
                if clean["type"] != "Point":
                    footprint = clean
            except ValueError as exc:
                problem = f"geometry is malformed: {exc}"
        if problem:
            log.warning("%s (site %s): %s; reported as cannot_assess/invalid_site", where, site_id, problem)
            lon = lat = math.nan
            footprint = None
        texts = {str(k): _property_text(v, where, str(k)) for k, v in props.items()}
        sites.append(
            Site(
                site_id=site_id,
                lon=lon,
                lat=lat,
                row=row_no,
                name=texts.get("name") or None,
                kind=texts.get("kind") or None,
                radius_m=_parse_radius(props.get("radius_m"), where),
                footprint=footprint,
                damage=_parse_damage(texts.get("damage") or None, texts.get("label") or None, where),
                extra={k: v for k, v in texts.items() if k not in known} or _NO_EXTRA,
                problem=problem,
                incident=_parse_incident(texts.get("incident_start"), texts.get("incident_end"), where),
            )
        )
    return sites
