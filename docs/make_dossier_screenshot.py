"""Make the evidence-dossier screenshot in docs/ from generated data only (never real imagery).

The dense block of ``tests/review/footprint_scene.py`` (buildings with footprint polygons) is scored
by the bundled model through ``sitewatch detect`` (flagging at 0.05, so a few sites are flagged),
two reviewers and an adjudicator give verdicts, and ``sitewatch dossier --flagged`` writes the
dossier. The first site's HTML page is shot in a real headless Chromium.

    python docs/make_dossier_screenshot.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from review.store import VerdictStore  # noqa: E402
from tests.review.conftest import CHROMIUM_ARGS  # noqa: E402
from tests.review.footprint_scene import write_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scene = write_scene(root / "scene")
        run = root / "run"
        subprocess.run([sys.executable, "-m", "sitewatch", "detect", "-q", "--sites", str(scene.sites),
                        "--before", str(scene.before), "--after", str(scene.after), "--out", str(run),
                        "--chips", "4", "--operating-point", "0.05"], check=True, env=env, timeout=1200)
        top = (run / "scores.csv").read_text(encoding="utf-8").splitlines()[1].split(",")[0]
        store = VerdictStore.for_run(run)
        store.add_verdict(top, "ann", "destroyed", note="roof gone; rubble inside the footprint")
        store.add_verdict(top, "ben", "major-damage", note="walls may stand, roof collapsed")
        store.add_verdict(top, "chief", "destroyed", kind="adjudication", note="rubble on both passes; no roof left")
        dossier = root / "dossier"
        subprocess.run([sys.executable, "-m", "sitewatch", "dossier", str(run), "--flagged", "--out", str(dossier), "-q"],
                       check=True, env=env, timeout=1200)
        page = dossier / json.loads((dossier / "manifest.json").read_text())["sites"][0]["page"]
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            try:
                tab = browser.new_page(viewport={"width": 1100, "height": 1600})
                tab.goto(page.as_uri())
                tab.screenshot(path=str(args.out / "dossier-page.jpg"), type="jpeg", quality=85, full_page=True)
            finally:
                browser.close()
    print(f"wrote {args.out / 'dossier-page.jpg'}")


if __name__ == "__main__":
    main()
