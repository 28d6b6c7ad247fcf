"""Benchmark of ``sitewatch detect``: where the time goes, side by side in one run.

Writes a tiled before/after GeoTIFF pair (deflate, 3 bands, 0.5 m) and N random sites over it
(kept in ``--workdir`` and reused), then measures, in one invocation, so that every figure is a
ratio of rates taken under the same machine load:

``rates`` (default):
    1. **I/O limit**: plain rasterio reads of every site's before and after window (the windows
       the tiles stage reads: the chip, and the chip plus the co-registration margin for
       after), datasets kept open;
    2. **tiles stage alone** per cut-worker count (cutting, co-registration, normalisation,
       quality gates; no model): in-process (``thread``: what the reader thread does) and in
       ``N`` worker processes (:func:`detect.workers.cut_batches_in_workers`, pairs shipped back
       to this process as the scorer gets them);
    3. **model alone**: ``Scorer("default")`` on batches of 64 pairs already cut (real pairs
       from step 2), with all cores and with detect's own thread count; measured before and
       after the end-to-end runs (the mean is the reference);
    4. **end to end**: ``sitewatch detect`` in a subprocess, all outputs written (chips for the
       top 200, report, GIS files, manifest), per ``detect.cut_workers`` setting.

    Printed ratios: end to end / model alone (done-when target >= 0.9) and tiles rate per worker
    / plain reads (target >= 0.5).

``startup``:
    ``sitewatch detect`` on large inputs with this tree and with ``--baseline-tree`` (another
    checkout, e.g. ``git archive`` of main; may be repeated) side by side, each tree run once
    unmeasured first (compiling its modules): start-up latency (process start to the first scored
    batch in the journal), end to end, and where the time goes: the median time since process
    start at which each phase ended, from the ``timing:`` lines ``detect`` logs with ``-v``
    (``detect.run.mark_phase``; a tree without them shows only the process's end).

``dask`` (not run by default):
    the same run locally and on a ``LocalCluster`` of worker processes (``--workers N``): rates,
    and whether every output is identical.

``memory``:
    peak RSS (``ru_maxrss`` of each ``sitewatch detect`` child; sampled with psutil when it is
    installed, to say when the peak happened) at growing site counts, all outputs written.

Rates are sites per second. Examples (small, a few minutes on 2 cores; the defaults)::

    python benchmarks/bench_detect.py --workdir /tmp/bd
    python benchmarks/bench_detect.py --workdir /tmp/bd --only memory --memory-sites 1000,10000,100000
    python benchmarks/bench_detect.py --workdir /tmp/bd --only startup --size-px 16384 --baseline-tree /tmp/main

Pin to 2 cores of a larger machine with ``taskset -c 0,1``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# -- inputs ---------------------------------------------------------------------------------------


def write_large_pair(root: Path, *, size_px: int, seed: int, compress: str) -> tuple[Path, Path]:
    """A tiled before/after GeoTIFF pair (3 bands, uint8, 0.5 m, EPSG:32633), written block by
    block; kept and reused when ``root`` already holds a finished pair."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    paths = [root / epoch / f"{epoch}.tif" for epoch in ("before", "after")]
    if (root / "done").is_file() and all(p.is_file() for p in paths):
        return paths[0], paths[1]
    rng = np.random.default_rng(seed)
    block = 512
    for epoch, path in zip(("before", "after"), paths):
        path.parent.mkdir(parents=True, exist_ok=True)
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
    (root / "done").write_text("ok\n")
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


