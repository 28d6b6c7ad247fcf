"""Benchmark of pair cutting: PairCutter against plain rasterio reads of the same windows.

Generates (once, in ``--workdir``) a before and an after GeoTIFF of ``--size`` x ``--size``
pixels (3 bands, uint8, 0.5 m UTM, 256 x 256 deflate tiles, a cheap texture), draws ``--sites``
random sites inside them, and measures side by side in one run:

- ``plain``: rasterio reads of exactly the native before/after windows PairCutter reads, from
  datasets kept open (the I/O limit);
- ``cutter``: ``PairCutter.cut_many`` with the default config (resampling, co-registration,
  histogram matching, quality);
- ``cutter-geometry``: the same without co-registration and normalisation.

The plain pass runs before and after the cutter passes (the figure is their mean), after a
warm-up pass, so both see the same OS page cache. Then, each in a fresh subprocess, the peak
resident memory of streaming ``--memory-sites`` sites through ``cut_many`` (pairs are dropped as
they come, as ``sitewatch tiles`` and ``sitewatch detect`` do).

With ``--baseline-tree DIR`` (another checkout of the project, e.g. ``git archive`` of an older
commit), the default-config cutter pass instead runs ``--rounds`` times for this tree and for
DIR, interleaved, each in a fresh child process (``PYTHONPATH`` set to the tree) after a
warm-up, and the medians of wall and CPU milliseconds per pair are printed with their ratio
(medians of interleaved rounds, because a shared machine's load drifts); the first round
also hashes (untimed) the pairs of eight cases in both trees (:func:`identity_cases`: the
default config on the first 300 sites, chips across the raster edges, an unrelated after,
nodata holes, uint16, decimated windows, standardise with nearest, cubic without
co-registration; small extra rasters are generated once in ``--workdir``) and says per case
whether they are byte-identical (exit status 3 when any differ).

Examples::

    python benchmarks/bench_tiles.py                                  # 20000 px, 10k sites
    python benchmarks/bench_tiles.py --size 4000 --sites 500 --memory-sites 200,1000,5000
    python benchmarks/bench_tiles.py --size 4000 --sites 1000 --memory-sites '' --baseline-tree /tmp/base
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 5_000_000.0)
RES = 0.5


def make_raster(path: Path, size: int, epoch: int, *, texture_seed: int = 0, dtype: str = "uint8", holes: bool = False) -> None:
    """A tiled deflate GeoTIFF with a cheap texture, written strip by strip.

    The after raster (``epoch=1``) shows the same texture moved by about 1 m, darker, with a
    little noise, so co-registration and normalisation do realistic work. Another
    ``texture_seed`` gives an unrelated texture; ``dtype="uint16"`` stores ``200 * v + 1000``;
    ``holes`` declares nodata 0 and writes 0 in scattered 24 x 24 px squares.
    """
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(texture_seed)
    base = rng.integers(0, 255, (3, 512, 512), dtype=np.uint8)
    noise_rng = np.random.default_rng(epoch + 1)
    # smooth the noise a little so deflate and the co-registration have something natural-ish
    base = ((base.astype(np.uint16) + np.roll(base, 1, 1) + np.roll(base, 1, 2) + np.roll(base, (1, 1), (1, 2))) // 4).astype(np.uint8)
    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype=dtype, crs=CRS, nodata=0 if holes else None,
        transform=from_origin(ORIGIN[0], ORIGIN[1], RES, RES), tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", zlevel=1, interleave="pixel", BIGTIFF="IF_SAFER",
    )
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as ds:
        for row in range(0, size, 256):
            h = min(256, size - row)
            cols = np.arange(size)
            strip = np.empty((3, h, size), np.uint8)
            off = 2 * epoch  # pixels (0.5 m): the after content sits 1 m lower and right
            for b in range(3):
                r_idx = ((np.arange(row, row + h)[:, None] - off) * 7 // 5 + b * 31) % 512
                c_idx = ((cols[None, :] - off) * 3 // 2) % 512
                strip[b] = base[b][r_idx, c_idx]
            if epoch:
                strip = (strip * 0.8 + noise_rng.integers(0, 12, strip.shape)).astype(np.uint8)
            if holes:
                strip = np.maximum(strip, 1)
                rr, cc = np.meshgrid(np.arange(row, row + h), cols, indexing="ij")
                strip[:, ((rr // 24) * 7 + (cc // 24) * 3 + epoch) % 11 == 0] = 0
            out = strip.astype(np.uint16) * 200 + 1000 if dtype == "uint16" else strip
            if dtype == "uint16" and holes:
                out[:, strip.max(axis=0) == 0] = 0
            ds.write(out, window=rasterio.windows.Window(0, row, size, h))
    tmp.replace(path)


def ensure_rasters(workdir: Path, size: int) -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    paths = (workdir / f"before_{size}_v2.tif", workdir / f"after_{size}_v2.tif")
    for epoch, path in enumerate(paths):
        if not path.exists():
            t = time.perf_counter()
            make_raster(path, size, epoch)
            print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s", flush=True)
    return paths


#: rasters of the identity cases besides the main pair: name -> (epoch, make_raster keywords); 1024 px
SMALL = 1024
EXTRA_RASTERS = {
    "after_unrelated": (1, {"texture_seed": 7}),
    "before_holes": (0, {"holes": True}),
    "after_holes": (1, {"holes": True}),
    "before_u16": (0, {"dtype": "uint16"}),
    "after_u16": (1, {"dtype": "uint16"}),
}


def ensure_extra_rasters(workdir: Path) -> dict[str, Path]:
    """The small rasters of :func:`identity_cases` (generated once in ``workdir``)."""
    paths = {}
    for name, (epoch, kw) in EXTRA_RASTERS.items():
        path = workdir / f"{name}_{SMALL}_v1.tif"
        if not path.exists():
            make_raster(path, SMALL, epoch, **kw)
        paths[name] = path
    return paths


def edge_sites(n: int, size: int, seed: int = 3) -> list:
    """Sites within 40 m of the raster's edges (chips partly outside: partial valid masks)."""
    from pyproj import Transformer

    from tiles.types import Site

    rng = np.random.default_rng(seed)
    extent = size * RES
    along = rng.uniform(0.0, extent, n)
    depth = rng.uniform(-40.0, 40.0, n)
    side = rng.integers(0, 4, n)
    east = np.where(side == 0, depth, np.where(side == 1, extent - depth, along))
    south = np.where(side == 2, depth, np.where(side == 3, extent - depth, along))
    x, y = ORIGIN[0] + east, ORIGIN[1] - south
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(x, y)
    return [Site(f"e{i}", float(a), float(b)) for i, (a, b) in enumerate(zip(lon, lat))]


