"""Writes a small run folder through the run folder contract's writers (:mod:`detect.runfolder`).

Used by the review tests beside real ``sitewatch detect`` runs (tests/review/test_detect_run.py,
footprint_scene.py): ``scores.csv`` and ``scores.geojson`` by :func:`detect.runfolder.write_scores`,
``chips/`` (real PNGs) for the top sites, ``manifest.json`` by :func:`detect.runfolder.write_manifest`
listing real GeoTIFF rasters with their SHA-256, ``embeddings.npz`` and ``config.yaml``. Scores
and pair metadata are made up (chosen for the tests), the format is the real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from detect.runfolder import ScoreRow, write_embeddings, write_scores, written_score
from tests.runfolder_fixtures import write_test_manifest

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
    facilities: Mapping[int, tuple[Sequence[float | str], Sequence[float | str]]] | None = None,
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
        facilities: row index -> ``(part scores, context scores)`` (a float, or the reason a
            window was not assessed): that site becomes a 140 m hospital compound of 9 parts
            whose part and context columns :func:`detect.parts.summarise_site` writes (its own
            score and rank stay as made up here).
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
    rows: list[ScoreRow] = []
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
        score = written_score(float(scores[i]), 6)
        pair = {
            "before_scene": "scene_b",
            "after_scene": "scene_a",
            "before_time": "2017-06-21T00:00:00",
            "after_time": "2017-10-11T00:00:00",
            "chip_gsd_m": "0.5",
            "shift_m": "0.3",
        }
        kind, parts = "home", {}
        if facilities and i in facilities and ok:
            kind = "hospital"
            pair["chip_size_m"] = "160.0"
            parts = facility_cells(site_id, lon0, lat0, *facilities[i], threshold=threshold, flagged=score >= threshold)
        rows.append(
            ScoreRow(
                site_id=site_id,
                lon=float(f"{lon0 + 0.0001 + 0.00003 * i:.6f}"),
                lat=float(f"{lat0 - 0.0001 - 0.00003 * i:.6f}"),
                score=score if ok else None,
                rank=i + 1 if ok else None,
                status="ok" if ok else "cannot_assess",
                reason="" if ok else "outside_after_coverage",
                flagged=ok and score >= threshold,
                name=(names or {}).get(i, f"building {i}"),
                kind=kind,
                pair=pair,
                parts=parts,
                **chip,
            )
        )
    write_scores(folder, rows, score_decimals=6)
    ok_ids = [r.site_id for r in rows if r.ok]
    emb = rng.normal(size=(len(ok_ids), embedding_dim)).astype(np.float16)
    write_embeddings(folder / "embeddings.npz", ok_ids, emb)
    tiles = {"chip_px": 32, "chip_size_m": 16.0}
    (folder / "config.yaml").write_text("tiles:\n  chip_px: 32\n  chip_size_m: 16.0\n", encoding="utf-8")
    write_test_manifest(
        folder,
        rows,
        sites_path=folder / "sites.csv",
        before=[before_tif],
        after=[after_tif],
        threshold=threshold,
        config_values={"tiles": tiles, "detect": {"operating_point": "screening", "score_decimals": 6}},
        outputs={},  # listed by tests.review.listed_outputs.record_outputs where a test serves files
    )
    return folder


def facility_cells(
    site_id: str,
    lon: float,
    lat: float,
    part_scores: Sequence[float | str],
    context_scores: Sequence[float | str],
    *,
    threshold: float = 0.5,
    flagged: bool = True,
) -> dict[str, str]:
    """The part and context columns of a 140 m hospital compound (9 parts of 64 m) whose windows
    scored ``part_scores`` and ``context_scores``, as :func:`detect.parts.summarise_site` writes
    them (the real geometry of :func:`tiles.parts.plan_site`)."""
    from detect.config import DetectConfig
    from detect.parts import PART_COLUMNS, summarise_site
    from sitewatch.config import build_config
    from tiles.config import TilesConfig
    from tiles.parts import plan_site
    from tiles.types import Site

    tiles = build_config(TilesConfig, {"parts": {"context_count": max(1, len(context_scores))}})
    plan = plan_site(Site(site_id, lon, lat, kind="hospital", radius_m=70.0), tiles, parts=True, context=bool(context_scores))
    assert len(plan.parts) == len(part_scores), f"the compound has {len(plan.parts)} parts"
    windows = []
    for w, s in zip(plan.windows, list(part_scores) + list(context_scores)):
        if isinstance(s, str):
            windows.append({"site_id": w.site.site_id, "status": "cannot_assess", "reason": s, "score": ""})
        else:
            windows.append({"site_id": w.site.site_id, "status": "ok", "reason": "", "score": f"{s:.6f}"})
    site_score = max((s for s in part_scores if not isinstance(s, str)), default=0.0)
    row = {"site_id": site_id, "status": "ok", "reason": "", "score": f"{site_score:.6f}"}
    out = summarise_site(row, plan, windows, DetectConfig(), threshold, decimals=6)
    cells = {c: out[c] for c in PART_COLUMNS}
    if not flagged and cells["targeted"] == "true":
        cells["targeted"] = "false"
    return cells
