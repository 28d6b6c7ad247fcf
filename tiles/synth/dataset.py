"""Write a labelled synthetic dataset: ``before/*.tif``, ``after/*.tif`` and ``sites.csv``.

The folder is in the project's own input format (DESIGN.md, "a labelled dataset"), so the
same files feed ``sitewatch tiles``, ``detect``, ``train`` and the demo.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import rasterio
import yaml
from pyproj import CRS, Transformer
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window
from tqdm import tqdm

from sitewatch.config import config_to_dict
from sitewatch.errors import ConfigError, InputError, UsageError
from tiles.synth.config import SynthConfig
from tiles.synth.damage import damage_intensity, damage_radius_m, place_damage_clusters
from tiles.synth.layout import DAMAGE_STYLES, Building, Layout, add_construction, add_demolition, build_layout
from tiles.synth.nuisance import MAX_SHIFT_PX, apply_sensor, draw_epoch_styles, region_strengths
from tiles.synth.render import EpochStyle, StaticFields, make_static_fields, render_epoch

log = logging.getLogger(__name__)

#: changes whenever the same config would give different pixels or labels; caches of generated
#: datasets should include it in their key
GENERATOR_VERSION = "2.1"

SITE_COLUMNS = (
    "site_id", "lon", "lat", "kind", "radius_m", "damage", "damage_style", "region", "building_m",
    "standing_before", "standing_after",
)
#: damage classes after which the site's roof still stands intact (the building is whole)
STANDING_DAMAGE = ("no-damage", "minor-damage")
DAMAGE_ORDER = ("destroyed", "major-damage", "minor-damage", "no-damage")
#: chips in the gallery are this many metres wide
GALLERY_CHIP_M = 48.0


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_dataset` wrote.

    Attributes:
        out: the dataset folder.
        sites: number of rows in ``sites.csv``.
        damage_counts: sites per xBD class.
        regions: number of synthetic regions generated.
        before_files, after_files: the rasters written.
        crs, after_crs: CRS of before and after rasters.
        gsd_m, after_gsd_m: their pixel sizes (after in CRS units when geographic).
        pixels: pixels rendered (both epochs, all regions).
        seconds: wall time of the whole generation.
        gallery: path of the preview PNG, or None.
    """

    out: Path
    sites: int
    damage_counts: dict[str, int]
    regions: int
    before_files: tuple[Path, ...]
    after_files: tuple[Path, ...]
    crs: str
    after_crs: str
    gsd_m: float
    after_gsd_m: float
    pixels: int
    seconds: float
    gallery: Path | None = None

    @property
    def pixels_per_second(self) -> float:
        """Rendered pixels per second of wall time (both epochs)."""
        return self.pixels / max(self.seconds, 1e-9)


def _write_synth_yaml(out: Path, config: SynthConfig) -> Path:
    """Write ``synth.yaml``: the effective config as a ``synth:`` section, which
    ``sitewatch synth --config`` reads back."""
    path = out / "synth.yaml"
    text = yaml.safe_dump({"synth": config_to_dict(config)}, sort_keys=False, default_flow_style=False)
    path.write_text("# effective sitewatch config (defaults < --config file < flags)\n" + text, encoding="utf-8")
    return path


class DatasetExistsError(UsageError):
    """The output folder of :func:`generate_dataset` already holds a dataset and ``overwrite`` is off."""


def _check_crs(text: str, setting: str, *, projected: bool) -> CRS:
    try:
        crs = CRS.from_user_input(text)
    except Exception as exc:  # pyproj raises CRSError, a plain Exception subclass
        raise ConfigError(f"{setting}: {text!r} is not a CRS pyproj understands ({exc}); use e.g. EPSG:32633", setting=setting) from None
    if projected and not crs.is_projected:
        raise ConfigError(
            f"{setting}: {text!r}: synthetic scenes are drawn in metres, so this must be a projected CRS "
            "(e.g. a UTM zone such as EPSG:32633); a geographic CRS is allowed for synth.after_crs",
            setting=setting,
        )
    return crs