def identity_cases(before: Path, after: Path, size: int, n: int) -> list[tuple[str, Path, Path, list, dict]]:
    """``(name, before, after, sites, TilesConfig keywords)`` whose pairs are hashed in both trees.

    Eight cases over the code paths of the tiles stage: the default config on the main pair;
    chips across the raster edges (partial validity: the masked co-registration, histogram and
    resampling paths); an after with an unrelated texture (no shift found: both refinement
    starts, shifts not applied); nodata holes inside chips; uint16 rasters (per-scene
    stretch); large windows read decimated; standardisation with nearest resampling; cubic
    resampling without co-registration.
    """
    extra = ensure_extra_rasters(before.parent)
    main = random_sites(n, size)
    small = random_sites(max(50, n // 2), SMALL, seed=5)
    m = max(50, n // 2)
    return [
        ("default", before, after, main, {}),
        ("edges", before, after, edge_sites(m, size), {}),
        ("unrelated after", before, extra["after_unrelated"], small, {}),
        ("nodata holes", extra["before_holes"], extra["after_holes"], small, {}),
        ("uint16", extra["before_u16"], extra["after_u16"], small, {}),
        ("decimated (chip 256 m)", before, after, main[:m], {"chip_size_m": 256.0}),
        ("standardise, nearest", before, after, main[:m], {"normalisation": "standardise", "resampling": "nearest"}),
        ("cubic, no co-registration", before, after, main[:m], {"resampling": "cubic", "coregister": False}),
    ]


def random_sites(n: int, size: int, seed: int = 0) -> list:
    from pyproj import Transformer

    from tiles.types import Site

    rng = np.random.default_rng(seed)
    margin = 100.0  # metres from the edges
    extent = size * RES
    x = ORIGIN[0] + rng.uniform(margin, extent - margin, n)
    y = ORIGIN[1] - rng.uniform(margin, extent - margin, n)
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(x, y)
    return [Site(f"s{i}", float(a), float(b)) for i, (a, b) in enumerate(zip(lon, lat))]


def planned_windows(cutter, sites) -> list[tuple[tuple, tuple]]:  # noqa: ANN001
    """The native windows (row_off, col_off, h, w) PairCutter reads for each site."""
    from tiles import grid

    cfg = cutter.config
    cb, ca = cutter.candidates(sites)
    gsd = cfg.chip_size_m / cfg.chip_px
    margin = math.ceil(cfg.max_shift_m / gsd) + 1 if cfg.coregister else 0
    out = []
    for b, a in zip(cb, ca):
        wb = grid.native_window(b[0].affine, cfg.chip_px, b[0].scene.height, b[0].scene.width, 0.0)
        wa = grid.native_window(a[0].affine, cfg.chip_px, a[0].scene.height, a[0].scene.width, float(margin))
        out.append((wb, wa))
    return out


def plain_reads(before: Path, after: Path, windows) -> float:  # noqa: ANN001
    """Seconds to read every before/after window with plain rasterio (datasets kept open)."""
    import rasterio
    from rasterio.windows import Window

    t = time.perf_counter()
    with rasterio.open(before) as db, rasterio.open(after) as da:
        for (r0, c0, h, w), (r1, c1, h1, w1) in windows:
            db.read((1, 2, 3), window=Window(c0, r0, w, h))
            da.read((1, 2, 3), window=Window(c1, r1, w1, h1))
    return time.perf_counter() - t


def cutter_pass(before: Path, after: Path, sites, **config) -> tuple[float, dict]:  # noqa: ANN001
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.cut import PairCutter

    b = RasterCatalog.from_paths(before, epoch="before")
    a = RasterCatalog.from_paths(after, epoch="after")
    counts: dict[str, int] = {}
    t = time.perf_counter()
    with PairCutter(b, a, TilesConfig(**config)) as cutter:
        for pair in cutter.cut_many(sites):
            key = pair.meta.status + (f":{pair.meta.reason}" if pair.meta.reason else "")
            counts[key] = counts.get(key, 0) + 1
    return time.perf_counter() - t, counts


def memory_child(before: str, after: str, n: int, size: int) -> None:
    """Run in a subprocess: stream n sites, print peak RSS (MB) as JSON."""
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.cut import PairCutter

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sites = random_sites(n, size, seed=1)
    after_sites = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    b = RasterCatalog.from_paths(before, epoch="before")
    a = RasterCatalog.from_paths(after, epoch="after")
    t = time.perf_counter()
    done = 0
    with PairCutter(b, a, TilesConfig()) as cutter:
        for pair in cutter.cut_many(sites):
            done += pair.image is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "sites": n, "pairs": done, "seconds": time.perf_counter() - t,
        "rss_start_mb": base / 1024, "rss_after_site_list_mb": after_sites / 1024, "peak_rss_mb": peak / 1024,
    }))


