"""Benchmark: synthetic scene generation speed (pixels per second) for a 4096 x 4096 scene.

Prints, measured side by side in one run:

* the wall time and px/s of ``generate_dataset`` for one region of ``--size`` px (both epochs);
* the time of the stages (layout, shared textures, rendering, sensor effects, GeoTIFF writing);
* the ratio of the whole generation to only writing the same two GeoTIFFs (how far from I/O
  bound the generator is), and of a small region's px/s to the large one's (scaling);
* the process's CPU time beside its wall time (on a shared machine wall time includes waiting).

Run: ``python benchmarks/bench_synth.py [--size 4096] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rasterio.transform import from_origin

from tiles.synth import SynthConfig, generate_dataset
from tiles.synth.damage import place_damage_clusters
from tiles.synth.dataset import write_geotiff
from tiles.synth.layout import add_construction, build_layout
from tiles.synth.nuisance import MAX_SHIFT_PX, apply_sensor, draw_epoch_styles, region_strengths
from tiles.synth.render import make_static_fields, render_epoch


def stages(cfg: SynthConfig, folder: Path) -> dict[str, float]:
    """Time each stage of one region, as :func:`generate_dataset` runs them."""
    t: dict[str, float] = {}
    rng = np.random.default_rng(cfg.seed)
    size, g = cfg.size_px, cfg.gsd_m
    pad = MAX_SHIFT_PX + 2
    t0 = time.perf_counter()
    lay = build_layout(rng, size * g, size * g, building_density=cfg.building_density, tree_density=cfg.tree_density,
                       facilities_per_km2=cfg.facilities_per_km2, edge_margin_m=cfg.edge_margin_m)
    place_damage_clusters(rng, lay, cfg.damage_styles)
    add_construction(rng, lay, cfg.construction)
    t["layout"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fields = make_static_fields(1, (size + 2 * pad, size + 2 * pad), g, (-pad * g, -pad * g))
    t["textures"] = time.perf_counter() - t0
    before, after = draw_epoch_styles(rng, region_strengths(rng, cfg))
    t["render"] = t["sensor"] = t["write"] = 0.0
    for i, style in enumerate((before, after)):
        t0 = time.perf_counter()
        img = render_epoch(lay, fields, style)[pad : pad + size, pad : pad + size].copy()
        t["render"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        u8, _ = apply_sensor(img, style, g)
        t["sensor"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        write_geotiff(folder / f"stage{i}.tif", np.ascontiguousarray(np.moveaxis(u8, 2, 0)), from_origin(500000, 4500000, g, g), "EPSG:32633", {})
        t["write"] += time.perf_counter() - t0
    t["buildings"] = float(len(lay.buildings))
    t["trees"] = float(lay.trees["x"].size)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096, help="region side in pixels (default 4096)")
    ap.add_argument("--small", type=int, default=1024, help="small region side for the scaling ratio")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    cfg = SynthConfig(sites=50, seed=1, size_px=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        runs, cpu = [], []
        for r in range(args.repeat):
            c0 = time.process_time()
            s = generate_dataset(tmp_path / f"big{r}", cfg, progress=False)
            cpu.append(time.process_time() - c0)
            runs.append(s.seconds)
        big_s = min(runs)
        big_cpu = min(cpu)
        big_px = 2 * args.size * args.size
        small_cfg = replace(cfg, size_px=args.small, sites=10)
        small = min(generate_dataset(tmp_path / f"small{r}", small_cfg, progress=False).seconds for r in range(args.repeat))
        small_px = 2 * args.small * args.small
        st = stages(cfg, tmp_path)
        # writing only: two GeoTIFFs of scene-like content (one of the rendered images, re-used)
        from rasterio import open as ropen

        with ropen(tmp_path / "stage0.tif") as src:
            arr = src.read()
        t0 = time.perf_counter()
        for i in range(2):
            write_geotiff(tmp_path / f"io{i}.tif", arr, from_origin(500000, 4500000, cfg.gsd_m, cfg.gsd_m), "EPSG:32633", {})
        io_s = time.perf_counter() - t0
    print(f"synth benchmark: one region of {args.size} x {args.size} px at {cfg.gsd_m} m, before + after (best of {args.repeat})")
    print(f"  generate_dataset  {big_s:8.2f} s   {big_px / big_s / 1e6:6.2f} Mpx/s  ({big_px / 1e6:.1f} Mpx written)")
    print(f"  CPU time of this process {big_cpu:.2f} s -> {big_px / big_cpu / 1e6:.2f} Mpx per CPU-second "
          f"(wall / CPU = {big_s / big_cpu:.1f}: >1 means the machine was busy with other work)")
    print(f"  stages: layout {st['layout']:.2f} s ({int(st['buildings'])} buildings, {int(st['trees'])} trees), "
          f"textures {st['textures']:.2f} s, render {st['render']:.2f} s, sensor {st['sensor']:.2f} s, write {st['write']:.2f} s")
    print(f"  writing the two GeoTIFFs only: {io_s:.2f} s -> generation / write-only = {big_s / io_s:.1f}x")
    print(f"  {args.small} px region: {small:.2f} s, {small_px / small / 1e6:.2f} Mpx/s -> "
          f"px/s {args.size} vs {args.small}: {(big_px / big_s) / (small_px / small):.2f}x")


if __name__ == "__main__":
    main()