def _region_origin(crs: CRS, index: int, extent_m: float) -> tuple[float, float]:
    """North-west corner of region ``index`` in ``crs``: near the centre of its area of use."""
    aou = crs.area_of_use
    lon, lat = (15.0, 45.0) if aou is None else ((aou.west + aou.east) / 2.0, (aou.south + aou.north) / 2.0)
    lat = float(np.clip(lat, -60, 60))
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    step = extent_m + 2000.0
    col, row = index % 10, index // 10
    # snap to a 10 m grid so coordinates read well
    return (math.floor((x + col * step) / 10.0) * 10.0, math.floor((y - row * step) / 10.0) * 10.0)


def _strips(n: int, k: int, overlap_px: int) -> list[tuple[int, int]]:
    edges = [round(i * n / k) for i in range(k + 1)]
    return [(max(0, edges[i] - overlap_px), min(n, edges[i + 1] + overlap_px)) for i in range(k)]


def write_geotiff(path: Path, arr: np.ndarray, transform: object, crs: CRS, tags: dict[str, str]) -> None:
    """Write ``arr`` (3, H, W) uint8 as a tiled, deflate-compressed GeoTIFF with nodata 0."""
    profile = dict(
        driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0], dtype="uint8",
        crs=crs, transform=transform, nodata=0, tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", zlevel=1, predictor=2, interleave="pixel",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
        dst.update_tags(**tags)
        for i, name in enumerate(("red", "green", "blue")[: arr.shape[0]], start=1):
            dst.set_band_description(i, name)


def standing_in_epochs(b: Building) -> tuple[bool, bool]:
    """Whether an intact building stands at ``b``'s place in the before and in the after epoch.

    What the generator draws: new construction (``after_only``) is absent before; a building
    stands after unless it is drawn major-damaged or destroyed, or demolished (cleared or a
    debris heap). These are the per-epoch truths ``sites.csv`` carries as ``standing_before``
    and ``standing_after`` (1/0), the targets of a per-epoch building head.
    """
    before = not b.after_only
    after = b.damage in STANDING_DAMAGE and b.demolition is None
    return before, after


def choose_sites(rng: np.random.Generator, lay: Layout, wanted: dict[str, int]) -> list[Building]:
    """Pick eligible buildings for the wanted per-class counts.

    Buildings already of a class are taken first; a shortfall is made up by relabelling
    other eligible buildings (damage nearest the clusters, no-damage farthest from them), so
    rendering, which happens afterwards, always matches the labels.
    """
    eligible = [b for b in lay.buildings if b.site_ok and not b.after_only]
    order = rng.permutation(len(eligible))
    eligible = [eligible[int(i)] for i in order]
    chosen: list[Building] = []
    left: list[Building] = []
    need = dict(wanted)
    for b in eligible:
        if need.get(b.damage, 0) > 0:
            need[b.damage] -= 1
            chosen.append(b)
        else:
            left.append(b)
    for dmg in DAMAGE_ORDER:
        if need[dmg] <= 0 or not left:
            continue
        inten = np.array([damage_intensity(lay, b.centroid)[0] for b in left])
        pick = np.argsort(-inten if dmg != "no-damage" else inten, kind="stable")[: need[dmg]]
        for i in sorted((int(x) for x in pick), reverse=True):
            b = left.pop(i)
            b.damage = dmg
            if dmg != "no-damage" and not b.style:
                b.style = DAMAGE_STYLES[damage_intensity(lay, b.centroid)[1]]
            chosen.append(b)
    return chosen


@dataclass
class Region:
    """One synthetic region, ready to draw: its layout (damage assigned), the sites chosen in it,
    its shared textures and the acquisition of each epoch.

    Attributes:
        index: region number within the dataset (names the files, places the region).
        layout: roads, buildings (with ``damage``/``style``), trees, vehicle slots.
        sites: the buildings labelled as sites, in the order they were chosen.
        fields: textures shared by every epoch of the region (their canvas is padded by
            ``pad_px`` on each side so misregistration shifts stay inside it).
        before, after: the acquisition and world state of each epoch.
        rng_style, rng_pick: the region's remaining random streams (acquisition times; row order).
        size_px, gsd_m, pad_px: output side in pixels, metres per pixel, canvas padding.
    """

    index: int
    layout: Layout
    sites: list[Building]
    fields: StaticFields
    before: EpochStyle
    after: EpochStyle
    rng_style: np.random.Generator
    rng_pick: np.random.Generator
    size_px: int
    gsd_m: float
    pad_px: int