class Inputs:
    """The scene and a sites file per site count (prefixes of one random set)."""

    def __init__(self, work: Path, *, size_px: int, seed: int, compress: str, max_sites: int) -> None:
        self.work = work
        scene = work / f"scene_{size_px}_{compress}_{seed}"
        t = time.perf_counter()
        self.before, self.after = write_large_pair(scene, size_px=size_px, seed=seed, compress=compress)
        self.all_sites = scene / f"sites_{max_sites}.csv"
        self.xy = write_sites(self.all_sites, max_sites, size_px=size_px, seed=seed)
        self.scene = scene
        size_mb = (self.before.stat().st_size + self.after.stat().st_size) / 1e6
        print(
            f"inputs: {size_px}x{size_px} px before/after ({compress}, {size_mb:.0f} MB together) and "
            f"{max_sites} sites in {scene} ({time.perf_counter() - t:.1f} s)"
        )

    def sites(self, n: int) -> Path:
        path = self.scene / f"{self.all_sites.stem}_first_{n}.csv"
        with open(self.all_sites, encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i > n:
                    break
                dst.write(line)
        return path


# -- components -----------------------------------------------------------------------------------


def rate_plain_reads(before: Path, after: Path, xy: list[tuple[float, float]]) -> float:
    """Sites/s of plain windowed reads of each site's before window and after window (with the
    co-registration margin the tiles stage adds to after), datasets kept open."""
    import rasterio
    from rasterio.windows import from_bounds

    from tiles.config import TilesConfig

    cfg = TilesConfig()
    gsd = cfg.chip_size_m / cfg.chip_px
    half_b = cfg.chip_size_m / 2
    half_a = half_b + ((math.ceil(cfg.max_shift_m / gsd) + 1) * gsd if cfg.coregister else 0.0)
    t = time.perf_counter()
    with rasterio.open(before) as b, rasterio.open(after) as a:
        for x, y in xy:
            b.read(window=from_bounds(x - half_b, y - half_b, x + half_b, y + half_b, b.transform))
            a.read(window=from_bounds(x - half_a, y - half_a, x + half_a, y + half_a, a.transform))
    return len(xy) / (time.perf_counter() - t)


def _plan(sites_csv: Path, before: Path, after: Path):
    from detect.pipeline import plan_batches
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.sites import read_sites

    sites = read_sites(sites_csv)
    bc = RasterCatalog.from_paths([before], epoch="before")
    ac = RasterCatalog.from_paths([after], epoch="after")
    cfg = TilesConfig()
    return sites, bc, ac, cfg, plan_batches(sites, bc, ac, batch_size=64, tiles=cfg)


def rate_tiles(sites_csv: Path, before: Path, after: Path, workers: int, keep: int = 0) -> tuple[float, list[np.ndarray]]:
    """Sites/s of the tiles stage alone: in-process (``workers=0``) or in worker processes.

    Returns:
        ``(rate, images)``: up to ``keep`` ok pair images (for the model-alone rate).
    """
    from detect.cutting import cut_batch
    from detect.workers import CutterSpec, cut_batches_in_workers
    from tiles.cut import PairCutter

    sites, bc, ac, cfg, batches = _plan(sites_csv, before, after)
    kept: list[np.ndarray] = []
    ok = 0
    t = time.perf_counter()
    if workers == 0:
        with PairCutter(bc, ac, cfg) as cutter:
            for batch in batches:
                for pair in cut_batch(cutter, [sites[i] for i in batch.site_indices]):
                    ok += pair.ok
                    if pair.ok and len(kept) < keep:
                        kept.append(pair.image)
    else:
        for _batch, pairs, _ in cut_batches_in_workers(sites, batches, CutterSpec(bc, ac, cfg), workers=workers):
            ok += sum(p.ok for p in pairs)
    rate = len(sites) / (time.perf_counter() - t)
    if ok < len(sites) // 2:
        raise SystemExit(f"tiles stage: only {ok} of {len(sites)} pairs ok; the benchmark scene is wrong")
    return rate, kept


def rate_model(images: list[np.ndarray], *, batches: int, threads: int) -> float:
    """Sites/s of the bundled model alone (batches of 64 real pairs, cycled)."""
    import torch

    from models.inference import Scorer

    scorer = Scorer("default", device="cpu", threads=threads, batch_size=64)
    stacks = [np.stack(images[i : i + 64]).astype(np.float32) for i in range(0, len(images) - 63, 64)]
    scorer.score(stacks[0])  # warm up
    t = time.perf_counter()
    for k in range(batches):
        scorer.score(stacks[k % len(stacks)])
    rate = batches * 64 / (time.perf_counter() - t)
    torch.set_num_threads(os.cpu_count() or 1)
    return rate


# -- sitewatch detect in a subprocess -------------------------------------------------------------


class Watch:
    """Polls a run folder's journal: when its first scored batch appears (start-up latency)."""

    def __init__(self, run_dir: Path, started: float) -> None:
        self.path = run_dir / "journal.jsonl"
        self.started = started
        self.first_batch_s: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set() and self.first_batch_s is None:
            try:
                with open(self.path, "rb") as fh:
                    head = fh.read(1 << 16)
                    while head.count(b"\n") < 2 and (more := fh.read(1 << 20)):
                        head += more
                if head.count(b"\n") >= 2 and b'"batch"' in head:
                    self.first_batch_s = time.perf_counter() - self.started
                    return
            except OSError:
                pass
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_detect_cli(
    tree: Path,
    sites_csv: Path,
    before: Path,
    after: Path,
    out: Path,
    settings: dict[str, str],
    *,
    sample_rss: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``python -m sitewatch detect`` with ``tree``'s code; wall time, the run's own time (its
    printed summary), start-up latency, peak RSS of the child, and ``phases``: seconds from the
    process start to each ``timing:`` line the run logs (``detect.run.mark_phase``; none for a
    tree older than those lines)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "sitewatch", "detect", "--sites", str(sites_csv), "--before", str(before),
        "--after", str(after), "--out", str(out),
    ]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    cmd += [*extra, "-v"]  # debug log: the run's "timing: PHASE at T" lines (detect.run.mark_phase)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    epoch0 = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=str(tree), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch = Watch(out, t0)
    samples: list[tuple[float, float]] = []
    sampler = None
    if sample_rss:
        try:
            import psutil
        except ImportError:
            psutil = None
        if psutil is not None:
            stop = threading.Event()

            def sample() -> None:
                p = psutil.Process(proc.pid)
                while not stop.is_set():
                    try:
                        samples.append((time.perf_counter() - t0, p.memory_info().rss / 2**20))
                    except psutil.Error:
                        return
                    stop.wait(0.25)

            sampler = (threading.Thread(target=sample, daemon=True), stop)
            sampler[0].start()
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    watch.stop()
    if sampler is not None:
        sampler[1].set()
        sampler[0].join()
    if proc.returncode != 0:
        raise SystemExit(f"detect failed ({proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    m = re.search(r"sites\) in ([0-9.]+) s", output) or re.search(r" in ([0-9.]+) s \(", output)
    phases = {name: float(at) - epoch0 for name, at in re.findall(r"timing: (.+?) at ([0-9.]+)$", output, flags=re.M)}
    result = {
        "phases": phases,
        "wall_s": wall,
        "run_s": float(m.group(1)) if m else float("nan"),
        "first_batch_s": watch.first_batch_s if watch.first_batch_s is not None else float("nan"),
        "max_rss_mb": usage.ru_maxrss / 1024.0,  # KiB on Linux -> MiB
    }
    if samples:
        peak_t, peak = max(samples, key=lambda s: s[1])
        result["peak_at"] = peak_t / wall
        result["sampled_peak_mb"] = peak
        # the phase the peak fell in (the first phase that ended after it), and the highest RSS
        # sampled in each phase
        ends = sorted(phases.items(), key=lambda kv: kv[1])
        result["peak_phase"] = next((name for name, at in ends if at >= peak_t), "process exit")
        by_phase: dict[str, float] = {}
        for t, rss in samples:
            name = next((name for name, at in ends if at >= t), "process exit")
            by_phase[name] = max(by_phase.get(name, 0.0), rss)
        result["rss_by_phase"] = by_phase
    return result


# -- sections -------------------------------------------------------------------------------------


def section_rates(args: argparse.Namespace, inp: Inputs) -> None:
    from detect.run import inference_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    detect_threads = inference_threads(0)
    n_comp, n_e2e = args.component_sites, args.sites
    comp_csv = inp.sites(n_comp)
    print(f"\n== rates: {cores} cores, load average {os.getloadavg()[0]:.1f} at start ==")
    io = rate_plain_reads(inp.before, inp.after, inp.xy[:n_comp])
    print(f"I/O limit (plain rasterio reads, {n_comp} sites):  {io:8.0f} sites/s")
    tiles: dict[int, float] = {}
    images: list[np.ndarray] = []
    for w in args.tiles_workers:
        rate, kept = rate_tiles(comp_csv, inp.before, inp.after, w, keep=128 if w == 0 else 0)
        images = images or kept
        tiles[w] = rate
        name = "thread" if w == 0 else f"{w} worker{'s' if w > 1 else ''}"
        print(f"tiles stage alone, {name:>9} ({n_comp} sites):   {rate:8.0f} sites/s")
    if len(images) < 64:
        _, images = rate_tiles(comp_csv, inp.before, inp.after, 0, keep=128)
    thread_counts = sorted({cores, detect_threads})
    model_before = {t: rate_model(images, batches=args.model_batches, threads=t) for t in thread_counts}
    for t, r in model_before.items():
        print(f"model alone, {t} thread(s), batches of 64:        {r:8.0f} sites/s")
    e2e: dict[str, list[dict[str, float]]] = {}
    e2e_csv = inp.sites(n_e2e)
    for _round in range(args.rounds):
        for w in args.cut_workers:
            res = run_detect_cli(REPO, e2e_csv, inp.before, inp.after, inp.work / f"run_cw{w}", {"detect.cut_workers": w})
            e2e.setdefault(str(w), []).append(res)
            print(
                f"detect end to end, cut_workers={w} ({n_e2e} sites): {n_e2e / res['run_s']:8.0f} sites/s "
                f"(run {res['run_s']:.1f} s, process {res['wall_s']:.1f} s, first batch after {res['first_batch_s']:.1f} s)"
            )
    model_after = {t: rate_model(images, batches=args.model_batches, threads=t) for t in thread_counts}
    model = {t: (model_before[t] + model_after[t]) / 2 for t in thread_counts}
    best_t = max(model, key=model.get)
    ref = model[best_t]
    print(f"\n-- side by side (load average {os.getloadavg()[0]:.1f} at end) --")
    print(f"{'measured':<52} {'sites/s':>8} {'ratio':>7}")
    print(f"{'I/O limit: plain reads of the same windows':<52} {io:8.0f}")
    for w, r in tiles.items():
        per = r / max(1, w)
        name = "thread (in-process)" if w == 0 else f"{w} worker process(es)"
        print(f"{'tiles alone, ' + name + ' (per worker / I/O)':<52} {r:8.0f} {per / io:7.2f}")
    for t in thread_counts:
        print(f"{f'model alone, {t} thread(s) (before {model_before[t]:.0f}, after {model_after[t]:.0f})':<52} {model[t]:8.0f}")
    for w, runs in e2e.items():
        rate = statistics.median(n_e2e / r["run_s"] for r in runs)
        print(f"{f'detect e2e, cut_workers={w} (/ model alone, {best_t} thr)':<52} {rate:8.0f} {rate / ref:7.2f}")
    print("targets: detect e2e / model alone >= 0.9; tiles per worker / I/O limit >= 0.5")
    first = args.cut_workers[0]
    for w in args.cut_workers[1:]:
        print(f"cut_workers={w} vs {first}: " + compare_runs(inp.work / f"run_cw{first}", inp.work / f"run_cw{w}", settings_differ=True))


def section_startup(args: argparse.Namespace, inp: Inputs) -> None:
    if not args.baseline_tree:
        print("\n== startup: skipped (give --baseline-tree to compare with another checkout) ==")
        return
    trees = {f"base {k + 1}" if len(args.baseline_tree) > 1 else "baseline": Path(b).resolve() for k, b in enumerate(args.baseline_tree)}
    trees["this tree"] = REPO
    n = args.startup_sites
    csv_path = inp.sites(n)
    size_mb = (inp.before.stat().st_size + inp.after.stat().st_size) / 1e6
    print(f"\n== startup: {n} sites, rasters {size_mb:.0f} MB together; " + ", ".join(f"{k} = {v}" for k, v in trees.items()) + " ==")
    warm_csv = inp.sites(64)
    for name, tree in trees.items():  # a first run compiles the tree's modules and fills the page cache: not measured
        run_detect_cli(tree, warm_csv, inp.before, inp.after, inp.work / "startup_warmup", {})
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for _round in range(args.rounds):
        for name, tree in trees.items():
            res = run_detect_cli(tree, csv_path, inp.before, inp.after, inp.work / f"startup_{name.replace(' ', '_')}", {})
            rows[name].append(res)
            print(
                f"{name:>10}: first batch after {res['first_batch_s']:.2f} s, run {res['run_s']:.1f} s, "
                f"process {res['wall_s']:.1f} s",
                flush=True,
            )
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("first_batch_s", "run_s", "wall_s")} for k, v in rows.items()}
    t = med["this tree"]
    for name in list(trees)[:-1]:
        b = med[name]
        print(
            f"start-up latency (process start to first scored batch): {name} {b['first_batch_s']:.2f} s, this tree "
            f"{t['first_batch_s']:.2f} s (ratio {t['first_batch_s'] / b['first_batch_s']:.2f}); end to end: {name} "
            f"{b['run_s']:.1f} s, this tree {t['run_s']:.1f} s (ratio {t['run_s'] / b['run_s']:.2f}); process: "
            f"{b['wall_s']:.1f} s vs {t['wall_s']:.1f} s"
        )
        print(f"{name} vs this tree: " + compare_runs(inp.work / f"startup_{name.replace(' ', '_')}", inp.work / "startup_this_tree"))
    print_phases(rows)


