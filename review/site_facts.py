"""How a site's numbers are shown to reviewers: scores that separate the top sites, labelled
coordinates (decimal and DMS), and the quality table in words, with units and hints."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

#: most decimals a score is shown with.
MAX_SCORE_DIGITS = 7


def score_text(p: float | None) -> str:
    """A score with the decimals that tell close scores apart near 0 and 1.

    Three decimals in the middle; near the ends enough for two significant digits of the distance
    to the end (0.99973, 0.0000412), so the top sites do not all read 1.000. At most
    :data:`MAX_SCORE_DIGITS` decimals (then the logit tells them apart).
    """
    if p is None or not math.isfinite(p):
        return "–"
    tail = min(p, 1.0 - p)
    digits = 3 if tail >= 0.01 else min(MAX_SCORE_DIGITS, max(3, math.floor(-math.log10(max(tail, 1e-300))) + 2))
    return f"{p:.{digits}f}"


def logit_text(p: float | None) -> str:
    """``log(p / (1 - p))`` with one decimal ("–" for no score; "> 36" / "< -36" at the ends)."""
    if p is None or not math.isfinite(p):
        return "–"
    if p >= 1.0:
        return "> 36"
    if p <= 0.0:
        return "< -36"
    return f"{math.log(p / (1.0 - p)):.1f}"


def dms(value: float, positive: str, negative: str) -> str:
    """Degrees, minutes and seconds (0.1 s, about 3 m) with a hemisphere letter."""
    hemisphere = positive if value >= 0 else negative
    total = round(abs(value) * 36000)  # tenths of a second
    degrees, rest = divmod(total, 36000)
    minutes, tenths = divmod(rest, 600)
    return f"{degrees}°{minutes:02d}′{tenths / 10:04.1f}″{hemisphere}"


@dataclass(frozen=True)
class Coordinates:
    """A site's position, as shown and copied.

    Attributes:
        decimal: ``lat, lon`` in decimal degrees (6 decimals, about 0.1 m), as most tools paste it.
        dms: the same in degrees, minutes, seconds with hemispheres.
        valid: False when the site has no coordinates.
    """

    decimal: str
    dms: str
    valid: bool


def coordinates(lat: float, lon: float) -> Coordinates:
    """The site's coordinates in decimal degrees and DMS."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return Coordinates("no valid coordinates", "", False)
    return Coordinates(f"{lat:.6f}, {lon:.6f}", f"{dms(lat, 'N', 'S')} {dms(lon, 'E', 'W')}", True)


@dataclass(frozen=True)
class FactRow:
    """One row of the quality table.

    Attributes:
        column: the ``scores.csv`` column (shown small, for tracing).
        label: what it is, in words.
        value: the value with its unit.
        hint: what a bad value means ("" when nothing to say).
        warn: True when the value is past the tiles stage's threshold.
    """

    column: str
    label: str
    value: str
    hint: str = ""
    warn: bool = False


