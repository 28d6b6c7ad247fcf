"""The dossier's HTML pages: one self-contained page per site (images embedded as data URIs,
the site marker as SVG over the untouched chip pixels) and an ``index.html`` cover page.

Every text that comes from the input, the run or a reviewer is HTML-escaped (Jinja2 autoescape).
"""

from __future__ import annotations

import base64
from typing import Any, Sequence

from jinja2 import Environment

from review.dossier.evidence import RunEvidence, SiteEvidence

_CSS = """
*{box-sizing:border-box}
body{font-family:"DejaVu Sans",system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;margin:0;background:#eceae6}
.page{background:#fff;max-width:1040px;margin:18px auto;padding:28px 34px;box-shadow:0 1px 4px rgba(0,0,0,.2)}
header.doc{border-bottom:3px solid #1b1b1b;padding-bottom:8px;margin-bottom:14px}
header.doc .kicker{font-size:11px;letter-spacing:.12em;text-transform:uppercase;color:#555}
header.doc h1{font-size:22px;margin:4px 0 2px}
header.doc .sub{font-size:12px;color:#444}
h2{font-size:14px;text-transform:uppercase;letter-spacing:.06em;border-bottom:1px solid #999;padding-bottom:3px;margin:20px 0 8px}
.figs{display:flex;gap:14px;flex-wrap:wrap}
figure{margin:0}
figure .frame{position:relative;border:1px solid #333;line-height:0}
figure img{display:block;image-rendering:pixelated;image-rendering:crisp-edges}
figure svg{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none}
svg .halo{fill:none;stroke:rgba(0,0,0,.85);stroke-width:4px;vector-effect:non-scaling-stroke}
svg .line{fill:none;stroke:#00e5ff;stroke-width:2px;vector-effect:non-scaling-stroke}
svg .chip{fill:none;stroke:#fff;stroke-width:1.5px;stroke-dasharray:6 4;vector-effect:non-scaling-stroke}
figcaption{font-size:11px;color:#333;margin-top:4px;line-height:1.35;max-width:100%}
figcaption b{font-size:12px;color:#000}
.hash{font-family:"DejaVu Sans Mono",ui-monospace,Menlo,Consolas,monospace;font-size:10.5px;word-break:break-all}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{border:1px solid #c8c8c8;padding:4px 7px;text-align:left;vertical-align:top}
th{background:#f3f2ef;font-weight:600;width:30%}
table.list th{width:auto}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.score{font-size:26px;font-weight:700}
.flag{display:inline-block;background:#b10026;color:#fff;font-size:11px;padding:1px 7px;border-radius:3px;letter-spacing:.05em;text-transform:uppercase}
.ok{color:#1a7a2e}.bad{color:#b10026;font-weight:700}
.note{font-size:11.5px;color:#555}
.legend{font-size:11.5px;color:#333;margin:6px 0 0}
.swatch{display:inline-block;width:14px;height:10px;border:2px solid #00e5ff;box-shadow:0 0 0 2px rgba(0,0,0,.85);margin-right:6px;vertical-align:middle}
svg .part rect{fill-opacity:.12;stroke-width:1.5px;vector-effect:non-scaling-stroke}
svg .part.top rect{stroke-width:3.5px}
svg .part.na rect{fill:none;stroke-dasharray:4 3;stroke-width:1px}
svg .part.marked rect{fill:#ff00ff;fill-opacity:.3;stroke-width:3px}
svg .part text{fill:#fff;paint-order:stroke;stroke:rgba(0,0,0,.8);stroke-width:2px;vector-effect:non-scaling-stroke;font-family:"DejaVu Sans",Arial,sans-serif}
.ramp{display:inline-block;width:70px;height:9px;vertical-align:middle;border:1px solid #999;background:linear-gradient(to right,#00c820,#ffc820 50%,#ff0020)}
.markswatch{display:inline-block;width:14px;height:9px;vertical-align:middle;border:2px solid #ff00ff;background:rgba(255,0,255,.25)}
.targeted-true{color:#b10026;font-weight:700}
footer{margin-top:22px;border-top:1px solid #999;padding-top:6px;font-size:10.5px;color:#555}
a{color:#0b4f8a}
@media print{body{background:#fff}.page{box-shadow:none;margin:0;max-width:none}}
"""

