"""report.html: the histogram's labels stay clear of the bars and the threshold line, and the
quality notes read as labelled values with units (issue 14)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from detect.ranking import OperatingPoint
from detect.report import histogram_svg, render_report, summarise_rows

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("threshold", [0.02, 0.5, 0.93])
def test_histogram_labels_never_cross_the_plot(threshold):
    scores = [i / 100 for i in range(100)] + [0.49] * 30
    svg = ET.fromstring(histogram_svg(scores, threshold))
    bars = [r for r in svg.iter(f"{SVG}rect")]
    plot_top = min(float(r.get("y")) for r in bars if float(r.get("height")) > 0)
    plot_bottom = max(float(r.get("y")) + float(r.get("height")) for r in bars)
    plot_left = min(float(r.get("x")) for r in bars)
    for text in svg.iter(f"{SVG}text"):
        x, y = float(text.get("x")), float(text.get("y"))
        assert not (plot_top < y <= plot_bottom + 1 and x > plot_left), f"label {text.text!r} at ({x}, {y}) is inside the plot"
    label = next(t for t in svg.iter(f"{SVG}text") if t.text.startswith("threshold"))
    assert float(label.get("y")) < plot_top  # above the tallest bar, beside its line
    assert f"{threshold:.4f}" in label.text


def test_quality_notes_are_labelled_with_units():
    row = {"site_id": "a", "lon": "1", "lat": "2", "score": "0.9", "rank": "1", "status": "ok", "reason": "",
           "flagged": "true", "shift_m": "0.071", "shift_applied": "false", "coreg_confidence": "0.4",
           "valid_fraction": "0.98", "cloud_fraction": "0.05", "chip_gsd_m": "0.5",
           "before_time": "2023-02-01T08:30:00Z", "after_time": "2023-03-15T08:40:00Z"}
    html = render_report(summarise_rows([row]), operating_point=OperatingPoint("screening", 0.5, "model"),
                         model_info={}, run_info={})
    quality = re.search(r'<dl class="quality">(.*?)</dl>', html).group(1)
    assert "=" not in re.sub(r"<[^>]+>", "", quality)  # no key=value text left
    for text in ("co-registration shift</dt><dd>0.07 m", "shift applied</dt><dd>no", "pixels with data in both</dt><dd>98.0 %",
                 "cloud-like pixels</dt><dd>5.0 %", "alignment confidence</dt><dd>0.40 (0–1)", "0.50 m/pixel",
                 "before image taken 2023-02-01 08:30:00 UTC"):
        assert text in html, text
