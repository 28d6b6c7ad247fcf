"""Load benchmark of the review app's run map: 10,000 sites in a real headless Chromium.

Writes a synthetic run folder (``scores.csv`` of N sites over a 4 km town, 30% reviewed, a
generated after GeoTIFF of 3000 x 3000 pixels listed in ``manifest.json``), serves it with a real
uvicorn server, and measures, over several page loads:

- making the map's picture of the after scenes (once, in the background at start-up);
- ``/api/map`` (time and size);
- the map page: navigation to the first drawing of every site, and to the picture shown;
- one keyboard step (``n``: next site by score, redrawn) and one zoom step (``+``), in the page.

    python benchmarks/bench_review_map.py [--sites 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from review.app import create_app
from review.config import ReviewConfig
from review.server import free_port
from review.store import VERDICTS, VerdictStore
from review.verdict_chain import GENESIS_HASH, verdict_hash

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def write_map_run(folder: Path, n: int, *, seed: int = 0, raster_px: int = 3000) -> Path:
    """A run folder of ``n`` sites over a 4 km x 4 km town with an after raster under them."""
    import rasterio
    from rasterio.transform import from_bounds
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    west, south = 30.0, 15.0
    east, north = west + 4000 / (111_320 * np.cos(np.radians(15.02))), south + 4000 / 110_600
    after = folder.parent / "after.tif"
    base = gaussian_filter(rng.normal(0, 1, (raster_px // 4, raster_px // 4)), 3)
    base = np.kron(base, np.ones((4, 4)))[:raster_px, :raster_px] * 40
    img = np.clip(np.stack([110 + base, 105 + 0.8 * base, 90 + 0.6 * base]), 0, 255).astype(np.uint8)
    with rasterio.open(after, "w", driver="GTiff", width=raster_px, height=raster_px, count=3, dtype="uint8",
                       crs="EPSG:4326", transform=from_bounds(west, south, east, north, raster_px, raster_px),
                       tiled=True) as dst:
        dst.write(img)
    # clustered like a town: neighbourhoods of different density
    centres = rng.uniform([west, south], [east, north], size=(40, 2))
    pick = rng.integers(0, 40, n)
    lonlat = centres[pick] + rng.normal(0, 0.002, (n, 2))
    lonlat[:, 0] = np.clip(lonlat[:, 0], west, east)
    lonlat[:, 1] = np.clip(lonlat[:, 1], south, north)
    scores = np.sort(rng.beta(0.4, 2.0, n))[::-1]
    cols = ["site_id", "lon", "lat", "score", "rank", "status", "reason", "flagged", "name", "kind",
            "chip_before", "chip_after", "chip_heatmap"]
    with (folder / "scores.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for i in range(n):
            w.writerow({"site_id": f"site-{i:06d}", "lon": repr(float(lonlat[i, 0])), "lat": repr(float(lonlat[i, 1])),
                        "score": repr(float(scores[i])), "rank": i + 1, "status": "ok", "reason": "",
                        "flagged": "true" if scores[i] >= 0.5 else "false", "name": f"building {i}", "kind": "home",
                        "chip_before": "", "chip_after": "", "chip_heatmap": ""})
    (folder / "manifest.json").write_text(json.dumps({
        "operating_point": {"name": "screening", "threshold": 0.5},
        "inputs": {"after": [{"path": str(after)}], "before": [{"path": str(after)}]},
    }))
    VerdictStore.for_run(folder)
    rows, prev = [], GENESIS_HASH
    for k, i in enumerate(rng.choice(n, size=int(0.3 * n), replace=False), start=1):
        content = (f"site-{i:06d}", "ann", str(rng.choice(VERDICTS)), "", "review", "2026-01-01T00:00:00.000+00:00")
        row_hash = verdict_hash(k, *content, prev)
        rows.append((k, *content, prev, row_hash))
        prev = row_hash
    con = sqlite3.connect(folder / "review.sqlite")
    with con:
        con.executemany("INSERT INTO verdicts (id, site_id, reviewer, verdict, note, kind, created_at, prev_hash, row_hash) "
                        "VALUES (?,?,?,?,?,?,?,?,?)", rows)
        con.executemany("INSERT INTO audit (at, actor, action, site_id, detail) VALUES (?,?,?,?,?)",
                        [(r[6], r[2], "review", r[1], json.dumps({"verdict_id": r[0]})) for r in rows])
    con.close()
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import uvicorn
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        run = write_map_run(Path(tmp) / "run", args.sites)
        t0 = time.perf_counter()
        app = create_app(run, ReviewConfig(rerank_every=0))
        state = app.state.review
        state.map.wait(600)
        picture_s = time.perf_counter() - t0
        assert state.map.status == "ready", state.map.note
        port = free_port("127.0.0.1")
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        api_ms, api_kb, wire_kb = [], 0.0, 0.0
        with httpx.Client(base_url=url) as c:
            c.get("/queue?reviewer=ann")
            for _ in range(args.repeat):
                t = time.perf_counter()
                r = c.get("/api/map")
                api_ms.append((time.perf_counter() - t) * 1000)
                api_kb, wire_kb = len(r.content) / 1024, r.num_bytes_downloaded / 1024
        ready, shown, key_ms, zoom_ms = [], [], [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/queue?reviewer=ann")
            for _ in range(args.repeat):
                t = time.perf_counter()
                page.goto(f"{url}/map")
                page.wait_for_function("() => document.getElementById('run-map').getAttribute('data-ready') === '1'")
                ready.append((time.perf_counter() - t) * 1000)
                page.wait_for_function("() => document.getElementById('run-map').getAttribute('data-overview') === 'ready'")
                shown.append((time.perf_counter() - t) * 1000)
                for key, out in (("n", key_ms), ("+", zoom_ms)):
                    out.append(page.evaluate(
                        """(key) => new Promise((done) => {
                             const t = performance.now();
                             document.dispatchEvent(new KeyboardEvent('keydown', {key: key, bubbles: true}));
                             requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t)));
                           })""", key))
            browser.close()
        server.should_exit = True
        thread.join(10)
    med = statistics.median
    print(f"run map with {args.sites} sites ({args.repeat} loads, headless Chromium, shared 2-core machine)")
    print(f"  picture of the after scenes (3000 x 3000 px raster -> {state.map.extent.width} x {state.map.extent.height} JPEG), once: {picture_s:.2f} s")
    print(f"  /api/map: median {med(api_ms):.0f} ms, {api_kb:.0f} kB of JSON, {wire_kb:.0f} kB sent (gzip)")
    print(f"  page load to every site drawn: median {med(ready):.0f} ms (max {max(ready):.0f})")
    print(f"  page load to the picture shown: median {med(shown):.0f} ms (max {max(shown):.0f})")
    print(f"  key 'n' (next site, redraw): median {med(key_ms):.1f} ms; zoom '+': median {med(zoom_ms):.1f} ms")


if __name__ == "__main__":
    main()