def _class_labels(config: SynthConfig) -> list[str]:
    """The damage class of every site, in dataset order (shuffled by the seed)."""
    n = config.sites
    counts = {
        "destroyed": int(round(n * config.destroyed_fraction)),
        "major-damage": int(round(n * config.major_fraction)),
        "minor-damage": int(round(n * config.minor_fraction)),
    }
    while sum(counts.values()) > n:  # rounding can overshoot by one or two
        k = max(counts, key=lambda c: counts[c])
        counts[k] -= 1
    counts["no-damage"] = n - sum(counts.values())
    labels = [d for d in DAMAGE_ORDER for _ in range(counts[d])]
    master = np.random.default_rng(np.random.SeedSequence(config.seed))
    master.shuffle(labels)
    return labels


def _prepare_folder(out: Path, config: SynthConfig, overwrite: bool) -> tuple[Path, Path]:
    """Create ``out/before`` and ``out/after``, clear an earlier run's files, write ``synth.yaml``."""
    before_dir, after_dir = out / "before", out / "after"
    existing = [p for d in (before_dir, after_dir) if d.is_dir() for p in d.glob("*.tif")]
    # synth.yaml without sites.csv marks an interrupted synth run: its files are ours to replace
    interrupted = (out / "synth.yaml").is_file() and not (out / "sites.csv").exists()
    if (existing or (out / "sites.csv").exists()) and not (overwrite or interrupted):
        raise DatasetExistsError(f"{out}: already holds a dataset (sites.csv or rasters); choose a new folder or overwrite it")
    if interrupted and existing:
        log.warning("%s: replacing the rasters of an interrupted synth run", out)
    for p in existing:
        p.unlink()
    for p in (out / "sites.csv", out / "gallery.png"):
        if p.exists():
            p.unlink()
    before_dir.mkdir(parents=True, exist_ok=True)
    after_dir.mkdir(parents=True, exist_ok=True)
    _write_synth_yaml(out, config)  # first: marks the folder as ours
    return before_dir, after_dir


def plan_region(config: SynthConfig, index: int, remaining: list[str]) -> Region | None:
    """Lay out region ``index`` and choose its sites for the first of the ``remaining`` labels.

    The labels placed are removed from ``remaining``. Deterministic per ``(config.seed, index)``.

    Returns:
        the region, or None when it has no eligible building (nothing is removed then).
    """
    g = config.gsd_m
    size = config.size_px
    extent = size * g
    pad = MAX_SHIFT_PX + 2
    seeds = np.random.SeedSequence([config.seed, index]).spawn(4)
    rng_layout = np.random.default_rng(seeds[0])
    rng_style = np.random.default_rng(seeds[1])
    rng_pick = np.random.default_rng(seeds[2])
    u = rng_layout.random()
    concrete = bool(u < config.concrete_fraction)
    urban = not concrete and bool(u < config.concrete_fraction + config.urban_fraction)
    lay = build_layout(
        rng_layout, extent, extent, building_density=config.building_density, tree_density=config.tree_density,
        facilities_per_km2=config.facilities_per_km2, edge_margin_m=config.edge_margin_m + MAX_SHIFT_PX * g,
        urban=urban, concrete=concrete,
    )
    place_damage_clusters(rng_layout, lay, config.damage_styles)
    strengths = region_strengths(rng_style, config)
    add_construction(rng_layout, lay, strengths["construction"])
    eligible = sum(1 for b in lay.buildings if b.site_ok and not b.after_only)
    take = min(len(remaining), config.max_sites_per_region, max(int(eligible * 0.7), min(eligible, 1)))
    if take <= 0:
        return None
    wanted = {d: 0 for d in DAMAGE_ORDER}
    for d in remaining[:take]:
        wanted[d] += 1
    chosen = choose_sites(rng_pick, lay, wanted)
    for b in chosen:  # drop what was placed from the remaining labels
        remaining.remove(b.damage)
    if strengths["demolition"] > 0:
        add_demolition(np.random.default_rng(np.random.SeedSequence([config.seed, index, 1])), lay, strengths["demolition"], chosen)
    before_style, after_style = draw_epoch_styles(rng_style, strengths, gsd_m=g)
    fields = make_static_fields(int(seeds[3].generate_state(1)[0]), (size + 2 * pad, size + 2 * pad), g, (-pad * g, -pad * g))
    return Region(
        index=index, layout=lay, sites=chosen, fields=fields, before=before_style, after=after_style,
        rng_style=rng_style, rng_pick=rng_pick, size_px=size, gsd_m=g, pad_px=pad,
    )


