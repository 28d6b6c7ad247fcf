"""Generated facility compounds with known part-level damage, for the parts/context tests (issue 15).

Each *case* is one scene: a walled hospital or school compound of several blocks over
100-200 m in the middle of a neighbourhood of houses and roads. The case says where the damage is:

* ``intact``: nothing damaged.
* ``isolated``: one block (or wing) of the compound destroyed; the neighbourhood is intact.
* ``area``: the same, and most houses all round are destroyed too (the neighbourhood was hit).

Layouts are assembled here from the generator's public pieces (:class:`tiles.synth.layout.Layout`,
:class:`~tiles.synth.layout.Building`, :class:`~tiles.synth.layout.Compound`, ``rectangle``, the
roof palettes) and drawn by the generator's own renderer and sensor model
(:func:`tiles.synth.render.render_epoch`, :func:`tiles.synth.nuisance.apply_sensor`), so the damage
looks like what the bundled model learned.

Written out (:func:`write_compound_cases`): ``before/<case>.tif``, ``after/<case>.tif`` (0.5 m,
UTM), ``sites.geojson`` (one feature per compound: the compound's wall as its footprint, ``kind``)
and ``truth.csv`` (per site: ``case``, ``site_damaged``, ``area_damage``, the damaged block
numbers, and the part windows of the default ``tiles.parts`` grid that meet a damaged block).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from tiles.synth.layout import FLAT_ROOF_PALETTE, ROOF_PALETTE, Building, Compound, Layout, Road, rectangle

__all__ = ["CompoundCase", "CompoundScene", "build_compound_scene", "write_compound_cases", "CASE_KINDS"]

CaseKind = Literal["intact", "isolated", "area"]
CASE_KINDS: tuple[CaseKind, ...] = ("intact", "isolated", "area")
TRUTH_COLUMNS = (
    "site_id", "kind", "case", "site_damaged", "area_damage", "blocks", "damaged_blocks", "damaged_parts",
    "neighbourhood_houses", "neighbourhood_destroyed",
)


@dataclass(frozen=True)
class CompoundCase:
    """What to generate for one case.

    Attributes:
        case_id: the site id and the scene's file stem.
        kind: ``hospital`` or ``school``.
        case: ``intact``, ``isolated`` or ``area``.
        seed: seeds the layout and the two acquisitions.
    """

    case_id: str
    kind: str
    case: CaseKind
    seed: int


@dataclass
class CompoundScene:
    """A case's layout before drawing, with its truth.

    Attributes:
        layout: everything drawn (metres, x east, y down from the top-left corner).
        compound: the wall polygon ``(4, 2)`` in layout metres.
        blocks: the compound's buildings.
        damaged_blocks: indices into ``blocks`` destroyed in the after epoch.
        houses: the neighbourhood's houses.
    """

    layout: Layout
    compound: np.ndarray
    blocks: list[Building]
    damaged_blocks: list[int]
    houses: list[Building]


def _building(rng: np.random.Generator, poly: np.ndarray, kind: str, angle: float) -> Building:
    if kind in ("hospital", "school"):
        roof, palette, height = "flat", FLAT_ROOF_PALETTE, float(rng.uniform(7, 16))
    else:
        roof = "gable" if rng.random() < 0.6 else "hip"
        palette, height = ROOF_PALETTE, float(rng.uniform(3.0, 6.5))
    rgb = palette[int(rng.integers(len(palette)))]
    rgb = np.clip(rgb * rng.uniform(0.85, 1.15) + rng.normal(0, 0.02, 3), 0.05, 0.95).astype(np.float32)
    b = Building(parts=[poly], angle=angle, height_m=height, roof=roof, roof_rgb=rgb, kind=kind)
    b.damage_seed = int(rng.integers(2**31))
    b.finish()
    return b


def build_compound_scene(case: CompoundCase, extent_m: float) -> CompoundScene:
    """Lay out one case on a square of ``extent_m`` metres (the compound in the middle)."""
    rng = np.random.default_rng(case.seed)
    c = extent_m / 2
    lay = Layout(width_m=extent_m, height_m=extent_m)
    # -- the compound: a wall of 110-180 m by 100-150 m, 3-6 blocks in two rows ---------------
    cw, ch = float(rng.uniform(110, 180)), float(rng.uniform(100, 150))
    wall = rectangle(c, c, cw, ch, 0.0)
    lay.compounds.append(Compound(polygon=wall, kind=case.kind, yard=str(rng.choice(["paved", "bare", "grass"])), walled=True))
    cols = int(rng.integers(2, 4))
    blocks: list[Building] = []
    cell_w, cell_h = (cw - 16) / cols, (ch - 16) / 2
    for row in range(2):
        for col in range(cols):
            if len(blocks) >= 3 and rng.random() < 0.2:
                continue  # a yard instead of a block
            bw = cell_w * rng.uniform(0.55, 0.8)
            bh = cell_h * rng.uniform(0.5, 0.75)
            bx = c - cw / 2 + 8 + cell_w * (col + 0.5) + rng.uniform(-3, 3)
            by = c - ch / 2 + 8 + cell_h * (row + 0.5) + rng.uniform(-3, 3)
            blocks.append(_building(rng, rectangle(bx, by, bw, bh, 0.0), case.kind, 0.0))
    damaged: list[int] = []
    if case.case != "intact":
        k = int(rng.integers(len(blocks)))
        damaged.append(k)
        blocks[k].damage, blocks[k].style = "destroyed", str(rng.choice(["blast", "fire"]))
    # -- the neighbourhood: a road grid and houses along it --------------------------------------
    spacing = float(rng.uniform(90, 120))
    offset = float(rng.uniform(0, spacing))
    lines = np.arange(offset, extent_m, spacing)
    keep_out = (c - cw / 2 - 12, c + cw / 2 + 12, c - ch / 2 - 12, c + ch / 2 + 12)
    for u in lines:
        for vertical in (True, False):
            lo, hi = (keep_out[0], keep_out[1]) if vertical else (keep_out[2], keep_out[3])
            cut_lo, cut_hi = (keep_out[2], keep_out[3]) if vertical else (keep_out[0], keep_out[1])
            spans = [(0.0, cut_lo), (cut_hi, extent_m)] if lo < u < hi else [(0.0, extent_m)]  # roads stop at the wall
            for a, b in spans:
                line = np.array([[u, a], [u, b]]) if vertical else np.array([[a, u], [b, u]])
                lay.roads.append(Road(line, 7.0, False))
    houses: list[Building] = []
    step = 24.0
    for hx in np.arange(10, extent_m - 10, step):
        for hy in np.arange(10, extent_m - 10, step):
            x, y = hx + rng.uniform(-4, 4), hy + rng.uniform(-4, 4)
            if keep_out[0] < x < keep_out[1] and keep_out[2] < y < keep_out[3]:
                continue
            if np.min(np.abs(lines - x)) < 10 or np.min(np.abs(lines - y)) < 10 or rng.random() < 0.15:
                continue
            angle = float(rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.05))
            houses.append(_building(rng, rectangle(x, y, rng.uniform(9, 15), rng.uniform(7, 11), angle), "home", angle))
    if case.case == "area":
        style = blocks[damaged[0]].style
        lay.damage_centres = np.array([[c, c, extent_m * 0.6, 2.0 if style == "blast" else 0.0]])
        for h in houses:
            if rng.random() < 0.7:
                h.damage, h.style = "destroyed", style
    elif case.case == "isolated":
        bx, by = blocks[damaged[0]].centroid
        lay.damage_centres = np.array([[bx, by, 15.0, 2.0 if blocks[damaged[0]].style == "blast" else 0.0]])
    lay.burn_field_seed = int(rng.integers(2**31))
    lay.buildings = blocks + houses
    # a few trees in gaps (not on buildings)
    n_trees = int(extent_m * extent_m / 900)
    tx, ty = rng.uniform(0, extent_m, n_trees), rng.uniform(0, extent_m, n_trees)
    ok = ~((keep_out[0] - 5 < tx) & (tx < keep_out[1] + 5) & (keep_out[2] - 5 < ty) & (ty < keep_out[3] + 5))
    centres = np.array([b.centroid for b in houses]) if houses else np.zeros((0, 2))
    if len(centres):
        d = np.hypot(tx[:, None] - centres[None, :, 0], ty[:, None] - centres[None, :, 1]).min(axis=1)
        ok &= d > 10
    tx, ty = tx[ok], ty[ok]
    radius = np.clip(rng.gamma(5.0, 0.7, tx.size), 1.5, 6.0)
    lay.trees = {
        "x": tx, "y": ty, "radius": radius, "height": radius * rng.uniform(1.3, 2.4, tx.size),
        "tone": rng.uniform(-1, 1, tx.size), "deciduous": rng.random(tx.size) < 0.5,
    }
    return CompoundScene(lay, wall, blocks, damaged, houses)


def _render(scene: CompoundScene, seed: int, gsd: float, nuisance: float) -> tuple[np.ndarray, np.ndarray]:
    """Before and after ``(H, W, 3)`` uint8 through the generator's renderer and sensor model."""
    from tiles.synth.config import SynthConfig
    from tiles.synth.nuisance import MAX_SHIFT_PX, apply_sensor, draw_epoch_styles, region_strengths
    from tiles.synth.render import make_static_fields, render_epoch

    size = int(round(scene.layout.width_m / gsd))
    pad = MAX_SHIFT_PX + 2
    rng = np.random.default_rng([seed, 1])
    knobs = {k: getattr(SynthConfig(), k) * nuisance for k in (
        "sun_change", "season_change", "colour_shift", "haze", "noise", "blur", "misregistration", "off_nadir",
        "vehicles", "construction", "jpeg")}
    strengths = region_strengths(rng, SynthConfig(**knobs, clouds=0.0, nodata=0.0))
    before_style, after_style = draw_epoch_styles(rng, strengths)
    fields = make_static_fields(int(rng.integers(2**31)), (size + 2 * pad, size + 2 * pad), gsd, (-pad * gsd, -pad * gsd))
    out = []
    for style in (before_style, after_style):
        canvas = render_epoch(scene.layout, fields, style)
        dy, dx = style.shift_px
        img = np.ascontiguousarray(canvas[pad + dy : pad + dy + size, pad + dx : pad + dx + size])
        u8, _ = apply_sensor(img, style, gsd)
        out.append(u8)
    return out[0], out[1]