_MARKER = """{% macro marker(m, context) -%}
<svg viewBox="{{ m.view_box(context) }}" preserveAspectRatio="none" aria-hidden="true">
{%- if context %}<rect class="chip" x="{{ '%.3f'|format(-m.extent_m / 2) }}" y="{{ '%.3f'|format(-m.extent_m / 2) }}" width="{{ '%.3f'|format(m.extent_m) }}" height="{{ '%.3f'|format(m.extent_m) }}"/>{% endif %}
{%- if m.kind == 'footprint' %}{% for r in m.rings %}<polygon class="halo" points="{{ r }}"/><polygon class="line" points="{{ r }}"/>{% endfor %}
{%- elif m.kind == 'ring' %}<circle class="halo" cx="0" cy="0" r="{{ '%.3f'|format(m.radius_m) }}"/><circle class="line" cx="0" cy="0" r="{{ '%.3f'|format(m.radius_m) }}"/>
{%- else %}{% set a, b = m.cross %}{% if context %}{% set a, b = a * 1.5, b * 1.5 %}{% endif %}
<path class="halo" d="M {{ a }} 0 H {{ b }} M {{ -a }} 0 H {{ -b }} M 0 {{ a }} V {{ b }} M 0 {{ -a }} V {{ -b }}"/><path class="line" d="M {{ a }} 0 H {{ b }} M {{ -a }} 0 H {{ -b }} M 0 {{ a }} V {{ b }} M 0 {{ -a }} V {{ -b }}"/>
{%- endif %}</svg>
{%- endmacro %}"""

_PARTS = """{% macro parts(p, m, context, marked) -%}
<svg class="parts" viewBox="{{ m.view_box(context) }}" preserveAspectRatio="none" aria-hidden="true">
{%- for b in p.drawing_order() %}{% set x, y, w = b.square_m() %}<g class="part{{ ' top' if b.top else '' }}{{ ' na' if not b.assessed else '' }}{{ ' marked' if b.name in marked else '' }}"><rect x="{{ '%.3f'|format(x) }}" y="{{ '%.3f'|format(y) }}" width="{{ '%.3f'|format(w) }}" height="{{ '%.3f'|format(w) }}" fill="{{ b.colour }}" stroke="{{ b.colour }}"/>
{%- if not context %}<text x="{{ '%.3f'|format(x + w * 0.06) }}" y="{{ '%.3f'|format(y + w * 0.2) }}" font-size="{{ '%.3f'|format(w * 0.16) }}">{{ b.name }}{{ ' ▲' if b.top else '' }}</text>{% endif %}</g>
{%- endfor %}</svg>
{%- endmacro %}"""