def pairs_digest(before: Path, after: Path, sites, **config) -> str:  # noqa: ANN001
    """SHA-256 over every pair's image and valid bytes (dtype, shape) and every metadata field."""
    import hashlib

    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.cut import PairCutter

    h = hashlib.sha256()
    statuses: dict[str, int] = {}
    b = RasterCatalog.from_paths(before, epoch="before")
    a = RasterCatalog.from_paths(after, epoch="after")
    with PairCutter(b, a, TilesConfig(**config)) as cutter:
        for pair in cutter.cut_many(sites):
            for arr in (pair.image, pair.valid):
                if arr is None:
                    h.update(b"None")
                else:
                    arr = np.ascontiguousarray(arr)
                    h.update(f"{arr.dtype}{arr.shape}".encode())
                    h.update(arr.tobytes())
            h.update(repr(sorted(vars(pair.meta).items())).encode())
            statuses[pair.meta.status] = statuses.get(pair.meta.status, 0) + 1
    return h.hexdigest() + " " + json.dumps(statuses, sort_keys=True)


def pass_child(before: str, after: str, n: int, size: int, hash_n: int) -> None:
    """Run in a subprocess: one warm-up and one timed default-config pass; print JSON.

    With ``hash_n`` > 0, also (untimed, afterwards) the :func:`pairs_digest` of every
    :func:`identity_cases` case (``hash_n`` sites on the main pair).
    """
    sites = random_sites(n, size)
    cutter_pass(Path(before), Path(after), sites[: min(50, n)])  # imports, page cache
    c0 = time.process_time()
    wall, counts = cutter_pass(Path(before), Path(after), sites)
    cpu = time.process_time() - c0
    digests = {}
    if hash_n:
        for name, b, a, case_sites, config in identity_cases(Path(before), Path(after), size, hash_n):
            digests[name] = pairs_digest(b, a, case_sites, **config)
    print(json.dumps({"wall": wall, "cpu": cpu, "counts": counts, "digest": digests}))