def render_region_epoch(lay: Layout, fields: StaticFields, style: EpochStyle, *, size_px: int, pad_px: int) -> np.ndarray:
    """Draw one epoch of a region as the sensor saw it: uint8 ``(size_px, size_px, 3)``, nodata 0.

    The public entry point for drawing a region at any state (e.g. one scene of a dated
    series): ``lay`` holds the geometry and each building's damage, ``style`` the acquisition
    (sun, view angle, season, colour, blur, noise, ...) and whether damage is drawn
    (``style.after``). ``fields`` (from :func:`tiles.synth.render.make_static_fields`, a canvas
    of ``size_px + 2 * pad_px`` pixels) keeps unchanged ground identical between epochs.
    """
    canvas = render_epoch(lay, fields, style)
    dy, dx = style.shift_px
    img = np.ascontiguousarray(canvas[pad_px + dy : pad_px + dy + size_px, pad_px + dx : pad_px + dx + size_px])
    del canvas
    u8, _valid = apply_sensor(img, style, fields.gsd_m)
    return u8


def _epoch_tags(config: SynthConfig, region: int, style: EpochStyle, when: datetime) -> dict[str, str]:
    return {
        "ACQUISITION_DATETIME": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "SENSOR": "SITEWATCH_SYNTH",
        "SYNTH_GENERATOR_VERSION": GENERATOR_VERSION,
        "OFF_NADIR_DEG": f"{style.off_nadir_deg:.2f}",
        "SUN_AZIMUTH_DEG": f"{style.sun_azimuth_deg:.1f}",
        "SUN_ELEVATION_DEG": f"{style.sun_elevation_deg:.1f}",
        "SOURCE": f"sitewatch synth seed={config.seed} region={region} (synthetic, no real imagery)",
    }


def _write_epoch(
    config: SynthConfig, region: Region, label: str, u8: np.ndarray, when: datetime, folder: Path,
    crs: CRS, after_crs: CRS, origin: tuple[float, float],
) -> list[Path]:
    """Write one epoch of a region as ``config.scenes`` overlapping GeoTIFF strips."""
    g = region.gsd_m
    after_gsd = config.effective_after_gsd_m
    x0, y0 = origin
    transform = from_origin(x0, y0, g, g)
    style = region.before if label == "before" else region.after
    arr = np.moveaxis(u8, 2, 0)
    tags = _epoch_tags(config, region.index, style, when)
    if label == "before" or (config.effective_after_crs == config.crs and after_gsd == g):
        out_arr, out_tf, out_crs = arr, transform, crs
        if label == "after":
            out_crs = after_crs
    else:
        out_arr, out_tf = _warp(arr, transform, crs, after_crs, after_gsd, (x0, y0, region.size_px * g))
        out_crs = after_crs
    k = config.scenes
    ov = int(math.ceil(config.scene_overlap_m / 2.0 / (g if label == "before" else after_gsd)))
    axis = 2 if label == "before" else 1  # before: column strips, after: row strips
    name = f"region{region.index:03d}"
    files = []
    for i, (a, b) in enumerate(_strips(out_arr.shape[axis], k, ov)):
        piece = out_arr[:, :, a:b] if axis == 2 else out_arr[:, a:b, :]
        win = Window(a, 0, b - a, out_arr.shape[1]) if axis == 2 else Window(0, a, out_arr.shape[2], b - a)
        tf = rasterio.windows.transform(win, out_tf)
        path = folder / (f"{name}.tif" if k == 1 else f"{name}_scene{i}.tif")
        write_geotiff(path, np.ascontiguousarray(piece), tf, out_crs, tags)
        files.append(path)
    return files