_SITE = _MARKER + _PARTS + """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Evidence dossier · {{ e.title }}</title><style>{{ css }}</style></head>
<body><div class="page">
<header class="doc">
  <div class="kicker">sitewatch evidence dossier · site {{ number }} of {{ total }}</div>
  <h1>{{ e.site.site_id }}{% if e.site.name %} — {{ e.site.name }}{% endif %}{% if e.site.kind %} <span class="note">({{ e.site.kind }})</span>{% endif %}</h1>
  <div class="sub">run <b>{{ run.run.path.name }}</b> · run digest (SHA-256 of manifest.json) <span class="hash">{{ run.digest }}</span></div>
</header>

<div class="cols">
<section>
<h2>Assessment</h2>
<table>
<tr><th>score</th><td>{% if e.site.ok %}<span class="score">{{ e.score }}</span> <span class="note">logit {{ e.logit }}</span>{% else %}<b>not assessed</b>{% endif %}
  {% if e.flagged %} <span class="flag">flagged</span>{% endif %}</td></tr>
<tr><th>meaning</th><td>calibrated probability that the site is severely damaged (xBD major-damage or destroyed); a ranking for people to verify, not a verdict</td></tr>
<tr><th>rank</th><td>{{ e.site.rank if e.site.rank > 0 else '–' }} of {{ n_ranked }} assessed sites</td></tr>
<tr><th>status</th><td>{{ e.site.status }}{% if e.site.reason %} — {{ e.site.reason }}{% endif %}</td></tr>
<tr><th>operating point</th><td>{{ run.operating_point.name }}: flagged at score ≥ {{ threshold }} <span class="note">({{ run.operating_point.source }})</span></td></tr>
<tr><th>calibration</th><td>{{ run.calibration }}</td></tr>
</table>
</section>
<section>
<h2>Location</h2>
<table>
<tr><th>latitude, longitude</th><td>{{ e.coords.decimal }} <span class="note">(WGS84, decimal degrees)</span></td></tr>
<tr><th>DMS</th><td>{{ e.coords.dms or '–' }}</td></tr>
<tr><th>site marked by</th><td><span class="swatch"></span>{{ e.marker.describe }}</td></tr>
<tr><th>chip side on the ground</th><td>{{ '%.1f'|format(e.marker.extent_m) }} m (context view {{ '%.1f'|format(e.marker.context_extent_m) }} m)</td></tr>
</table>
</section>
</div>

<h2>Imagery</h2>
<div class="figs">
{%- for img in main_images %}
<figure style="width:{{ img.width }}px">
  <div class="frame"><img src="{{ img.uri }}" width="{{ img.width }}" height="{{ img.height }}" alt="{{ img.caption }}">{% if img.marked %}{{ marker(e.marker, false) }}{% if e.parts and e.parts.has_parts %}{{ parts(e.parts, e.marker, false, e.marked_parts) }}{% endif %}{% endif %}</div>
  <figcaption><b>{{ img.caption }}</b>{% if img.when %} · {{ img.when }}{% endif %}<br>{{ img.px }} px at {{ img.gsd }} · {{ img.origin }}<br><span class="hash">SHA-256 {{ img.sha }}</span></figcaption>
</figure>
{%- endfor %}
</div>
{% if context_images %}
<div class="figs" style="margin-top:12px">
{%- for img in context_images %}
<figure style="width:{{ img.width }}px">
  <div class="frame"><img src="{{ img.uri }}" width="{{ img.width }}" height="{{ img.height }}" alt="{{ img.caption }}">{{ marker(e.marker, true) }}{% if e.parts and e.parts.has_parts %}{{ parts(e.parts, e.marker, true, e.marked_parts) }}{% endif %}</div>
  <figcaption><b>{{ img.caption }}</b><br>{{ img.px }} px, {{ '%.0f'|format(e.marker.context_extent_m) }} m across; dashed square: the chip · {{ img.origin }}<br><span class="hash">SHA-256 {{ img.sha }}</span></figcaption>
</figure>
{%- endfor %}
</div>{% endif %}
<p class="legend"><span class="swatch"></span>the site: {{ e.marker.describe }}. Marker drawn over the images, never into them: the pixels are those hashed above. North is up.</p>
{% if e.parts and e.parts.has_parts %}<p class="legend" id="parts-legend"><span class="ramp"></span> parts: the model's score of each {{ '%g'|format(e.parts.parts[0].size_m) }} m part, 0 (green) to 1 (red); thick outline: highest (▲); grey dashed: not assessed; <span class="markswatch"></span> (magenta fill) marked damaged by the reviewers.</p>{% endif %}
{% for n in e.image_notes %}<p class="note">{{ n }}</p>{% endfor %}
{% if e.parts %}
<h2>Facility: parts and surroundings</h2>
<table id="facility">
{% if e.parts.planned is not none %}<tr><th>parts</th><td>{{ e.parts.parts_text() }}</td></tr>{% endif %}
{% if e.parts.has_parts %}<tr><th>part scores</th><td>{% for b in e.parts.parts %}<span class="{{ 'bad' if b.top else '' }}">{{ b.label }}</span>{{ '; ' if not loop.last else '' }}{% endfor %}</td></tr>{% endif %}
{% if e.parts.has_context %}<tr><th>surroundings</th><td>{{ e.parts.context_share_text() }}</td></tr>
<tr><th>hit alone?</th><td class="targeted-{{ e.parts.targeted or 'unknown' }}">{{ e.parts.targeted_text() }}</td></tr>{% endif %}
{% if e.parts.has_parts %}<tr><th>damaged parts (reviewers)</th><td>{% if e.marked_parts %}<b>{{ e.marked_parts|join(', ') }}</b>{% if e.consensus.adjudicated_parts %} (adjudicated){% endif %}{% else %}none marked{% endif %}
{%- if e.consensus and e.consensus.part_marks %}<br><span class="note">marked by {% for who, ps in e.consensus.part_marks %}{{ who }}: {{ ps|join(', ') }}{{ '; ' if not loop.last else '' }}{% endfor %}</span>{% endif %}</td></tr>{% endif %}
</table>
{% endif %}

<h2>Acquisitions</h2>
<table class="list">
<tr><th></th>{% for s in e.scenes %}<th>{{ s.epoch }}</th>{% endfor %}</tr>
<tr><th>acquired</th>{% for s in e.scenes %}<td>{{ when(s.acquired) }}{% if s.time_source %} <span class="note">(from {{ s.time_source }})</span>{% endif %}</td>{% endfor %}</tr>
<tr><th>sensor</th>{% for s in e.scenes %}<td>{{ s.facts.sensor }}</td>{% endfor %}</tr>
<tr><th>catalogue id</th>{% for s in e.scenes %}<td>{{ s.facts.catalogue_id }}</td>{% endfor %}</tr>
<tr><th>off-nadir angle</th>{% for s in e.scenes %}<td>{{ deg(s.facts.off_nadir_deg) }}</td>{% endfor %}</tr>
<tr><th>native resolution</th>{% for s in e.scenes %}<td>{{ s.native_gsd }}</td>{% endfor %}</tr>
<tr><th>scene</th>{% for s in e.scenes %}<td>{{ s.scene_id }}<br><span class="note">{{ s.path }}</span></td>{% endfor %}</tr>
<tr><th>scene SHA-256</th>{% for s in e.scenes %}<td><span class="hash">{{ s.sha256 }}</span><br>{% if s.still_matches is none %}<span class="note">file not on this machine: not re-checked</span>{% elif s.still_matches %}<span class="ok">re-checked: file unchanged</span>{% else %}<span class="bad">file has CHANGED since the run</span>{% endif %}</td>{% endfor %}</tr>
<tr><th>imagery credit</th>{% for s in e.scenes %}<td>{{ s.facts.credit }}</td>{% endfor %}</tr>
</table>

<h2>Alignment and quality</h2>
<table>
{% for f in quality %}<tr><th>{{ f.label }}</th><td>{% if f.warn %}<span class="bad">{{ f.value }}</span>{% else %}{{ f.value }}{% endif %}{% if f.hint %} <span class="note">— {{ f.hint }}</span>{% endif %}</td></tr>
{% else %}<tr><td>no quality figures recorded</td></tr>{% endfor %}
</table>

<h2>Review</h2>
{% if e.verdicts %}
<table class="list">
<tr><th>time (UTC)</th><th>reviewer</th><th>kind</th><th>verdict</th>{% if e.parts and e.parts.has_parts %}<th>parts marked damaged</th>{% endif %}<th>note</th></tr>
{% for v in e.verdicts %}<tr><td>{{ when(v.created_at) }}</td><td>{{ v.reviewer }}</td><td>{{ v.kind }}</td><td><b>{{ v.verdict }}</b></td>{% if e.parts and e.parts.has_parts %}<td>{{ v.damaged_parts|join(', ') or '–' }}</td>{% endif %}<td>{{ v.note }}</td></tr>
{% endfor %}</table>
{% else %}<p>No reviewer has given a verdict on this site.</p>{% endif %}
<table style="margin-top:8px">
<tr><th>decision</th><td>{% if e.consensus and e.consensus.final %}<b>{{ e.consensus.final }}</b> ({{ e.consensus.status }}){% elif e.consensus %}none yet ({{ e.consensus.status }}){% else %}not reviewed{% endif %}</td></tr>
<tr><th>adjudication</th><td>{% if e.consensus and e.consensus.adjudication %}<b>{{ e.consensus.adjudication }}</b> by {{ e.consensus.adjudicator }}{% else %}none{% endif %}</td></tr>
<tr><th>verdict store</th><td>{{ run.chain }}</td></tr>
</table>

<h2>Provenance</h2>
<table>
<tr><th>run digest</th><td><span class="hash">{{ run.digest }}</span> <span class="note">SHA-256 of the run's manifest.json</span></td></tr>
<tr><th>run fingerprint</th><td><span class="hash">{{ run.fingerprint }}</span></td></tr>
<tr><th>model</th><td>{{ run.model.arch }} · weights SHA-256 <span class="hash">{{ run.model.weights_sha256 }}</span>{% for p, h in run.model.files %}<br><span class="note">{{ p }}</span> <span class="hash">{{ h }}</span>{% endfor %}</td></tr>
<tr><th>sites file</th><td>{{ run.sites_file.get('path', '–') }}<br><span class="hash">{{ run.sites_file.get('sha256', '') }}</span></td></tr>
<tr><th>imagery credit</th><td>{{ e.credit }}</td></tr>
<tr><th>software</th><td>sitewatch {{ run.software }} (run) · dossier written {{ created }} by sitewatch {{ version }}</td></tr>
</table>
<footer>Check this dossier: <code>sitewatch verify DOSSIER_FOLDER</code> re-hashes every file against its manifest.json;
<code>sitewatch verify {{ run.run.path }}</code> re-hashes the run. Quote the run digest above to tie this page to the run.</footer>
</div></body></html>
"""

