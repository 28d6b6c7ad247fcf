"""The output folder of ``sitewatch tiles``: pairs, PNG chips, ``index.csv`` and the config.

Layout::

    OUT/
      pairs/<safe>.npz        one per site that has an image (see tiles.store)
      chips/<safe>_before.png, <safe>_after.png, <safe>_pair.png
      index.csv               exactly one row per input site, in input order; a cell that a
                              spreadsheet would run as a formula starts with ' (see
                              tiles.formula_injection)
      config.yaml             the effective config
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tiles.catalog import RasterCatalog
from tiles.chips import write_pair_pngs
from tiles.config import TilesConfig
from tiles.cut import PairCutter
from tiles.formula_injection import neutralise_formula
from tiles.index import PAIR_META_COLUMNS, format_value, pair_meta_row
from tiles.store import write_pair_npz
from tiles.types import Pair, Site

log = logging.getLogger(__name__)

__all__ = ["TilesSummary", "write_tiles_folder", "INDEX_SITE_COLUMNS", "FILE_COLUMNS"]

#: the site's own columns at the start of every ``index.csv`` row.
INDEX_SITE_COLUMNS = ("site_id", "lon", "lat", "name", "kind", "radius_m", "damage")
FILE_COLUMNS = ("pair_file", "chip_before", "chip_after", "chip_pair")


@dataclass(frozen=True)
class TilesSummary:
    """What a ``sitewatch tiles`` run wrote.

    Attributes:
        out: the output folder.
        n_sites: rows in ``index.csv`` (= input sites).
        by_status: count of sites per ``status`` or ``cannot_assess:<reason>``.
        index: path of ``index.csv``.
    """

    out: Path
    n_sites: int
    by_status: dict[str, int] = field(default_factory=dict)
    index: Path = Path()


def _coord(value: float) -> str:
    return "" if value != value else repr(float(value))


def _site_cells(site: Site) -> dict[str, str]:
    return {
        "site_id": site.site_id,
        "lon": _coord(site.lon),
        "lat": _coord(site.lat),
        "name": site.name or "",
        "kind": site.kind or "",
        "radius_m": format_value(site.radius_m),
        "damage": site.damage or "",
    }


def write_tiles_folder(
    sites: Sequence[Site],
    before: RasterCatalog,
    after: RasterCatalog,
    out: str | Path,
    config: TilesConfig,
    *,
    chips: bool = True,
    progress: bool | None = None,
) -> TilesSummary:
    """Cut every site's pair and write the output folder.

    Args:
        sites: input sites (invalid ones included; they get a ``cannot_assess`` row).
        before, after: the catalogues.
        out: output folder (created).
        config: tiles settings (the caller writes ``config.yaml``).
        chips: also write PNG chips.
        progress: tqdm ``disable`` value inverted: True forces a bar, False hides it, None =
            automatic (on for terminals).

    Returns:
        A :class:`TilesSummary`.
    """
    from tqdm import tqdm

    out = Path(out)
    pairs_dir, chips_dir = out / "pairs", out / "chips"
    out.mkdir(parents=True, exist_ok=True)
    extra_cols: list[str] = []
    for s in sites:
        for k in s.extra:
            if k not in extra_cols and k not in INDEX_SITE_COLUMNS and k not in PAIR_META_COLUMNS and k not in FILE_COLUMNS:
                extra_cols.append(k)
    columns = [*INDEX_SITE_COLUMNS, *PAIR_META_COLUMNS, *FILE_COLUMNS, *extra_cols]
    counts: Counter[str] = Counter()
    index_path = out / "index.csv"
    tmp = out / "index.csv.partial"
    disable = None if progress is None else not progress
    with PairCutter(before, after, config) as cutter, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        bar = tqdm(total=len(sites), unit="site", desc="tiles", disable=disable)
        try:
            for pair in cutter.cut_many(sites):
                row: dict[str, Any] = _site_cells(pair.site)
                row.update(pair_meta_row(pair))
                files = {c: "" for c in FILE_COLUMNS}
                try:
                    npz = write_pair_npz(pair, pairs_dir)
                    if npz is not None:
                        files["pair_file"] = npz.relative_to(out).as_posix()
                    if chips:
                        for key, path in write_pair_pngs(pair, chips_dir).items():
                            files[f"chip_{key}"] = path.relative_to(out).as_posix()
                except OSError as exc:
                    log.error("site %s: cannot write its files (%s)", pair.site.site_id, exc)
                    raise
                row.update(files)
                for k in extra_cols:
                    row[k] = pair.site.extra.get(k, "")
                writer.writerow({k: neutralise_formula(str(v)) for k, v in row.items()})
                counts["ok" if pair.ok else f"cannot_assess:{pair.meta.reason}"] += 1
                bar.update(1)
        finally:
            bar.close()
    tmp.replace(index_path)
    return TilesSummary(out=out, n_sites=sum(counts.values()), by_status=dict(counts), index=index_path)
