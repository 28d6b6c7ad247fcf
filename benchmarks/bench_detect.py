"""Benchmark of ``sitewatch detect``: where the time goes, side by side in one run.

Writes a large tiled before/after GeoTIFF pair and N random sites, then measures, in this order
and on the same windows:

1. plain rasterio reads of each site's before and after window (the I/O limit);
2. the tiles stage alone (``PairCutter.cut_many``: read, resample, co-register, normalise);
3. the model alone (``Scorer.score`` on batches of pairs already in memory);
4. ``run_detect`` end to end (all outputs, chips for the top 200, manifest);
5. the same job on a Dask ``LocalCluster`` (same scores.csv? overhead?);
6. peak memory (max RSS) of ``sitewatch detect`` subprocesses at growing site counts.

Rates are sites per second; ratios are quoted against the I/O limit. Run small with flags, e.g.::

    python benchmarks/bench_detect.py --sites 2000 --size-px 4096 --memory-sites 500,2000

Defaults are the issue's measurement: 10k sites on an 8192 x 8192 tiled raster at 0.5 m, 128 px
chips, the bundled default model, torch using 2 threads (pin the process with ``taskset -c 0,1``
to measure on 2 cores of a bigger machine).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_large_pair(root: Path, *, size_px: int, seed: int, compress: str) -> tuple[Path, Path]:
    """A tiled before/after GeoTIFF pair (3 bands, uint8, 0.5 m, EPSG:32633), written block by block."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    paths = []
    block = 512
    for epoch in ("before", "after"):
        folder = root / epoch
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{epoch}.tif"
        profile = dict(
            driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8", crs="EPSG:32633",
            transform=from_origin(500_000.0, 4_100_000.0, 0.5, 0.5), tiled=True, blockxsize=256, blockysize=256,
        )
        if compress != "none":
            profile["compress"] = compress
        base = rng.integers(60, 200, size=(3, block, block), dtype=np.uint8)
        with rasterio.open(path, "w", **profile) as ds:
            ds.update_tags(ACQUISITION_DATETIME="2021-05-01T10:00:00" if epoch == "before" else "2021-09-01T10:00:00")
            for r in range(0, size_px, block):
                for c in range(0, size_px, block):
                    tile = np.roll(base, shift=(r // block * 37 + c // block * 11) % block, axis=2).copy()
                    if epoch == "after":
                        tile = np.clip(tile.astype(np.int16) + 8, 0, 255).astype(np.uint8)
                        for _ in range(4):
                            y, x = rng.integers(0, block - 24, size=2)
                            tile[:, y : y + 24, x : x + 24] = 40
                    h, w = min(block, size_px - r), min(block, size_px - c)
                    ds.write(tile[:, :h, :w], window=Window(c, r, w, h))
        paths.append(path)
    return paths[0], paths[1]


def write_sites(path: Path, n: int, *, size_px: int, seed: int, margin_px: int = 160) -> list[tuple[float, float]]:
    """``n`` random sites inside the raster (away from the edges); returns their UTM (x, y)."""
    from pyproj import Transformer

    rng = np.random.default_rng(seed + 1)
    cols = rng.uniform(margin_px, size_px - margin_px, n)
    rows = rng.uniform(margin_px, size_px - margin_px, n)
    xs = 500_000.0 + cols * 0.5
    ys = 4_100_000.0 - rows * 0.5
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(xs, ys)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["site_id", "lon", "lat"])
        for i in range(n):
            w.writerow([f"b{i:06d}", f"{lon[i]:.8f}", f"{lat[i]:.8f}"])
    return list(zip(xs.tolist(), ys.tolist()))


def bench_rasterio(before: Path, after: Path, xy: list[tuple[float, float]], window_m: float) -> float:
    """Sites/s of plain windowed reads of the before and after window of every site."""
    import rasterio
    from rasterio.windows import from_bounds

    half = window_m / 2
    t = time.perf_counter()
    with rasterio.open(before) as b, rasterio.open(after) as a:
        for x, y in xy:
            for ds in (b, a):
                ds.read(window=from_bounds(x - half, y - half, x + half, y + half, ds.transform))
    return len(xy) / (time.perf_counter() - t)


def bench_tiles(sites_csv: Path, before: Path, after: Path, n: int) -> float:
    """Sites/s of the tiles stage alone on the first ``n`` sites."""
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.cut import PairCutter
    from tiles.sites import read_sites

    sites = read_sites(sites_csv)[:n]
    bc = RasterCatalog.from_paths([before], epoch="before")
    ac = RasterCatalog.from_paths([after], epoch="after")
    t = time.perf_counter()
    ok = 0
    with PairCutter(bc, ac, TilesConfig()) as cutter:
        for pair in cutter.cut_many(sites):
            ok += pair.ok
    rate = len(sites) / (time.perf_counter() - t)
    print(f"  tiles: {ok}/{len(sites)} pairs ok")
    return rate


def bench_model(n_batches: int, batch: int, chip_px: int, threads: int) -> float:
    """Sites/s of the bundled default model alone on pairs already in memory."""
    from models.inference import Scorer

    scorer = Scorer("default", device="cpu", threads=threads, batch_size=batch)
    x = np.random.default_rng(0).random((batch, 2, 3, chip_px, chip_px), dtype=np.float32)
    scorer.score(x)  # warm up
    t = time.perf_counter()
    for _ in range(n_batches):
        scorer.score(x)
    return n_batches * batch / (time.perf_counter() - t)


def bench_end_to_end(sites_csv: Path, before: Path, after: Path, out: Path, **kwargs) -> tuple[float, float, object]:
    """``run_detect`` wall time -> (sites/s overall, sites/s while scoring, summary).

    ``job`` (a :class:`sitewatch.jobs.DetectJob`) is handed over as its ``tiles`` and ``detect``
    sections; a tree whose ``run_detect`` still takes ``job=`` (the pre-issue-11 code, for
    before/after comparisons with the same script) gets the job itself.
    """
    import inspect

    from detect.run import run_detect

    job = kwargs.pop("job", None)
    if job is not None:
        if "job" in inspect.signature(run_detect).parameters:
            kwargs["job"] = job
        else:
            kwargs.update(tiles=job.tiles, detect=job.detect)
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    summary = run_detect(sites_csv, [before], [after], out, progress=False, **kwargs)
    total = time.perf_counter() - t
    return summary.sites / total, summary.sites / summary.scoring_seconds, summary


def peak_rss_mb(sites_csv: Path, before: Path, after: Path, out: Path, chip_px: int, threads: int) -> tuple[float, float]:
    """Max RSS (MB) and wall time of one ``sitewatch detect`` subprocess."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "sitewatch", "detect", "-q", "--sites", str(sites_csv), "--before", str(before),
        "--after", str(after), "--out", str(out), "--chips", "0",
        "--set", f"tiles.chip_px={chip_px}", "--set", f"tiles.chip_size_m={chip_px * 0.5}",
        "--set", f"detect.threads={threads}",
    ]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"memory run failed: {' '.join(cmd)}")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=10_000, help="sites for the end-to-end run (default 10000)")
    p.add_argument("--size-px", type=int, default=8192, help="raster side in pixels at 0.5 m (default 8192)")
    p.add_argument("--component-sites", type=int, default=2000, help="sites for the rasterio/tiles rates (default 2000)")
    p.add_argument("--model-batches", type=int, default=10, help="batches of 64 for the model-only rate")
    p.add_argument(
        "--threads", type=int, default=0,
        help="torch threads for detect (default 0: detect's default, all cores but one); the model-only "
        "rate always uses every core",
    )
    p.add_argument("--dask-sites", type=int, default=1000, help="sites for local vs LocalCluster (0 = skip)")
    p.add_argument("--dask-workers", type=int, default=2)
    p.add_argument("--memory-sites", default="1000,10000,100000", help="comma list for peak memory ('' = skip)")
    p.add_argument("--memory-chip-px", type=int, default=32, help="chip size for the memory runs (small = fast)")
    p.add_argument("--compress", default="deflate", choices=("deflate", "lzw", "none"))
    p.add_argument("--workdir", help="keep files here (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    for noisy in ("distributed", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from sitewatch.config import load_config
    from sitewatch.jobs import DetectJob
    from tiles.config import TilesConfig

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_detect_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"workdir {work}; cpu count {os.cpu_count()}, detect.threads {args.threads} (0 = all cores but one)")
    t = time.perf_counter()
    before, after = write_large_pair(work / "scene", size_px=args.size_px, seed=args.seed, compress=args.compress)
    max_sites = max([args.sites, args.component_sites, args.dask_sites] + [int(s) for s in args.memory_sites.split(",") if s])
    xy = write_sites(work / "sites_all.csv", max_sites, size_px=args.size_px, seed=args.seed)
    print(f"wrote {args.size_px}x{args.size_px} px before/after ({args.compress}) and {max_sites} sites in {time.perf_counter() - t:.1f} s")

    def subset(n: int) -> Path:
        path = work / f"sites_{n}.csv"
        with open(work / "sites_all.csv", encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i > n:
                    break
                dst.write(line)
        return path

    tiles_cfg = TilesConfig()
    results: dict[str, float] = {}
    n_comp = min(args.component_sites, args.sites)
    results["rasterio"] = bench_rasterio(before, after, xy[:n_comp], tiles_cfg.chip_size_m)
    print(f"1. plain rasterio reads (I/O limit): {results['rasterio']:.0f} sites/s on {n_comp} sites")
    results["tiles"] = bench_tiles(subset(n_comp), before, after, n_comp)
    print(f"2. tiles stage alone:                {results['tiles']:.0f} sites/s on {n_comp} sites")
    import torch

    all_cores = os.cpu_count() or 2
    torch.set_num_threads(all_cores)
    results["model"] = bench_model(args.model_batches, 64, tiles_cfg.chip_px, all_cores)
    print(f"3. model alone:                      {results['model']:.0f} sites/s ({args.model_batches} batches of 64, {tiles_cfg.chip_px} px, {all_cores} threads)")
    job = load_config(DetectJob, None, {"detect.threads": args.threads})
    overall, scoring, summary = bench_end_to_end(subset(args.sites), before, after, work / "run", job=job)
    results["end_to_end"] = overall
    print(
        f"4. detect end to end:                {overall:.0f} sites/s overall ({summary.seconds:.1f} s for {summary.sites} sites, "
        f"incl. model load, hashing, chips, outputs); {scoring:.0f} sites/s while cutting+scoring"
    )
    print(
        f"   ratios: end-to-end / I/O limit = {overall / results['rasterio']:.2f} (scoring phase {scoring / results['rasterio']:.2f}); "
        f"floor 100 sites/s: {'met' if overall >= 100 else 'NOT met'}; "
        f"bottleneck: {'model' if results['model'] < results['tiles'] else 'tiles'} "
        f"(model {results['model']:.0f} vs tiles {results['tiles']:.0f} sites/s)"
    )
    if args.dask_sites:
        n = args.dask_sites
        djob = load_config(DetectJob, None, {"detect.threads": max(1, args.threads // args.dask_workers), "detect.chips_top_n": 0})
        local_rate, _, local = bench_end_to_end(subset(n), before, after, work / "dask_local", job=djob)
        dask_rate, _, dask = bench_end_to_end(subset(n), before, after, work / "dask_cluster", job=djob, workers=args.dask_workers)
        same = (local.run_dir / "scores.csv").read_bytes() == (dask.run_dir / "scores.csv").read_bytes()
        print(
            f"5. local vs LocalCluster({args.dask_workers} worker processes) on {n} sites: {local_rate:.0f} vs {dask_rate:.0f} sites/s "
            f"(Dask time / local time = {local_rate / dask_rate:.2f}); identical scores.csv: {same}"
        )
    if args.memory_sites:
        print(f"6. peak memory of `sitewatch detect` ({args.memory_chip_px} px chips, no chips written):")
        for n in [int(s) for s in args.memory_sites.split(",") if s]:
            rss, secs = peak_rss_mb(subset(n), before, after, work / f"mem_{n}", args.memory_chip_px, args.threads)
            print(f"   {n:>7} sites: max RSS {rss:7.0f} MB ({secs:.0f} s)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
