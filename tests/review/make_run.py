"""Writes a small run folder in the format ``sitewatch detect`` produces (real PNGs, GeoTIFFs, CSV).

Used by the review tests until/alongside a real ``sitewatch detect`` run: ``scores.csv`` with the
agreed columns, ``chips/`` for the top sites, ``manifest.json`` listing real GeoTIFF rasters with
their SHA-256, ``embeddings.npz`` and ``config.yaml``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

RUN_COLUMNS = [
    "site_id", "lon", "lat", "score", "rank", "status", "reason", "flagged",
    "before_scene", "after_scene", "before_time", "after_time", "chip_gsd_m", "shift_m",
    "name", "kind", "chip_before", "chip_after", "chip_heatmap",
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_raster(path: Path, seed: int, lon0: float, lat0: float) -> None:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    data = rng.integers(0, 255, size=(3, 64, 64), dtype=np.uint8)
    with rasterio.open(
        path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:4326",
        transform=from_origin(lon0, lat0, 1e-5, 1e-5),
    ) as dst:
        dst.write(data)


def write_run(
    folder: Path,
    n_sites: int = 12,
    *,
    chips_top: int = 6,
    names: dict[int, str] | None = None,
    threshold: float = 0.5,
    seed: int = 0,
    embedding_dim: int = 8,
) -> Path:
    """Write a run folder with ``n_sites`` sites (scores descending) and return it.

    Args:
        folder: the run folder to create.
        n_sites: number of sites; the last one is ``cannot_assess``.
        chips_top: how many top sites get chips (before, after, heatmap PNGs).
        names: row index -> site name (e.g. one with HTML in it).
        threshold: the run's flagging threshold (also recorded in the manifest).
        seed: RNG seed.
        embedding_dim: D of ``embeddings.npz``.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    chips = folder / "chips"
    chips.mkdir(exist_ok=True)
    rasters = folder.parent / f"{folder.name}_rasters"
    (rasters / "before").mkdir(parents=True, exist_ok=True)
    (rasters / "after").mkdir(parents=True, exist_ok=True)
    lon0, lat0 = -122.7, 38.5
    before_tif = rasters / "before" / "scene_b.tif"
    after_tif = rasters / "after" / "scene_a.tif"
    _write_raster(before_tif, seed, lon0, lat0)
    _write_raster(after_tif, seed + 1, lon0, lat0)
    scores = np.sort(rng.uniform(0, 1, n_sites))[::-1]
    rows = []
    for i in range(n_sites):
        site_id = f"s{i:05d}"
        ok = i < n_sites - 1
        chip = {"chip_before": "", "chip_after": "", "chip_heatmap": ""}
        if ok and i < chips_top:
            for kind, shade in (("before", 60), ("after", 180), ("heatmap", 250)):
                img = np.full((32, 32, 3), shade, dtype=np.uint8)
                img[rng.integers(0, 32), :, :] = 0
                Image.fromarray(img).save(chips / f"{site_id}_{kind}.png")
                chip[f"chip_{kind}"] = f"chips/{site_id}_{kind}.png"
        rows.append(
            {
                "site_id": site_id,
                "lon": f"{lon0 + 0.0001 + 0.00003 * i:.6f}",
                "lat": f"{lat0 - 0.0001 - 0.00003 * i:.6f}",
                "score": f"{scores[i]:.6f}" if ok else "",
                "rank": str(i + 1) if ok else "",
                "status": "ok" if ok else "cannot_assess",
                "reason": "" if ok else "outside_after_coverage",
                "flagged": "true" if ok and scores[i] >= threshold else "false",
                "before_scene": "scene_b",
                "after_scene": "scene_a",
                "before_time": "2017-06-21T00:00:00",
                "after_time": "2017-10-11T00:00:00",
                "chip_gsd_m": "0.5",
                "shift_m": "0.3",
                "name": (names or {}).get(i, f"building {i}"),
                "kind": "home",
                **chip,
            }
        )
    with (folder / "scores.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUN_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    ok_ids = [r["site_id"] for r in rows if r["status"] == "ok"]
    emb = rng.normal(size=(len(ok_ids), embedding_dim)).astype(np.float16)
    np.savez(folder / "embeddings.npz", site_id=np.array(ok_ids), embedding=emb)
    manifest = {
        "inputs": {
            "sites": {"path": str(folder / "sites.csv"), "sha256": ""},
            "before": [{"path": str(before_tif), "sha256": _sha256(before_tif)}],
            "after": [{"path": str(after_tif), "sha256": _sha256(after_tif)}],
        },
        "model": {"path": "default", "weights_sha256": "0" * 64, "meta": {"operating_points": {"screening": threshold}}},
        "config": {"detect": {"operating_point": "screening"}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    (folder / "config.yaml").write_text("tiles:\n  chip_px: 32\n  chip_size_m: 16.0\n", encoding="utf-8")
    return folder
