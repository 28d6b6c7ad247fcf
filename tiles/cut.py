"""Cutting aligned before/after pairs around sites.

For a batch of sites, the chip grid's control points are transformed to every candidate scene's
CRS in one call per CRS (:mod:`tiles.grid`), the best scene per epoch is chosen (full coverage
over partial, then the preferred acquisition time, then finer resolution), a small native window
is read from a dataset kept open in a bounded cache, and resampled onto the chip grid. Then the
after chip is co-registered to the before chip, made radiometrically comparable, and the pair's
quality decides its status.

Nothing about one site raises: a site-level problem gives a :class:`~tiles.types.Pair` with
status ``cannot_assess`` and one of the reasons in :data:`REASONS`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from tiles import grid
from tiles.bands import BandChoice
from tiles.borders import BorderMap, black_border_mask, coarse_border_map
from tiles.catalog import RasterCatalog, SceneInfo
from tiles.config import TilesConfig
from tiles.coreg import estimate_shift
from tiles.incident import IncidentWindow, timely_scenes
from tiles.quality import band_range, chip_quality, cloud_like, pair_cloud_fraction
from tiles.resample import resample_affine
from tiles.radiometry import ScaleStats, match_histograms_masked, match_mean_std, scale_to_unit, stats_from_sample
from tiles.types import Pair, PairMeta, Site

log = logging.getLogger(__name__)

__all__ = ["PairCutter", "group_sites_by_scene", "group_site_indices_by_scene", "REASONS", "Candidate"]

#: every reason a pair can be ``cannot_assess``, in the order they are checked.
REASONS = (
    "invalid_site",
    "outside_before_coverage",
    "outside_after_coverage",
    "no_timely_before",
    "no_timely_after",
    "read_error",
    "too_coarse",
    "mostly_nodata",
    "blank",
    "cloud",
    "misregistered",
)

_ORDER = {"nearest": 0, "bilinear": 1, "cubic": 3}


@dataclass(frozen=True)
class Candidate:
    """A scene that covers (part of) a site's chip, with the chip-to-scene affine map.

    Attributes:
        scene: the scene.
        affine: float64 ``(2, 3)`` map from chip index ``(row, col)`` to scene index coordinates.
        coverage: approximate fraction of the chip inside the scene.
        too_coarse: the scene's native GSD exceeds ``tiles.max_native_gsd_ratio`` times the
            site's chip GSD (such scenes sort after every finer one).
    """

    scene: SceneInfo
    affine: np.ndarray
    coverage: float
    too_coarse: bool = False


@dataclass
class _EpochChip:
    """One epoch's chip plus what is needed to resample it again (for a shift)."""

    scene: SceneInfo
    image: np.ndarray  # (C, P, P) float32 [0, 1]
    valid: np.ndarray  # (P, P) bool
    native: np.ndarray  # (C, h, w) float32 [0, 1]
    native_valid: np.ndarray  # (h, w) float32 0/1
    affine: np.ndarray  # (2, 3) chip index -> native array index


@dataclass
class _Mosaic:
    """One epoch's chip composed from one or more scenes (first = primary)."""

    parts: list[_EpochChip]
    image: np.ndarray  # (C, P, P) float32
    valid: np.ndarray  # (P, P) bool

    @property
    def scene(self) -> SceneInfo:
        return self.parts[0].scene

    @property
    def extra_ids(self) -> str:
        return ";".join(p.scene.scene_id for p in self.parts[1:])


def _site_geometry(site: Site, config: TilesConfig) -> float:
    """Window side in metres for a site."""
    half = None
    if site.footprint is not None:
        try:
            half = grid.footprint_half_extent_m(site.footprint, site.lon, site.lat)
        except (TypeError, ValueError, IndexError):
            half = None
    return grid.chip_size_m_for(
        chip_size_m=config.chip_size_m,
        radius_m=site.radius_m,
        footprint_half_m=half,
        radius_scale=config.radius_scale,
        max_chip_size_m=config.max_chip_size_m,
    )


