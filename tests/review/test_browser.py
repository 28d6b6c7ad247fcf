"""The review app in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from review.export import export_dataset
from review.store import VerdictStore
from tests.review.conftest import CHROMIUM_ARGS, LiveServer, chromium_or_skip
from tests.review.listed_outputs import record_outputs

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture()
def run_dir(run_dir: Path) -> Path:
    """The shared run folder, with its outputs listed in manifest.json (only those are served)."""
    return record_outputs(run_dir)


@pytest.fixture()
def browser_page():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def test_review_by_keyboard_lands_in_db_and_export(browser_page, live_server: LiveServer, run_dir: Path, tmp_path: Path) -> None:
    page = browser_page
    problems: list[str] = []
    dialogs: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" and "favicon" not in msg.text else None)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # first visit: the name prompt, then the queue
    page.goto(f"{live_server.url}/queue")
    page.fill("#reviewer-input", "Ann")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/queue"))
    assert page.locator("#reviewer-name").inner_text() == "Ann"
    assert page.locator("table.queue tbody tr").count() == 12

    # Enter opens the first site of the queue (highest score)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/site/0\?"))
    assert page.locator("#site-id").inner_text() == "s00000"
    assert page.locator("#img-before").evaluate("img => img.complete && img.naturalWidth > 0")
    # heatmap overlay and view modes by keyboard
    assert page.locator("#img-heatmap").is_hidden()
    page.keyboard.press("h")
    assert page.locator("#img-heatmap").is_visible()
    page.keyboard.press("v")
    assert page.locator("#viewer").get_attribute("data-mode") == "swipe"
    assert page.locator("#swipe-frame").is_visible() and page.locator("#img-before").is_hidden()
    page.keyboard.press("]")
    assert page.locator("#swipe-range").input_value() == "60"
    page.keyboard.press("v")
    assert page.locator("#viewer").get_attribute("data-mode") == "flicker"
    srcs = set()
    for _ in range(6):
        srcs.add(page.locator("#img-after").get_attribute("src"))
        page.wait_for_timeout(200)
    assert len(srcs) == 2  # alternates between before and after
    page.keyboard.press("v")
    assert page.locator("#viewer").get_attribute("data-mode") == "side"
    assert page.locator("#map-link").get_attribute("href").startswith("https://www.openstreetmap.org/?mlat=")

    # a note, then verdict 4 (destroyed) -> next site
    page.keyboard.press("n")
    page.keyboard.type("roof collapsed, 4 walls left")  # typing digits in the note must not submit
    assert page.url.split("/site/")[1].startswith("0")
    page.keyboard.press("Escape")
    page.keyboard.press("4")
    page.wait_for_url(re.compile(r"/site/1\?"))
    # the site with HTML in its name shows it as text, runs nothing
    assert page.locator("#site-name").inner_text() == "<script>alert(1)</script><b>Clinic</b>"
    assert page.locator("#site-name b").count() == 0
    page.keyboard.press("1")
    page.wait_for_url(re.compile(r"/site/2\?"))
    page.keyboard.press("j")  # skip
    page.wait_for_url(re.compile(r"/site/3\?"))
    page.keyboard.press("0")  # cannot_assess
    page.wait_for_url(re.compile(r"/site/4\?"))
    page.keyboard.press("k")  # back to the previous site still to do (2, skipped)
    page.wait_for_url(re.compile(r"/site/2\?"))

    # a site detect wrote no chip for: cut on demand, shown
    page.goto(f"{live_server.url}/site/9")
    page.wait_for_function("document.getElementById('img-before').naturalWidth > 0 && document.getElementById('img-after').naturalWidth > 0")
    assert "cut on demand" in page.locator("#chip-note").inner_text()

    page.goto(f"{live_server.url}/progress")
    assert page.locator("#reviewed").inner_text() == "3"
    assert page.locator("#destroyed").inner_text() == "1"

    assert problems == [] and dialogs == []
    rows = VerdictStore.for_run(run_dir).verdicts()
    assert [(r.site_id, r.reviewer, r.verdict, r.note) for r in rows] == [
        ("s00000", "Ann", "destroyed", "roof collapsed, 4 walls left"),
        ("s00001", "Ann", "no-damage", ""),
        ("s00003", "Ann", "cannot_assess", ""),
    ]
    out = export_dataset(run_dir, tmp_path / "dataset")
    text = (out / "sites.csv").read_text()
    assert "s00000," in text and ",destroyed," in text and "s00001," in text and "s00003" not in text


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory):
    """A real detect run of a dense block of buildings with known footprints."""
    from tests.review.footprint_scene import block_run_folder

    return block_run_folder(tmp_path_factory)


def _visible(page, selector: str) -> bool:
    return page.locator(selector).first.evaluate(
        "el => { const s = getComputedStyle(el); const r = el.getBoundingClientRect();"
        " return s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0"
        " && el.closest('.hidden') === null; }"
    )


def test_site_marker_context_view_and_run_map_by_keyboard(browser_page, block, tmp_path: Path) -> None:
    import shutil

    from tests.review.footprint_scene import ROOF_RGB

    scene, original = block
    run = Path(shutil.copytree(original, tmp_path / "run"))
    page = browser_page
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    with LiveServer(run) as server:
        state = server.app.state.review
        b06 = state.run.by_id["b06"].index
        page.goto(f"{server.url}/queue?reviewer=Ann")
        page.goto(f"{server.url}/site/{b06}?view=score&show=all")
        page.wait_for_function("() => document.getElementById('img-before').naturalWidth > 0")

        # the footprint is outlined on both chips, over the chip's centre, in every view mode
        for frame in (".frame.before", ".frame.after"):
            assert page.locator(f"{frame} svg.marker").get_attribute("data-kind") == "footprint"
            assert _visible(page, f"{frame} svg.marker polygon.line")
        img = page.locator("#img-before").bounding_box()
        outline = page.locator(".frame.before svg.marker polygon.line").bounding_box()
        centre = (img["x"] + img["width"] / 2, img["y"] + img["height"] / 2)
        assert outline["x"] < centre[0] < outline["x"] + outline["width"]
        assert outline["y"] < centre[1] < outline["y"] + outline["height"]
        assert 20 < outline["width"] < img["width"] / 2  # a building, not the whole chip
        page.keyboard.press("s")
        assert not _visible(page, ".frame.before svg.marker polygon.line")
        assert page.locator("#viewer").get_attribute("data-marker") == "off"
        page.keyboard.press("j")  # the choice is remembered on the next site
        page.wait_for_url(re.compile(r"/site/(?!%d\?)" % b06))
        assert page.locator("#viewer").get_attribute("data-marker") == "off"
        page.keyboard.press("s")
        assert _visible(page, ".frame.before svg.marker .line")
        page.goto(f"{server.url}/site/{b06}?view=score&show=all")
        page.keyboard.press("v")
        assert page.locator("#viewer").get_attribute("data-mode") == "swipe"
        assert _visible(page, "#swipe-frame svg.marker polygon.line")
        page.keyboard.press("v")
        assert page.locator("#viewer").get_attribute("data-mode") == "flicker"
        assert _visible(page, ".frame.after svg.marker polygon.line")
        page.keyboard.press("v")

        # the context view: the same pair zoomed out 3x, the chip's square drawn in it
        chip_src = page.locator("#img-before").get_attribute("src")
        chip_box = page.locator(".frame.before svg.marker").get_attribute("viewBox")
        page.keyboard.press("z")
        page.wait_for_function("() => { const i = document.getElementById('img-before');"
                               " return i.src.includes('/context-chip/') && i.complete && i.naturalWidth === 256; }")
        box = page.locator(".frame.before svg.marker").get_attribute("viewBox")
        assert float(box.split()[2]) == pytest.approx(3 * float(chip_box.split()[2]), rel=1e-3)
        assert _visible(page, ".frame.before svg.marker rect.chip-outline")
        assert _visible(page, ".frame.before svg.marker polygon.line")
        assert "/context-chip/" in page.locator("#img-after").get_attribute("src")
        page.keyboard.press("z")
        assert page.locator("#img-before").get_attribute("src") == chip_src
        assert not _visible(page, ".frame.before svg.marker rect.chip-outline")

        # the run map: o opens it on this site; arrows move, Enter opens, a click opens
        page.keyboard.press("o")
        page.wait_for_url(re.compile(r"/map\?site=%d" % b06))
        page.wait_for_function("() => document.getElementById('run-map').getAttribute('data-ready') === '1'"
                               " && document.getElementById('run-map').getAttribute('data-overview') === 'ready'")
        assert page.evaluate("() => window.swMap.selectedIndex()") == b06
        assert str(b06) == page.locator("#map-selected").get_attribute("data-index")
        page.keyboard.press("ArrowRight")
        east = page.evaluate("() => window.swMap.selectedIndex()")
        assert east != b06 and state.run.sites[east].lon > state.run.sites[b06].lon
        assert abs(state.run.sites[east].lat - state.run.sites[b06].lat) < abs(state.run.sites[east].lon - state.run.sites[b06].lon) * 2
        page.keyboard.press("ArrowLeft")
        assert page.evaluate("() => window.swMap.selectedIndex()") == b06
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/site/%d$" % b06))
        page.goto(f"{server.url}/map")
        page.wait_for_function("() => document.getElementById('run-map').getAttribute('data-overview') === 'ready'")
        page.keyboard.press("n")  # the top site by score
        top = min(state.run.sites, key=lambda s: s.rank or 1e9).index
        assert page.evaluate("() => window.swMap.selectedIndex()") == top
        # the picture is the after scene: next to an intact building's point, its red roof
        intact = next(b for b in scene.buildings if not b.destroyed)
        i = state.run.by_id[intact.site_id].index
        xy = page.evaluate(f"() => window.swMap.screenOf({i})")
        pixel = (f"() => Array.from(document.getElementById('map-canvas').getContext('2d')"
                 f".getImageData({xy[0]} * devicePixelRatio + 6, {xy[1]} * devicePixelRatio, 1, 1).data)")
        # the scene picture is drawn after the overview is ready: under load it can lag, so wait
        # (bounded) for the roof colour before reading the pixel that is asserted
        near_roof = f"(() => {{ const c = ({pixel})(); const r = {list(ROOF_RGB)}; " \
                    "return Math.abs(c[0]-r[0]) + Math.abs(c[1]-r[1]) + Math.abs(c[2]-r[2]) < 120; })"
        try:
            page.wait_for_function(f"() => {near_roof}()", timeout=10_000)
        except Exception:
            pass  # the assertion below reports the pixel actually there
        rgb = page.evaluate(pixel)
        assert sum(abs(a - b) for a, b in zip(rgb[:3], ROOF_RGB)) < 120, rgb
        canvas = page.locator("#map-canvas").bounding_box()
        page.mouse.click(canvas["x"] + xy[0], canvas["y"] + xy[1])
        page.wait_for_url(re.compile(r"/site/%d$" % i))
        assert page.locator("#site-id").inner_text() == intact.site_id
    assert problems == []
