"""Chips for the site page: the ones ``detect`` wrote, or cut on demand from the run's rasters.

``detect`` writes chips for its top sites only. For the others this module cuts the before/after
pair with :class:`tiles.cut.PairCutter` from the rasters listed in ``manifest.json`` (no CNN, so no
heatmap) and caches the PNGs in the run folder's chip cache. When that is not possible (rasters
moved, site outside coverage) the page shows a "no chip" note with the reason.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from review.runfolder import RunFolder, RunSite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteChips:
    """Chip paths for one site, relative to the run folder ("" where there is none).

    Attributes:
        before, after, heatmap: relative paths of the PNGs.
        source: ``detect`` (written by the run), ``rendered`` (cut on demand), or ``none``.
        note: why a chip is missing, or "".
    """

    before: str
    after: str
    heatmap: str
    source: str
    note: str = ""


class ChipProvider:
    """Finds or renders chips; one per app, safe across worker threads.

    Args:
        run: the run folder.
        cache_dir: where rendered chips go (inside the run folder).
        render: whether to cut missing chips on demand.
    """

    def __init__(self, run: RunFolder, cache_dir: Path, *, render: bool = True) -> None:
        self.run = run
        self.cache_dir = cache_dir
        self.render = render
        self._lock = threading.Lock()
        self._cutter: Any = None
        self._cutter_error: str = ""
        self._failures: dict[str, str] = {}

    def chips(self, site: RunSite) -> SiteChips:
        """The site's chips, rendering before/after on demand when detect wrote none."""
        before, after, heatmap = (site.chips.get(k, "") for k in ("before", "after", "heatmap"))
        before_ok = bool(before) and self.run.resolve_inside(before) is not None
        after_ok = bool(after) and self.run.resolve_inside(after) is not None
        heat_ok = bool(heatmap) and self.run.resolve_inside(heatmap) is not None
        if before_ok and after_ok:
            return SiteChips(before, after, heatmap if heat_ok else "", "detect")
        if not site.ok:
            return SiteChips("", "", "", "none", f"cannot be assessed: {site.reason or site.status}")
        if not self.render:
            return SiteChips("", "", "", "none", "no chip: detect wrote chips for its top sites only")
        return self._rendered(site)

    def _rendered(self, site: RunSite) -> SiteChips:
        from tiles.chips import safe_name

        safe = safe_name(site.site_id)
        rel_dir = self.cache_dir.relative_to(self.run.path)
        names = {k: f"{rel_dir.as_posix()}/{safe}_{k}.png" for k in ("before", "after")}
        if all((self.run.path / p).is_file() for p in names.values()):
            return SiteChips(names["before"], names["after"], "", "rendered", "cut on demand (no heatmap)")
        if site.site_id in self._failures:
            return SiteChips("", "", "", "none", self._failures[site.site_id])
        with self._lock:
            try:
                reason = self._render_locked(site)
            except Exception as exc:  # one site's rendering never breaks the page
                log.warning("could not cut chips for %s: %s", site.site_id, exc)
                reason = f"no chip: could not cut it from the run's rasters ({exc})"
        if reason:
            self._failures[site.site_id] = reason
            return SiteChips("", "", "", "none", reason)
        return SiteChips(names["before"], names["after"], "", "rendered", "cut on demand (no heatmap)")

    def _render_locked(self, site: RunSite) -> str:
        """Cut and write the chips; returns "" on success or the reason it failed."""
        cutter = self._get_cutter()
        if cutter is None:
            return self._cutter_error
        from tiles.chips import write_pair_pngs
        from tiles.types import Site

        radius = site.meta.get("radius_m", "")
        try:
            radius_m = float(radius) if radius else None
        except ValueError:
            radius_m = None
        pair = cutter.cut(Site(site_id=site.site_id, lon=site.lon, lat=site.lat, radius_m=radius_m))
        if pair.image is None:
            return f"no chip: {pair.meta.reason or 'nothing could be read'}"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        write_pair_pngs(pair, self.cache_dir)
        return ""

    def _get_cutter(self) -> Any:
        if self._cutter is not None or self._cutter_error:
            return self._cutter
        before = self.run.rasters("before")
        after = self.run.rasters("after")
        if not before or not after:
            self._cutter_error = "no chip: manifest.json does not list the run's rasters"
            return None
        missing = [str(p) for p in before + after if not p.exists()]
        if missing:
            self._cutter_error = f"no chip: the run's rasters are not at {missing[0]} any more"
            return None
        try:
            from sitewatch.config import build_config
            from tiles.catalog import RasterCatalog
            from tiles.config import TilesConfig
            from tiles.cut import PairCutter

            config = build_config(TilesConfig, self.run.tiles_config(), where=str(self.run.path / "config.yaml"))
            self._cutter = PairCutter(
                RasterCatalog.from_paths(before, epoch="before"),
                RasterCatalog.from_paths(after, epoch="after"),
                config,
            )
        except Exception as exc:
            log.warning("cannot cut chips on demand: %s", exc)
            self._cutter_error = f"no chip: cannot open the run's rasters ({exc})"
            return None
        return self._cutter

    def close(self) -> None:
        """Close the cutter's open datasets."""
        with self._lock:
            if self._cutter is not None:
                try:
                    self._cutter.close()
                finally:
                    self._cutter = None
