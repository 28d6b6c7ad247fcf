"""Scoring the batch plan on a Dask cluster (an existing one, or a ``LocalCluster``).

Each task is one planned batch (sites grouped by scene, so a worker opens few rasters). A worker
process builds its :class:`tiles.cut.PairCutter` and :class:`models.inference.Scorer` once and
keeps them for every later task of the same run (:func:`_worker_state`). Results stream back with
``as_completed`` and are written by the same journal and writer as the local path, so both paths
give identical ``scores.csv``.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from detect.journal import BatchRecord
from detect.cutting import cut_batch
from detect.pipeline import PlannedBatch, score_batch
from sitewatch.errors import UsageError
from tiles.types import Site

if TYPE_CHECKING:  # pragma: no cover
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its cutter and scorer (picklable).

    Attributes:
        run_token: identifies the run; a worker rebuilds its state when it changes.
        tiles: the tiles settings.
        model: the model folder (a path every worker can read) or ``"default"``.
        device: inference device.
        tta: test-time augmentation.
        threads: torch threads per worker (0: torch decides).
        decimals: decimals of the written score.
        windows: the parts-and-context step (:class:`detect.parts.SiteWindows`), or None.
        backend: how the model runs (``detect.backend``; see :mod:`models.backends`).
    """

    run_token: str
    tiles: "TilesConfig"
    model: str
    device: str
    tta: bool
    threads: int
    decimals: int
    windows: Any = None
    backend: str = "torch"


_STATE_LOCK = threading.Lock()
_SCORERS: dict[tuple[str, str, bool, int, str], Any] = {}
_CUTTERS: dict[tuple[str, int], Any] = {}


def _scorer_for(spec: WorkerSpec) -> Any:
    key = (spec.model, spec.device, spec.tta, spec.threads, spec.backend)
    with _STATE_LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            from models.backends import make_scorer

            scorer = make_scorer(
                spec.model, backend=spec.backend, device=spec.device, tta=spec.tta, threads=spec.threads or None  # type: ignore[arg-type]
            )
            _SCORERS.clear()
            _SCORERS[key] = scorer
        return scorer


def _cutter_for(spec: WorkerSpec, before: "RasterCatalog", after: "RasterCatalog") -> Any:
    key = (spec.run_token, threading.get_ident())
    with _STATE_LOCK:
        cutter = _CUTTERS.get(key)
        if cutter is None:
            from tiles.cut import PairCutter

            for old_key in [k for k in _CUTTERS if k[0] != spec.run_token]:
                _CUTTERS.pop(old_key).close()
            cutter = PairCutter(before, after, spec.tiles)
            _CUTTERS[key] = cutter
        return cutter


_SCORE_LOCK = threading.Lock()


def score_batch_task(
    batch: PlannedBatch,
    sites: Sequence[Site],
    before: "RasterCatalog",
    after: "RasterCatalog",
    spec: WorkerSpec,
) -> BatchRecord:
    """The Dask task: cut and score one planned batch on a worker.

    Args:
        batch: the batch (its ``site_indices`` refer to the run's site list).
        sites: the batch's sites, in the batch's order.
        before, after: the run's catalogues (scattered once to every worker).
        spec: how to build the worker's cutter and scorer.
    """
    cutter = _cutter_for(spec, before, after)
    pairs = cut_batch(cutter, sites)
    scorer = _scorer_for(spec)
    with _SCORE_LOCK:
        record = score_batch(batch.index, pairs, scorer, decimals=spec.decimals)
    if spec.windows is not None:
        record = spec.windows.score(record, sites, cutter, scorer, decimals=spec.decimals, lock=_SCORE_LOCK)
    return record


@contextmanager
def dask_client(address: str | None, workers: int | None, *, threads_per_worker: int = 1, processes: bool = True) -> Iterator[Any]:
    """A ``distributed.Client`` for ``--dask ADDRESS`` or a new ``LocalCluster`` of ``workers``.

    Raises:
        UsageError: the scheduler cannot be reached (names the flag and the address).
    """
    # distributed logs every worker start/stop at INFO; keep a run's output readable (restored after)
    dist_log = logging.getLogger("distributed")
    old_level = dist_log.level
    if dist_log.getEffectiveLevel() < logging.WARNING:
        dist_log.setLevel(logging.WARNING)
    try:
        with _client(address, workers, threads_per_worker=threads_per_worker, processes=processes) as client:
            yield client
    finally:
        dist_log.setLevel(old_level)


@contextmanager
def _client(address: str | None, workers: int | None, *, threads_per_worker: int, processes: bool) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise UsageError(
                f"--dask {address}: cannot reach the Dask scheduler ({exc}); check the address "
                "(tcp://HOST:PORT) or use --workers N for a local cluster"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    extra: dict[str, Any] = {}
    if processes:
        from detect.workers import block_cache_env

        # each worker process gets detect's GDAL block-cache limit (GDAL reads GDAL_CACHEMAX once,
        # at its first block read); threads in this process share this process's limit
        extra["env"] = block_cache_env()
    cluster = LocalCluster(
        n_workers=max(1, workers or 1),
        threads_per_worker=threads_per_worker,
        processes=processes,
        dashboard_address=None,
        silence_logs=logging.WARNING,
        **extra,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def score_batches_dask(
    client: Any,
    sites: Sequence[Site],
    batches: Sequence[PlannedBatch],
    before: "RasterCatalog",
    after: "RasterCatalog",
    spec: WorkerSpec,
) -> Iterator[BatchRecord]:
    """Submit every batch as a task and yield the records as they complete (any order)."""
    from distributed import as_completed

    if not batches:
        return
    before_f, after_f = client.scatter([before, after], broadcast=True)
    futures = [
        client.submit(
            score_batch_task,
            batch,
            [sites[i] for i in batch.site_indices],
            before_f,
            after_f,
            spec,
            key=f"sitewatch-batch-{spec.run_token[:12]}-{batch.index}",
            pure=False,
        )
        for batch in batches
    ]
    try:
        for future in as_completed(futures):
            record = future.result()
            future.release()
            yield record
    finally:
        unfinished = [f for f in futures if not f.done()]
        if unfinished:
            client.cancel(unfinished)