def _metres(value: float) -> str:
    """A length for a message: ``0.5``, ``1.25``, ``2000`` (never ``2e+03``)."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _gap_fields(window: IncidentWindow, before: SceneInfo, after: SceneInfo) -> dict[str, float]:
    """How many days the primary scenes lie from the incident window."""
    out: dict[str, float] = {}
    for epoch, scene in (("before", before), ("after", after)):
        if scene.acquired is not None:
            out[f"{epoch}_gap_days"] = window.gap_days(scene.acquired, epoch)
    return out


def _catalogue_fields(before: SceneInfo, after: SceneInfo) -> dict[str, Any]:
    """What a STAC catalogue said about the primary scenes (empty/NaN for plain files)."""
    out: dict[str, Any] = {}
    for epoch, scene in (("before", before), ("after", after)):
        out[f"{epoch}_platform"] = scene.platform
        for name in ("stated_gsd_m", "off_nadir", "cloud_cover"):
            value = getattr(scene, name)
            out[f"{epoch}_{name}"] = math.nan if value is None else float(value)
        out[f"{epoch}_credit"] = scene.credit
    return out


def _usable(site: Site) -> bool:
    return site.problem is None and math.isfinite(site.lon) and math.isfinite(site.lat)


class _Planner:
    """Finds candidate scenes and chip-to-scene maps for batches of sites (no pixel I/O)."""

    def __init__(self, config: TilesConfig) -> None:
        self.config = config
        self._transformers: dict[str, Any] = {}
        self._geographic: dict[str, bool] = {}
        self._rc = grid.control_points_rc(config.chip_px, 3)

    def _transformer(self, crs: str) -> Any:
        t = self._transformers.get(crs)
        if t is None:
            from pyproj import Transformer

            t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
            self._transformers[crs] = t
        return t

    def _is_geographic(self, crs: str) -> bool:
        g = self._geographic.get(crs)
        if g is None:
            from pyproj import CRS

            g = bool(CRS.from_user_input(crs).is_geographic)
            self._geographic[crs] = g
        return g

    def plan(self, sites: Sequence[Site], catalog: RasterCatalog) -> tuple[list[list[Candidate]], np.ndarray]:
        """Candidates per site for one epoch, best first, plus each site's window size (metres).

        Returns:
            ``(candidates, size_m)``: a list per site, and ``(N,)`` window sides (NaN for
            unusable sites).
        """
        n = len(sites)
        cfg = self.config
        out: list[list[Candidate]] = [[] for _ in range(n)]
        size_m = np.full(n, np.nan)
        idx = np.array([i for i, s in enumerate(sites) if _usable(s)], dtype=np.int64)
        if idx.size == 0:
            return out, size_m
        lon0 = np.array([sites[i].lon for i in idx])
        lat0 = np.array([sites[i].lat for i in idx])
        sizes = np.array([_site_geometry(sites[i], cfg) for i in idx])
        size_m[idx] = sizes
        east, north = grid.chip_offsets_m(self._rc, cfg.chip_px, sizes / cfg.chip_px)
        lon, lat = grid.offsets_to_lonlat(lon0, lat0, east, north)  # (n, K)
        lon_min, lon_max = lon.min(1), lon.max(1)
        lat_min, lat_max = lat.min(1), lat.max(1)
        for crs, scenes in catalog.crs_groups().items():
            masks = []
            for s in scenes:
                w, so, e, no = s.lonlat_bounds
                masks.append(grid.lon_overlap(lon_min, lon_max, w, e) & (lat_max >= so) & (lat_min <= no))
            any_mask = np.logical_or.reduce(masks)
            if not any_mask.any():
                continue
            sel = np.flatnonzero(any_mask)
            try:
                x, y = self._transformer(crs).transform(lon[sel], lat[sel])
            except Exception as exc:  # noqa: BLE001 - pyproj raises several types
                log.warning("cannot transform sites to %s (%s); its scenes are not used", crs, exc)
                continue
            x, y = np.asarray(x), np.asarray(y)
            geographic = self._is_geographic(crs)
            pos = np.full(n, -1)
            pos[sel] = np.arange(sel.size)
            for s, m in zip(scenes, masks):
                hit = np.flatnonzero(m)
                if hit.size == 0:
                    continue
                xs = x[pos[hit]]
                if geographic:  # a scene whose x runs beyond ±180: take the site's longitude there
                    xs = grid.wrap_lon_towards(xs, (s.bounds[0] + s.bounds[2]) / 2)
                rows, cols = grid.pixel_coords(s.transform, xs, y[pos[hit]])
                ok = np.isfinite(rows).all(1) & np.isfinite(cols).all(1)
                hit, rows, cols = hit[ok], rows[ok], cols[ok]
                if hit.size == 0:
                    continue
                aff = grid.fit_affine(self._rc, rows, cols)
                cov = grid.coverage_fraction(aff, cfg.chip_px, s.height, s.width)
                coarse = s.gsd_m > cfg.max_native_gsd_ratio * sizes[hit] / cfg.chip_px
                for j, k in enumerate(hit):
                    if cov[j] > 0:
                        out[idx[k]].append(Candidate(s, aff[j], float(cov[j]), bool(coarse[j])))
        for cands in out:
            cands.sort(
                key=lambda c: (
                    c.too_coarse, c.coverage < 0.999, catalog.time_rank(c.scene), -c.coverage, c.scene.gsd_m, c.scene.scene_id
                )
            )
        return out, size_m


class PairCutter:
    """Cuts before/after pairs around sites; cheap to build, one per process or Dask worker.

    Args:
        before, after: the two epochs' catalogues.
        config: how pairs are cut.

    Datasets are opened lazily and kept open in an LRU cache of ``config.max_open_files``;
    per-scene value scaling (non-uint8 rasters) is computed once per scene file (keyed by
    :attr:`SceneInfo.cache_key`, so two epochs' files that share a name never share statistics).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, before: RasterCatalog, after: RasterCatalog, config: TilesConfig | None = None) -> None:
        self.before = before
        self.after = after
        self.config = TilesConfig() if config is None else config
        self._planner = _Planner(self.config)
        self._open: OrderedDict[str, Any] = OrderedDict()
        self._stats: dict[str, ScaleStats] = {}
        self._choices: dict[str, BandChoice] = {}
        self._borders: OrderedDict[str, BorderMap] = OrderedDict()
        self._default_window = self.config.default_window

    # -- datasets ---------------------------------------------------------------------------
    def _dataset(self, scene: SceneInfo) -> Any:
        key = str(scene.path)
        ds = self._open.get(key)
        if ds is not None:
            self._open.move_to_end(key)
            return ds
        import rasterio

        ds = rasterio.open(scene.path)
        self._open[key] = ds
        while len(self._open) > max(1, self.config.max_open_files):
            _, old = self._open.popitem(last=False)
            old.close()
        return ds

    def close(self) -> None:
        """Close every open dataset."""
        while self._open:
            _, ds = self._open.popitem()
            ds.close()

    def __enter__(self) -> "PairCutter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def _band_choice(self, scene: SceneInfo) -> BandChoice:
        """The scene's :class:`BandChoice`, made (and warned about) once per scene file."""
        choice = self._choices.get(scene.cache_key)
        if choice is None:
            choice = scene.band_choice(self.config)
            self._choices[scene.cache_key] = choice
            if choice.warning:
                log.warning("%s", choice.warning)
        return choice

    def _bands(self, scene: SceneInfo) -> list[int]:
        return list(self._band_choice(scene).bands)

    def _valid_mask(self, ds: Any, scene: SceneInfo, data: np.ndarray, window: Any, out_shape: tuple[int, int]) -> np.ndarray:
        valid = np.ones(out_shape, dtype=bool)
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.isfinite(data).all(axis=0)
        if scene.nodata is not None:
            if math.isnan(scene.nodata):
                valid &= ~np.isnan(data).all(axis=0)
            else:
                valid &= ~(data == scene.nodata).all(axis=0)
        if scene.has_mask:
            valid &= ds.read_masks(1, window=window, out_shape=out_shape) > 0
        elif scene.nodata is None and self.config.black_border_nodata:
            zero = ~data.any(axis=0)  # exactly 0 in every band (NaN counts as non-zero)
            if zero.any():
                win = (int(window.row_off), int(window.col_off), int(window.height), int(window.width))
                valid &= ~black_border_mask(zero, win, (scene.height, scene.width), lambda: self._border_map(scene))
        return valid

    def _border_map(self, scene: SceneInfo) -> BorderMap:
        """The scene's black collar on a coarse grid (one decimated read, kept for a while)."""
        key = scene.cache_key
        bm = self._borders.get(key)
        if bm is not None:
            self._borders.move_to_end(key)
            return bm
        from rasterio.enums import Resampling

        f = max(1.0, max(scene.width, scene.height) / 1024)
        shape = (max(1, int(scene.height / f)), max(1, int(scene.width / f)))
        bands = self._bands(scene)
        sample = self._dataset(scene).read(bands, out_shape=(len(bands), *shape), resampling=Resampling.nearest)
        bm = coarse_border_map(~sample.any(axis=0), scene.height, scene.width)
        self._borders[key] = bm
        while len(self._borders) > max(32, self.config.max_open_files):
            self._borders.popitem(last=False)
        return bm

    def _scene_stats(self, scene: SceneInfo) -> ScaleStats:
        # keyed by the file, never by scene_id: before/x.tif and after/x.tif share the stem
        stats = self._stats.get(scene.cache_key)
        if stats is not None:
            return stats
        bands = self._bands(scene)
        if scene.dtype == "uint8":
            stats = stats_from_sample(np.zeros((len(bands), 1, 1), np.uint8), np.ones((1, 1), bool), "uint8")
        else:
            from rasterio.enums import Resampling
            from rasterio.windows import Window

            ds = self._dataset(scene)
            f = max(1.0, max(scene.width, scene.height) / 1024)
            shape = (max(1, int(scene.height / f)), max(1, int(scene.width / f)))
            window = Window(0, 0, scene.width, scene.height)
            sample = ds.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.nearest)
            valid = self._valid_mask(ds, scene, sample, window, shape)
            stats = stats_from_sample(sample, valid, scene.dtype)
            log.debug("scene %s: stretch %s..%s", scene.scene_id, stats[0], stats[1])
        self._stats[scene.cache_key] = stats
        return stats

    # -- reading ----------------------------------------------------------------------------
    def _read(self, cand: Candidate, margin_px: float) -> _EpochChip | None:
        """Read and resample one epoch's chip; None when the window misses the raster."""
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        cfg = self.config
        scene = cand.scene
        win = grid.native_window(cand.affine, cfg.chip_px, scene.height, scene.width, margin_px)
        if win is None:
            return None
        r0, c0, h, w = win
        ds = self._dataset(scene)
        bands = self._bands(scene)
        scale = math.sqrt(abs(np.linalg.det(cand.affine[:, :2])))  # native px per chip px
        k = int(scale) if scale >= 2.0 else 1
        hd, wd = max(1, round(h / k)), max(1, round(w / k))
        window = Window(c0, r0, w, h)
        data = ds.read(
            bands,
            window=window,
            out_shape=(len(bands), hd, wd),
            resampling=Resampling.average if k > 1 else Resampling.nearest,
        )
        valid = self._valid_mask(ds, scene, data, window, (hd, wd))
        unit = scale_to_unit(data, self._scene_stats(scene))
        if not valid.all():
            unit[:, ~valid] = 0.0
        # chip index -> window (decimated) index coordinates
        sy, sx = hd / h, wd / w
        aff = cand.affine.copy()
        aff[0] = aff[0] * sy
        aff[1] = aff[1] * sx
        aff[0, 2] = (cand.affine[0, 2] - r0 + 0.5) * sy - 0.5
        aff[1, 2] = (cand.affine[1, 2] - c0 + 0.5) * sx - 0.5
        native_valid = valid.astype(np.float32)
        image, chip_valid = self._resample(unit, native_valid, aff, (0.0, 0.0))
        return _EpochChip(scene, image, chip_valid, unit, native_valid, aff)

    def _resample(
        self, native: np.ndarray, native_valid: np.ndarray, aff: np.ndarray, shift: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resample ``(C, h, w)`` onto the chip grid, optionally sampling at ``(r - dy, c - dx)``."""
        moved = aff.copy()
        moved[:, 2] = aff[:, 2] - aff[:, :2] @ np.asarray(shift, dtype=np.float64)
        return resample_affine(native, native_valid, moved, self.config.chip_px, order=_ORDER[self.config.resampling])

    def _read_epoch(self, cands: list[Candidate], margin_px: float) -> tuple[_Mosaic | None, str]:
        """One epoch's chip: the best candidate, its holes filled from the next ones (mosaic).

        Candidates are read best first, at most ``config.max_scenes_tried``; reading stops once
        every chip pixel is valid. Without ``config.mosaic`` only the pixels of the first
        readable scene are used (later scenes are still tried when it has too few).

        Returns:
            ``(mosaic or None, error text)``.
        """
        cfg = self.config
        parts: list[_EpochChip] = []
        errors: list[str] = []
        image: np.ndarray | None = None
        valid: np.ndarray | None = None
        empty: _EpochChip | None = None  # read, but no valid pixel (a nodata or NaN area)
        for cand in cands[: max(1, cfg.max_scenes_tried)]:
            try:
                chip = self._read(cand, margin_px)
            except Exception as exc:  # noqa: BLE001 - a read error is a site-level problem
                errors.append(f"{cand.scene.scene_id}: {exc}")
                log.warning("read error in %s: %s", cand.scene.path, exc)
                continue
            if chip is not None and not chip.valid.any() and empty is None:
                empty = chip
            if chip is None or not chip.valid.any():
                continue
            # the mosaic shares the first part's arrays until a later part fills holes in it
            if image is None or valid is None:
                parts, image, valid = [chip], chip.image, chip.valid
            elif cfg.mosaic:
                fill = chip.valid & ~valid
                if fill.any():
                    if image is parts[0].image:
                        image, valid = image.copy(), valid.copy()
                    parts.append(chip)
                    image[:, fill] = chip.image[:, fill]
                    valid |= fill
            elif chip.valid.mean() > valid.mean():
                parts, image, valid = [chip], chip.image, chip.valid
            if valid.all() or (not cfg.mosaic and valid.mean() >= cfg.min_valid_fraction):
                break
        if image is None or valid is None:
            if empty is not None:  # the scene is there, its pixels are not: mostly_nodata
                return _Mosaic([empty], empty.image, empty.valid), "; ".join(errors)
            return None, "; ".join(errors)
        return _Mosaic(parts, image, valid), "; ".join(errors)

    def _shifted(self, mosaic: _Mosaic, shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """The mosaic resampled with every part sampled at ``(r - dy, c - dx)``."""
        image: np.ndarray | None = None
        valid: np.ndarray | None = None
        for part in mosaic.parts:
            im, va = self._resample(part.native, part.native_valid, part.affine, shift)
            if image is None or valid is None:
                image, valid = im, va
            else:
                fill = va & ~valid
                image[:, fill] = im[:, fill]
                valid |= fill
        if image is None or valid is None:
            raise ValueError("a mosaic needs at least one part")
        return image, valid

    # -- public -----------------------------------------------------------------------------
    def cut(self, site: Site) -> Pair:
        """Cut one pair (never raises for a site-level problem)."""
        return next(self.cut_many([site]))

    def cut_many(self, sites: Iterable[Site]) -> Iterator[Pair]:
        """Cut pairs for many sites, in input order, planning coordinates in batches."""
        batch: list[Site] = []
        for site in sites:
            batch.append(site)
            if len(batch) >= max(1, self.config.batch_size):
                yield from self._cut_batch(batch)
                batch = []
        if batch:
            yield from self._cut_batch(batch)

    def candidates(self, sites: Sequence[Site]) -> tuple[list[list[Candidate]], list[list[Candidate]]]:
        """Before and after candidate scenes per site, best first (headers only, no pixels)."""
        before, _ = self._planner.plan(sites, self.before)
        after, _ = self._planner.plan(sites, self.after)
        return before, after

    def _cut_batch(self, sites: list[Site]) -> Iterator[Pair]:
        try:
            cb, size_m = self._planner.plan(sites, self.before)
            ca, _ = self._planner.plan(sites, self.after)
        except Exception as exc:  # noqa: BLE001 - never stop the batch
            log.exception("planning a batch of %d sites failed", len(sites))
            for s in sites:
                yield Pair.cannot_assess(s, "read_error", f"planning failed: {exc}")
            return
        hints = self._coverage_hints(sites, cb, ca)

        def one(i: int) -> Pair:
            try:
                return self._cut_one(sites[i], cb[i], ca[i], float(size_m[i]), hints.get(i, ""))
            except Exception as exc:  # noqa: BLE001 - one bad site never stops the batch
                log.exception("site %s: unexpected error", sites[i].site_id)
                return Pair.cannot_assess(sites[i], "read_error", f"{type(exc).__name__}: {exc}")

        for i in range(len(sites)):
            yield one(i)

    def _coverage_hints(self, sites: Sequence[Site], cb: list[list[Candidate]], ca: list[list[Candidate]]) -> dict[int, str]:
        """What to tell about sites that an epoch does not cover: swapped lon/lat, antimeridian.

        Only sites without a before (or after) candidate are looked at, so a batch that is
        covered costs nothing here.

        Returns:
            ``{site index: "; hint ..."}`` for the sites that get a hint.
        """
        hints: dict[int, str] = {}
        missing = [i for i, s in enumerate(sites) if _usable(s) and not (cb[i] and ca[i])]
        if not missing:
            return hints
        # the swapped point is covered by both epochs (the catalogue knows the footprints)
        swappable = [i for i in missing if abs(sites[i].lon) <= 90.0]
        if swappable:
            swapped = [Site(sites[i].site_id, lon=sites[i].lat, lat=sites[i].lon) for i in swappable]
            sb, _ = self._planner.plan(swapped, self.before)
            sa, _ = self._planner.plan(swapped, self.after)
            for k, i in enumerate(swappable):
                if sb[k] and sa[k]:
                    s = sites[i]
                    hints[i] = (
                        f"; the swapped point (lon {s.lat:g}, lat {s.lon:g}) lies in the imagery "
                        f"(scene {sb[k][0].scene.scene_id}): are the lon and lat columns swapped?"
                    )
        # a scene across the antimeridian whose CRS cannot place the site (e.g. Web Mercator)
        for epoch, cands, catalog in (("before", cb, self.before), ("after", ca, self.after)):
            crossing = [sc for sc in catalog.scenes if sc.lonlat_bounds[2] < sc.lonlat_bounds[0]]
            for i in missing:
                if cands[i] or i in hints:
                    continue
                s = sites[i]
                for sc in crossing:
                    w, so, e, no = sc.lonlat_bounds
                    if so <= s.lat <= no and (s.lon >= w or s.lon <= e):
                        hints[i] = (
                            f"; {epoch} scene {sc.scene_id} crosses the antimeridian and its bounds hold the "
                            f"site, but its CRS {sc.crs} cannot place the site on it: reproject the scene to a "
                            "local projected CRS (e.g. gdalwarp -t_srs with the site's UTM zone)"
                        )
                        break
        return hints

    def _cut_one(
        self, site: Site, cands_b: list[Candidate], cands_a: list[Candidate], size_m: float, hint: str = ""
    ) -> Pair:
        cfg = self.config
        if not _usable(site):
            return Pair.cannot_assess(site, "invalid_site", site.problem or "site has no valid coordinates")
        gsd = size_m / cfg.chip_px
        base: dict[str, Any] = {"chip_gsd_m": gsd, "chip_size_m": size_m, "normalisation": cfg.normalisation}
        if not cands_b:
            detail = "no before scene covers the site" + ("" if cands_a else "; no after scene either")
            return Pair.cannot_assess(site, "outside_before_coverage", detail + hint, **base)
        if not cands_a:
            return Pair.cannot_assess(site, "outside_after_coverage", "no after scene covers the site" + hint, **base)
        window = site.incident or self._default_window
        timely_note = ""
        if window is not None:
            base["incident_window"] = window.text
            kept: dict[str, list[Candidate]] = {}
            for epoch, cands in (("before", cands_b), ("after", cands_a)):
                choice = timely_scenes(
                    [(c.scene.scene_id, c.scene.acquired) for c in cands], window, epoch, cfg.max_incident_gap_days
                )
                if not choice.kept:
                    return Pair.cannot_assess(
                        site, f"no_timely_{epoch}", choice.describe(epoch, window, cfg.max_incident_gap_days), **base
                    )
                kept[epoch] = [cands[i] for i in choice.kept]
                if choice.unknown:
                    timely_note += (
                        f"; {epoch} scenes with unknown acquisition time left out under the incident window: "
                        + ", ".join(choice.unknown[:3])
                    )
                    log.warning("site %s: %s", site.site_id, timely_note.lstrip("; "))
            cands_b, cands_a = kept["before"], kept["after"]
        # never fill a fine scene's holes from a too coarse one
        cands_b = [c for c in cands_b if not c.too_coarse] or cands_b
        cands_a = [c for c in cands_a if not c.too_coarse] or cands_a
        margin = math.ceil(cfg.max_shift_m / gsd) + 1 if cfg.coregister else 0
        b, err_b = self._read_epoch(cands_b, 0.0)
        a, err_a = self._read_epoch(cands_a, float(margin))
        if b is None or a is None:
            if err_b or err_a:
                return Pair.cannot_assess(site, "read_error", "; ".join(e for e in (err_b, err_a) if e), **base)
            reason = "outside_before_coverage" if b is None else "outside_after_coverage"
            return Pair.cannot_assess(site, reason, "the chip misses the scene's pixels", **base)
        base.update(
            before_scene=b.scene.scene_id,
            after_scene=a.scene.scene_id,
            before_time=b.scene.acquired,
            after_time=a.scene.acquired,
            before_time_source=b.scene.time_source,
            after_time_source=a.scene.time_source,
            before_gsd_m=b.scene.gsd_m,
            after_gsd_m=a.scene.gsd_m,
            before_extra_scenes=b.extra_ids,
            after_extra_scenes=a.extra_ids,
            before_bands=self._band_choice(b.scene).text,
            after_bands=self._band_choice(a.scene).text,
            before_band_source=self._band_choice(b.scene).source,
            after_band_source=self._band_choice(a.scene).source,
            **_catalogue_fields(b.scene, a.scene),
        )
        if window is not None:
            base.update(_gap_fields(window, b.scene, a.scene))
        # -- resolution: too coarse for the chip, or very different between the epochs -------
        coarse = ""
        for epoch, cands, mosaic in (("before", cands_b, b), ("after", cands_a, a)):
            if cands[0].too_coarse and not coarse:
                g = mosaic.scene.gsd_m
                coarse = (
                    f"{epoch} native GSD {_metres(g)} m is {g / gsd:.1f}x the chip GSD {_metres(gsd)} m "
                    f"(> tiles.max_native_gsd_ratio {cfg.max_native_gsd_ratio:g}); no finer {epoch} scene covers the site"
                )
        fine, rough = sorted((b.scene.gsd_m, a.scene.gsd_m))
        if fine > 0 and math.isfinite(rough):
            base["gsd_ratio"] = rough / fine
            base["gsd_mismatch"] = rough / fine > cfg.gsd_mismatch_ratio
        # -- co-registration ------------------------------------------------------------
        shift_fields: dict[str, Any] = {}
        misregistered = ""
        a_image, a_valid = a.image, a.valid
        # grey (band mean) images: co-registration correlates them, the cloud test looks at them
        mean_b = b.image.mean(axis=0)
        mean_a: np.ndarray | None = None
        if cfg.coregister:
            mean_a = a.image.mean(axis=0)
            est = estimate_shift(b.image, a.image, b.valid, a.valid, band_means=(mean_b, mean_a))
            shift_m = math.hypot(est.dy, est.dx) * gsd
            conf = est.confidence
            applied = False
            if math.isfinite(conf):
                helps = not math.isfinite(est.confidence_unshifted) or conf >= est.confidence_unshifted
                if shift_m <= cfg.max_shift_m and conf >= cfg.min_coreg_confidence and helps:
                    a_image, a_valid = self._shifted(a, (est.dy, est.dx))
                    applied = True
                elif shift_m > cfg.max_shift_m and conf >= cfg.misregistered_confidence and helps:
                    misregistered = (
                        f"after is offset by {shift_m:.1f} m (> max_shift_m {cfg.max_shift_m:g}) "
                        f"with confidence {conf:.2f}"
                    )
            shift_fields = dict(
                shift_dy_px=-est.dy,
                shift_dx_px=-est.dx,
                shift_m=shift_m,
                shift_applied=applied,
                coreg_confidence=conf,
            )
        base.update(shift_fields)
        # -- quality (on unnormalised values) -------------------------------------------
        rb, ra = band_range(b.image), band_range(a_image)  # once per epoch
        cb = cloud_like(b.image, b.valid, cfg, lo_hi=rb, mean=mean_b)
        ca = cloud_like(a_image, a_valid, cfg, lo_hi=ra, mean=mean_a if a_image is a.image else None)
        qb = chip_quality(b.image, b.valid, cfg, cloud=cb, lo_hi=rb)
        qa = chip_quality(a_image, a_valid, cfg, cloud=ca, lo_hi=ra)
        base.update(
            valid_fraction=min(qb.valid_fraction, qa.valid_fraction),
            cloud_fraction=pair_cloud_fraction(b.image, b.valid, a_image, a_valid, cfg, cloud_before=cb, cloud_after=ca),
            blank_fraction=max(qb.blank_fraction, qa.blank_fraction),
            saturated_fraction=max(qb.saturated_fraction, qa.saturated_fraction),
        )
        # -- normalisation ----------------------------------------------------------------
        both = b.valid & a_valid
        if cfg.normalisation == "histogram":
            a_image = match_histograms_masked(a_image, b.image, both)
        elif cfg.normalisation == "standardise":
            a_image = match_mean_std(a_image, b.image, both)
        a_image = a_image.copy() if a_image is a.image else a_image
        a_image[:, ~a_valid] = 0.0
        image = np.stack([b.image, a_image]).astype(np.float32, copy=False)
        valid = np.stack([b.valid, a_valid])
        # -- status ---------------------------------------------------------------------------
        reason, detail = "", ""
        worst_blank = max(qb.blank_fraction + qb.saturated_fraction, qa.blank_fraction + qa.saturated_fraction)
        if coarse:
            reason, detail = "too_coarse", coarse
        elif base["valid_fraction"] < cfg.min_valid_fraction:
            reason = "mostly_nodata"
            detail = f"valid pixels: before {qb.valid_fraction:.0%}, after {qa.valid_fraction:.0%}"
        elif worst_blank > cfg.max_blank_fraction:
            reason, detail = "blank", f"blank or saturated fraction {worst_blank:.0%}"
        elif base["cloud_fraction"] > cfg.max_cloud_fraction:
            reason, detail = "cloud", f"cloud-like fraction {base['cloud_fraction']:.0%}"
        elif misregistered:
            reason, detail = "misregistered", misregistered
        if timely_note:
            detail = (detail + timely_note) if detail else timely_note.lstrip("; ")
        meta = PairMeta(site_id=site.site_id, status="cannot_assess" if reason else "ok", reason=reason, detail=detail, **base)
        return Pair(site=site, meta=meta, image=image, valid=valid)


def group_sites_by_scene(
    sites: Sequence[Site], before: RasterCatalog, after: RasterCatalog, *, config: TilesConfig | None = None
) -> dict[str, list[Site]]:
    """Partition sites by the best before and after scene that cover them (for Dask workers).

    Keys are ``"<before scene id>|<after scene id>"``; sites without a covering scene in an epoch
    use ``-`` for it, and invalid sites go under ``"-|-"``. Every site appears in exactly one
    group, in input order within it. Only headers are used (no pixels are read).
    """
    return {key: [sites[i] for i in members] for key, members in group_site_indices_by_scene(sites, before, after, config=config).items()}


def group_site_indices_by_scene(
    sites: Sequence[Site], before: RasterCatalog, after: RasterCatalog, *, config: TilesConfig | None = None
) -> dict[str, list[int]]:
    """:func:`group_sites_by_scene` as positions in ``sites`` (ascending within each group)."""
    planner = _Planner(TilesConfig() if config is None else config)
    groups: dict[str, list[int]] = {}
    step = 4096
    for start in range(0, len(sites), step):
        chunk = list(sites[start : start + step])
        cb, _ = planner.plan(chunk, before)
        ca, _ = planner.plan(chunk, after)
        for i, (b, a) in enumerate(zip(cb, ca), start):
            key = f"{b[0].scene.scene_id if b else '-'}|{a[0].scene.scene_id if a else '-'}"
            members = groups.get(key)
            if members is None:
                groups[key] = members = []
            members.append(i)
    return groups