_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Evidence dossier · {{ run.run.path.name }}</title><style>{{ css }}</style></head>
<body><div class="page">
<header class="doc">
  <div class="kicker">sitewatch evidence dossier</div>
  <h1>{{ total }} site{{ '' if total == 1 else 's' }} from run {{ run.run.path.name }}</h1>
  <div class="sub">selection: {{ selection }} · written {{ created }}</div>
</header>
<h2>Run</h2>
<table>
<tr><th>run folder</th><td>{{ run.run.path }}</td></tr>
<tr><th>run digest</th><td><span class="hash">{{ run.digest }}</span> <span class="note">SHA-256 of manifest.json</span></td></tr>
<tr><th>model</th><td>{{ run.model.arch }} · <span class="hash">{{ run.model.weights_sha256 }}</span></td></tr>
<tr><th>operating point</th><td>{{ run.operating_point.name }}: flagged at score ≥ {{ threshold }} ({{ run.operating_point.source }})</td></tr>
<tr><th>calibration</th><td>{{ run.calibration }}</td></tr>
<tr><th>verdict store</th><td>{{ run.chain }}</td></tr>
</table>
<h2>Sites</h2>
<table class="list">
<tr><th>rank</th><th>site</th><th>score</th><th>status</th><th>decision</th><th>page</th></tr>
{% for e, page in rows %}<tr><td>{{ e.site.rank if e.site.rank > 0 else '–' }}</td><td>{{ e.site.site_id }}{% if e.site.name %} — {{ e.site.name }}{% endif %}</td>
<td>{{ e.score }}{% if e.flagged %} <span class="flag">flagged</span>{% endif %}</td><td>{{ e.site.status }}</td>
<td>{{ e.consensus.final if e.consensus and e.consensus.final else '–' }}</td><td><a href="{{ page }}">{{ page }}</a></td></tr>
{% endfor %}</table>
<footer>Every file of this folder is listed with its SHA-256 in manifest.json; <code>sitewatch verify DOSSIER_FOLDER</code> checks them.
dossier.pdf holds the same pages (this cover first, then one page per site).</footer>
</div></body></html>
"""


def _when(text: str) -> str:
    if not text:
        return "unknown"
    return text.replace("T", " ").replace("+00:00", " UTC").replace("Z", " UTC")


def _deg(text: str) -> str:
    try:
        return f"{float(text):.1f}°"
    except (TypeError, ValueError):
        return text


def _env() -> Environment:
    env = Environment(autoescape=True)
    env.globals.update(when=_when, deg=_deg)
    return env


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


#: quality rows that the Acquisitions table already shows.
_SHOWN_ELSEWHERE = frozenset({"before_time", "after_time", "before_scene", "after_scene", "before_gsd_m", "after_gsd_m"})


def _figure(e: SiteEvidence, key: str, scale: int) -> dict[str, Any] | None:
    img = e.image(key)
    if img is None:
        return None
    w, h = img.size_px
    gsd = img.extent_m / w if w else float("nan")
    epoch = key.removeprefix("context_")
    scene = next((s for s in e.scenes if s.epoch == epoch), None)
    origin = "the run's chip (unchanged, SHA-256 as in the run manifest)" if img.source == "detect" else "cut from the run's rasters for this dossier"
    width = w * scale if not key.startswith("context") else max(240, min(w, 340))
    return {
        "uri": data_uri(img.png), "caption": img.caption, "sha": img.sha256, "width": width,
        "height": round(width * h / w) if w else width, "px": f"{w} × {h}", "gsd": f"{gsd:.2f} m/pixel",
        "origin": origin, "marked": key in ("before", "after"), "when": _when(scene.acquired) if scene and key in ("before", "after") else "",
    }


def render_site_page(e: SiteEvidence, run: RunEvidence, *, number: int, total: int, n_ranked: int, created: str,
                     version: str, chip_scale: int) -> str:
    """One site's page as HTML text."""
    main = [f for f in (_figure(e, k, chip_scale) for k in ("before", "after", "heatmap")) if f]
    context = [f for f in (_figure(e, k, chip_scale) for k in ("context_before", "context_after")) if f]
    threshold = run.operating_point.get("threshold")
    return _env().from_string(_SITE).render(
        e=e, run=run, number=number, total=total, n_ranked=n_ranked, created=created, version=version, css=_CSS,
        main_images=main, context_images=context, quality=[f for f in e.quality if f.column not in _SHOWN_ELSEWHERE],
        threshold=f"{threshold:g}" if isinstance(threshold, float) else "not recorded",
    )


def render_index(rows: Sequence[tuple[SiteEvidence, str]], run: RunEvidence, *, selection: str, created: str) -> str:
    """The cover page (``index.html``) as HTML text."""
    threshold = run.operating_point.get("threshold")
    return _env().from_string(_INDEX).render(
        rows=rows, run=run, selection=selection, created=created, total=len(rows), css=_CSS,
        threshold=f"{threshold:g}" if isinstance(threshold, float) else "not recorded",
    )
