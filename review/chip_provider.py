"""Chip images for the site page: the ones ``detect`` wrote, or cut on demand from the run's rasters.

``detect`` writes chips for its top sites only. For the others this module cuts the before/after
pair with :class:`tiles.cut.PairCutter` from the rasters listed in ``manifest.json`` (no CNN, so no
heatmap) and caches the PNG bytes in ``RUN/review.sqlite-chips`` (one SQLite file beside the verdict
store; like the store's own ``-wal``/``-shm`` files, ``sitewatch verify`` does not count it as an
output, and deleting it only empties the cache). When cutting is not possible (rasters moved, site
outside coverage) the page shows a "no chip" note with the reason.

The **context view** is the same pair zoomed out (``review.context_scale`` times the chip's side,
``review.context_px`` pixels), cut on demand the same way for every site (shown even where a
quality gate would call the wider pair ``cannot_assess``, e.g. near a scene edge). Cut sites get the footprint the
sites file gave, so an on-demand chip covers the same ground as detect's.
"""

from __future__ import annotations

import io
import logging
import math
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

from review.run_outputs import RunOutputs
from review.runfolder import RunFolder, RunSite

log = logging.getLogger(__name__)

CACHE_NAME = "review.sqlite-chips"


@dataclass(frozen=True)
class SiteChips:
    """Chip URLs for one site ("" where there is none).

    Attributes:
        before, after, heatmap: URLs of the PNGs within the app.
        source: ``detect`` (written by the run), ``rendered`` (cut on demand), or ``none``.
        note: why a chip or the heatmap is missing, or "".
    """

    before: str
    after: str
    heatmap: str
    source: str
    note: str = ""


def run_chip_url(relative: str) -> str:
    """The app URL of a chip file inside the run folder."""
    return "/chip/" + quote(relative, safe="/")


def cached_chip_url(site_index: int, epoch: str) -> str:
    """The app URL of a chip rendered on demand."""
    return f"/rendered-chip/{site_index}/{epoch}.png"


def context_chip_url(site_index: int, epoch: str) -> str:
    """The app URL of a context view (the pair zoomed out), cut on demand."""
    return f"/context-chip/{site_index}/{epoch}.png"


#: the two things cut on demand: ``chip`` (same ground as detect's chips) and ``context``.
VIEWS = ("chip", "context")
#: cache "epoch" names of each view's before/after PNGs.
CACHE_EPOCHS = {"chip": ("before", "after"), "context": ("context_before", "context_after")}