#: the phases ``detect`` logs (``detect.run.mark_phase``), in run order, and what ends at each
PHASES = (
    ("cli", "python, the CLI and the job config"),
    ("run_detect", "(run_detect entered)"),
    ("inputs read", "sites and raster headers"),
    ("torch imported", "import of torch (models.backends)"),
    ("scorer ready", "scorer built (checkpoint, torchvision, fusion)"),
    ("planned", "folder, lock, binding, plan"),
    ("first batch", "first batch cut and scored"),
    ("last batch", "every other batch"),
    ("journal read", "journal read back, rows spooled"),
    ("chips written", "chips of the top sites"),
    ("scores written", "scores.csv/.geojson, embeddings"),
    ("gis written", "GeoPackage, KML"),
    ("report written", "report.html"),
    ("manifest written", "manifest.json"),
)


def print_phases(rows: dict[str, list[dict[str, Any]]]) -> None:
    """Per tree, the median time from process start at which each phase ended, and the median
    length of each phase (from the previous phase logged); ``-`` where a tree logs no such line."""
    names = list(rows)
    print("\nwhere the time goes (median seconds since process start; in brackets: the phase's length)")
    print(f"{'phase ends':<18} {'what':<48} " + " ".join(f"{n:>17}" for n in names))
    for phase, what in (*PHASES, ("process end", "process exit")):
        cells = []
        for name in names:
            ends = []
            for r in rows[name]:
                t = r["wall_s"] if phase == "process end" else r["phases"].get(phase)
                if t is not None:
                    ends.append((t, max((v for v in r["phases"].values() if v < t), default=0.0)))
            if not ends:
                cells.append(f"{'-':>17}")
                continue
            cells.append(f"{statistics.median(t for t, _ in ends):8.2f} ({statistics.median(t - p for t, p in ends):5.2f})")
        print(f"{phase:<18} {what:<48} " + " ".join(cells))