def compare_trees(before: Path, after: Path, n: int, size: int, baseline: Path, rounds: int, gdal_mb: int) -> int:
    """Interleaved child-process passes of this tree and ``baseline``; print medians and ratios."""
    import statistics

    here = Path(__file__).resolve().parent.parent
    trees = {"this tree": here, "baseline": baseline.resolve()}
    if not (trees["baseline"] / "tiles" / "cut.py").is_file():
        print(f"--baseline-tree {baseline}: no tiles/cut.py there; give the root of another checkout")
        return 2
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    counts: dict[str, dict] = {}
    digests: dict[str, dict[str, str]] = {}
    hash_n = min(n, 300)
    for r in range(rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for name in order:
            env = dict(os.environ, PYTHONPATH=str(trees[name]), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
            cmd = [sys.executable, __file__, "--gdal-cachemax-mb", str(gdal_mb), "--_pass-child",
                   str(before), str(after), str(n), str(size), str(hash_n if r == 0 else 0)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if res.returncode != 0:
                print(f"{name} pass failed:\n{res.stderr[-2000:]}")
                return 1
            d = json.loads(res.stdout.strip().splitlines()[-1])
            times[name].append((d["wall"] / n * 1e3, d["cpu"] / n * 1e3))
            counts[name] = d["counts"]
            digests[name] = digests.get(name) or d["digest"]
            print(f"  round {r + 1} {name:9s}: {d['wall'] / n * 1e3:6.2f} ms/pair wall, "
                  f"{d['cpu'] / n * 1e3:6.2f} ms/pair CPU", flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    for k in trees:
        print(f"{k:9s} ({trees[k]}): median {med[k][0]:.2f} ms/pair wall, {med[k][1]:.2f} ms/pair CPU  statuses {counts[k]}")
    print(f"ratio this tree / baseline: wall {med['this tree'][0] / med['baseline'][0]:.3f}, "
          f"CPU {med['this tree'][1] / med['baseline'][1]:.3f}  ({rounds} interleaved rounds of {n} pairs, medians)")
    print("pairs (image, valid, metadata; SHA-256) of each identity case, this tree vs baseline:")
    same = True
    for case, digest in digests["this tree"].items():
        other = digests["baseline"].get(case)
        ok = digest == other
        same &= ok
        print(f"  {case:27s} {'byte-identical' if ok else 'DIFFER'}  statuses {digest.split(' ', 1)[1]}")
    same &= set(digests["this tree"]) == set(digests["baseline"])
    print(f"{len(digests['this tree'])} cases ({hash_n} sites on the main pair): "
          + ("byte-identical between the trees" if same else "DIFFER between the trees"))
    return 0 if same else 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=20_000, help="raster side in pixels (default 20000)")
    p.add_argument("--sites", type=int, default=10_000, help="random sites for the throughput runs (default 10000)")
    p.add_argument("--memory-sites", default="1000,10000,100000", help="site counts for the peak-memory runs ('' to skip)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sitewatch-bench-tiles"), help="where the rasters are generated")
    p.add_argument("--gdal-cachemax-mb", type=int, default=256, help="GDAL block cache for every pass")
    p.add_argument("--baseline-tree", type=Path,
                   help="another checkout: compare its default cutter pass with this tree's (interleaved child processes)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per tree with --baseline-tree (default 5)")
    p.add_argument("--_pass-child", nargs=5, metavar=("BEFORE", "AFTER", "N", "SIZE", "HASH_N"), help=argparse.SUPPRESS)
    p.add_argument("--_memory-child", nargs=4, metavar=("BEFORE", "AFTER", "N", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ["GDAL_CACHEMAX"] = str(args.gdal_cachemax_mb)
    if args._memory_child:
        before, after, n, size = args._memory_child
        memory_child(before, after, int(n), int(size))
        return 0
    if args._pass_child:
        before, after, n, size, hash_n = args._pass_child
        pass_child(before, after, int(n), int(size), int(hash_n))
        return 0

    before, after = ensure_rasters(args.workdir, args.size)
    if args.baseline_tree is not None:
        ensure_extra_rasters(args.workdir)
        print(f"{args.sites} sites, {args.size} x {args.size} px rasters, {os.cpu_count()} CPUs visible, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        return compare_trees(before, after, args.sites, args.size, args.baseline_tree, args.rounds, args.gdal_cachemax_mb)
    sites = random_sites(args.sites, args.size)
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.cut import PairCutter

    with PairCutter(RasterCatalog.from_paths(before, epoch="before"), RasterCatalog.from_paths(after, epoch="after"), TilesConfig()) as c:
        windows = planned_windows(c, sites)
    print(f"{args.sites} sites, {args.size} x {args.size} px rasters, 128 px chips, GDAL_CACHEMAX={args.gdal_cachemax_mb} MB, "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}", flush=True)
    n = args.sites
    plain_reads(before, after, windows)  # warm-up: the OS page cache
    plain1 = plain_reads(before, after, windows)
    print(f"  plain pass 1: {n / plain1:.1f} pairs/s", flush=True)
    t_cut, counts = cutter_pass(before, after, sites)
    print(f"  cutter pass: {n / t_cut:.1f} pairs/s", flush=True)
    t_geo, _ = cutter_pass(before, after, sites, coregister=False, normalisation="none")
    print(f"  cutter geometry pass: {n / t_geo:.1f} pairs/s", flush=True)

    plain2 = plain_reads(before, after, windows)
    plain = (plain1 + plain2) / 2
    print(f"plain rasterio reads : {n / plain:8.1f} pairs/s  (passes: {n / plain1:.1f}, {n / plain2:.1f})")
    print(f"PairCutter (default) : {n / t_cut:8.1f} pairs/s  ratio to plain {plain / t_cut:.2f}   statuses {counts}")
    print(f"PairCutter (geometry): {n / t_geo:8.1f} pairs/s  ratio to plain {plain / t_geo:.2f}   (no co-registration, no normalisation)")

    sys.stdout.flush()

    for m in [int(x) for x in args.memory_sites.split(",") if x.strip()]:
        cmd = [sys.executable, __file__, "--gdal-cachemax-mb", str(args.gdal_cachemax_mb),
               "--_memory-child", str(before), str(after), str(m), str(args.size)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(f"memory run with {m} sites failed:\n{res.stderr[-2000:]}")
            continue
        d = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"peak memory, {m:>7} sites: {d['peak_rss_mb']:7.0f} MB  (site list in memory: "
              f"{d['rss_after_site_list_mb'] - d['rss_start_mb']:.0f} MB; {m / d['seconds']:.0f} pairs/s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
