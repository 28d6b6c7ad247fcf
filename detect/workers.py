"""Cutting in worker processes that feed one scorer (the local path of ``sitewatch detect``).

The tiles stage is Python and numpy work per pair that holds the GIL much of the time; in a
reader thread it competes with the scorer in the same process. Here ``N`` worker processes
(``detect.cut_workers``; unset: the cores the scorer does not use) each open their own datasets
and cut whole batches of the fixed plan (:func:`detect.pipeline.plan_batches`): batch ``i`` goes
to worker ``i mod N``, every worker cuts its batches in plan order into its own bounded queue, and
the scorer takes batch ``i`` from queue ``i mod N``. So batches reach the scorer in plan order,
each cut exactly as the reader thread would cut it (:func:`detect.pipeline.cut_batch`, same
cutter settings), and ``scores.csv`` is byte-identical for any number of workers.

Pairs travel as compact arrays: per batch one ``(n, 2, C, H, W)`` float32 stack of the images
that share the batch's common shape, one ``(n, 2, H, W)`` bool stack, and the pairs' metadata;
the parent re-attaches its own site objects. Workers start with the ``spawn`` method (no fork of a
process that holds torch's thread pools) and with one numeric thread each.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from detect.journal import BatchRecord
from detect.pipeline import PairScorer, PlannedBatch, cut_batch, score_batch
from tiles.types import Pair, Site

if TYPE_CHECKING:  # pragma: no cover
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig

log = logging.getLogger(__name__)

#: environment every worker starts with: one thread per numeric library (the worker is the unit
#: of parallelism; more threads per worker only contend on a busy machine).
WORKER_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "GDAL_NUM_THREADS": "1",
}


#: GDAL's raster block cache (MiB) of a detect run, and of each of its cut workers, when the
#: environment sets no ``GDAL_CACHEMAX``. GDAL's own default is 5 % of the machine's RAM, which
#: the cache fills as a run reads more of its rasters' blocks, so a run's memory grew with its
#: site count (over one 8192 px pair: ~230 MiB of cache after 1,000 sites, 385 MiB, both
#: rasters whole, after 20,000; README, "Peak memory").
BLOCK_CACHE_MB = 256


def block_cache_env() -> dict[str, str]:
    """``{"GDAL_CACHEMAX": "<MiB>"}`` when the environment sets none, else ``{}``."""
    return {} if os.environ.get("GDAL_CACHEMAX") else {"GDAL_CACHEMAX": str(BLOCK_CACHE_MB)}


@contextmanager
def bounded_block_cache() -> Iterator[None]:
    """Limit GDAL's block cache in this process to :data:`BLOCK_CACHE_MB` while in the block
    (process-wide, so the reader thread too), unless ``GDAL_CACHEMAX`` is set; restored after."""
    if not block_cache_env():
        yield
        return
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=BLOCK_CACHE_MB * 2**20):  # rasterio takes bytes here
        yield


def default_cut_workers(scorer_threads: int, cores: int | None = None) -> int:
    """Cut workers when ``detect.cut_workers`` is unset: the cores the scorer does not use (>= 1)."""
    n = cores if cores is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return max(1, n - max(0, scorer_threads))


@dataclass(frozen=True)
class CutterSpec:
    """What a worker needs to build the run's cutter (picklable).

    Attributes:
        before, after: the run's catalogues.
        tiles: the run's tiles settings.
        windows: the parts-and-context step (:class:`detect.parts.SiteWindows`), or None.
    """

    before: "RasterCatalog"
    after: "RasterCatalog"
    tiles: "TilesConfig"
    windows: Any = None


def pack_pairs(pairs: Sequence[Pair]) -> tuple[Any, ...]:
    """A batch's pairs as compact arrays plus metadata, without their sites (see module doc)."""
    shapes = [p.image.shape for p in pairs if p.image is not None]
    common = max(set(shapes), key=shapes.count) if shapes else None
    in_stack = [p.image is not None and p.image.shape == common and p.valid is not None for p in pairs]
    k = sum(in_stack)
    images = np.empty((k, *common), np.float32) if common is not None else np.zeros((0,), np.float32)
    valids = np.empty((k, common[0], *common[2:]), bool) if common is not None else np.zeros((0,), bool)
    j = 0
    rest: list[tuple[Any, Any]] = []
    for p, stacked in zip(pairs, in_stack):
        if stacked:
            images[j] = p.image
            valids[j] = p.valid
            j += 1
            rest.append((None, None))
        else:
            rest.append((p.image, p.valid))
    return tuple(p.meta for p in pairs), in_stack, images, valids, rest


def unpack_pairs(packed: tuple[Any, ...], sites: Sequence[Site]) -> list[Pair]:
    """The inverse of :func:`pack_pairs`, re-attaching ``sites`` (the batch's, in order)."""
    metas, in_stack, images, valids, rest = packed
    out = []
    j = 0
    for site, meta, stacked, (image, valid) in zip(sites, metas, in_stack, rest):
        if stacked:
            image, valid = images[j], valids[j]
            j += 1
        out.append(Pair(site=site, meta=meta, image=image, valid=valid))
    return out


