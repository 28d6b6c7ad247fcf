"""Facilities in the review app and the dossier, on a real ``sitewatch detect`` run of generated
compounds (one block destroyed alone, one block with its neighbourhood, one intact): the parts
drawn by score in a real headless Chromium, a part marked by clicking its box and another by
keyboard, the marks in the verdict chain that ``sitewatch verify`` checks, and the dossier's
pages (HTML and PDF) with the parts, the marks and the surroundings."""

from __future__ import annotations

import csv
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from detect.part_overlay import score_colour
from review.store import VerdictStore
from tests.review.conftest import CHROMIUM_ARGS, LiveServer, chromium_or_skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compound_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated compounds scored by the bundled model with parts and context, chips for all."""
    from detect.config import DetectConfig
    from detect.run import run_detect
    from sitewatch.config import build_config
    from tiles.config import TilesConfig
    from tiles.synth.compounds import default_cases, write_compound_cases

    root = tmp_path_factory.mktemp("compound_review")
    write_compound_cases(root, default_cases(1), extent_m=540.0)
    tiles = build_config(TilesConfig, {"parts": {"context_inner_m": 30.0, "context_outer_m": 100.0}})
    run_detect(root / "sites.geojson", [root / "before"], [root / "after"], root / "run",
               tiles=tiles, detect=DetectConfig(chips_top_n=-1, embeddings=False), progress=False)
    return root / "run"


@pytest.fixture()
def run_copy(compound_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of the run (each test writes its own verdicts)."""
    run = tmp_path / "run"
    shutil.copytree(compound_run, run)
    return run


def _rows(run: Path) -> dict[str, dict[str, str]]:
    with (run / "scores.csv").open(newline="", encoding="utf-8") as fh:
        return {r["site_id"]: r for r in csv.DictReader(fh)}


def _index(run: Path, prefix: str) -> int:
    with (run / "scores.csv").open(newline="", encoding="utf-8") as fh:
        return next(i for i, r in enumerate(csv.DictReader(fh)) if r["site_id"].startswith(prefix))


