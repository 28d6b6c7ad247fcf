"""Streaming sites through the tiles stage and the model, one batch at a time.

The run is split into a fixed *batch plan* (:func:`plan_batches`): batches of sites grouped by the
scenes that cover them, in a deterministic order. Every path (local, resumed, Dask) scores exactly
these batches, so every path writes the same numbers. Locally a reader thread cuts batches into a
bounded queue while the main thread scores them (:func:`score_batches_local`), so raster I/O
overlaps inference and memory stays bounded by ``prefetch_batches``.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from detect.site_chips import pair_images
from detect.cutting import PairScorer, PairSource, cut_batch
from detect.journal import BatchRecord
from detect.runfolder import CHIP_COLUMNS, LEADING_COLUMNS, PART_COLUMNS, SITE_DETAIL_COLUMNS, format_number
from tiles.types import Pair, Site

if TYPE_CHECKING:  # pragma: no cover
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig

log = logging.getLogger(__name__)

#: reason for a pair that came back ``ok`` but without usable pixels.
EMPTY_CHIP = "empty_chip"
#: reason for a pair whose model output was not a finite number.
MODEL_OUTPUT_INVALID = "model_output_invalid"


@dataclass(frozen=True)
class PlannedBatch:
    """One batch of the plan.

    Attributes:
        index: position in the plan (the journal key).
        site_indices: indices into the run's site list, in plan order (see :func:`plan_batches`).
        group: the scene group the batch belongs to (``""`` for sites no scene covers).
    """

    index: int
    site_indices: tuple[int, ...]
    group: str


def plan_batches(
    sites: Sequence[Site],
    before: "RasterCatalog | None",
    after: "RasterCatalog | None",
    *,
    batch_size: int,
    group_by_scene: bool = True,
    tiles: "TilesConfig | None" = None,
    spatial: bool = True,
) -> list[PlannedBatch]:
    """Split sites into batches, grouped by covering scenes, in a deterministic order.

    Within a scene group, sites follow a space-filling curve over ~256 m cells
    (:func:`spatial_order`) rather than the input order, so that consecutive sites, and the
    sites of one batch, read neighbouring raster blocks: each block is decoded about once
    while it is in GDAL's block cache instead of once per site that touches it when a site
    list comes in no spatial order. Scores do not depend on the batch a site is scored in.

    Args:
        sites: all input sites, in input order.
        before, after: the catalogues (used to group by scene; may be None to skip grouping).
        batch_size: sites per batch.
        group_by_scene: group with :func:`tiles.cut.group_sites_by_scene` first.
        tiles: the tiles settings (window sizes decide which scene covers a site).
        spatial: order each group's sites with :func:`spatial_order` (else input order;
            ``detect.spatial_order``).

    Returns:
        Batches covering every site exactly once.
    """
    groups: list[tuple[str, list[int]]] = []
    assigned = bytearray(len(sites))  # one byte per site (a set of ints costs ~40 B per site)
    if group_by_scene and before is not None and after is not None:
        from tiles.cut import group_site_indices_by_scene

        grouped = group_site_indices_by_scene(sites, before, after, config=tiles)
        for key in sorted(grouped, key=str):
            members = grouped.pop(key)  # ascending positions; the groups partition the sites
            for i in members:
                assigned[i] = 1
            groups.append((str(key), spatial_order(sites, members) if spatial else members))
    rest = [i for i in range(len(sites)) if not assigned[i]]
    if rest:
        groups.append(("", rest))
    plan: list[PlannedBatch] = []
    for key, members in groups:
        for start in range(0, len(members), batch_size):
            plan.append(PlannedBatch(len(plan), tuple(members[start : start + batch_size]), key))
    return plan


#: cell side of :func:`spatial_order` (metres): about one 512 px raster block at 0.5 m
SPATIAL_CELL_M = 256.0


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Bits ``b`` of 16-bit values moved to ``2 b`` (for a Morton code)."""
    v = v.astype(np.uint64) & np.uint64(0xFFFF)
    for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def spatial_order(sites: Sequence[Site], members: list[int]) -> list[int]:
    """``members`` (positions in ``sites``) along a Z-order curve over ``SPATIAL_CELL_M`` cells.

    North to south and west to east within each level of the curve (the order of raster rows
    and columns in a north-up scene); sites in one cell keep their input order; sites without
    finite coordinates come last, in input order. Deterministic for the same input.
    """
    if len(members) < 2:
        return members
    idx = np.asarray(members, dtype=np.int64)
    lon = np.fromiter((sites[i].lon for i in members), dtype=np.float64, count=len(members))
    lat = np.fromiter((sites[i].lat for i in members), dtype=np.float64, count=len(members))
    ok = np.isfinite(lon) & np.isfinite(lat)
    if ok.sum() < 2:
        return members
    if np.ptp(lon[ok]) > 180.0:  # a group across the antimeridian: continue east of 180
        lon = np.where(lon < 0, lon + 360.0, lon)
    cell_lat = SPATIAL_CELL_M / 111_320.0
    cell_lon = cell_lat / max(math.cos(math.radians(float(np.median(lat[ok])))), 1e-3)
    cy = np.floor((np.max(lat[ok]) - np.where(ok, lat, 0.0)) / cell_lat)
    cx = np.floor((np.where(ok, lon, 0.0) - np.min(lon[ok])) / cell_lon)
    # beyond 65,536 cells (~16,800 km) a side the curve wraps; still a deterministic order
    code = (_spread_bits(np.clip(cy, 0, 0xFFFF)) << np.uint64(1)) | _spread_bits(np.clip(cx, 0, 0xFFFF))
    code = np.where(ok, code, np.iinfo(np.uint64).max)
    return idx[np.lexsort((idx, code))].tolist()


