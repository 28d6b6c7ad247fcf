"""The Dask path on a real LocalCluster writes the same scores.csv as the local path."""

from __future__ import annotations

import pytest

from detect.run import run_detect
from sitewatch.config import load_config
from sitewatch.jobs import DetectJob

JOB = load_config(DetectJob, None, {"detect.chips_top_n": 0, "detect.batch_size": 6})


@pytest.mark.slow
def test_local_cluster_equals_local(tiny_scene, tmp_path):
    local = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / "local", job=JOB, progress=False)
    dask = run_detect(
        tiny_scene.sites,
        [tiny_scene.before],
        [tiny_scene.after],
        tmp_path / "dask",
        job=JOB,
        workers=2,
        dask_processes=False,
        progress=False,
    )
    assert dask.batches_total == local.batches_total > 1
    for name in ("scores.csv", "scores.geojson", "embeddings.npz"):
        assert (dask.run_dir / name).read_bytes() == (local.run_dir / name).read_bytes(), name
