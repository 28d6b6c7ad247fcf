"""Make the review app's screenshots in docs/ from generated data only (never real imagery).

Two synthetic runs, scored by the bundled model: ``sitewatch demo`` (a town with a destroyed
neighbourhood; its known labels stand in for two reviewers' verdicts on 60 sites) and the dense
block of ``tests/review/footprint_scene.py`` (buildings with footprint polygons). Pages are shot
in a real headless Chromium against a real server.

    python docs/make_review_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from review.config import ReviewConfig  # noqa: E402
from review.store import VerdictStore  # noqa: E402
from tests.review.conftest import CHROMIUM_ARGS, LiveServer  # noqa: E402
from tests.review.footprint_scene import detect_run, write_scene  # noqa: E402


def demo_run(folder: Path) -> Path:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "sitewatch", "demo", "--out", str(folder), "--sites", "300", "-q"],
                   check=True, env=env, timeout=1200)
    run = folder / "run"
    with (folder / "scene" / "sites.csv").open(newline="") as fh:
        truth = {r["site_id"]: r["damage"] for r in csv.DictReader(fh)}
    with (run / "scores.csv").open(newline="") as fh:
        ranked = [r["site_id"] for r in csv.DictReader(fh)]
    store = VerdictStore.for_run(run)
    for k, site_id in enumerate(ranked[:60]):
        store.add_verdict(site_id, "ann", truth[site_id])
        if k % 3 == 0:  # a second reviewer on a third of them, disagreeing now and then
            store.add_verdict(site_id, "ben", "major-damage" if k % 9 == 0 and truth[site_id] == "destroyed" else truth[site_id])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = args.out
    with tempfile.TemporaryDirectory() as tmp:
        town = demo_run(Path(tmp) / "demo")
        scene = write_scene(Path(tmp) / "block")
        block = detect_run(scene, Path(tmp) / "block-run")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def wait(expr: str) -> None:
                page.wait_for_function("() => " + expr)

            with LiveServer(block, config=ReviewConfig(rerank_every=0)) as server:
                server.app.state.review.map.wait(120)
                b06 = server.app.state.review.run.by_id["b06"].index
                page.goto(f"{server.url}/queue?reviewer=ann")
                page.goto(f"{server.url}/site/{b06}")
                wait("document.getElementById('img-before').naturalWidth > 0")
                page.screenshot(path=str(out / "review-site-footprint.png"))
                page.keyboard.press("z")
                wait("document.getElementById('img-before').src.includes('context') && document.getElementById('img-before').naturalWidth > 0")
                page.wait_for_timeout(200)
                page.screenshot(path=str(out / "review-context.jpg"), type="jpeg", quality=85)
            with LiveServer(town, config=ReviewConfig(rerank_every=0)) as server:
                state = server.app.state.review
                state.map.wait(300)
                page.context.clear_cookies()  # a new reviewer (cookies do not tell ports apart)
                page.goto(f"{server.url}/queue?reviewer=cat")
                page.screenshot(path=str(out / "review-queue.png"))
                top = min(state.run.sites, key=lambda s: s.rank or 1e9).index
                page.goto(f"{server.url}/site/{top}")
                wait("document.getElementById('img-before').naturalWidth > 0")
                page.keyboard.press("h")
                page.screenshot(path=str(out / "review-site-ring.png"))
                page.context.clear_cookies()
                page.goto(f"{server.url}/queue?reviewer=ann")
                page.goto(f"{server.url}/map")
                wait("document.getElementById('run-map').getAttribute('data-overview') === 'ready'")
                page.keyboard.press("n")
                page.wait_for_timeout(200)
                page.screenshot(path=str(out / "review-map.jpg"), type="jpeg", quality=85)
                page.keyboard.press("c")
                page.wait_for_timeout(200)
                page.screenshot(path=str(out / "review-map-verdicts.jpg"), type="jpeg", quality=85)
                page.goto(f"{server.url}/progress")
                page.screenshot(path=str(out / "review-progress.png"), full_page=True)
            browser.close()
    for name in sorted(out.glob("review-*.*")):
        print(f"{name} ({name.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
