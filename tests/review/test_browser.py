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