@pytest.mark.browser
def test_parts_overlay_and_marking_a_part_in_chromium(run_copy: Path, tmp_path: Path) -> None:
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    rows = _rows(run_copy)
    iso_id = next(s for s in rows if s.startswith("iso"))
    iso = rows[iso_id]
    top = iso["top_part"]
    other = next(p.split("=")[0] for p in iso["part_scores"].split(";") if not p.startswith(top))
    problems: list[str] = []
    with LiveServer(run_copy) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(15_000)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "favicon" not in m.text else None)
            page.goto(f"{server.url}/queue?reviewer=ann")
            page.goto(f"{server.url}/site/{_index(run_copy, 'iso')}")
            after = page.locator("#viewer .frame.after svg.parts")
            assert after.is_visible()
            boxes = after.locator(".part")
            assert boxes.count() == int(iso["parts"])
            # the damaged wing is the highest part, outlined red and thick; an intact part is green
            top_box = after.locator(f'.part[data-part="{top}"]')
            assert "top" in top_box.get_attribute("class")
            colour = top_box.locator("rect").get_attribute("stroke")
            assert colour == score_colour(float(iso["top_part_score"])) and colour.startswith("#ff")  # red
            assert top_box.locator("rect").evaluate("r => getComputedStyle(r).strokeWidth") == "3.5px"
            low = min(iso["part_scores"].split(";"), key=lambda e: float(e.split("=")[1]))
            assert after.locator(f'.part[data-part="{low.split("=")[0]}"] rect').get_attribute("stroke").startswith("#00c8")
            # the box sits where the part is: north-east of the centre for a part with east, north > 0
            centres = dict(zip([e.split("=")[0] for e in iso["part_scores"].split(";")], iso["part_centres_m"].split(";")))
            east, north = (float(v) for v in centres[top].split(","))
            frame = page.locator("#img-after").bounding_box()
            rect = top_box.locator("rect").bounding_box()
            scale = frame["width"] / float(iso["chip_size_m"])
            assert abs(rect["x"] + rect["width"] / 2 - (frame["x"] + frame["width"] / 2 + east * scale)) < 2
            assert abs(rect["y"] + rect["height"] / 2 - (frame["y"] + frame["height"] / 2 - north * scale)) < 2
            # the surroundings in words
            assert page.locator("#targeted").inner_text() == "hit alone (targeted): damaged while its surroundings are not"
            assert re.fullmatch(r"\d+ of \d+ surrounding chips flagged \(\d+%\)", page.locator("#context-summary").inner_text().strip())
            # b hides and shows the parts; the context view keeps them, zoomed out with the chip
            page.keyboard.press("b")
            assert after.is_hidden()
            page.keyboard.press("b")
            assert after.is_visible()
            page.keyboard.press("z")
            assert after.get_attribute("viewBox") == after.get_attribute("data-view-context")
            page.keyboard.press("z")
            assert after.get_attribute("viewBox") == after.get_attribute("data-view-chip")
            # mark the top part by clicking its box, another one by keyboard (d, Tab, Space)
            top_box.locator("rect").click()
            assert page.locator(f"#part-{top}").is_checked()
            assert "marked" in page.locator(f'#viewer .frame.before .part[data-part="{top}"]').get_attribute("class")
            page.keyboard.press("d")
            assert page.evaluate("document.activeElement.id") == "part-p00"
            while page.evaluate("document.activeElement.id") != f"part-{other}":
                page.keyboard.press("Tab")
            page.keyboard.press("Space")
            assert page.locator(f"#part-{other}").is_checked()
            # clicking the box again unmarks it; Escape leaves the boxes, 4 gives the verdict
            top_box.locator("rect").click()
            assert not page.locator(f"#part-{top}").is_checked()
            top_box.locator("rect").click()
            page.keyboard.press("Escape")
            page.keyboard.press("4")
            here = f"{server.url}/site/{_index(run_copy, 'iso')}"
            page.wait_for_url(lambda url: url != here)  # the next site of the queue
            # the page of the site again: the marks are ticked and in the history
            page.goto(f"{server.url}/site/{_index(run_copy, 'iso')}")
            assert page.locator(f"#part-{top}").is_checked() and page.locator(f"#part-{other}").is_checked()
            expected = ", ".join(sorted([top, other]))
            assert page.locator("td.marked-parts").first.inner_text() == expected
            # a site without parts would show none: every site here is a facility, the house page is tested elsewhere
            page.screenshot(path=str(tmp_path / "site.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    verdict = VerdictStore.for_run(run_copy).verdicts(iso_id)[-1]
    assert verdict.verdict == "destroyed" and set(verdict.damaged_parts) == {top, other}


def test_verify_passes_then_catches_an_edited_part_mark(run_copy: Path) -> None:
    from sitewatch.cli import main

    rows = _rows(run_copy)
    iso_id = next(s for s in rows if s.startswith("iso"))
    parts = [e.split("=")[0] for e in rows[iso_id]["part_scores"].split(";")]
    store = VerdictStore.for_run(run_copy)
    store.add_verdict(iso_id, "ann", "destroyed", damaged_parts=[rows[iso_id]["top_part"]], known_parts=parts)
    assert main(["verify", str(run_copy)]) == 0
    con = sqlite3.connect(run_copy / "review.sqlite")
    con.execute("DROP TRIGGER verdicts_no_update")
    con.execute("UPDATE verdicts SET damaged_parts = ? WHERE id = 1", (",".join(parts[:2]),))
    con.commit()
    con.close()
    assert main(["verify", str(run_copy)]) != 0


def test_dossier_shows_parts_marks_and_surroundings(run_copy: Path, tmp_path: Path) -> None:
    from review.dossier.build import write_dossier
    from sitewatch.cli import main

    rows = _rows(run_copy)
    iso_id = next(s for s in rows if s.startswith("iso"))
    area_id = next(s for s in rows if s.startswith("are"))
    parts = [e.split("=")[0] for e in rows[iso_id]["part_scores"].split(";")]
    top = rows[iso_id]["top_part"]
    store = VerdictStore.for_run(run_copy)
    store.add_verdict(iso_id, "ann", "destroyed", damaged_parts=[top], known_parts=parts, note="one wing gone")
    store.add_verdict(iso_id, "ben", "destroyed", damaged_parts=[top, parts[0]], known_parts=parts)
    out = tmp_path / "dossier"
    write_dossier(run_copy, out, selection="sites", site_ids=[iso_id, area_id])
    pages = {p.name.split("-")[1]: p.read_text(encoding="utf-8") for p in (out / "sites").glob("*.html")}
    iso_page, area_page = pages[iso_id], pages[area_id]
    # the parts over the before/after chips and the context views, the top one thick, the marked one magenta
    assert iso_page.count('<svg class="parts"') == 4 and iso_page.count('class="part top marked"') == 4
    assert f"{top} ▲" in iso_page and "Facility: parts and surroundings" in iso_page
    assert "hit alone (targeted): damaged while its surroundings are not" in iso_page
    assert f"<b>{top}</b>" in iso_page and f"ann: {top}; ben: {', '.join(sorted([parts[0], top]))}" in iso_page
    assert "not targeted: damaged along with its surroundings (area damage)" in area_page
    assert "none marked" in area_page and 'class="part top marked"' not in area_page
    assert "part_centres_m" not in iso_page  # said in words, not as raw columns
    pdf = (out / "dossier.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)) == 3  # cover + one page each
    assert main(["verify", str(out)]) == 0


def test_map_layers_download_only_while_listed_and_unchanged(run_copy: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from review.app import create_app
    from review.config import ReviewConfig
    from tests.review.make_run import write_run

    client = TestClient(create_app(run_copy, ReviewConfig(rerank_every=0)))
    client.get("/queue?reviewer=ann")
    page = client.get("/progress").text
    assert 'href="/download/scores.gpkg"' in page and 'href="/download/scores.kml"' in page
    gpkg = client.get("/download/scores.gpkg")
    assert gpkg.status_code == 200 and gpkg.content == (run_copy / "scores.gpkg").read_bytes()
    assert gpkg.content.startswith(b"SQLite format 3") and gpkg.headers["content-type"] == "application/geopackage+sqlite3"
    assert gpkg.headers["content-disposition"] == 'attachment; filename="run-scores.gpkg"'
    kml = client.get("/download/scores.kml")
    assert kml.status_code == 200 and b"<kml" in kml.content[:400]
    for other in ("review.sqlite", "manifest.json", "scores.csv"):
        r = client.get(f"/download/{other}")
        assert r.status_code == 404 and "only scores.gpkg, scores.kml can be downloaded" in r.text
    assert client.get("/download/..%2Freview.sqlite").status_code == 404
    with (run_copy / "scores.kml").open("ab") as fh:
        fh.write(b"<!-- edited -->")
    r = client.get("/download/scores.kml")
    assert r.status_code == 404 and "changed after detect wrote it" in r.text
    # a run that lists neither shows no downloads
    plain = TestClient(create_app(write_run(tmp_path / "plain", 4), ReviewConfig(rerank_every=0)))
    plain.get("/queue?reviewer=ann")
    assert 'id="downloads"' not in plain.get("/progress").text
    assert plain.get("/download/scores.gpkg").status_code == 404


@pytest.mark.realdata
def test_joplin_footprints_show_parts_in_the_review_site_page(shared_data: Path, tmp_path: Path) -> None:
    """Joplin's building footprints larger than one chip: the review site page draws their parts."""
    import json

    from fastapi.testclient import TestClient

    from detect.config import DetectConfig
    from detect.run import run_detect
    from review.app import create_app
    from review.config import ReviewConfig
    from tiles.config import TilesConfig
    from tiles.types import Site
    from detect.parts import is_facility

    root = shared_data / "joplin-tornado"
    doc = json.loads((root / "footprints.geojson").read_text(encoding="utf-8"))
    with open(root / "sites.csv", newline="", encoding="utf-8") as fh:
        ids = list(csv.DictReader(fh))
    tiles = TilesConfig()
    inside = lambda r: -94.4994 < float(r["lon"]) < -94.4864 and 37.0665 < float(r["lat"]) < 37.0750  # noqa: E731
    big = [(f, r) for f, r in zip(doc["features"], ids) if inside(r)
           and is_facility(Site(r["site_id"], float(r["lon"]), float(r["lat"]), footprint=f["geometry"]), tiles)][:3]
    assert big, "the overlap holds footprints larger than one chip"
    features = [{"type": "Feature", "geometry": f["geometry"], "properties": {"site_id": r["site_id"]}} for f, r in big]
    sites = tmp_path / "sites.geojson"
    sites.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    run = tmp_path / "run"
    run_detect(sites, [root / "before"], [root / "after"], run, tiles=tiles,
               detect=DetectConfig(chips_top_n=-1, embeddings=False), progress=False)
    client = TestClient(create_app(run, ReviewConfig(rerank_every=0)))
    client.get("/queue?reviewer=ann")
    rows = list(_rows(run).values())
    shown = 0
    for i, row in enumerate(rows):
        if row["status"] != "ok" or not row["part_scores"]:
            continue
        page = client.get(f"/site/{i}").text
        assert page.count('<svg class="parts"') == 3 and page.count('data-part="p00"') == 4
        assert 'id="context-summary"' in page and 'id="targeted"' in page
        shown += 1
    assert shown >= 1