def compare_runs(a: Path, b: Path, *, settings_differ: bool = False) -> str:
    """Whether two run folders hold the same outputs (every file's SHA-256 in the manifests) and
    the same manifest apart from times and the model folder's path (``settings_differ``: the
    runs had other settings, so ``config.yaml`` and the manifest are not compared)."""
    import json

    ma, mb = (json.loads((d / "manifest.json").read_text(encoding="utf-8")) for d in (a, b))
    keys = (set(ma["outputs"]) | set(mb["outputs"])) - ({"config.yaml"} if settings_differ else set())
    differing = sorted(k for k in keys if ma["outputs"].get(k) != mb["outputs"].get(k))
    if "report.html" in differing and ma["model"]["path"] != mb["model"]["path"]:
        # the report names the model folder, which is each checkout's own: compare without it
        ra, rb = ((d / "report.html").read_text(encoding="utf-8").replace(m["model"]["path"], "MODEL") for d, m in ((a, ma), (b, mb)))
        if ra == rb:
            differing.remove("report.html")
    if settings_differ:
        return f"outputs identical: {not differing} ({len(keys)} files apart from config.yaml" + (
            f"; differing: {', '.join(differing[:5])})" if differing else ")"
        )

    def comparable(m: dict) -> dict:
        m = {k: v for k, v in m.items() if k not in ("started", "finished", "outputs")}
        model = dict(m["model"])
        model["path"] = Path(model["path"]).name
        model["files"] = [{**f, "path": Path(f["path"]).name} for f in model["files"]]
        return {**m, "model": model}

    same_manifest = comparable(ma) == comparable(mb)
    return (
        f"outputs identical: {not differing} ({len(ma['outputs'])} files; report.html apart from the model folder's path"
        + (f"; differing: {', '.join(differing[:5])}" if differing else "")
        + f"); manifest identical apart from times and the model folder's path: {same_manifest}"
    )


