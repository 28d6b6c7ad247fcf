"""Regenerate docs/review-site-parts.jpg: the review app's page of a generated school compound with
one destroyed block, scored part by part by the bundled model (synthetic data only).

    python docs/make_parts_screenshot.py [--work DIR]

Needs Chromium (``bash .ci/system-deps``) and Playwright.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = Path(__file__).resolve().parent / "review-site-parts.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the generated scene and run (default: a temporary one)")
    args = parser.parse_args()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from detect.config import DetectConfig
    from detect.run import run_detect
    from sitewatch.config import build_config
    from tests.review.conftest import CHROMIUM, CHROMIUM_ARGS, LiveServer
    from tiles.config import TilesConfig
    from tiles.synth.compounds import default_cases, write_compound_cases

    with tempfile.TemporaryDirectory() as tmp:
        root = args.work or Path(tmp)
        write_compound_cases(root, default_cases(1), extent_m=540.0)
        tiles = build_config(TilesConfig, {"parts": {"context_inner_m": 30.0, "context_outer_m": 100.0}})
        run = root / "run"
        run_detect(root / "sites.geojson", [root / "before"], [root / "after"], run, tiles=tiles,
                   detect=DetectConfig(chips_top_n=-1, embeddings=False), progress=False)
        png = root / "site.png"
        with LiveServer(run) as server, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            page.goto(f"{server.url}/queue?reviewer=ann")
            page.goto(f"{server.url}/site/0")  # the highest score: the school with one destroyed block
            top_part = page.locator("#viewer .frame.after svg.parts .part.top").get_attribute("data-part")
            page.click(f'#viewer .frame.after svg.parts .part[data-part="{top_part}"] rect')
            page.mouse.move(0, 0)
            y0 = page.locator("#site h1").bounding_box()["y"] - 6
            buttons = page.locator("#verdict-form .buttons").bounding_box()
            page.screenshot(path=str(png), clip={"x": 0, "y": y0, "width": 830, "height": buttons["y"] + buttons["height"] + 6 - y0})
            browser.close()
        Image.open(png).convert("RGB").save(OUT, quality=82, optimize=True)
    print(OUT)


if __name__ == "__main__":
    main()
