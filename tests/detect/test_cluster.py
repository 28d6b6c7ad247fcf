"""The Dask path on a real LocalCluster (worker processes) writes the same files as the local path,
and the number of torch threads does not change a score."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from detect.run import run_detect
from sitewatch.config import load_config
from sitewatch.jobs import DetectJob

JOB = load_config(DetectJob, None, {"detect.chips_top_n": 0, "detect.batch_size": 6})


@pytest.mark.slow
def test_local_cluster_of_processes_equals_local(tiny_scene, tmp_path):
    local = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / "local", tiles=JOB.tiles, detect=JOB.detect, progress=False)
    dask = run_detect(
        tiny_scene.sites,
        [tiny_scene.before],
        [tiny_scene.after],
        tmp_path / "dask",
        tiles=JOB.tiles, detect=JOB.detect,
        workers=2,
        dask_processes=True,  # separate worker processes: the model is loaded and run in each
        progress=False,
    )
    assert dask.batches_total == local.batches_total > 1
    manifest = json.loads((dask.run_dir / "manifest.json").read_text())
    assert manifest["execution"]["mode"] == "dask" and manifest["execution"]["workers"] == 2
    for name in ("scores.csv", "scores.geojson", "embeddings.npz"):
        assert (dask.run_dir / name).read_bytes() == (local.run_dir / name).read_bytes(), name


@pytest.mark.slow
def test_thread_count_does_not_change_a_score(tiny_scene, tmp_path):
    """detect.threads only paces a run: 1 and 2 torch threads give byte-identical scores."""
    runs = {}
    for threads in (1, 2):
        cfg = replace(JOB.detect, threads=threads)
        runs[threads] = run_detect(
            tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / f"t{threads}",
            tiles=JOB.tiles, detect=cfg, progress=False,
        ).run_dir
    scores = (runs[1] / "scores.csv").read_bytes()
    assert scores == (runs[2] / "scores.csv").read_bytes()
    assert (runs[1] / "embeddings.npz").read_bytes() == (runs[2] / "embeddings.npz").read_bytes()
    assert len(scores.splitlines()) == tiny_scene.n_sites + 1


@pytest.mark.slow
def test_existing_cluster_by_address(tiny_scene, tmp_path):
    """``--dask tcp://...``: connect to a running scheduler instead of starting one."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        summary = run_detect(
            tiny_scene.sites,
            [tiny_scene.before],
            [tiny_scene.after],
            tmp_path / "remote",
            tiles=JOB.tiles, detect=JOB.detect,
            dask_address=cluster.scheduler_address,
            progress=False,
        )
    assert summary.ok == tiny_scene.n_sites
    manifest = (summary.run_dir / "manifest.json").read_text()
    assert cluster.scheduler_address in manifest


def test_unreachable_scheduler_is_a_usage_error(tiny_scene, tmp_path):
    from sitewatch.errors import UsageError

    with pytest.raises(UsageError, match="--dask tcp://127.0.0.1:9"):
        run_detect(
            tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / "x", tiles=JOB.tiles, detect=JOB.detect,
            dask_address="tcp://127.0.0.1:9", progress=False,
        )


def _worker_block_cache() -> str | None:
    import os

    return os.environ.get("GDAL_CACHEMAX")


@pytest.mark.slow
def test_local_cluster_workers_get_the_block_cache_limit(monkeypatch):
    """Each LocalCluster worker process starts with detect's GDAL_CACHEMAX (GDAL's own default, 5 %
    of RAM per process, grew a run's memory with its site count); a limit the user set is kept."""
    from detect.cluster import dask_client
    from detect.workers import BLOCK_CACHE_MB

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    with dask_client(None, 1) as client:
        assert set(client.run(_worker_block_cache).values()) == {str(BLOCK_CACHE_MB)}
    monkeypatch.setenv("GDAL_CACHEMAX", "77")
    with dask_client(None, 1) as client:
        assert set(client.run(_worker_block_cache).values()) == {"77"}
