"""Synthetic image series: K dated scenes per region, damage appearing between two known dates.

``sitewatch synth --series K`` writes ``DIR/series/region<NNN>_<YYYYMMDD>.tif`` (K dates per
region, acquisition time in the ``ACQUISITION_DATETIME`` tag) and ``DIR/sites.csv`` with the
usual columns plus ``damage_date`` (the day the site's damage first happened; empty when it is
never damaged), ``damage_stages`` (``DATE:CLASS;...``, for sites damaged in stages: first
``major-damage``, later ``destroyed``), ``last_intact_date`` and ``first_damaged_date`` (the
acquisitions that bracket ``damage_date``, the answer a series detection should find).

Per region: one event between two consecutive dates (the buildings of the damage clusters are
damaged then), and for a share of the destroyed sites a second stage at a later event. One date
per region is cloudy (``series.cloudy_dates``; never the first date when the event follows it,
nor the last when the event precedes it, so the answer stays observable) and one other is
misregistered by a few pixels (``series.misregistered_dates``), so a robust bracket has
something to be robust against.

Built only from the generator's public functions (:func:`~tiles.synth.layout.build_layout`,
:func:`~tiles.synth.damage.place_damage_clusters`, :func:`~tiles.synth.render.render_epoch`,
:func:`~tiles.synth.nuisance.apply_sensor`, ...); the same config always gives the same files.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from sitewatch.errors import ConfigError, UsageError
from tiles.synth.config import SynthConfig
from tiles.synth.dataset import choose_sites, write_geotiff
from tiles.synth.damage import damage_radius_m, place_damage_clusters
from tiles.synth.layout import add_construction, build_layout
from tiles.synth.nuisance import MAX_SHIFT_PX, apply_sensor, draw_epoch_styles, region_strengths
from tiles.synth.render import EpochStyle, make_static_fields, render_epoch

log = logging.getLogger(__name__)

__all__ = ["SeriesConfig", "SeriesSummary", "generate_series", "SERIES_SITE_COLUMNS", "SERIES_VERSION"]

#: changes whenever the same config would give other series files
SERIES_VERSION = "1.0"

SERIES_SITE_COLUMNS = (
    "site_id", "lon", "lat", "kind", "radius_m", "damage", "damage_style", "region", "building_m",
    "damage_date", "damage_stages", "last_intact_date", "first_damaged_date",
)


def _invalid(name: str, text: str) -> ConfigError:
    return ConfigError(f"series.{name}: {text}", setting=f"series.{name}")


@dataclass(frozen=True)
class SeriesConfig:
    """How a synthetic image series is dated and spoiled (``sitewatch synth --series K``).

    Attributes:
        dates: acquisitions per region (``--series K``); 0 = no series (the usual before/after).
        first_date: ISO date of the first acquisition of region 0.
        spacing_days: mean days between consecutive acquisitions.
        spacing_jitter_days: each gap is ``spacing_days`` plus up to this many days either way.
        staged_fraction: share of destroyed sites damaged in two stages (``major-damage`` at the
            region's event, ``destroyed`` at a later one), where a later event fits.
        cloudy_dates: dates per region with heavy cloud (``cloud_cover``).
        cloud_cover: fraction of a cloudy date's region under cloud.
        misregistered_dates: dates per region (other than the cloudy ones) shifted by
            ``misregistration_px`` pixels on each axis.
        misregistration_px: that shift, in pixels (co-registration should still undo it).
    """

    dates: int = 0
    first_date: str = "2023-01-15"
    spacing_days: float = 45.0
    spacing_jitter_days: float = 10.0
    staged_fraction: float = 0.4
    cloudy_dates: int = 1
    cloud_cover: float = 0.6
    misregistered_dates: int = 1
    misregistration_px: int = 3

    def __post_init__(self) -> None:
        if self.dates != 0 and self.dates < 3:
            raise _invalid("dates", f"a series needs at least 3 dates (--series 3), got {self.dates}")
        try:
            datetime.strptime(self.first_date, "%Y-%m-%d")
        except ValueError:
            raise _invalid("first_date", f"{self.first_date!r} is not an ISO date YYYY-MM-DD") from None
        if self.spacing_days < 2:
            raise _invalid("spacing_days", f"must be at least 2 days, got {self.spacing_days:g}")
        if not 0 <= self.spacing_jitter_days < self.spacing_days / 2:
            raise _invalid("spacing_jitter_days", f"must be between 0 and half of series.spacing_days, got {self.spacing_jitter_days:g}")
        for name in ("staged_fraction", "cloud_cover"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise _invalid(name, f"must be between 0 and 1, got {getattr(self, name):g}")
        for name in ("cloudy_dates", "misregistered_dates", "misregistration_px"):
            if getattr(self, name) < 0:
                raise _invalid(name, f"must not be negative, got {getattr(self, name)}")
        if self.dates and self.cloudy_dates + self.misregistered_dates > self.dates - 2:
            raise _invalid(
                "cloudy_dates",
                f"{self.cloudy_dates} cloudy + {self.misregistered_dates} misregistered dates leave fewer than 2 clean "
                f"dates of {self.dates}; lower them or raise --series",
            )
        if self.misregistration_px > MAX_SHIFT_PX:
            raise _invalid("misregistration_px", f"must be at most {MAX_SHIFT_PX} (the canvas margin), got {self.misregistration_px}")


@dataclass(frozen=True)
class SeriesSummary:
    """What :func:`generate_series` wrote."""

    out: Path
    sites: int
    damaged: int
    regions: int
    files: tuple[Path, ...]
    seconds: float


def _origin(crs: str, index: int, extent_m: float) -> tuple[float, float]:
    """North-west corner of region ``index``: a grid of regions near the CRS's area of use."""
    from pyproj import CRS, Transformer

    c = CRS.from_user_input(crs)
    aou = c.area_of_use
    lon, lat = (15.0, 45.0) if aou is None else ((aou.west + aou.east) / 2.0, (aou.south + aou.north) / 2.0)
    x, y = Transformer.from_crs("EPSG:4326", c, always_xy=True).transform(lon, float(np.clip(lat, -60, 60)))
    step = extent_m + 2000.0
    return (math.floor((x + (index % 10) * step) / 10.0) * 10.0, math.floor((y - (index // 10) * step) / 10.0) * 10.0)


def _dates(rng: np.random.Generator, series: SeriesConfig, region: int) -> list[datetime]:
    start = datetime.strptime(series.first_date, "%Y-%m-%d").replace(hour=10, minute=30, tzinfo=timezone.utc)
    start += timedelta(days=7 * region)
    out = [start]
    for _ in range(series.dates - 1):
        gap = series.spacing_days + rng.uniform(-series.spacing_jitter_days, series.spacing_jitter_days)
        out.append(out[-1] + timedelta(days=int(round(gap)), minutes=int(rng.integers(-60, 60))))
    return out


def _event_day(rng: np.random.Generator, after: datetime, before: datetime) -> datetime:
    """A day strictly after ``after``'s day and at most ``before``'s day (UTC midnight)."""
    d0 = after.date() + timedelta(days=1)
    span = (before.date() - d0).days
    day = d0 + timedelta(days=int(rng.integers(0, span + 1)))
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def generate_series(
    out: Path | str, config: SynthConfig, series: SeriesConfig, *, overwrite: bool = False, progress: bool | None = None
) -> SeriesSummary:
    """Write a synthetic image series folder (``series/*.tif``, ``sites.csv``, ``synth.yaml``).

    Args:
        out: dataset folder.
        config: the generator's settings (sites, seed, size, GSD, CRS, nuisance, damage shares);
            ``after_crs``, ``after_gsd_m`` and ``scenes`` do not apply to a series.
        series: dates and spoilers (``series.dates`` >= 3).
        overwrite: replace a dataset already in ``out``.
        progress: show a progress bar (None: only on a terminal).

    Raises:
        UsageError: ``out`` already holds a dataset and ``overwrite`` is off, or no series asked.
    """
    from rasterio.transform import from_origin
    from tqdm import tqdm

    if series.dates < 3:
        raise UsageError("--series K: give at least 3 dates")
    t0 = time.perf_counter()
    out = Path(out)
    folder = out / "series"
    existing = sorted(folder.glob("*.tif")) if folder.is_dir() else []
    if (existing or (out / "sites.csv").exists()) and not overwrite:
        raise UsageError(f"--out {out}: already holds a dataset (sites.csv or series/); choose a new folder or pass --overwrite")
    for p in existing:
        p.unlink()
    (out / "sites.csv").unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)

    n = config.sites
    counts = {
        "destroyed": int(round(n * config.destroyed_fraction)),
        "major-damage": int(round(n * config.major_fraction)),
        "minor-damage": int(round(n * config.minor_fraction)),
    }
    counts["no-damage"] = max(0, n - sum(counts.values()))
    labels = [d for d, c in counts.items() for _ in range(c)]
    master = np.random.default_rng(np.random.SeedSequence([config.seed, 1013]))
    master.shuffle(labels)

    from pyproj import Transformer

    size, g = config.size_px, config.gsd_m
    extent = size * g
    pad = MAX_SHIFT_PX + 2
    to_wgs = Transformer.from_crs(config.crs, "EPSG:4326", always_xy=True)
    rows: list[dict[str, str]] = []
    files: list[Path] = []
    remaining = list(labels)
    region = 0
    bar = tqdm(total=n, desc="synth series", unit="site", disable=(None if progress is None else not progress))
    while remaining:
        if region >= 10 + 20 * int(math.ceil(n / 50)):
            raise UsageError(f"could not place {n} sites in {region} regions of {size} px; raise --size-px or lower --sites")
        seeds = np.random.SeedSequence([config.seed, 7919, region]).spawn(5)
        rng_layout, rng_style, rng_pick, rng_time = (np.random.default_rng(s) for s in seeds[:4])
        lay = build_layout(
            rng_layout, extent, extent, building_density=config.building_density, tree_density=config.tree_density,
            facilities_per_km2=config.facilities_per_km2, edge_margin_m=config.edge_margin_m + MAX_SHIFT_PX * g,
            urban=bool(rng_layout.random() < config.urban_fraction),
        )
        place_damage_clusters(rng_layout, lay, config.damage_styles)
        strengths = region_strengths(rng_style, config)
        strengths["clouds"] = 0.0  # clouds come only on the chosen cloudy dates
        add_construction(rng_layout, lay, strengths["construction"])
        eligible = sum(1 for b in lay.buildings if b.site_ok and not b.after_only)
        take = min(len(remaining), config.max_sites_per_region, max(int(eligible * 0.7), min(eligible, 1)))
        if take <= 0:
            region += 1
            continue
        wanted = {d: 0 for d in counts}
        for d in remaining[:take]:
            wanted[d] += 1
        chosen = choose_sites(rng_pick, lay, wanted)
        for b in chosen:
            remaining.remove(b.damage)

        # --- the dates, the event(s) and the spoilt dates ---------------------------------------
        k = series.dates
        dates = _dates(rng_time, series, region)
        j = int(rng_time.integers(0, k - 1))  # the event falls between dates j and j + 1
        event = _event_day(rng_time, dates[j], dates[j + 1])
        j2 = int(rng_time.integers(j + 1, k - 1)) if j + 1 < k - 1 else None
        event2 = _event_day(rng_time, dates[j2], dates[j2 + 1]) if j2 is not None else None
        # a cloud never hides the only intact (first) or the only damaged (last) date: the
        # known answer stays observable; next to the event it widens the bracket instead
        hidden = {0} if j == 0 else set()
        if j + 1 == k - 1:
            hidden.add(k - 1)
        spoil = [int(i) for i in rng_time.permutation(k)]
        cloudy = set([i for i in spoil if i not in hidden][: series.cloudy_dates])
        shifted = set([i for i in spoil if i not in cloudy][: series.misregistered_dates])
        final = {id(b): b.damage for b in lay.buildings}
        staged: set[int] = set()
        if event2 is not None:
            for b in chosen:
                if b.damage == "destroyed" and rng_time.random() < series.staged_fraction:
                    staged.add(id(b))

        fields = make_static_fields(int(seeds[4].generate_state(1)[0]), (size + 2 * pad, size + 2 * pad), g, (-pad * g, -pad * g))
        x0, y0 = _origin(config.crs, region, extent)
        transform = from_origin(x0, y0, g, g)
        for i, when in enumerate(dates):
            before_style, after_style = draw_epoch_styles(rng_style, strengths)
            damaged_now = i > j
            style: EpochStyle = after_style if i > 0 else before_style
            style = replace(style, after=damaged_now)
            if i == 0 or i not in shifted:
                style = replace(style, shift_px=(0, 0) if i == 0 else style.shift_px)
            if i in shifted:
                sign = rng_time.choice([-1, 1], size=2)
                style = replace(style, shift_px=(int(sign[0] * series.misregistration_px), int(sign[1] * series.misregistration_px)))
            if i in cloudy:
                style = replace(style, cloud_cover=series.cloud_cover)
            # damage as of this date
            for b in lay.buildings:
                dmg = final[id(b)]
                if id(b) in staged and event2 is not None and when < event2:
                    dmg = "major-damage"
                b.damage = dmg if damaged_now else "no-damage"
            canvas = render_epoch(lay, fields, style)
            dy, dx = style.shift_px
            img = np.ascontiguousarray(canvas[pad + dy : pad + dy + size, pad + dx : pad + dx + size])
            del canvas
            u8, _valid = apply_sensor(img, style, g)
            path = folder / f"region{region:03d}_{when:%Y%m%d}.tif"
            tags = {
                "ACQUISITION_DATETIME": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "SENSOR": "SITEWATCH_SYNTH",
                "SYNTH_SERIES_VERSION": SERIES_VERSION,
                "SYNTH_SPOILER": "cloudy" if i in cloudy else ("misregistered" if i in shifted else "none"),
                "SOURCE": f"sitewatch synth --series seed={config.seed} region={region} date={i} (synthetic, no real imagery)",
            }
            write_geotiff(path, np.ascontiguousarray(np.moveaxis(u8, 2, 0)), transform, config.crs, tags)
            files.append(path)
        for b in lay.buildings:
            b.damage = final[id(b)]

        xs = np.array([x0 + b.centroid[0] for b in chosen])
        ys = np.array([y0 - b.centroid[1] for b in chosen])
        lons, lats = to_wgs.transform(xs, ys)
        for m in rng_pick.permutation(len(chosen)):
            b = chosen[int(m)]
            damaged = b.damage != "no-damage"
            stages = ""
            if id(b) in staged and event2 is not None:
                stages = f"{event:%Y-%m-%d}:major-damage;{event2:%Y-%m-%d}:destroyed"
            rows.append({
                "site_id": f"ser{config.seed}-r{region:03d}-b{lay.buildings.index(b):05d}",
                "lon": f"{lons[m]:.8f}",
                "lat": f"{lats[m]:.8f}",
                "kind": b.kind,
                "radius_m": f"{damage_radius_m(b.size_m):.1f}",
                "damage": b.damage,
                "damage_style": b.style if damaged else "",
                "region": str(region),
                "building_m": f"{b.size_m:.1f}",
                "damage_date": f"{event:%Y-%m-%d}" if damaged else "",
                "damage_stages": stages,
                "last_intact_date": f"{dates[j]:%Y-%m-%d}" if damaged else "",
                "first_damaged_date": f"{dates[j + 1]:%Y-%m-%d}" if damaged else "",
            })
        bar.update(len(chosen))
        log.info("series region %d: %d dates, event %s (after date %d), %d sites", region, k, event.date(), j, len(chosen))
        region += 1
    bar.close()
    with open(out / "sites.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(SERIES_SITE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return SeriesSummary(
        out=out, sites=len(rows), damaged=sum(1 for r in rows if r["damage_date"]), regions=region,
        files=tuple(files), seconds=time.perf_counter() - t0,
    )