def _site_rows(
    config: SynthConfig, region: Region, origin: tuple[float, float], to_wgs: Transformer,
    epochs: dict[str, np.ndarray], gallery_chips: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None,
) -> list[dict[str, str]]:
    """``sites.csv`` rows of a region's sites (in a seeded order); gallery chips collected on the way."""
    x0, y0 = origin
    g, size = region.gsd_m, region.size_px
    chosen = region.sites
    lay = region.layout
    xs = np.array([x0 + b.centroid[0] for b in chosen])
    ys = np.array([y0 - b.centroid[1] for b in chosen])
    lons, lats = to_wgs.transform(xs, ys)
    order = region.rng_pick.permutation(len(chosen))
    shown = {d: 0 for d in DAMAGE_ORDER}  # at most two gallery chips per class and region
    rows = []
    for j in order:
        b = chosen[int(j)]
        bidx = lay.buildings.index(b)
        standing = standing_in_epochs(b)
        rows.append({
            "site_id": f"syn{config.seed}-r{region.index:03d}-b{bidx:05d}",
            "lon": f"{lons[j]:.8f}",
            "lat": f"{lats[j]:.8f}",
            "kind": b.kind,
            "radius_m": f"{damage_radius_m(b.size_m):.1f}",
            "damage": b.damage,
            "damage_style": b.style if b.damage != "no-damage" else "",
            "region": str(region.index),
            "building_m": f"{b.size_m:.1f}",
            "standing_before": str(int(standing[0])),
            "standing_after": str(int(standing[1])),
        })
        if gallery_chips is not None and len(gallery_chips[b.damage]) < 4 and shown[b.damage] < 2:
            shown[b.damage] += 1
            half = int(round(GALLERY_CHIP_M / 2 / g))
            r0 = int(round(b.centroid[1] / g))
            c0 = int(round(b.centroid[0] / g))
            if half <= r0 < size - half and half <= c0 < size - half:
                gallery_chips[b.damage].append(
                    (epochs["before"][r0 - half : r0 + half, c0 - half : c0 + half].copy(),
                     epochs["after"][r0 - half : r0 + half, c0 - half : c0 + half].copy())
                )
    return rows


