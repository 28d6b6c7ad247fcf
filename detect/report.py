"""``report.html``: a self-contained page that opens from disk (no server, no network).

Summary (counts by status and reason, a score histogram, the operating threshold), then the
flagged sites in rank order with before / after / heatmap chips (relative paths into ``chips/``),
scene dates, quality notes and a link to the location on OpenStreetMap. Every text that comes
from the input is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from detect.caution import reason_name, split_caution
from detect.runfolder import write_bytes_atomic
from detect.ranking import OperatingPoint

def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _metres(text: str) -> str:
    v = _float_or_nan(text)
    return f"{v:.2f} m" if math.isfinite(v) else text


def _percent(text: str) -> str:
    v = _float_or_nan(text)
    return f"{100 * v:.1f} %" if math.isfinite(v) else text


def _yes_no(text: str) -> str:
    return "yes" if text.strip().lower() in ("true", "1", "yes") else "no"


def _confidence(text: str) -> str:
    v = _float_or_nan(text)
    return f"{v:.2f} (0–1)" if math.isfinite(v) else text


#: pair metadata shown as quality notes when ``scores.csv`` has them (tiles.index columns):
#: ``column: (label, value formatter)``.
QUALITY_FIELDS: dict[str, tuple[str, Any]] = {
    "before_scene": ("before scene", str),
    "after_scene": ("after scene", str),
    "chip_gsd_m": ("chip resolution", lambda t: f"{_metres(t)}/pixel"),
    "shift_m": ("co-registration shift", _metres),
    "shift_applied": ("shift applied", _yes_no),
    "coreg_confidence": ("alignment confidence", _confidence),
    "valid_fraction": ("pixels with data in both", _percent),
    "cloud_fraction": ("cloud-like pixels", _percent),
    "blank_fraction": ("blank pixels", _percent),
    "normalisation": ("radiometric matching", str),
    "series_dates": ("usable dates in the series", str),
    "bracket_score": ("score of the bracketing pair", str),
    "series_outlier": ("date left out as an outlier", str),
    "detail": ("details", str),
}
#: the columns of :data:`QUALITY_FIELDS`, in order.
QUALITY_KEYS = tuple(QUALITY_FIELDS)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
.site{border:1px solid #ccc;border-radius:6px;padding:.6em;margin:.8em 0}
.chips{display:flex;gap:.4em}.chips figure{margin:0}.chips figcaption{font-size:.85em;color:#555;text-align:center}
.chips img{width:192px;height:192px;image-rendering:pixelated;border:1px solid #999}
.muted{color:#666;font-size:.9em}.score{font-weight:bold;font-size:1.1em}
code{background:#f4f4f4;padding:0 .2em}
.quality{display:flex;flex-wrap:wrap;gap:.2em 1.2em;margin:.4em 0 0;font-size:.9em}
.quality div{display:flex;gap:.4em}.quality dt{color:#666}.quality dd{margin:0}
.timeline{display:flex;gap:3px;margin:.4em 0;align-items:center;flex-wrap:wrap}
.timeline span{font-size:.8em;padding:.15em .4em;border-radius:3px;border:2px solid transparent}
.timeline .intact{background:#d8efd8}.timeline .damaged{background:#f6d0d0}.timeline .unchanged{background:#e3e9f3}
.timeline .outlier{background:#fbe7b8}.timeline .dropped{background:#eee;color:#888;text-decoration:line-through}
.timeline .bracket{border-color:#b00;font-weight:bold}
.caution{color:#8a5a00;font-size:.9em;margin:.2em 0}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def histogram_svg(scores: Sequence[float], threshold: float, *, bins: int = 20, width: int = 520, height: int = 160) -> str:
    """An inline SVG histogram of scores in ``[0, 1]`` with the threshold drawn as a red line.

    Labels never cross the plot: the threshold's label sits in a band above the bars, beside its
    line (left of it when the line is near the right edge), and the count scale is in the left
    margin.
    """
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, max(0, int(s * bins)))] += 1
    top = max(counts) if counts and max(counts) > 0 else 1
    left, right, head = 40, 16, 22  # margins: count scale, right edge, threshold label band
    plot_w = width - left - right
    base = head + height  # y of the x axis
    bar_w = plot_w / bins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{base + 34}" role="img" '
        f'aria-label="score histogram, {len(scores)} assessed sites, threshold {threshold:.4f}">'
    ]
    for i, c in enumerate(counts):
        h = height * c / top
        x = left + i * bar_w
        parts.append(
            f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" fill="#4a78b5">'
            f"<title>scores {i / bins:.2f}–{(i + 1) / bins:.2f}: {c} sites</title></rect>"
        )
    tx = left + min(max(threshold, 0.0), 1.0) * plot_w
    parts.append(f'<line x1="{tx:.1f}" y1="{head - 4}" x2="{tx:.1f}" y2="{base}" stroke="#d22" stroke-width="2"/>')
    anchor, dx = ("end", -5) if threshold > 0.6 else ("start", 5)
    parts.append(
        f'<text x="{tx + dx:.1f}" y="{head - 8}" font-size="11" fill="#b00" text-anchor="{anchor}">'
        f"threshold {threshold:.4f}</text>"
    )
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{head}" x2="{left}" y2="{base}" stroke="#333"/>')
    for value, y in ((top, head), (0, base)):
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{value}</text>')
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + v * plot_w
        parts.append(f'<text x="{x:.1f}" y="{base + 15}" font-size="11" text-anchor="middle">{v:.2f}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{base + 30}" font-size="11" text-anchor="middle" fill="#555">'
        f"score (bins of {1 / bins:.2f}); bar height: sites per bin</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _map_link(row: Mapping[str, str]) -> str:
    try:
        lon, lat = float(row.get("lon", "")), float(row.get("lat", ""))
    except ValueError:
        return ""
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return ""
    url = f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=19/{lat:.6f}/{lon:.6f}"
    return f'<a href="{_e(url)}" target="_blank" rel="noopener noreferrer">map ({lat:.5f}, {lon:.5f})</a>'


def timeline_strip(row: Mapping[str, str]) -> str:
    """A series site's dates as chips, the bracket (last intact, first damaged) outlined; ``""``
    for a two-epoch run."""
    from detect.series import timeline_dates

    dates = timeline_dates(row)
    if not dates:
        return ""
    chips = "".join(
        f'<span class="{d.state}{" bracket" if d.bracket else ""}" title="{_e(d.state + (": " + d.note if d.note else ""))}">'
        f"{_e(d.day)}</span>"
        for d in dates
    )
    if row.get("last_intact"):
        text = f"changed between {_e(row['last_intact'])} and {_e(row['first_damaged'])}"
    else:
        text = "no change bracketed"
    return f'<div class="timeline" aria-label="timeline">{chips}<span class="muted">{text}</span></div>'


def _site_block(row: Mapping[str, str]) -> str:
    title = _e(row["site_id"])
    if row.get("name"):
        title += f" — {_e(row['name'])}"
    if row.get("kind"):
        title += f' <span class="muted">({_e(row["kind"])})</span>'
    chips = ""
    if row.get("chip_before"):
        chips = '<div class="chips">' + "".join(
            f'<figure><img src="{_e(row[k])}" alt="{label} {_e(row["site_id"])}" title="{label}">'
            f"<figcaption>{label}</figcaption></figure>"
            for k, label in (("chip_before", "before"), ("chip_after", "after"), ("chip_heatmap", "change heatmap"))
            if row.get(k)
        ) + "</div>"
    else:
        chips = '<p class="muted">no chip written for this site (raise detect.chips_top_n)</p>'
    from detect.parts import parts_overlay_html

    parts_figure, parts_lines = parts_overlay_html(row)
    if parts_figure and chips.startswith('<div class="chips">'):
        chips = chips[: -len("</div>")] + parts_figure + "</div>"

    def when(text: str | None) -> str:
        return (text or "unknown").replace("T", " ").replace("Z", " UTC").replace("+00:00", " UTC")

    dates = f"before image taken {_e(when(row.get('before_time')))} · after image taken {_e(when(row.get('after_time')))}"
    notes = "".join(
        f"<div><dt>{_e(label)}</dt><dd>{_e(show(row[k]))}</dd></div>"
        for k, (label, show) in QUALITY_FIELDS.items()
        if row.get(k) not in (None, "")
    )
    reasons = split_caution(row.get("caution"))
    caution = f'<div class="caution">caution: {_e(", ".join(reasons))} (outside the training envelope)</div>' if reasons else ""
    return (
        f'<div class="site"><div>#{_e(row["rank"])} <b>{title}</b> '
        f'<span class="score">score {_e(row["score"])}</span> {_map_link(row)}</div>'
        f"{caution}{chips}{parts_lines}{timeline_strip(row)}<div class=\"muted\">{dates}</div><dl class=\"quality\">{notes}</dl></div>"
    )


@dataclass(frozen=True)
class ReportSummary:
    """What the report shows, gathered in one pass over the ranked rows.

    Attributes:
        sites: number of sites.
        status_counts: sites per status.
        reason_counts: ``cannot_assess`` sites per reason.
        scores: written scores of the assessed sites (for the histogram).
        flagged: number of flagged sites.
        shown: the first flagged rows in rank order (at most the report's limit).
        cautioned: assessed sites with a caution (outside the model's training envelope).
        caution_counts: sites per caution reason (``gsd_outside_training``, ...).
        cautioned_flagged: flagged sites with a caution.
    """

    sites: int
    status_counts: Mapping[str, int]
    reason_counts: Mapping[str, int]
    scores: Sequence[float]
    flagged: int
    shown: Sequence[Mapping[str, str]]
    cautioned: int = 0
    caution_counts: Mapping[str, int] = field(default_factory=dict)
    cautioned_flagged: int = 0


class ReportCollector:
    """Gathers a :class:`ReportSummary` from ranked rows fed one at a time."""

    def __init__(self, max_sites: int) -> None:
        self.max_sites = max_sites
        self._status: Counter[str] = Counter()
        self._reason: Counter[str] = Counter()
        self._scores = array("d")  # 8 bytes per assessed site (the histogram needs only these)
        self._flagged = 0
        self._shown: list[Mapping[str, str]] = []
        self._sites = 0
        self._cautioned = 0
        self._cautioned_flagged = 0
        self._caution: Counter[str] = Counter()

    def add(self, row: Mapping[str, str]) -> None:
        """Count one ranked row (rows must come in ``scores.csv`` order)."""
        self._sites += 1
        self._status[row["status"]] += 1
        if row["status"] != "ok":
            self._reason[row.get("reason", "")] += 1
        elif row.get("score"):
            self._scores.append(float(row["score"]))
        reasons = split_caution(row.get("caution"))
        if reasons:
            self._cautioned += 1
            self._caution.update({reason_name(r) for r in reasons})
            self._cautioned_flagged += row.get("flagged") == "true"
        if row.get("flagged") == "true":
            self._flagged += 1
            if len(self._shown) < self.max_sites:
                self._shown.append(dict(row))

    def summary(self) -> ReportSummary:
        return ReportSummary(
            sites=self._sites,
            status_counts=dict(self._status),
            reason_counts=dict(self._reason),
            scores=array("d", self._scores),
            flagged=self._flagged,
            shown=tuple(self._shown),
            cautioned=self._cautioned,
            caution_counts=dict(self._caution),
            cautioned_flagged=self._cautioned_flagged,
        )


def summarise_rows(rows: Sequence[Mapping[str, str]], max_sites: int = 200) -> ReportSummary:
    """A :class:`ReportSummary` of ranked rows held in memory."""
    collector = ReportCollector(max_sites)
    for row in rows:
        collector.add(row)
    return collector.summary()


def render_report(
    summary: ReportSummary,
    *,
    operating_point: OperatingPoint,
    model_info: Mapping[str, Any],
    run_info: Mapping[str, Any],
    calibration: Mapping[str, Any] | None = None,
) -> str:
    """The report page as HTML text.

    Args:
        summary: counts, scores and the flagged rows to show (:class:`ReportCollector`).
        operating_point: the threshold used for ``flagged``.
        model_info: ``arch``, ``weights_sha256``, ``path`` of the model.
        run_info: ``sites_file``, ``before``/``after`` counts, ``credits`` (the STAC
            catalogues' licence and provider lines, optional).
        calibration: the manifest's ``calibration`` record when ``sitewatch calibrate`` refitted
            the scores on this event's labelled sites; None = the model's own calibration
            (synthetic validation scenes).
    """
    status_counts = summary.status_counts
    reason_counts = summary.reason_counts
    scores = summary.scores
    shown = summary.shown
    n_flagged = summary.flagged
    out = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>sitewatch detection report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>sitewatch detection report</h1>",
        "<p>Scores are calibrated probabilities that a site is severely damaged (xBD major-damage "
        "or destroyed). They rank sites for people to verify; they are not verdicts.</p>",
        "<h2>Summary</h2><table>",
        f"<tr><th>sites</th><td>{summary.sites}</td></tr>",
        f"<tr><th>assessed (ok)</th><td>{status_counts.get('ok', 0)}</td></tr>",
        f"<tr><th>cannot assess</th><td>{status_counts.get('cannot_assess', 0)}</td></tr>",
        f"<tr><th>flagged</th><td>{n_flagged}</td></tr>",
        f"<tr><th>with a caution</th><td>{summary.cautioned} <span class=\"muted\">({summary.cautioned_flagged} of them flagged; "
        "outside the model's training envelope, score unchanged)</span></td></tr>",
        f"<tr><th>operating point</th><td>{_e(operating_point.name)}: score &ge; "
        f"{operating_point.threshold:.4f} <span class=\"muted\">({_e(operating_point.source)})</span></td></tr>",
        f"<tr><th>calibration</th><td>{calibration_text(calibration)}</td></tr>",
        f"<tr><th>model</th><td>{_e(model_info.get('arch', ''))} <code>{_e(str(model_info.get('weights_sha256', ''))[:16])}</code> "
        f"<span class=\"muted\">{_e(model_info.get('path', ''))}</span></td></tr>",
        f"<tr><th>sites file</th><td>{_e(run_info.get('sites_file', ''))}</td></tr>",
        f"<tr><th>rasters</th><td>{_e(run_info.get('before', 0))} before, {_e(run_info.get('after', 0))} after</td></tr>",
        *(f"<tr><th>imagery credit</th><td>{_e(c)}</td></tr>" for c in run_info.get("credits", ())),
        "</table>",
    ]
    if reason_counts:
        out.append("<h2>Why sites could not be assessed</h2><table><tr><th>reason</th><th>sites</th></tr>")
        for reason, n in sorted(reason_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"<tr><td>{_e(reason or 'unknown')}</td><td>{n}</td></tr>")
        out.append("</table>")
    if summary.caution_counts:
        out.append(
            "<h2>Cautions: pairs outside the model's training envelope</h2>"
            "<p class=\"muted\">The model scored these pairs, but their imagery lies outside what it was trained on; "
            "a caution does not change a score, a rank or a flag. Column <code>caution</code> of scores.csv.</p>"
            "<table><tr><th>reason</th><th>sites</th></tr>"
        )
        for reason, n in sorted(summary.caution_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"<tr><td>{_e(reason)}</td><td>{n}</td></tr>")
        out.append("</table>")
    if calibration:
        out.append("<h2>Calibration on this event</h2>")
        out.append(
            f"<p>Temperature {float(calibration.get('temperature', 1.0)):.3f} (was {float(calibration.get('previous_temperature', 1.0)):.3f}); "
            f"expected calibration error on the held-out labelled sites {_fixed3(calibration.get('ece_before'))} before, "
            f"{_fixed3(calibration.get('ece'))} after. "
            + (f"Screening threshold: {_e(calibration['screening_note'])}. " if calibration.get("screening_note") else "")
            + "Reliability with confidence intervals: "
            '<a href="calibration.txt">calibration.txt</a>.</p><img src="reliability.png" alt="reliability diagram" width="420" height="420">'
        )
    out.append("<h2>Score histogram</h2>")
    out.append(histogram_svg(scores, operating_point.threshold))
    out.append(f'<p class="muted">red line: the operating threshold {operating_point.threshold:.4f}</p>')
    out.append(f"<h2>Flagged sites, in rank order ({len(shown)} of {n_flagged} shown)</h2>")
    if not n_flagged:
        out.append("<p>No site reaches the operating threshold.</p>")
    out.extend(_site_block(r) for r in shown)
    out.append(
        '<p class="muted">Full list: scores.csv / scores.geojson in this folder. Provenance: '
        "manifest.json (check it with <code>sitewatch verify RUN</code>).</p></body></html>"
    )
    return "\n".join(out) + "\n"


def _fixed3(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def calibration_text(calibration: Mapping[str, Any] | None) -> str:
    """Which calibration the scores carry, as escaped HTML text for the report."""
    if not calibration:
        return "the model's own (fitted on synthetic validation scenes, not on this event)"
    labels = calibration.get("labels", {})
    return (
        f"this event's verified sample: {_e(calibration.get('n', '?'))} labelled sites "
        f"({_e(calibration.get('positives', '?'))} damaged), {_e(labels.get('source', ''))} "
        f"<code>{_e(str(labels.get('sha256', ''))[:12])}</code>, {_e(str(calibration.get('created', ''))[:10])}"
    )


def write_report(path: Path, summary: ReportSummary, **kwargs: Any) -> None:
    """Render :func:`render_report` into ``path``."""
    write_bytes_atomic(path, render_report(summary, **kwargs).encode("utf-8"))
