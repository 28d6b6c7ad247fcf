"""What the site page shows (marker, context view, numbers in words) and the run map, on a real
``sitewatch detect`` run of a generated dense block of buildings with known footprints."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from review.app import create_app
from review.config import ReviewConfig
from review.site_facts import coordinates, dms, logit_text, score_text
from review.store import VerdictStore
from tests.review.footprint_scene import ROOF_RGB, Scene, block_run_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scene, Path]:
    """``(scene, run folder)``: the dense block scored by the bundled model (chips for every site)."""
    return block_run_folder(tmp_path_factory)


@pytest.fixture()
def run(block: tuple[Scene, Path], tmp_path: Path) -> Path:
    """A fresh copy of the run folder (so verdicts and caches do not leak between tests)."""
    return Path(shutil.copytree(block[1], tmp_path / "run"))


def _client(run: Path, reviewer: str = "ann") -> TestClient:
    client = TestClient(create_app(run, ReviewConfig(rerank_every=0)))
    client.get(f"/queue?reviewer={reviewer}")
    return client


def _index(client: TestClient, site_id: str) -> int:
    return client.app.state.review.run.by_id[site_id].index


def _roof_mask(png: bytes) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return (np.abs(rgb - np.array(ROOF_RGB)).sum(axis=2) < 60)


def test_scores_separate_the_top_and_coordinates_are_labelled() -> None:
    top = [0.99991, 0.99994, 0.999971, 0.9999993, 0.99999991]
    shown = [score_text(p) for p in top]
    assert len(set(shown)) == len(top) and all(not s.startswith("1.000") for s in shown), shown
    assert (score_text(0.5), score_text(0.012), score_text(0.0000412)) == ("0.500", "0.012", "0.000041")
    assert score_text(float("nan")) == "–" and logit_text(None) == "–"
    assert (logit_text(0.5), logit_text(0.999929), logit_text(1.0)) == ("0.0", "9.6", "> 36")
    assert dms(38.5, "N", "S") == "38°30′00.0″N" and dms(-122.6999, "E", "W") == "122°41′59.6″W"
    c = coordinates(38.4999, -122.6999)
    assert c.decimal == "38.499900, -122.699900" and c.dms == "38°29′59.6″N 122°41′59.6″W"
    assert not coordinates(math.nan, 1.0).valid


def test_the_footprint_marker_outlines_the_building_on_the_chip(run: Path, block: tuple[Scene, Path]) -> None:
    """Known answer: the outline drawn on the page covers the roof the scene has under the site."""
    from skimage.draw import polygon
    from scipy.ndimage import label

    client = _client(run)
    for b in block[0].buildings[:6]:
        page = client.get(f"/site/{_index(client, b.site_id)}").text
        svg = re.search(r'<svg class="marker" viewBox="([^"]+)"[^>]*data-kind="(\w+)"', page)
        assert svg and svg.group(2) == "footprint", b.site_id
        x0, y0, w, h = map(float, svg.group(1).split())
        points = re.search(r'<polygon class="line" points="([^"]+)"', page).group(1)
        xy = np.array([[float(v) for v in p.split(",")] for p in points.split()])
        src = re.search(r'id="img-before" src="([^"]+)"', page).group(1)
        png = client.get(src).content
        roofs = _roof_mask(png)
        n = roofs.shape[0]
        rr, cc = polygon((xy[:, 1] - y0) / h * n - 0.5, (xy[:, 0] - x0) / w * n - 0.5, roofs.shape)
        drawn = np.zeros_like(roofs)
        drawn[rr, cc] = True
        parts, _ = label(roofs)
        building = parts == parts[n // 2, n // 2]
        assert parts[n // 2, n // 2] > 0, f"{b.site_id}: no roof under the chip centre"
        iou = (drawn & building).sum() / (drawn | building).sum()
        assert iou > 0.75, f"{b.site_id}: outline and roof overlap by IoU {iou:.2f}"
        assert "outline: the site&#39;s footprint from the sites file" in page


def test_ring_or_crosshair_when_the_input_gave_no_footprint(run: Path) -> None:
    client = _client(run)
    page = client.get(f"/site/{_index(client, 'clinic')}").text
    assert 'data-kind="ring"' in page and '<circle class="line" cx="0" cy="0" r="9.000"/>' in page
    assert "ring: the site&#39;s radius, 9 m" in page
    page = client.get(f"/site/{_index(client, 'well')}").text
    assert 'data-kind="crosshair"' in page and "crosshair: the site&#39;s position" in page


def test_footprints_are_not_drawn_from_a_sites_file_that_changed(run: Path) -> None:
    sites = Path(json.loads((run / "manifest.json").read_text())["inputs"]["sites"]["path"])
    original = sites.read_bytes()
    try:
        sites.write_bytes(original.replace(b'"house b00"', b'"house X00"'))
        client = _client(run)
        page = client.get(f"/site/{_index(client, 'b00')}").text
        assert 'data-kind="crosshair"' in page  # not the (possibly different) polygon
    finally:
        sites.write_bytes(original)


def test_the_context_view_is_the_same_pair_zoomed_out(run: Path) -> None:
    client = _client(run)
    i = _index(client, "b05")
    page = client.get(f"/site/{i}").text
    assert f'data-context="/context-chip/{i}/before.png"' in page and "context 3×" in page
    view_chip = re.search(r'data-view-chip="([^"]+)"', page).group(1).split()
    view_context = re.search(r'data-view-context="([^"]+)"', page).group(1).split()
    assert float(view_context[2]) == pytest.approx(3 * float(view_chip[2]))
    chip = client.get(re.search(r'id="img-before" src="([^"]+)"', page).group(1)).content
    context = client.get(f"/context-chip/{i}/before.png")
    assert context.status_code == 200 and context.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(context.content))
    assert img.size == (256, 256)
    # the middle third of the context view is the chip, at 256/3 px instead of 128
    roofs_ctx, roofs_chip = _roof_mask(context.content), _roof_mask(chip)
    middle = roofs_ctx[85:171, 85:171]
    small = np.asarray(Image.fromarray(roofs_chip.astype(np.uint8) * 255).resize((86, 86), Image.BILINEAR)) > 127
    assert (middle == small).mean() > 0.9
    assert roofs_ctx.sum() - middle.sum() > 0.15 * middle.sum()  # and roofs around it the chip leaves out
    assert (run / "review.sqlite-chips").is_file()
    assert client.get(f"/context-chip/{i}/during.png").status_code == 404


def test_the_quality_table_speaks_in_words_units_and_hints(run: Path) -> None:
    client = _client(run)
    page = client.get(f"/site/{_index(client, 'b03')}").text
    table = page[page.index('id="quality"'):page.index("Verdicts on this site")]
    for needle in ("before image taken", "(from the tag)", "chip resolution", "0.50 m/pixel", "pixels with data in both images",
                   "100.0 %", "below 60 % the site is not assessed", "co-registration confidence", "(0–1)",
                   '<code class="column">valid_fraction</code>'):
        assert needle in table, needle
    assert ">valid_fraction<" not in table.replace('<code class="column">valid_fraction</code>', "")
    assert 'id="coord-decimal"' in page and 'id="coord-dms"' in page and "WGS84, decimal degrees" in page
    assert 'id="key-bar"' in page and "<kbd>z</kbd> context" in page and 'id="heatmap-legend"' in page
    queue = client.get("/queue?show=all").text
    assert 'id="flag-legend"' in queue and "logit</th>" in queue


def test_the_map_api_gives_every_site_and_keeps_review_independent(run: Path) -> None:
    alice = _client(run, "alice")
    bob = _client(run, "bob")
    i = _index(alice, "b06")
    r = alice.post(f"/site/{i}/verdict", data={"verdict": "destroyed", "csrf": alice.cookies.get("sw_csrf")},
                   headers={"accept": "application/json"})
    assert r.json()["ok"]
    data = alice.get("/api/map", headers={"accept-encoding": "gzip"})
    assert data.headers["content-encoding"] == "gzip"
    sites = data.json()["sites"]
    assert len(sites["index"]) == 18 and all(v is not None for v in sites["lon"])
    extent = data.json()["extent"]
    assert all(extent["west"] < lon < extent["east"] for lon in sites["lon"])
    assert all(extent["south"] < lat < extent["north"] for lat in sites["lat"])
    assert sites["verdict"][sites["index"].index(i)] == "destroyed"
    theirs = bob.get("/api/map").json()["sites"]
    assert theirs["verdict"][theirs["index"].index(i)] == "hidden"  # bob has not given his own yet
    page = alice.get(f"/map?site={i}").text
    assert f'data-selected="{i}"' in page and "/static/map.js" in page


def test_the_map_picture_is_the_after_scene_under_the_sites(run: Path, block: tuple[Scene, Path]) -> None:
    """Known answer: at each intact building's position the picture shows its red roof; at a
    destroyed one, not."""
    client = _client(run)
    state = client.app.state.review
    state.map.wait(120)
    assert state.map.status == "ready", state.map.note
    r = client.get("/map/overview.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    pic = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
    e = state.map.extent
    assert pic.shape[:2] == (e.height, e.width)
    for b in block[0].buildings:
        site = state.run.by_id[b.site_id]
        x = (site.lon - e.west) / (e.east - e.west) * e.width
        y = (e.north - site.lat) / (e.north - e.south) * e.height
        colour = pic[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].reshape(-1, 3).mean(axis=0)
        is_roof = np.abs(colour - np.array(ROOF_RGB)).sum() < 90
        assert is_roof != b.destroyed, (b.site_id, colour)
    again = TestClient(create_app(run, ReviewConfig(rerank_every=0)))  # made once, then from the cache
    assert again.app.state.review.map.status in ("building", "ready")
    again.app.state.review.map.wait(30)
    assert again.get("/map/overview.jpg").content == r.content


def test_a_run_without_rasters_still_has_a_map(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["inputs"]["after"] = []
    (run / "manifest.json").write_text(json.dumps(manifest))
    client = _client(run)
    assert client.app.state.review.map.status == "none"
    assert client.get("/map/overview.jpg").status_code == 503
    assert "lists no after rasters" in client.get("/map").text
    assert len(client.get("/api/map").json()["sites"]["index"]) == 18
    VerdictStore.for_run(run)  # the store is still usable