def _damaged_parts(case_id: str, footprint: dict, lon: float, lat: float, scene: CompoundScene, to_local) -> str:
    """Names of the default grid's part windows that meet a damaged block (``p01;p04``)."""
    from tiles.config import TilesConfig
    from tiles.parts import plan_parts, window_meets_polygon
    from tiles.types import Site

    tiles = TilesConfig()
    parts, *_ = plan_parts(Site(case_id, lon, lat, footprint=footprint), tiles)
    names = []
    for p in parts:
        for k in scene.damaged_blocks:
            ring = to_local(scene.blocks[k].parts[0])
            if window_meets_polygon(p.east_m, p.north_m, p.size_m / 2, [ring]):
                names.append(p.name)
                break
    return ";".join(names)


def write_compound_cases(
    out: str | Path,
    cases: Sequence[CompoundCase],
    *,
    extent_m: float = 700.0,
    gsd_m: float = 0.5,
    nuisance: float = 0.5,
    crs: str = "EPSG:32633",
) -> Path:
    """Draw and write every case (one scene each) with ``sites.geojson`` and ``truth.csv``.

    Args:
        out: output folder (``before/``, ``after/``, ``sites.geojson``, ``truth.csv``).
        cases: what to generate.
        extent_m: side of each scene in metres (the context ring must fit: about
            ``2 * (100 + tiles.parts.context_outer_m + chip_size_m)``).
        gsd_m: ground sample distance.
        nuisance: scales the generator's default nuisance strengths (0 = identical epochs apart
            from the damage); clouds and nodata are always off.
        crs: a projected CRS in metres for the scenes.

    Returns:
        The output folder.
    """
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    root = Path(out)
    (root / "before").mkdir(parents=True, exist_ok=True)
    (root / "after").mkdir(parents=True, exist_ok=True)
    to_wgs = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    features, truth = [], []
    for i, case in enumerate(cases):
        scene = build_compound_scene(case, extent_m)
        x0, y0 = 500_000.0 + (i % 20) * (extent_m + 500.0), 4_000_000.0 + (i // 20) * (extent_m + 500.0)
        before, after = _render(scene, case.seed, gsd_m, nuisance)
        transform = from_origin(x0, y0, gsd_m, gsd_m)
        for folder, img in (("before", before), ("after", after)):
            when = "2023-03-01T10:30:00Z" if folder == "before" else "2023-09-01T10:30:00Z"
            profile = dict(
                driver="GTiff", width=img.shape[1], height=img.shape[0], count=3, dtype="uint8", crs=crs,
                transform=transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
            )
            with rasterio.open(root / folder / f"{case.case_id}.tif", "w", **profile) as ds:
                ds.write(np.moveaxis(img, 2, 0))
                ds.update_tags(ACQUISITION_DATETIME=when, SENSOR="SITEWATCH_SYNTH", SOURCE="sitewatch synth compounds")

        def lonlat(poly: np.ndarray) -> list[list[float]]:
            lon, lat = to_wgs.transform(x0 + poly[:, 0], y0 - poly[:, 1])
            ring = [[round(float(a), 9), round(float(b), 9)] for a, b in zip(lon, lat)]
            return ring + [ring[0]]

        footprint = {"type": "Polygon", "coordinates": [lonlat(scene.compound)]}
        cx, cy = scene.compound.mean(axis=0)
        lon0, lat0 = (float(v) for v in to_wgs.transform(x0 + cx, y0 - cy))

        def to_local(poly: np.ndarray, lon0: float = lon0, lat0: float = lat0) -> np.ndarray:
            from tiles.parts import _to_local
            from tiles.types import Site

            return _to_local(Site("x", lon0, lat0), [tuple(p) for p in lonlat(poly)[:-1]])

        features.append({
            "type": "Feature",
            "geometry": footprint,
            "properties": {"site_id": case.case_id, "kind": case.kind, "name": f"{case.kind} {case.case_id}"},
        })
        truth.append({
            "site_id": case.case_id,
            "kind": case.kind,
            "case": case.case,
            "site_damaged": "1" if scene.damaged_blocks else "0",
            "area_damage": "1" if case.case == "area" else "0",
            "blocks": str(len(scene.blocks)),
            "damaged_blocks": ";".join(str(k) for k in scene.damaged_blocks),
            "damaged_parts": _damaged_parts(case.case_id, footprint, lon0, lat0, scene, to_local),
            "neighbourhood_houses": str(len(scene.houses)),
            "neighbourhood_destroyed": str(sum(h.damage == "destroyed" for h in scene.houses)),
        })
    with open(root / "sites.geojson", "w", encoding="utf-8") as fh:
        json.dump({"type": "FeatureCollection", "features": features}, fh)
    with open(root / "truth.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(TRUTH_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(truth)
    return root


def default_cases(n_per_case: int, *, seed: int = 0, kinds: Sequence[str] = ("hospital", "school")) -> list[CompoundCase]:
    """``n_per_case`` cases of each of ``intact``, ``isolated`` and ``area``, kinds alternating."""
    out = []
    for case in CASE_KINDS:
        for j in range(n_per_case):
            k = len(out)
            out.append(CompoundCase(f"{case[:3]}{j:03d}", kinds[k % len(kinds)], case, seed * 100_000 + k))
    return out