def png_bytes(rgb: Any) -> bytes:
    """PNG encoding of a uint8 ``(H, W, 3)`` image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


class ChipCache:
    """PNG bytes of rendered chips, keyed by ``(site_id, epoch)``, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        con = self._connect()
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(
                "CREATE TABLE IF NOT EXISTS chips (site_id TEXT NOT NULL, epoch TEXT NOT NULL, "
                "png BLOB NOT NULL, PRIMARY KEY (site_id, epoch))"
            )
            con.execute("CREATE TABLE IF NOT EXISTS overview (key TEXT PRIMARY KEY, image BLOB NOT NULL)")
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.execute("PRAGMA busy_timeout=30000")
        return con

    def get(self, site_id: str, epoch: str) -> bytes | None:
        con = self._connect()
        try:
            row = con.execute("SELECT png FROM chips WHERE site_id = ? AND epoch = ?", (site_id, epoch)).fetchone()
        finally:
            con.close()
        return bytes(row[0]) if row else None

    def has(self, site_id: str, epochs: tuple[str, ...] = ("before", "after")) -> bool:
        """Whether every one of ``epochs`` is cached for the site."""
        con = self._connect()
        try:
            marks = ",".join("?" * len(epochs))
            row = con.execute(
                f"SELECT COUNT(*) FROM chips WHERE site_id = ? AND epoch IN ({marks})", (site_id, *epochs)
            ).fetchone()
        finally:
            con.close()
        return int(row[0]) >= len(epochs)

    def get_overview(self, key: str) -> bytes | None:
        """The run map's picture made for ``key`` (see :func:`review.overview.overview_key`), or None."""
        con = self._connect()
        try:
            row = con.execute("SELECT image FROM overview WHERE key = ?", (key,)).fetchone()
        finally:
            con.close()
        return bytes(row[0]) if row else None

    def put_overview(self, key: str, image: bytes) -> None:
        """Keep the run map's picture (older ones are dropped)."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("DELETE FROM overview")
            con.execute("INSERT INTO overview (key, image) VALUES (?, ?)", (key, image))
            con.execute("COMMIT")
        finally:
            con.close()

    def put(self, site_id: str, pngs: dict[str, bytes]) -> None:
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            for epoch, data in pngs.items():
                con.execute("INSERT OR REPLACE INTO chips (site_id, epoch, png) VALUES (?, ?, ?)", (site_id, epoch, data))
            con.execute("COMMIT")
        finally:
            con.close()


class ChipProvider:
    """Finds or renders chips and context views; one per app, safe across worker threads.

    Detect's chips are used only when ``manifest.json`` lists them as outputs and they are
    unchanged (:class:`review.run_outputs.RunOutputs`).

    Args:
        run: the run folder.
        render: whether to cut missing chips on demand (context views are always cut).
        outputs: the run's servable outputs (made from ``run`` when None).
        footprint_of: the footprint (GeoJSON geometry) of a site id, or None.
        context_scale: side of the context view as a multiple of the chip's side.
        context_px: side of the context view in pixels.
        chip_extent_m: side in metres of a site's chip (for the context view's size).
    """

    def __init__(
        self,
        run: RunFolder,
        *,
        render: bool = True,
        outputs: RunOutputs | None = None,
        footprint_of: Callable[[str], Mapping[str, Any] | None] = lambda site_id: None,
        context_scale: float = 3.0,
        context_px: int = 256,
        chip_extent_m: Callable[[RunSite], float] | None = None,
    ) -> None:
        self.run = run
        self.render = render
        self.outputs = outputs if outputs is not None else RunOutputs(run)
        self.footprint_of = footprint_of
        self.context_scale = context_scale
        self.context_px = context_px
        self.chip_extent_m = chip_extent_m
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: ChipCache | None = None
        self._cutters: dict[str, Any] = {}
        self._cutter_error: str = ""
        self._failures: dict[str, dict[str, str]] = {view: {} for view in VIEWS}

    @property
    def cache(self) -> ChipCache:
        with self._cache_lock:
            if self._cache is None:
                self._cache = ChipCache(self.run.path / CACHE_NAME)
            return self._cache

    def chips(self, site: RunSite) -> SiteChips:
        """The site's chip URLs, rendering before/after on demand when detect wrote none."""
        before, after, heatmap = (site.chips.get(k, "") for k in ("before", "after", "heatmap"))
        checks = {rel: self.outputs.check(rel) for rel in (before, after, heatmap) if rel}
        changed = [c.message for c in checks.values() if c.problem == "changed"]
        if changed:  # never show (nor replace) a chip that differs from what detect wrote
            return SiteChips("", "", "", "none", f"no chip: {changed[0]}")
        before_ok, after_ok, heat_ok = (bool(rel) and checks[rel].path is not None for rel in (before, after, heatmap))
        if before_ok and after_ok:
            return SiteChips(
                run_chip_url(before), run_chip_url(after), run_chip_url(heatmap) if heat_ok else "", "detect",
                "" if heat_ok else "no heatmap for this site",
            )
        if not site.ok:
            return SiteChips("", "", "", "none", f"no chip: cannot be assessed ({site.reason or site.status})")
        if not self.render:
            return SiteChips("", "", "", "none", "no chip: detect wrote chips for its top sites only")
        reason = self._failures["chip"].get(site.site_id) or self._cutter_error
        if reason:
            return SiteChips("", "", "", "none", reason)
        # cut lazily when the browser asks for the image, so the page itself stays fast
        return SiteChips(
            cached_chip_url(site.index, "before"), cached_chip_url(site.index, "after"), "", "rendered",
            "cut on demand from the run's rasters (no heatmap: the CNN is not run here)",
        )

    def context_note(self, site: RunSite) -> str:
        """Why the site has no context view, or "" when it can be cut (on request)."""
        if not (math.isfinite(site.lon) and math.isfinite(site.lat)):
            return "no context view: the site has no valid coordinates"
        return self._failures["context"].get(site.site_id) or self._cutter_error

    def ensure_rendered(self, site: RunSite, view: str = "chip") -> str:
        """Cut and cache the site's ``chip`` or ``context`` pair unless cached; returns "" or
        why it is not possible."""
        failures = self._failures[view]
        if site.site_id in failures:
            return failures[site.site_id]
        epochs = CACHE_EPOCHS[view]
        try:
            if self.cache.has(site.site_id, epochs):
                return ""
            with self._lock:
                if self.cache.has(site.site_id, epochs):
                    return ""
                reason = self._render_locked(site, view)
        except Exception as exc:  # one site's rendering never breaks the page
            log.warning("could not cut the %s of %s: %s", view, site.site_id, exc)
            reason = f"no {'chip' if view == 'chip' else 'context view'}: could not cut it from the run's rasters ({exc})"
        if reason:
            failures[site.site_id] = reason
        return reason

    def rendered_png(self, site: RunSite, epoch: str) -> bytes | None:
        """PNG bytes of a chip rendered on demand (``epoch`` is ``before`` or ``after``)."""
        if epoch not in ("before", "after") or not self.render or not site.ok:
            return None
        if self.ensure_rendered(site, "chip"):
            return None
        return self.cache.get(site.site_id, epoch)

    def context_png(self, site: RunSite, epoch: str) -> bytes | None:
        """PNG bytes of the site's context view (``epoch`` is ``before`` or ``after``)."""
        if epoch not in ("before", "after") or self.ensure_rendered(site, "context"):
            return None
        return self.cache.get(site.site_id, f"context_{epoch}")

    def _render_locked(self, site: RunSite, view: str) -> str:
        """Cut and cache one view's pair; returns "" on success or the reason it failed."""
        cutter = self._get_cutter(view)
        if cutter is None:
            return self._cutter_error
        from tiles.chips import chip_to_rgb_uint8
        from tiles.types import Site

        if view == "chip":
            radius = site.meta.get("radius_m", "")
            try:
                radius_m = float(radius) if radius else None
            except ValueError:
                radius_m = None
            cut_site = Site(site_id=site.site_id, lon=site.lon, lat=site.lat, radius_m=radius_m,
                            footprint=self.footprint_of(site.site_id))
        else:
            # the context cutter's window is context_scale x its chip_size_m for a point; a
            # radius of (extent / (2 * radius_scale)) scales that to context_scale x this site's chip
            extent = self.chip_extent_m(site) if self.chip_extent_m is not None else cutter.config.chip_size_m
            cut_site = Site(site_id=site.site_id, lon=site.lon, lat=site.lat,
                            radius_m=self.context_scale * extent / (2.0 * cutter.config.radius_scale))
        pair = cutter.cut(cut_site)
        if pair.image is None:
            what = "chip" if view == "chip" else "context view"
            return f"no {what}: {pair.meta.reason or 'nothing could be read'}"
        pngs = {}
        for t, epoch in enumerate(CACHE_EPOCHS[view]):
            valid = pair.valid[t] if pair.valid is not None else None
            pngs[epoch] = png_bytes(chip_to_rgb_uint8(pair.image[t], valid))
        self.cache.put(site.site_id, pngs)
        return ""

    def _get_cutter(self, view: str) -> Any:
        if view in self._cutters or self._cutter_error:
            return self._cutters.get(view)
        before = self.run.rasters("before")
        after = self.run.rasters("after")
        if not before or not after:
            self._cutter_error = "no chip: manifest.json does not list the run's rasters"
            return None
        missing = [str(p) for p in before + after if not p.exists()]
        if missing:
            self._cutter_error = f"no chip: the run's raster {missing[0]} is not there any more"
            return None
        try:
            from dataclasses import replace

            from sitewatch.config import build_config
            from tiles.catalog import RasterCatalog
            from tiles.config import TilesConfig
            from tiles.cut import PairCutter

            config = build_config(TilesConfig, self.run.tiles_config(), where=str(self.run.path / "config.yaml"))
            if view == "context":
                config = replace(
                    config,
                    chip_px=self.context_px,
                    chip_size_m=config.chip_size_m * self.context_scale,
                    max_chip_size_m=max(config.max_chip_size_m, config.chip_size_m) * self.context_scale,
                )
            catalogs = self._cutters.get("catalogs")
            if catalogs is None:
                catalogs = (RasterCatalog.from_paths(before, epoch="before"), RasterCatalog.from_paths(after, epoch="after"))
                self._cutters["catalogs"] = catalogs
            self._cutters[view] = PairCutter(catalogs[0], catalogs[1], config)
        except Exception as exc:
            log.warning("cannot cut chips on demand: %s", exc)
            self._cutter_error = f"no chip: cannot open the run's rasters ({exc})"
            return None
        return self._cutters[view]

    def close(self) -> None:
        """Close the cutters' open datasets."""
        with self._lock:
            for view in VIEWS:
                cutter = self._cutters.pop(view, None)
                if cutter is not None:
                    cutter.close()
