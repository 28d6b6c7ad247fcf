"""Load benchmark of the review app: queue and site pages with 100 vs 10,000 sites in one run.

Builds two synthetic run folders (scores.csv, chips for the top 200, embeddings.npz, manifest) and
a verdict store in each (three reviewers over 30% of the sites, some disagreeing), serves each with
a real uvicorn server on a loopback port, and times real HTTP requests (keep-alive client, like a
browser). Prints median and 95th-percentile latency per page for both sizes, their ratio, and
whether the 10,000-site figures stay under the 200 ms budget.

    python benchmarks/bench_review.py [--sites 10000] [--small 100] [--repeat 40]
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from review.app import create_app
from review.config import ReviewConfig
from review.server import free_port
from review.store import VERDICTS, VerdictStore
from review.verdict_chain import GENESIS_HASH, verdict_hash, verify_verdict_chain

BUDGET_MS = 200.0


def write_bench_run(folder: Path, n: int, *, seed: int = 0, chips_top: int = 200, dim: int = 64) -> Path:
    """A run folder with ``n`` sites, chips for the top ones and verdicts on 30% of the sites."""
    rng = np.random.default_rng(seed)
    (folder / "chips").mkdir(parents=True)
    scores = np.sort(rng.beta(0.5, 2.0, n))[::-1]
    chip = np.asarray(rng.integers(0, 255, (128, 128, 3)), dtype=np.uint8)
    cols = ["site_id", "lon", "lat", "score", "rank", "status", "reason", "flagged", "before_time",
            "after_time", "chip_gsd_m", "name", "kind", "chip_before", "chip_after", "chip_heatmap"]
    with (folder / "scores.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for i in range(n):
            sid = f"site-{i:06d}"
            paths = {"chip_before": "", "chip_after": "", "chip_heatmap": ""}
            if i < chips_top:
                for kind in ("before", "after", "heatmap"):
                    Image.fromarray(chip).save(folder / "chips" / f"{sid}_{kind}.png")
                    paths[f"chip_{kind}"] = f"chips/{sid}_{kind}.png"
            w.writerow({"site_id": sid, "lon": f"{30 + rng.uniform():.6f}", "lat": f"{15 + rng.uniform():.6f}",
                        "score": f"{scores[i]:.6f}", "rank": i + 1, "status": "ok", "reason": "",
                        "flagged": "true" if scores[i] >= 0.5 else "false", "before_time": "2023-01-01",
                        "after_time": "2023-06-01", "chip_gsd_m": "0.5", "name": f"building {i}", "kind": "home", **paths})
    np.savez(folder / "embeddings.npz", site_id=np.array([f"site-{i:06d}" for i in range(n)]),
             embedding=rng.normal(size=(n, dim)).astype(np.float16))
    (folder / "manifest.json").write_text(json.dumps({"operating_point": {"name": "screening", "threshold": 0.5}}))
    VerdictStore.for_run(folder)  # schema
    reviewed = rng.choice(n, size=int(0.3 * n), replace=False)
    rows = []
    for k, i in enumerate(reviewed):
        truth = "destroyed" if rng.uniform() < scores[i] else "no-damage"
        for who in ("ann", "ben", "cat")[: 1 + k % 3]:
            v = truth if rng.uniform() < 0.9 else str(rng.choice(VERDICTS))
            rows.append((f"site-{i:06d}", who, v, "", "review", "2026-01-01T00:00:00.000+00:00"))
    chained, prev = [], GENESIS_HASH  # bulk insert, hash-chained as the store chains them
    for k, r in enumerate(rows, start=1):
        row_hash = verdict_hash(k, *r, prev)
        chained.append((k, *r, prev, row_hash))
        prev = row_hash
    con = sqlite3.connect(folder / "review.sqlite")
    with con:
        con.executemany("INSERT INTO verdicts (id, site_id, reviewer, verdict, note, kind, created_at, prev_hash, row_hash) "
                        "VALUES (?,?,?,?,?,?,?,?,?)", chained)
        con.executemany("INSERT INTO audit (at, actor, action, site_id, detail) VALUES (?,?,?,?,?)",
                        [(r[6], r[2], "review", r[1], json.dumps({"verdict_id": r[0]})) for r in chained])
    con.close()
    return folder


def time_pages(run: Path, repeat: int, seed: int = 1) -> dict[str, list[float]]:
    """Latencies (ms) of each page of the app serving ``run``, over real HTTP."""
    import uvicorn

    t0 = time.perf_counter()
    app = create_app(run, ReviewConfig(rerank_every=0, validation_size=500))
    startup_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    chain = verify_verdict_chain(run / "review.sqlite")
    chain_ms = (time.perf_counter() - t0) * 1000
    assert chain.ok, chain.problems
    port = free_port("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    n = len(app.state.review.run.sites)
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {"app start-up": [startup_ms], "chain check": [chain_ms]}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            c.get("/queue?reviewer=dora")
            csrf = c.cookies.get("sw_csrf")
            c.post("/rerank", data={"csrf": csrf})  # so the rerank view has an order
            pages = {
                "queue score p1": lambda: "/queue?view=score",
                "queue score deep": lambda: f"/queue?view=score&show=all&page={max(1, n // 50 - 1)}",
                "queue uncertainty": lambda: "/queue?view=uncertainty",
                "queue validation": lambda: "/queue?view=validation",
                "queue disputed": lambda: "/queue?view=disputed",
                "queue rerank": lambda: "/queue?view=rerank",
                "site page (chip)": lambda: f"/site/{int(rng.integers(0, min(n, 200)))}",
                "site page (any)": lambda: f"/site/{int(rng.integers(0, n))}?view=uncertainty",
                "progress": lambda: "/progress",
            }
            for name, url in pages.items():
                c.get(url())  # warm
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    r = c.get(url())
                    times.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200, (name, r.status_code)
                out[name] = times
            times = []
            for k in range(repeat):
                t0 = time.perf_counter()
                r = c.post(f"/site/{int(rng.integers(0, n))}/verdict", data={"verdict": "destroyed", "csrf": csrf},
                           headers={"accept": "application/json"})
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
            out["verdict POST"] = times
            times = []
            for k in range(repeat):  # what a reviewer waits for: the verdict, then the next site
                t0 = time.perf_counter()
                r = c.post(f"/site/{int(rng.integers(0, n))}/verdict", data={"verdict": "no-damage", "csrf": csrf},
                           headers={"accept": "application/json"})
                page = c.get(r.json()["next"])
                times.append((time.perf_counter() - t0) * 1000)
                assert page.status_code == 200
            out["POST + next site"] = times
            t0 = time.perf_counter()
            c.post("/rerank", data={"csrf": csrf})
            out["rerank refit"] = [(time.perf_counter() - t0) * 1000]
    finally:
        server.should_exit = True
        thread.join(10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = write_bench_run(Path(tmp) / "small", args.small)
        large = write_bench_run(Path(tmp) / "large", args.sites)
        t_small = time_pages(small, args.repeat)
        t_large = time_pages(large, args.repeat)
    print(f"review app latency over HTTP (ms), {args.repeat} requests per page; "
          f"{args.small} vs {args.sites} sites (30% reviewed by 1-3 reviewers)")
    print(f"{'page':<20} {'median@' + str(args.small):>12} {'median@' + str(args.sites):>14} {'p95@' + str(args.sites):>12} {'ratio':>7}  budget")
    worst = 0.0
    for name in t_small:
        ms, ml = statistics.median(t_small[name]), statistics.median(t_large[name])
        p95 = float(np.percentile(t_large[name], 95))
        once = name in ("rerank refit", "app start-up", "chain check")  # not per request
        if not once:
            worst = max(worst, p95)
        ok = "ok" if p95 < BUDGET_MS or once else "OVER"
        print(f"{name:<20} {ms:>12.1f} {ml:>14.1f} {p95:>12.1f} {ml / ms:>7.2f}  {ok}")
    print(f"worst p95 at {args.sites} sites (pages and POST): {worst:.1f} ms (budget {BUDGET_MS:.0f} ms)")


if __name__ == "__main__":
    main()