def site_columns(site: Site) -> dict[str, str]:
    """The input's own columns of a site, as ``scores.csv`` text."""
    row = {
        "site_id": site.site_id,
        "lon": format_number(site.lon),
        "lat": format_number(site.lat),
    }
    if site.name is not None:
        row["name"] = site.name
    if site.kind is not None:
        row["kind"] = site.kind
    if site.radius_m is not None:
        row["radius_m"] = format_number(site.radius_m)
    if site.damage is not None:
        row["damage"] = site.damage
    return row


_RESERVED = frozenset(LEADING_COLUMNS) | frozenset(SITE_DETAIL_COLUMNS) | frozenset(PART_COLUMNS) | frozenset(CHIP_COLUMNS)


def pair_row(pair: Pair, score: float | None, *, decimals: int, status_override: tuple[str, str] | None = None) -> dict[str, str]:
    """One ``scores.csv`` row (before ranking) for a pair.

    Args:
        pair: the cut pair.
        score: calibrated probability, or None when the site is not assessed.
        decimals: decimals of the written score.
        status_override: ``(status, reason)`` that replaces the pair's own (e.g. empty chip).
    """
    from tiles.index import pair_meta_row

    row = site_columns(pair.site)
    row.update(pair_meta_row(pair))  # strings only, never site_id/lon/lat
    status, reason = status_override or (pair.meta.status, pair.meta.reason)
    row["status"] = status
    row["reason"] = reason if status != "ok" else ""
    row["score"] = format_number(score, decimals) if (score is not None and status == "ok") else ""
    for key, value in pair.site.extra.items():
        name = str(key)
        if name in row or name in _RESERVED:
            name = f"input_{name}"
        row[name] = "" if value is None else str(value)
    return row


def _usable_image(pair: Pair) -> bool:
    image = pair.image
    if image is None or image.ndim != 4 or image.shape[0] != 2 or image.size == 0:
        return False
    return bool(np.isfinite(image).all())


