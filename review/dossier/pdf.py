"""``dossier.pdf``: a cover page, then one A4 page per site (continued on a further page only
when a site's texts do not fit, e.g. a long review history).

Written with fpdf2 (pure Python, maintained, lossless PNG embedding, vector drawing): the chips
are embedded as they are (their pixels are the ones hashed on the page) and the site marker and,
for a facility, its parts coloured by score (:mod:`detect.part_overlay`, as on the HTML page and in
the review app) are drawn over them as vector lines, never into the image.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from detect.part_overlay import NOT_ASSESSED_COLOUR, score_rgb
from review.dossier.config import DossierConfig
from review.dossier.evidence import RunEvidence, SiteEvidence
from review.dossier.html_pages import _deg, _when

log = logging.getLogger(__name__)

PAGE_W, PAGE_H = 210.0, 297.0
MARGIN = 12.0
GAP = 5.0
LINE = 3.3  # mm per text line at 7 pt
CYAN = (0, 229, 255)
MAGENTA = (255, 0, 255)


def _find_font(config: DossierConfig) -> tuple[Path | None, Path | None, Path | None]:
    """``(regular, bold, mono)`` font files (None where not found)."""
    candidates = [config.font] if config.font else list(config.font_search)
    for name in candidates:
        path = Path(name)
        if path.is_file():
            bold = path.with_name(path.stem + "-Bold" + path.suffix)
            mono = path.with_name(path.stem + "Mono" + path.suffix)
            return path, bold if bold.is_file() else None, mono if mono.is_file() else None
    if config.font:
        log.warning("dossier.font %s not found: the PDF uses Helvetica (Latin-1 only)", config.font)
    return None, None, None


class _Writer:
    """One PDF being written: fonts, text that fits them, columns that continue on new pages."""

    def __init__(self, config: DossierConfig, digest: str) -> None:
        from fpdf import FPDF

        self.pdf = FPDF(orientation="P", unit="mm", format="A4")
        self.pdf.set_auto_page_break(False)
        self.pdf.set_margins(MARGIN, MARGIN, MARGIN)
        self.digest = digest
        regular, bold, mono = _find_font(config)
        self.unicode = regular is not None
        self.replaced = False  # a character the font lacks was written as "?" on this page
        self.glyphs: set[int] | None = None
        if regular is not None:
            from fontTools.ttLib import TTFont

            with TTFont(str(regular), lazy=True) as font:
                self.glyphs = set(font.getBestCmap())
        if regular is not None:
            self.pdf.add_font("Sans", "", str(regular))
            self.pdf.add_font("Sans", "B", str(bold or regular))
            self.pdf.add_font("Mono", "", str(mono or regular))
            self.sans, self.mono = "Sans", "Mono"
        else:
            log.warning("no Unicode font found (dossier.font): the PDF uses Helvetica; characters outside Latin-1 show as ?")
            self.sans, self.mono = "Helvetica", "Courier"
        self.pdf.set_title("sitewatch evidence dossier")
        self.pdf.set_creator("sitewatch")

    def t(self, text: Any) -> str:
        """Text the current fonts can show."""
        s = "" if text is None else str(text)
        if self.unicode:
            if self.glyphs is not None and any(ord(c) not in self.glyphs and c != "\n" for c in s):
                self.replaced = True
                s = "".join(c if ord(c) in self.glyphs or c in "\n" else "?" for c in s)
            return s
        s = s.replace("–", "-").replace("—", "-").replace("≥", ">=").replace("×", "x").replace("′", "'").replace("″", '"')
        out = s.encode("latin-1", "replace").decode("latin-1")
        self.replaced = self.replaced or out != s
        return out

    def font(self, size: float, bold: bool = False, mono: bool = False) -> None:
        self.pdf.set_font(self.mono if mono else self.sans, "B" if bold and not mono else "", size)

    def footer(self, label: str) -> None:
        pdf = self.pdf
        self.font(6.5)
        pdf.set_text_color(90, 90, 90)
        pdf.set_xy(MARGIN, PAGE_H - 9)
        pdf.cell(PAGE_W - 2 * MARGIN - 30, 4, self.t(f"{label} · run digest {self.digest}"))
        pdf.set_xy(PAGE_W - MARGIN - 30, PAGE_H - 9)
        pdf.cell(30, 4, f"page {pdf.page_no()}", align="R")
        pdf.set_text_color(0, 0, 0)

    def new_page(self, kicker: str, title: str, label: str) -> float:
        """Start a page with its header; returns the y below it."""
        pdf = self.pdf
        pdf.add_page()
        self.font(7)
        pdf.set_text_color(85, 85, 85)
        pdf.set_xy(MARGIN, MARGIN)
        pdf.cell(0, 3.5, self.t(kicker.upper()))
        pdf.set_text_color(0, 0, 0)
        self.font(14, bold=True)
        pdf.set_xy(MARGIN, MARGIN + 4)
        pdf.multi_cell(PAGE_W - 2 * MARGIN, 6, self.t(title), new_x="LMARGIN", new_y="NEXT")
        y = pdf.get_y() + 1
        pdf.set_line_width(0.6)
        pdf.line(MARGIN, y, PAGE_W - MARGIN, y)
        self.footer(label)
        return y + 3


class _Column:
    """A column of key/value rows that continues on the next page when it runs out of room."""

    def __init__(self, w: _Writer, x: float, width: float, y: float, page: int, continued: str) -> None:
        self.w, self.x, self.width, self.y, self.page = w, x, width, y, page
        self.continued = continued

    def _room(self, h: float) -> None:
        pdf = self.w.pdf
        if self.y + h <= PAGE_H - 11:
            return
        self.page += 1
        if self.page > pdf.pages_count:
            pdf.page = pdf.pages_count
            self.y = self.w.new_page("sitewatch evidence dossier · continued", self.continued, self.continued)
        else:
            pdf.page = self.page
            self.y = MARGIN + 16
        pdf.page = self.page

    def heading(self, text: str) -> None:
        pdf = self.w.pdf
        self._room(9)
        pdf.page = self.page
        self.y += 1.5
        self.w.font(8, bold=True)
        pdf.set_xy(self.x, self.y)
        pdf.cell(self.width, 4, self.w.t(text.upper()))
        pdf.set_line_width(0.2)
        pdf.line(self.x, self.y + 4.4, self.x + self.width, self.y + 4.4)
        self.y += 5.6

    def row(self, label: str, value: Any, *, mono: bool = False, bold: bool = False, warn: bool = False, label_w: float | None = None) -> None:
        pdf = self.w.pdf
        lw = self.width * 0.34 if label_w is None else label_w
        vw = self.width - lw
        text = self.w.t(value)
        self.w.font(6.5 if mono else 7, bold=bold, mono=mono)
        wrap = "CHAR" if mono else "WORD"
        vh = pdf.multi_cell(vw, LINE, text, dry_run=True, output="HEIGHT", wrapmode=wrap, align="L")
        self.w.font(7)
        lh = pdf.multi_cell(lw - 1, LINE, self.w.t(label), dry_run=True, output="HEIGHT", align="L")
        h = max(vh, lh) + 0.6
        self._room(h)
        pdf.page = self.page
        pdf.set_text_color(80, 80, 80)
        pdf.set_xy(self.x, self.y)
        pdf.multi_cell(lw - 1, LINE, self.w.t(label), align="L")
        pdf.set_text_color(177, 0, 38) if warn else pdf.set_text_color(0, 0, 0)
        self.w.font(6.5 if mono else 7, bold=bold, mono=mono)
        pdf.set_xy(self.x + lw, self.y)
        pdf.multi_cell(vw, LINE, text, wrapmode=wrap, align="L")
        pdf.set_text_color(0, 0, 0)
        self.y += h

    def row3(self, label: str, a: Any, b: Any, *, mono: bool = False, bold: bool = False, warn: tuple[bool, bool] = (False, False)) -> None:
        """A label and two values side by side (before, after)."""
        pdf = self.w.pdf
        lw = self.width * 0.22
        vw = (self.width - lw) / 2
        wrap = "CHAR" if mono else "WORD"
        texts = [self.w.t(a), self.w.t(b)]
        self.w.font(6 if mono else 7, bold=bold, mono=mono)
        h = max(pdf.multi_cell(vw - 1.5, LINE * (0.85 if mono else 1), t, dry_run=True, output="HEIGHT", wrapmode=wrap, align="L") for t in texts)
        self.w.font(7)
        h = max(h, pdf.multi_cell(lw - 1, LINE, self.w.t(label), dry_run=True, output="HEIGHT", align="L")) + 0.6
        self._room(h)
        pdf.page = self.page
        pdf.set_text_color(80, 80, 80)
        pdf.set_xy(self.x, self.y)
        pdf.multi_cell(lw - 1, LINE, self.w.t(label), align="L")
        for k, t in enumerate(texts):
            pdf.set_text_color(177, 0, 38) if warn[k] else pdf.set_text_color(0, 0, 0)
            self.w.font(6 if mono else 7, bold=bold, mono=mono)
            pdf.set_xy(self.x + lw + k * vw, self.y)
            pdf.multi_cell(vw - 1.5, LINE * (0.85 if mono else 1), t, wrapmode=wrap, align="L")
        pdf.set_text_color(0, 0, 0)
        self.y += h

    def pairs(self, items: Sequence[tuple[str, str]]) -> None:
        """Short label/value pairs, two to a line."""
        pdf = self.w.pdf
        cw = self.width / 2
        lw, vw = cw * 0.6, cw * 0.4
        for k in range(0, len(items), 2):
            chunk = items[k:k + 2]
            self.w.font(6.5)
            h = max(max(pdf.multi_cell(lw - 1, LINE * 0.9, self.w.t(l), dry_run=True, output="HEIGHT", align="L"),
                        pdf.multi_cell(vw - 1, LINE * 0.9, self.w.t(v), dry_run=True, output="HEIGHT", align="L"))
                    for l, v in chunk) + 0.4
            self._room(h)
            pdf.page = self.page
            for j, (label, value) in enumerate(chunk):
                x = self.x + j * cw
                pdf.set_text_color(80, 80, 80)
                pdf.set_xy(x, self.y)
                pdf.multi_cell(lw - 1, LINE * 0.9, self.w.t(label), align="L")
                pdf.set_text_color(0, 0, 0)
                pdf.set_xy(x + lw, self.y)
                pdf.multi_cell(vw - 1, LINE * 0.9, self.w.t(value), align="L")
            self.y += h

    def text(self, value: str, *, size: float = 7) -> None:
        pdf = self.w.pdf
        self.w.font(size)
        h = pdf.multi_cell(self.width, LINE, self.w.t(value), dry_run=True, output="HEIGHT", align="L") + 0.6
        self._room(h)
        pdf.page = self.page
        pdf.set_xy(self.x, self.y)
        pdf.multi_cell(self.width, LINE, self.w.t(value), align="L")
        self.y += h


def _marker(w: _Writer, e: SiteEvidence, x: float, y: float, size: float, context: bool) -> None:
    """Draw the site marker (and, on a context view, the chip's outline) over an image."""
    pdf = w.pdf
    m = e.marker
    extent = m.context_extent_m if context else m.extent_m
    s = size / extent
    cx, cy = x + size / 2, y + size / 2

    def stroke(draw: Any) -> None:
        pdf.set_draw_color(0, 0, 0)
        pdf.set_line_width(0.9)
        draw()
        pdf.set_draw_color(*CYAN)
        pdf.set_line_width(0.45)
        draw()

    if context:
        pdf.set_draw_color(255, 255, 255)
        pdf.set_line_width(0.3)
        pdf.set_dash_pattern(dash=1.2, gap=0.8)
        half = m.extent_m / 2 * s
        pdf.rect(cx - half, cy - half, 2 * half, 2 * half)
        pdf.set_dash_pattern()
    if m.kind == "footprint":
        for ring in m.rings:
            pts = []
            for pair in ring.split():
                east, minus_north = (float(v) for v in pair.split(","))
                pts.append((cx + east * s, cy + minus_north * s))
            stroke(lambda pts=pts: pdf.polygon(pts, style="D"))
    elif m.kind == "ring":
        r = m.radius_m * s
        stroke(lambda: pdf.ellipse(cx - r, cy - r, 2 * r, 2 * r, style="D"))
    else:
        a, b = m.cross
        if context:
            a, b = a * 1.5, b * 1.5
        a, b = a * s, b * s

        def cross() -> None:
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                pdf.line(cx + dx * a, cy + dy * a, cx + dx * b, cy + dy * b)

        stroke(cross)
    pdf.set_draw_color(0, 0, 0)


def _parts(w: _Writer, e: SiteEvidence, x: float, y: float, size: float, context: bool) -> None:
    """Draw a facility's parts over an image: outlined (and lightly filled) in the colour of their
    score, the highest thicker, those not assessed grey and dashed, those the reviewers marked
    damaged in magenta."""
    if e.parts is None or not e.parts.has_parts:
        return
    pdf = w.pdf
    m = e.marker
    extent = m.context_extent_m if context else m.extent_m
    grey = tuple(int(NOT_ASSESSED_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    marked = set(e.marked_parts)
    for part in e.parts.drawing_order():
        px, py, side = part.square_px(extent, size)
        rx, ry = x + px, y + py
        # clip to the image: a part may reach past a tightly cut chip
        x0, y0, x1, y1 = max(rx, x), max(ry, y), min(rx + side, x + size), min(ry + side, y + size)
        if x1 <= x0 or y1 <= y0:
            continue
        if part.assessed:
            colour, width = score_rgb(part.score if part.score is not None else 0.0), 0.6 if part.top else 0.3
        else:
            colour, width = grey, 0.2
        pdf.set_draw_color(*colour)
        pdf.set_line_width(width)
        if part.assessed or part.name in marked:
            pdf.set_fill_color(*(MAGENTA if part.name in marked else colour))
            with pdf.local_context(fill_opacity=0.25 if part.name in marked else 0.12):
                pdf.rect(x0, y0, x1 - x0, y1 - y0, style="F")
        else:
            pdf.set_dash_pattern(dash=0.8, gap=0.6)
        pdf.rect(x0, y0, x1 - x0, y1 - y0, style="D")
        pdf.set_dash_pattern()
        if not context and side > 6:
            w.font(4.5, bold=part.top)
            pdf.set_text_color(255, 255, 255)
            pdf.set_xy(x0 + 0.4, y0 + 0.4)
            pdf.cell(side * 0.6, 2.2, w.t(part.name + (" (top)" if part.top else "")))
            pdf.set_text_color(0, 0, 0)
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.2)


def _image(w: _Writer, e: SiteEvidence, key: str, x: float, y: float, size: float, caption: str) -> float:
    """Place one image with its marker and caption; returns the y below the caption."""
    pdf = w.pdf
    img = e.image(key)
    if img is None:
        pdf.set_draw_color(160, 160, 160)
        pdf.rect(x, y, size, size)
        w.font(7)
        pdf.set_xy(x + 2, y + size / 2 - 2)
        why = next((n for n in e.image_notes if n.startswith("no ")), "")
        pdf.multi_cell(size - 4, LINE, w.t(f"no {caption} chip" + (f"\n({why})" if why else "")), align="C")
        pdf.set_draw_color(0, 0, 0)
        return y + size + 2
    pdf.image(io.BytesIO(img.png), x=x, y=y, w=size, h=size)
    pdf.set_line_width(0.2)
    pdf.rect(x, y, size, size)
    if key != "heatmap":
        _marker(w, e, x, y, size, key.startswith("context"))
        _parts(w, e, x, y, size, key.startswith("context"))
    px_w, px_h = img.size_px
    gsd = img.extent_m / px_w if px_w else math.nan
    epoch = key.removeprefix("context_")
    scene = next((s for s in e.scenes if s.epoch == epoch), None)
    when = f" · {_when(scene.acquired)}" if scene and key in ("before", "after") else ""
    w.font(6.5, bold=True)
    pdf.set_xy(x, y + size + 0.8)
    pdf.cell(size, 3, w.t(caption + when))
    w.font(6)
    pdf.set_xy(x, y + size + 3.8)
    origin = "run's chip" if img.source == "detect" else "cut for this dossier"
    pdf.multi_cell(size, 2.7, align="L", text=w.t(f"{px_w} × {px_h} px at {gsd:.2f} m/pixel, {img.extent_m:.0f} m across · {origin}"))
    w.font(5.2, mono=True)
    pdf.set_x(x)
    pdf.multi_cell(size, 2.4, img.sha256, wrapmode="CHAR")
    return pdf.get_y() + 1


def _site_pages(w: _Writer, e: SiteEvidence, run: RunEvidence, number: int, total: int, n_ranked: int, cfg: DossierConfig) -> None:
    w.replaced = False
    label = f"site {e.site.site_id}"
    title = e.title + (f"  ({e.site.kind})" if e.site.kind else "")
    y = w.new_page(f"sitewatch evidence dossier · site {number} of {total} · run {run.run.path.name}", title, label)
    size = cfg.pdf_chip_mm
    if e.parts is not None:
        size = min(size, 0.85 * cfg.pdf_chip_mm)  # room for the facility's lines on the same page
    usable = PAGE_W - 2 * MARGIN
    # row 1: before, after, heatmap (when there is one)
    keys = [("before", "before"), ("after", "after")] + ([("heatmap", "change heatmap")] if e.image("heatmap") else [])
    size1 = min(size, (usable - GAP * (len(keys) - 1)) / len(keys))
    bottom = y
    for k, (key, caption) in enumerate(keys):
        bottom = max(bottom, _image(w, e, key, MARGIN + k * (size1 + GAP), y, size1, caption))
    y = bottom + 1
    # row 2: context before / after, and the location beside them
    size2 = min(size1, 46.0)
    bottom = y
    has_context = e.image("context_before") is not None
    if has_context:
        for k, key in enumerate(("context_before", "context_after")):
            epoch = key.removeprefix("context_")
            bottom = max(bottom, _image(w, e, key, MARGIN + k * (size2 + GAP), y, size2, f"context, {epoch}"))
    side_x = MARGIN + (2 * (size2 + GAP) if has_context else 0)
    side = _Column(w, side_x, PAGE_W - MARGIN - side_x, y, w.pdf.page, f"{label} (continued)")
    side.heading("Location")
    side.row("latitude, longitude", f"{e.coords.decimal} (WGS84)")
    side.row("DMS", e.coords.dms or "–")
    side.row("site marked by", e.marker.describe)
    side.row("chip side", f"{e.marker.extent_m:.1f} m; context {e.marker.context_extent_m:.1f} m (dashed square: the chip)")
    side.heading("Assessment")
    threshold = run.operating_point.get("threshold")
    thr = f"{threshold:g}" if isinstance(threshold, float) else "not recorded"
    if e.site.ok:
        side.row("score", f"{e.score}  (logit {e.logit})" + ("  FLAGGED" if e.flagged else ""), bold=True, warn=e.flagged)
    else:
        side.row("score", f"not assessed: {e.site.reason or e.site.status}", bold=True)
    side.row("rank", f"{e.site.rank if e.site.rank > 0 else '–'} of {n_ranked} assessed")
    side.row("operating point", f"{run.operating_point.get('name')}: flagged at score ≥ {thr} ({run.operating_point.get('source')})")
    if e.parts is not None:
        side.heading("Facility: parts and surroundings")
        if e.parts.planned is not None:
            side.row("parts", e.parts.parts_text(), label_w=22)
        if e.parts.has_context:
            side.row("surroundings", f"{e.parts.context_share_text()}: {e.parts.targeted_text()}", warn=e.parts.targeted == "true",
                     label_w=22)
        if e.parts.has_parts:
            c = e.consensus
            marks = "; ".join(f"{who}: {', '.join(ps)}" for who, ps in c.part_marks) if c is not None else ""
            decided = ", ".join(e.marked_parts) or "none marked"
            side.row("damaged parts", decided + (f" (marked by {marks})" if marks else ""), bold=bool(e.marked_parts), label_w=22)
            side.text("parts coloured by score, 0 green to 1 red; thick: highest; dashed grey: not assessed; "
                      "magenta fill: marked damaged by the reviewers", size=5.5)
    for note in e.image_notes:
        side.text(note, size=6)
    if w.replaced:
        side.text("Characters the PDF font lacks are shown as ?; the site's HTML page has every name exactly.", size=6)
    w.replaced = False
    y = max(bottom, side.y if side.page == w.pdf.page else bottom) + 1
    page = side.page
    if side.page != w.pdf.pages_count:
        page = w.pdf.pages_count
    w.pdf.page = page
    # the rest in two columns
    half = (usable - GAP) / 2
    left = _Column(w, MARGIN, half, y, page, f"{label} (continued)")
    right = _Column(w, MARGIN + half + GAP, half, y, page, f"{label} (continued)")
    left.heading("Calibration")
    left.text(run.calibration, size=6.5)
    left.heading("Review")
    if e.verdicts:
        for v in e.verdicts:
            note = f" — “{v.note}”" if v.note else ""
            marks = f"; damaged parts {', '.join(v.damaged_parts)}" if v.damaged_parts else ""
            left.row(_when(v.created_at.split(".")[0]), f"{v.reviewer} ({v.kind}): {v.verdict}{marks}{note}", label_w=half * 0.34)
    else:
        left.text("No reviewer has given a verdict on this site.")
    c = e.consensus
    decision = f"{c.final} ({c.status})" if c and c.final else (f"none yet ({c.status})" if c else "not reviewed")
    left.row("decision", decision, bold=bool(c and c.final))
    left.row("adjudication", f"{c.adjudication} by {c.adjudicator}" if c and c.adjudication else "none")
    left.row("verdict store", run.chain, mono=run.chain.startswith("intact"))
    right.heading("Acquisitions")
    b, a = e.scenes
    right.row3("", "before", "after", bold=True)
    right.row3("acquired", *(_when(s.acquired) + (f" (from {s.time_source})" if s.time_source else "") for s in e.scenes))
    right.row3("sensor", b.facts["sensor"], a.facts["sensor"])
    right.row3("catalogue id", b.facts["catalogue_id"], a.facts["catalogue_id"])
    right.row3("off-nadir angle", _deg(b.facts["off_nadir_deg"]), _deg(a.facts["off_nadir_deg"]))
    right.row3("native resolution", b.native_gsd, a.native_gsd)
    right.row3("scene", b.scene_id, a.scene_id)
    right.row3("scene SHA-256", b.sha256, a.sha256, mono=True)
    right.row3("file re-checked", *(_recheck(s.still_matches) for s in e.scenes),
               warn=(b.still_matches is False, a.still_matches is False))
    right.row3("imagery credit", b.facts["credit"], a.facts["credit"])
    right.heading("Provenance")
    right.row("run digest", run.digest, mono=True)
    right.row("run fingerprint", run.fingerprint, mono=True)
    right.row("model", f"{run.model.get('arch')} — weights {run.model.get('weights_sha256')}", mono=True)
    right.row("imagery credit", e.credit)
    right.row("software", f"sitewatch {run.software}")
    # the quality figures go where there is more room left
    col = min((left, right), key=lambda c: (c.page, c.y))
    col.heading("Alignment and quality")
    full, short = _quality_items(e)
    for label, value, warn in full:
        col.row(label, value, warn=warn)
    col.pairs(short)


def _quality_items(e: SiteEvidence) -> tuple[list[tuple[str, str, bool]], list[tuple[str, str]]]:
    """The quality rows for the PDF: ``(label, value, warn)`` rows that need a full line (a
    warning with its hint, long values) and short ``(label, value)`` pairs; before/after columns
    of the same figure are merged into one ``before / after`` pair."""
    shown = {"before_time", "after_time", "before_scene", "after_scene", "before_gsd_m", "after_gsd_m",
             "chip_size_m", "chip_gsd_m", "radius_m"}
    rows = {f.column: f for f in e.quality if f.column not in shown}
    merged: list[tuple[str, str]] = []
    for column, f in list(rows.items()):
        if column.startswith("before_") and f"after_{column[7:]}" in rows:
            other = rows.pop(f"after_{column[7:]}")
            rows.pop(column)
            merged.append((f.label.replace("before ", "", 1) + " (before / after)", f"{f.value} / {other.value}"))
    if "shift_dy_px" in rows and "shift_dx_px" in rows:
        dy, dx = rows.pop("shift_dy_px"), rows.pop("shift_dx_px")
        merged.append(("shift in chip pixels (rows, columns)", f"{dy.value}, {dx.value}"))
    full = [(f.label, f.value + (f" — {f.hint}" if f.hint and f.warn else ""), f.warn)
            for f in rows.values() if f.warn or len(f.value) > 24]
    short = [(f.label, f.value) for f in rows.values() if not (f.warn or len(f.value) > 24)] + merged
    return full, short


def _recheck(still: bool | None) -> str:
    return "file not on this machine" if still is None else "unchanged since the run" if still else "CHANGED since the run"


def _cover(w: _Writer, rows: Sequence[SiteEvidence], run: RunEvidence, selection: str, created: str) -> list[tuple[int, float]]:
    """Write the cover; returns where each site's line ends (page, y), for its page number."""
    y = w.new_page("sitewatch evidence dossier", f"{len(rows)} site{'' if len(rows) == 1 else 's'} from run {run.run.path.name}", "cover")
    col = _Column(w, MARGIN, PAGE_W - 2 * MARGIN, y, w.pdf.page, "cover (continued)")
    col.row("selection", selection, label_w=40)
    col.row("written", created, label_w=40)
    col.row("run folder", str(run.run.path), label_w=40)
    col.row("run digest", f"{run.digest} (SHA-256 of manifest.json)", mono=True, label_w=40)
    col.row("model", f"{run.model.get('arch')} — weights SHA-256 {run.model.get('weights_sha256')}", label_w=40)
    threshold = run.operating_point.get("threshold")
    thr = f"{threshold:g}" if isinstance(threshold, float) else "not recorded"
    col.row("operating point", f"{run.operating_point.get('name')}: flagged at score ≥ {thr} ({run.operating_point.get('source')})", label_w=40)
    col.row("calibration", run.calibration, label_w=40)
    col.row("verdict store", run.chain, label_w=40)
    col.text("Scores are calibrated probabilities that a site is severely damaged (xBD major-damage or destroyed). "
             "They rank sites for people to verify; the reviewers' verdicts and the adjudication are on each page. "
             "Every file of this dossier is listed with its SHA-256 in manifest.json: `sitewatch verify DOSSIER_FOLDER` checks them.")
    col.heading("Sites (one page each, in this order)")
    places: list[tuple[int, float]] = []
    for i, e in enumerate(rows, start=1):
        c = e.consensus
        decided = c.final if c and c.final else "–"
        rank = e.site.rank if e.site.rank > 0 else "–"
        col.row(f"{i}. rank {rank}", f"{e.title} · score {e.score}{' · flagged' if e.flagged else ''} · {e.site.status} · decision {decided}", label_w=40)
        places.append((col.page, col.y - 0.6 - LINE))
    return places


def write_pdf(path: Path, rows: Sequence[SiteEvidence], run: RunEvidence, *, selection: str, created: str,
              n_ranked: int, config: DossierConfig) -> tuple[list[int], int]:
    """Write ``dossier.pdf``; returns the first page number of each site's page and the page count."""
    w = _Writer(config, run.digest)
    places = _cover(w, rows, run, selection, created)
    firsts = []
    for i, e in enumerate(rows, start=1):
        w.pdf.page = w.pdf.pages_count
        firsts.append(w.pdf.pages_count + 1)
        _site_pages(w, e, run, i, len(rows), n_ranked, config)
    for (page, y), first in zip(places, firsts):  # the cover's list says on which page each site is
        w.pdf.page = page
        w.font(7, bold=True)
        w.pdf.set_xy(PAGE_W - MARGIN - 20, y)
        w.pdf.cell(20, LINE, f"page {first}", align="R")
    w.pdf.page = w.pdf.pages_count
    tmp = path.with_name(path.name + ".tmp")
    w.pdf.output(str(tmp))
    tmp.replace(path)
    return firsts, w.pdf.pages_count