def section_dask(args: argparse.Namespace, inp: Inputs) -> None:
    n, k = args.dask_sites, args.dask_workers
    csv_path = inp.sites(n)
    print(f"\n== dask: {n} sites, local (reader thread) vs `--workers {k}` (a LocalCluster of {k} processes) ==")
    local = run_detect_cli(REPO, csv_path, inp.before, inp.after, inp.work / "dask_local", {"detect.threads": "1"})
    dask = run_detect_cli(REPO, csv_path, inp.before, inp.after, inp.work / "dask_cluster", {"detect.threads": "1"}, extra=("--workers", str(k)))
    print(
        f"local {n / local['run_s']:.1f} sites/s ({local['run_s']:.1f} s), LocalCluster {n / dask['run_s']:.1f} sites/s "
        f"({dask['run_s']:.1f} s; ratio {local['run_s'] / dask['run_s']:.2f} of local's rate)"
    )
    print(compare_runs(inp.work / "dask_local", inp.work / "dask_cluster", settings_differ=True))  # execution differs


def section_order(args: argparse.Namespace, inp: Inputs) -> None:
    """End to end with the plan's spatial order on and off, interleaved, under a block cache
    smaller than the rasters (``--order-cache-mb``: a real scene is far larger than any cache)."""
    n, mb = args.order_sites, args.order_cache_mb
    csv_path = inp.sites(n)
    print(f"\n== order: {n} sites in random order, detect.spatial_order true vs false, GDAL_CACHEMAX={mb} MiB ==")
    old = os.environ.get("GDAL_CACHEMAX")
    os.environ["GDAL_CACHEMAX"] = str(mb)
    runs: dict[str, list[float]] = {"true": [], "false": []}
    try:
        for _ in range(args.rounds):
            for value in ("false", "true"):
                res = run_detect_cli(REPO, csv_path, inp.before, inp.after, inp.work / f"order_{value}", {"detect.spatial_order": value})
                runs[value].append(res["run_s"])
                print(f"spatial_order={value}: {n / res['run_s']:.1f} sites/s ({res['run_s']:.1f} s)", flush=True)
    finally:
        if old is None:
            os.environ.pop("GDAL_CACHEMAX", None)
        else:
            os.environ["GDAL_CACHEMAX"] = old
    off, on = statistics.median(runs["false"]), statistics.median(runs["true"])
    print(f"median: off {n / off:.1f} sites/s, on {n / on:.1f} sites/s: ratio {off / on:.2f} (on / off rate)")
    print(compare_runs(inp.work / "order_false", inp.work / "order_true", settings_differ=True))