def generate_dataset(
    out: Path | str,
    config: SynthConfig,
    *,
    progress: bool | None = None,
    overwrite: bool = False,
    gallery: bool = False,
) -> SynthSummary:
    """Generate a labelled synthetic dataset folder.

    Args:
        out: dataset folder to create (``before/``, ``after/``, ``sites.csv``, ``synth.yaml``).
        config: what to generate; the same config always gives the same files.
        progress: show a progress bar (None = only on a terminal).
        overwrite: replace the rasters, sites and gallery of an earlier run in ``out``.
        gallery: also write ``gallery.png`` (before/after chips by damage class).

    Returns:
        a :class:`SynthSummary` of what was written.

    Raises:
        ConfigError: a CRS is invalid (names ``synth.crs`` / ``synth.after_crs``).
        DatasetExistsError: ``out`` already holds a dataset and ``overwrite`` is off.
    """
    t0 = time.perf_counter()
    out = Path(out)
    crs = _check_crs(config.crs, "synth.crs", projected=True)
    after_crs = _check_crs(config.effective_after_crs, "synth.after_crs" if config.after_crs is not None else "synth.crs", projected=False)
    before_dir, after_dir = _prepare_folder(out, config, overwrite)
    n = config.sites
    remaining = _class_labels(config)
    extent = config.size_px * config.gsd_m
    to_wgs = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    rows: list[dict[str, str]] = []
    before_files: list[Path] = []
    after_files: list[Path] = []
    gallery_chips: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {d: [] for d in DAMAGE_ORDER}
    pixels = 0
    index = 0
    max_regions = 10 + 20 * int(math.ceil(n / 50))
    bar = tqdm(total=n, desc="synth sites", unit="site", disable=(None if progress is None else not progress))
    base_time = datetime(2023, 3, 1, 10, 30, tzinfo=timezone.utc)
    while remaining:
        if index >= max_regions:
            raise InputError(
                f"could not place {n} sites after {index} regions of {config.size_px} px; raise synth.size_px, "
                "lower synth.sites or raise synth.building_density"
            )
        region = plan_region(config, index, remaining)
        index += 1
        if region is None:
            continue
        epochs = {
            label: render_region_epoch(region.layout, region.fields, style, size_px=region.size_px, pad_px=region.pad_px)
            for label, style in (("before", region.before), ("after", region.after))
        }
        pixels += 2 * (region.size_px + 2 * region.pad_px) ** 2
        rs = region.rng_style
        when_before = base_time + timedelta(days=int(rs.integers(0, 300)), minutes=int(rs.integers(0, 90)))
        when_after = when_before + timedelta(days=int(rs.integers(30, 400)), minutes=int(rs.integers(-60, 60)))
        origin = _region_origin(crs, region.index, extent)
        before_files += _write_epoch(config, region, "before", epochs["before"], when_before, before_dir, crs, after_crs, origin)
        after_files += _write_epoch(config, region, "after", epochs["after"], when_after, after_dir, crs, after_crs, origin)
        rows += _site_rows(config, region, origin, to_wgs, epochs, gallery_chips if gallery else None)
        bar.update(len(region.sites))
        log.info("region %d: %d buildings, %d sites", region.index, len(region.layout.buildings), len(region.sites))
    bar.close()

    with open(out / "sites.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(SITE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    gallery_path = None
    if gallery:
        from tiles.synth.gallery import write_gallery

        gallery_path = write_gallery(gallery_chips, out / "gallery.png")
    final_counts = {d: sum(1 for r in rows if r["damage"] == d) for d in DAMAGE_ORDER}
    return SynthSummary(
        out=out, sites=len(rows), damage_counts=final_counts, regions=index,
        before_files=tuple(before_files), after_files=tuple(after_files), crs=crs.to_string(),
        after_crs=after_crs.to_string(), gsd_m=config.gsd_m, after_gsd_m=config.effective_after_gsd_m, pixels=pixels,
        seconds=time.perf_counter() - t0, gallery=gallery_path,
    )


def _warp(
    arr: np.ndarray, transform: object, src_crs: CRS, dst_crs: CRS, gsd_m: float, region: tuple[float, float, float]
) -> tuple[np.ndarray, object]:
    """Resample ``arr`` (3, H, W) uint8 onto a north-up grid in ``dst_crs`` at ``gsd_m`` metres."""
    x0, y0, extent = region
    left, bottom, right, top = x0, y0 - extent, x0 + extent, y0
    if dst_crs.is_geographic:
        lon, lat = Transformer.from_crs(src_crs, "EPSG:4326", always_xy=True).transform(x0 + extent / 2, y0 - extent / 2)
        res: tuple[float, float] | float = (gsd_m / (111320.0 * math.cos(math.radians(lat))), gsd_m / 110540.0)
    else:
        res = gsd_m
    dst_tf, w, h = calculate_default_transform(src_crs, dst_crs, arr.shape[2], arr.shape[1], left, bottom, right, top, resolution=res)
    dst = np.zeros((arr.shape[0], h, w), dtype=np.uint8)
    reproject(
        arr, dst, src_transform=transform, src_crs=src_crs, dst_transform=dst_tf, dst_crs=dst_crs,
        resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0,
    )
    return dst, dst_tf
