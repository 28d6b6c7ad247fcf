"""What the GIS files add to the end of ``sitewatch detect``: ``scores.gpkg`` and ``scores.kml``
side by side with the ``scores.csv`` + ``scores.geojson`` writer, for N sites (generated rows with
the full set of ``scores.csv`` columns; a tenth with a footprint polygon, a twentieth
``cannot_assess``).

    python benchmarks/bench_gis.py [--sites 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from detect.gis import write_gpkg, write_kml
from detect.outputs import ScoresWriter, score_columns

EXTRA = ("name", "kind", "before_scene", "after_scene", "before_time", "after_time", "before_gsd_m", "after_gsd_m",
         "chip_gsd_m", "chip_size_m", "shift_dy_px", "shift_dx_px", "shift_m", "shift_applied", "coreg_confidence",
         "normalisation", "valid_fraction", "cloud_fraction", "blank_fraction", "saturated_fraction", "detail")


def make_rows(n: int, seed: int = 0) -> tuple[list[dict[str, str]], dict[str, dict]]:
    rng = np.random.default_rng(seed)
    rows, footprints = [], {}
    for i in range(n):
        lon, lat = 38.30 + 0.05 * rng.random(), 33.40 + 0.05 * rng.random()
        ok = i % 20 != 19
        row = {"site_id": f"s{i:06d}", "lon": f"{lon:.8f}", "lat": f"{lat:.8f}",
               "score": f"{rng.random():.6f}" if ok else "", "rank": str(i + 1) if ok else "",
               "status": "ok" if ok else "cannot_assess", "reason": "" if ok else "outside_after_coverage",
               "flagged": "true" if ok and i % 7 == 0 else "false",
               "name": f"building <{i}>", "kind": "home", "before_scene": "b", "after_scene": "a",
               "before_time": "2023-02-01T08:30:00Z", "after_time": "2023-03-15T08:40:00Z", "before_gsd_m": "0.5",
               "after_gsd_m": "0.5", "chip_gsd_m": "0.5", "chip_size_m": "64", "shift_dy_px": "0.1", "shift_dx_px": "-0.2",
               "shift_m": "0.11", "shift_applied": "false", "coreg_confidence": "0.6", "normalisation": "histogram",
               "valid_fraction": "1", "cloud_fraction": "0", "blank_fraction": "0", "saturated_fraction": "0", "detail": "",
               "chip_before": f"chips/s{i:06d}_before.png" if i < 200 else "", "chip_after": "", "chip_heatmap": ""}
        rows.append(row)
        if i % 10 == 0:
            d = 0.00005
            ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]]
            footprints[row["site_id"]] = {"type": "Polygon", "coordinates": [ring]}
    return rows, footprints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows, footprints = make_rows(args.sites)
    columns = score_columns(rows)
    times: dict[str, list[float]] = {"scores.csv + scores.geojson": [], "scores.gpkg": [], "scores.kml": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for _ in range(args.repeat):
            t = time.perf_counter()
            writer = ScoresWriter(folder, columns)
            for row in rows:
                writer.add(row)
            writer.close()
            times["scores.csv + scores.geojson"].append(time.perf_counter() - t)
            with open(folder / "scores.csv", newline="", encoding="utf-8") as fh:
                read = list(csv.DictReader(fh))
            t = time.perf_counter()
            write_gpkg(folder / "scores.gpkg", read, columns, threshold=0.5, footprints=footprints)
            times["scores.gpkg"].append(time.perf_counter() - t)
            t = time.perf_counter()
            write_kml(folder / "scores.kml", read, threshold=0.5)
            times["scores.kml"].append(time.perf_counter() - t)
        sizes = {k: (folder / k).stat().st_size for k in ("scores.csv", "scores.geojson", "scores.gpkg", "scores.kml")}
    base = statistics.median(times["scores.csv + scores.geojson"])
    print(f"{args.sites} sites ({len(footprints)} footprints), median of {args.repeat}:")
    for name, values in times.items():
        m = statistics.median(values)
        print(f"  {name:28s} {m:6.2f} s  ({m / base:4.1f}x the csv+geojson writer)")
    print("  sizes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
