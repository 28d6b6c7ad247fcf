"""Cutting in worker processes: the same pairs, in plan order, as the in-process cutter."""

from __future__ import annotations

import numpy as np
import pytest

from detect.pipeline import cut_batch, plan_batches
from detect.workers import (
    BLOCK_CACHE_MB,
    CutterSpec,
    CutWorkerError,
    block_cache_env,
    bounded_block_cache,
    cut_batches_in_workers,
    default_cut_workers,
    pack_pairs,
    unpack_pairs,
)
from tiles.catalog import RasterCatalog
from tiles.config import TilesConfig
from tiles.cut import PairCutter
from tiles.sites import read_sites
from tiles.types import Site


def _same(a, b):
    assert a.site is b.site or a.site == b.site
    assert repr(a.meta) == repr(b.meta)  # repr: NaN fields (no shift estimate) compare equal
    assert (a.image is None) == (b.image is None)
    if a.image is not None:
        assert a.image.dtype == b.image.dtype and np.array_equal(a.image, b.image)
        assert np.array_equal(a.valid, b.valid)


def test_default_workers_are_the_cores_the_scorer_leaves():
    assert default_cut_workers(1, cores=2) == 1
    assert default_cut_workers(1, cores=16) == 15
    assert default_cut_workers(4, cores=2) == 1  # never fewer than one


def test_block_cache_is_bounded_unless_gdal_cachemax_is_set(monkeypatch):
    from rasterio.env import get_gdal_config

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = get_gdal_config("GDAL_CACHEMAX")
    with bounded_block_cache():
        assert int(get_gdal_config("GDAL_CACHEMAX")) == BLOCK_CACHE_MB * 2**20
        assert block_cache_env() == {"GDAL_CACHEMAX": str(BLOCK_CACHE_MB)}  # what cut workers start with
    assert get_gdal_config("GDAL_CACHEMAX") == before
    monkeypatch.setenv("GDAL_CACHEMAX", "64")
    assert block_cache_env() == {}
    with bounded_block_cache():
        assert get_gdal_config("GDAL_CACHEMAX") == before  # the user's setting stands


@pytest.mark.parametrize("workers", [1, 3])
def test_workers_cut_what_the_reader_cuts(tiny_scene, workers):
    sites = read_sites(tiny_scene.sites)
    # one site outside the imagery and one invalid: cannot_assess pairs travel too
    sites = sites + [Site("far", lon=10.0, lat=10.0), Site("bad", lon=float("nan"), lat=0.0, problem="no coordinates")]
    before = RasterCatalog.from_paths([tiny_scene.before], epoch="before")
    after = RasterCatalog.from_paths([tiny_scene.after], epoch="after")
    tiles = TilesConfig()
    plan = plan_batches(sites, before, after, batch_size=4, tiles=tiles)
    with PairCutter(before, after, tiles) as cutter:
        expected = [cut_batch(cutter, [sites[i] for i in b.site_indices]) for b in plan]
    got = list(cut_batches_in_workers(sites, plan, CutterSpec(before, after, tiles), workers=workers, prefetch=1))
    assert [b.index for b, _, _ in got] == [b.index for b in plan]
    statuses = set()
    for (batch, pairs, extra), want in zip(got, expected):
        assert extra is None and len(pairs) == len(want)
        for p, w in zip(pairs, want):
            _same(p, w)
            statuses.add(p.meta.status)
    assert statuses == {"ok", "cannot_assess"}


def test_pack_round_trip_keeps_odd_shapes(tiny_scene):
    sites = read_sites(tiny_scene.sites)[:3]
    before = RasterCatalog.from_paths([tiny_scene.before], epoch="before")
    after = RasterCatalog.from_paths([tiny_scene.after], epoch="after")
    with PairCutter(before, after, TilesConfig()) as c:
        pairs = cut_batch(c, sites)
        small = cut_batch(PairCutter(before, after, TilesConfig(chip_px=32)), sites[:1])[0]
    mixed = pairs + [small]
    back = unpack_pairs(pack_pairs(mixed), [p.site for p in mixed])
    for p, q in zip(mixed, back):
        _same(p, q)
    assert back[-1].image.shape[-1] == 32


def test_a_failing_worker_is_a_clear_error(tiny_scene):
    sites = read_sites(tiny_scene.sites)
    before = RasterCatalog.from_paths([tiny_scene.before], epoch="before")
    after = RasterCatalog.from_paths([tiny_scene.after], epoch="after")
    plan = plan_batches(sites, None, None, batch_size=8)
    # a cutter that cannot even be built (a site's own problems are cannot_assess pairs instead)
    with pytest.raises(CutWorkerError, match="cut worker 0 failed: AttributeError"):
        list(cut_batches_in_workers(sites, plan, CutterSpec(before, after, "not a TilesConfig"), workers=1))


@pytest.mark.slow
def test_scores_byte_identical_thread_workers_and_dask_processes(tiny_scene, tmp_path):
    from detect.run import run_detect
    from sitewatch.config import load_config
    from sitewatch.jobs import DetectJob

    runs = {}
    for name, workers in (("thread", 0), ("one", 1), ("three", 3)):
        job = load_config(DetectJob, None, {"detect.chips_top_n": 0, "detect.batch_size": 6, "detect.cut_workers": workers})
        runs[name] = run_detect(
            tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / name,
            tiles=job.tiles, detect=job.detect, progress=False,
        )
    runs["dask"] = run_detect(
        tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / "dask",
        tiles=job.tiles, detect=job.detect, workers=2, dask_processes=True, progress=False,
    )
    assert runs["thread"].batches_total > 3  # more batches than workers: the round robin is exercised
    want = (runs["thread"].run_dir / "scores.csv").read_bytes()
    assert want.count(b"\n") == tiny_scene.n_sites + 1
    for name, summary in runs.items():
        for out in ("scores.csv", "embeddings.npz"):
            assert (summary.run_dir / out).read_bytes() == (runs["thread"].run_dir / out).read_bytes(), (name, out)