def _num(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _pct_text(v: float) -> str:
    return f"{100 * v:.1f} %"


def fact_rows(meta: Mapping[str, str], tiles: Mapping[str, Any], order: tuple[str, ...], hidden: Any) -> list[FactRow]:
    """The quality table of a site: known columns in words, the rest as they are.

    Args:
        meta: the site's ``scores.csv`` columns other than the core ones, as text.
        tiles: the run's tiles settings (thresholds quoted in the hints; defaults otherwise).
        order: columns shown first, in this order.
        hidden: ``hidden(column) -> bool`` for columns never shown (the input's own labels).
    """
    from tiles.config import TilesConfig

    d = TilesConfig()
    min_valid = float(tiles.get("min_valid_fraction", d.min_valid_fraction))
    max_cloud = float(tiles.get("max_cloud_fraction", d.max_cloud_fraction))
    max_blank = float(tiles.get("max_blank_fraction", d.max_blank_fraction))
    max_shift = float(tiles.get("max_shift_m", d.max_shift_m))
    min_conf = float(tiles.get("min_coreg_confidence", d.min_coreg_confidence))

    def when(epoch: str) -> FactRow:
        column = f"{epoch}_time"
        source = meta.get(f"{epoch}_time_source", "")
        value = meta.get(column, "").replace("T", " ")
        if source and source != "unknown":
            value += f" (from the {'file name' if source == 'filename' else source})"
        return FactRow(column, f"{epoch} image taken", value or "unknown",
                       "unknown time: check the delivery's metadata" if not meta.get(column) else "")

    def fraction(column: str, label: str, limit: float, above: bool, hint: str) -> FactRow:
        v = _num(meta.get(column, ""))
        bad = math.isfinite(v) and (v > limit if above else v < limit)
        return FactRow(column, label, _pct_text(v) if math.isfinite(v) else meta.get(column, ""), hint, bad)

    def metres(column: str, label: str, hint: str = "", unit: str = "m") -> FactRow:
        v = _num(meta.get(column, ""))
        return FactRow(column, label, f"{v:.2f} {unit}" if math.isfinite(v) else meta.get(column, ""), hint)

    known: dict[str, Any] = {
        "before_time": lambda: when("before"),
        "after_time": lambda: when("after"),
        "before_scene": lambda: FactRow("before_scene", "before scene", meta["before_scene"]),
        "after_scene": lambda: FactRow("after_scene", "after scene", meta["after_scene"]),
        "chip_gsd_m": lambda: metres("chip_gsd_m", "chip resolution", "ground size of one chip pixel", "m/pixel"),
        "chip_size_m": lambda: metres("chip_size_m", "chip side on the ground"),
        "before_gsd_m": lambda: metres("before_gsd_m", "before image resolution (native)", unit="m/pixel"),
        "after_gsd_m": lambda: metres("after_gsd_m", "after image resolution (native)", unit="m/pixel"),
        "shift_m": lambda: FactRow(
            "shift_m", "co-registration shift",
            f"{_num(meta['shift_m']):.2f} m" if math.isfinite(_num(meta["shift_m"])) else meta["shift_m"],
            f"how far after was moved to line up with before; over {max_shift:g} m it is not applied",
            _num(meta["shift_m"]) > max_shift,
        ),
        "shift_applied": lambda: FactRow(
            "shift_applied", "shift applied", "yes" if meta["shift_applied"].lower() in ("true", "1", "yes") else "no",
            "no: the images are compared as delivered (shift too small, too large or uncertain)",
        ),
        "coreg_confidence": lambda: FactRow(
            "coreg_confidence", "co-registration confidence", f"{_num(meta['coreg_confidence']):.2f} (0–1)"
            if math.isfinite(_num(meta["coreg_confidence"])) else meta["coreg_confidence"],
            f"below {min_conf:g} the alignment is uncertain: compare edges by eye (swipe)",
            _num(meta["coreg_confidence"]) < min_conf,
        ),
        "valid_fraction": lambda: fraction(
            "valid_fraction", "pixels with data in both images", min_valid, False,
            f"below {100 * min_valid:g} % the site is not assessed (scene edge or nodata)",
        ),
        "cloud_fraction": lambda: fraction(
            "cloud_fraction", "cloud-like pixels (in one image only)", max_cloud, True,
            f"over {100 * max_cloud:g} % clouds may hide or fake damage",
        ),
        "blank_fraction": lambda: fraction(
            "blank_fraction", "blank pixels", max_blank, True, "flat, featureless pixels (e.g. fill or glare)",
        ),
        "saturated_fraction": lambda: fraction(
            "saturated_fraction", "saturated pixels", max_blank, True, "white-clipped pixels hide detail",
        ),
        "normalisation": lambda: FactRow("normalisation", "after made comparable to before by", meta["normalisation"]),
        "quality": lambda: FactRow("quality", "quality notes", meta["quality"]),
        "detail": lambda: FactRow("detail", "details", meta["detail"]),
        "radius_m": lambda: metres("radius_m", "site radius (input)"),
        "shift_dy_px": lambda: FactRow("shift_dy_px", "co-registration shift, rows (chip pixels)", meta["shift_dy_px"]),
        "shift_dx_px": lambda: FactRow("shift_dx_px", "co-registration shift, columns (chip pixels)", meta["shift_dx_px"]),
        "before_extra_scenes": lambda: FactRow("before_extra_scenes", "before: other scenes filling gaps", meta["before_extra_scenes"]),
        "after_extra_scenes": lambda: FactRow("after_extra_scenes", "after: other scenes filling gaps", meta["after_extra_scenes"]),
    }
    skip = {"before_time_source", "after_time_source"}
    rows: list[FactRow] = []
    columns = [k for k in order if meta.get(k)] + [k for k in meta if k not in order and meta.get(k)]
    for column in columns:
        if column in skip or hidden(column):
            continue
        make = known.get(column)
        rows.append(make() if make is not None else FactRow(column, column.replace("_", " "), meta[column]))
    return rows