def score_batch(
    batch_index: int,
    pairs: Sequence[Pair],
    scorer: PairScorer,
    *,
    decimals: int,
    chip_cache: Any | None = None,
) -> BatchRecord:
    """Score the assessable pairs of one batch and build its journal record.

    Args:
        batch_index: the batch's index in the plan.
        pairs: the batch's pairs (any status), in plan order.
        scorer: a :class:`models.inference.Scorer` (``score(images (B, 2, C, H, W))``).
        decimals: decimals of the written score.
        chip_cache: a :class:`detect.site_chips.TopChipCache` that keeps the images of the best
            sites for their chips (None: keep nothing).

    Returns:
        The batch's rows (every pair) and the float16 embeddings ``(K, D)`` of its scored sites.
    """
    overrides: dict[int, tuple[str, str]] = {}
    ok_positions = []
    for i, pair in enumerate(pairs):
        if pair.meta.status != "ok":
            continue
        if not _usable_image(pair):
            overrides[i] = ("cannot_assess", EMPTY_CHIP)
            continue
        ok_positions.append(i)
    scores: dict[int, float] = {}
    embeddings: list[np.ndarray] = []
    embedding_ids: list[str] = []
    # pairs are scored in groups of equal shape (a cutter may return other sizes for large sites)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i in ok_positions:
        by_shape.setdefault(tuple(pairs[i].image.shape), []).append(i)
    kept: dict[int, np.ndarray] = {}
    for positions in by_shape.values():
        images = np.stack([pairs[i].image for i in positions]).astype(np.float32, copy=False)
        result = scorer.score(images)
        probs = np.asarray(result.prob, dtype=np.float64)
        emb = np.asarray(result.embedding, dtype=np.float32)
        for j, i in enumerate(positions):
            p = float(probs[j])
            if not math.isfinite(p) or not np.isfinite(emb[j]).all():
                overrides[i] = ("cannot_assess", MODEL_OUTPUT_INVALID)
                continue
            scores[i] = p
            kept[i] = emb[j].astype(np.float16)
            if chip_cache is not None:
                written = float(format_number(p, decimals))
                if chip_cache.wants(written, pairs[i].site.site_id):
                    chip_cache.offer(written, pairs[i].site.site_id, pair_images(pairs[i], result.heatmap[j]))
    for i in sorted(kept):
        embeddings.append(kept[i])
        embedding_ids.append(pairs[i].site.site_id)
    rows = tuple(
        pair_row(pair, scores.get(i), decimals=decimals, status_override=overrides.get(i))
        for i, pair in enumerate(pairs)
    )
    emb_array = np.stack(embeddings) if embeddings else np.zeros((0, 0), dtype=np.float16)
    return BatchRecord(batch=batch_index, rows=rows, embedding_ids=tuple(embedding_ids), embeddings=emb_array)


_DONE = object()


def _reader(
    make_cutter: Callable[[], PairSource],
    sites: Sequence[Site],
    batches: Sequence[PlannedBatch],
    out: "queue.Queue[Any]",
    stop: threading.Event,
) -> None:
    try:
        cutter = make_cutter()
        try:
            for batch in batches:
                if stop.is_set():
                    return
                pairs = cut_batch(cutter, [sites[i] for i in batch.site_indices])
                while not stop.is_set():
                    try:
                        out.put((batch, pairs), timeout=0.2)
                        break
                    except queue.Full:
                        continue
        finally:
            cutter.close()
        out.put(_DONE)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
        out.put(exc)


def score_batches_local(
    sites: Sequence[Site],
    batches: Sequence[PlannedBatch],
    make_cutter: Callable[[], PairSource],
    scorer: PairScorer,
    *,
    decimals: int,
    prefetch: int = 4,
    chip_cache: Any | None = None,
    windows: Any | None = None,
) -> Iterator[BatchRecord]:
    """Cut batches in a reader thread and score them here, yielding records in plan order.

    Args:
        sites: all sites of the run.
        batches: the batches still to do.
        make_cutter: builds a :class:`tiles.cut.PairCutter` (called in the reader thread, which
            owns it and closes it).
        scorer: the model.
        decimals: decimals of the written score.
        prefetch: cut batches held ahead of the model (bounds memory).
        chip_cache: keeps the images of the best sites for their chips (see :func:`score_batch`).
        windows: the parts-and-context step (:class:`detect.parts.SiteWindows`), or None.
    """
    if not batches:
        return
    pending: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    thread = threading.Thread(
        target=_reader, args=(make_cutter, sites, batches, pending, stop), name="sitewatch-reader", daemon=True
    )
    thread.start()
    window_cutter = None  # the parts and context windows are cut here, chunk by chunk (bounded memory)
    try:
        while True:
            item = pending.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            batch, pairs = item
            record = score_batch(batch.index, pairs, scorer, decimals=decimals, chip_cache=chip_cache)
            if windows is not None:
                window_cutter = window_cutter or make_cutter()
                record = windows.score(record, [p.site for p in pairs], window_cutter, scorer, decimals=decimals)
            yield record
    finally:
        if window_cutter is not None:
            window_cutter.close()
        stop.set()
        while thread.is_alive():
            try:
                pending.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.1)