def section_memory(args: argparse.Namespace, inp: Inputs) -> None:
    counts = [int(s) for s in args.memory_sites.split(",") if s]
    px = args.memory_chip_px
    print(f"\n== memory: peak RSS of `sitewatch detect` ({px} px chips at 0.5 m, all outputs, cut_workers 0) ==")
    for n in counts:
        settings = {"tiles.chip_px": str(px), "tiles.chip_size_m": str(px * 0.5)}
        res = run_detect_cli(REPO, inp.sites(n), inp.before, inp.after, inp.work / f"mem_{n}", settings, sample_rss=True)
        where = (
            f", sampled peak {res['sampled_peak_mb']:.0f} MiB at {res['peak_at']:.0%} of the run, in the phase ending "
            f"'{res['peak_phase']}'" if "peak_at" in res else ""
        )
        print(f"{n:>8} sites: max RSS {res['max_rss_mb']:7.0f} MiB ({res['run_s']:.0f} s, {n / res['run_s']:.0f} sites/s{where})", flush=True)
        if "rss_by_phase" in res:
            print("          highest RSS sampled per phase (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in res["rss_by_phase"].items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="rates,startup,memory", help="sections to run: rates, startup, dask, order, memory (comma list)")
    p.add_argument("--size-px", type=int, default=4096, help="raster side in pixels at 0.5 m (default 4096)")
    p.add_argument("--compress", default="deflate", choices=("deflate", "lzw", "none"))
    p.add_argument("--sites", type=int, default=1500, help="sites of each end-to-end run (default 1500)")
    p.add_argument("--component-sites", type=int, default=640, help="sites for the I/O and tiles rates (default 640)")
    p.add_argument("--model-batches", type=int, default=4, help="batches of 64 for each model-alone rate (default 4)")
    p.add_argument("--tiles-workers", default="0,1,2", help="tiles-alone runs: 0 = in-process, N = N worker processes")
    p.add_argument("--cut-workers", default="0,1,2", help="detect.cut_workers values run end to end (default 0,1,2)")
    p.add_argument("--rounds", type=int, default=1, help="end-to-end rounds, interleaved; the median is quoted")
    p.add_argument(
        "--baseline-tree", action="append", help="startup: another checkout to compare with (e.g. git archive of main); may be repeated"
    )
    p.add_argument("--startup-sites", type=int, default=640, help="sites of the startup runs (default 640)")
    p.add_argument("--dask-sites", type=int, default=640, help="dask: sites of the local and LocalCluster runs")
    p.add_argument("--dask-workers", type=int, default=2, help="dask: LocalCluster worker processes")
    p.add_argument("--order-sites", type=int, default=3000, help="order: sites of each run (default 3000)")
    p.add_argument("--order-cache-mb", type=int, default=64, help="order: GDAL_CACHEMAX of those runs (default 64)")
    p.add_argument("--memory-sites", default="1000,10000", help="site counts for peak memory (default 1000,10000)")
    p.add_argument("--memory-chip-px", type=int, default=32, help="chip side for the memory runs (small = fast)")
    p.add_argument("--workdir", help="keep inputs and runs here (default: a folder under the system temp dir)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.tiles_workers = [int(s) for s in args.tiles_workers.split(",") if s]
    args.cut_workers = [int(s) for s in args.cut_workers.split(",") if s]
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sections - {"rates", "startup", "dask", "order", "memory"}
    if unknown:
        p.error(f"--only: unknown section(s) {sorted(unknown)}; valid: rates, startup, dask, order, memory")

    import logging
    import tempfile

    logging.basicConfig(level=logging.WARNING)
    work = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir()) / "sitewatch_bench_detect"
    work.mkdir(parents=True, exist_ok=True)
    counts = [args.sites, args.component_sites, args.startup_sites, args.dask_sites, args.order_sites] + [int(s) for s in args.memory_sites.split(",") if s]
    inp = Inputs(work, size_px=args.size_px, seed=args.seed, compress=args.compress, max_sites=max(counts))
    print(f"command: {' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}")
    if "rates" in sections:
        section_rates(args, inp)
    if "startup" in sections:
        section_startup(args, inp)
    if "dask" in sections:
        section_dask(args, inp)
    if "order" in sections:
        section_order(args, inp)
    if "memory" in sections:
        section_memory(args, inp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