def _worker(spec: CutterSpec, tasks: "mp.Queue[Any]", results: "mp.Queue[Any]", stop: Any) -> None:
    """One worker: cut every task (``(batch index, sites)``) in order until ``None``."""
    try:
        from tiles.cut import PairCutter

        cutter = PairCutter(spec.before, spec.after, spec.tiles)
        try:
            while not stop.is_set():
                task = tasks.get()
                if task is None:
                    break
                index, batch_sites = task
                pairs = cut_batch(cutter, batch_sites)
                extra = None  # parts and context windows are cut by the scoring process, chunk by chunk
                results.put(("ok", index, pack_pairs(pairs), extra))
        finally:
            cutter.close()
        results.put(("done", None, None, None))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which re-raises
        results.put(("error", None, f"{type(exc).__name__}: {exc}", traceback.format_exc()))


@contextmanager
def _thread_env() -> Iterator[None]:
    """Set :data:`WORKER_THREAD_ENV` (and the block cache, :func:`block_cache_env`) while
    workers start (spawned children copy ``os.environ``)."""
    env = {**WORKER_THREAD_ENV, **block_cache_env()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class CutWorkerError(RuntimeError):
    """A cut worker process failed outside any one site (its traceback is in the message)."""


def cut_batches_in_workers(
    sites: Sequence[Site],
    batches: Sequence[PlannedBatch],
    spec: CutterSpec,
    *,
    workers: int,
    prefetch: int = 4,
    poll_s: float = 1.0,
) -> Iterator[tuple[PlannedBatch, list[Pair], Any]]:
    """Cut ``batches`` in ``workers`` processes; yields ``(batch, pairs, extra)`` in plan order.

    Args:
        sites: all sites of the run.
        batches: the batches to cut, in plan order.
        spec: how every worker builds its cutter.
        workers: worker processes (at most one per batch).
        prefetch: cut batches each worker may hold ahead of the scorer (bounds memory).
        poll_s: how often a waiting parent checks that the worker it waits for is alive.

    Raises:
        CutWorkerError: a worker died or failed outside a site (a site's own problem is a
            ``cannot_assess`` pair, as on every path).
    """
    if not batches:
        return
    n = max(1, min(workers, len(batches)))
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    task_qs = [ctx.Queue() for _ in range(n)]
    result_qs = [ctx.Queue(maxsize=max(1, prefetch)) for _ in range(n)]
    for i, batch in enumerate(batches):
        task_qs[i % n].put((batch.index, [sites[j] for j in batch.site_indices]))
    for q in task_qs:
        q.put(None)
    procs = [
        ctx.Process(target=_worker, args=(spec, task_qs[k], result_qs[k], stop), name=f"sitewatch-cut-{k}", daemon=True)
        for k in range(n)
    ]
    with _thread_env():
        for p in procs:
            p.start()
    try:
        for i, batch in enumerate(batches):
            k = i % n
            while True:
                try:
                    kind, index, payload, extra = result_qs[k].get(timeout=poll_s)
                    break
                except queue.Empty:
                    if not procs[k].is_alive():
                        raise CutWorkerError(
                            f"cut worker {k} stopped (exit code {procs[k].exitcode}) before batch {batch.index}; "
                            "was it killed for memory? Lower detect.cut_workers or detect.prefetch_batches"
                        ) from None
            if kind == "error":
                raise CutWorkerError(f"cut worker {k} failed: {payload}\n{extra}")
            if kind != "ok" or index != batch.index:
                raise CutWorkerError(f"cut worker {k} sent {kind} for batch {index}, expected batch {batch.index}")
            batch_sites = [sites[j] for j in batch.site_indices]
            yield batch, unpack_pairs(payload, batch_sites), extra
    finally:
        stop.set()
        for q in result_qs:  # unblock workers waiting to put
            try:
                while True:
                    q.get_nowait()
            except (queue.Empty, OSError, ValueError):
                pass
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for q in task_qs + result_qs:
            q.close()
            q.cancel_join_thread()


def score_batches_workers(
    sites: Sequence[Site],
    batches: Sequence[PlannedBatch],
    spec: CutterSpec,
    scorer: PairScorer,
    *,
    workers: int,
    decimals: int,
    prefetch: int = 4,
    chip_cache: Any | None = None,
) -> Iterator[BatchRecord]:
    """Like :func:`detect.pipeline.score_batches_local`, with cutting in worker processes."""
    window_cutter = None  # as in the reader-thread path: windows cut here, bounded by detect.batch_size
    try:
        for batch, pairs, _extra in cut_batches_in_workers(sites, batches, spec, workers=workers, prefetch=prefetch):
            record = score_batch(batch.index, pairs, scorer, decimals=decimals, chip_cache=chip_cache)
            if spec.windows is not None:
                if window_cutter is None:
                    from tiles.cut import PairCutter

                    window_cutter = PairCutter(spec.before, spec.after, spec.tiles)
                record = spec.windows.score(record, [p.site for p in pairs], window_cutter, scorer, decimals=decimals)
            yield record
    finally:
        if window_cutter is not None:
            window_cutter.close()
