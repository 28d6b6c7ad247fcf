"""The review app on a real ``sitewatch detect`` run of a small synthetic scene, end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(dataset folder, run folder)``: 24 synthetic sites scored by the bundled model."""
    from detect.run import run_detect
    from sitewatch.config import build_config
    from sitewatch.jobs import DetectJob
    from tiles.synth import generate_dataset
    from tiles.synth.config import SynthConfig

    root = tmp_path_factory.mktemp("detect_run")
    data = root / "data"
    generate_dataset(data, SynthConfig(sites=24, size_px=512, seed=3), progress=False)
    job = build_config(DetectJob, {"detect": {"chips_top_n": 8}})
    run_detect(data / "sites.csv", [data / "before"], [data / "after"], root / "run", tiles=job.tiles, detect=job.detect, progress=False)
    return data, root / "run"


def _labels(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["site_id"]: r["damage"] for r in csv.DictReader(fh)}


def test_review_a_real_run_then_export_for_training(detect_run: tuple[Path, Path], tmp_path: Path) -> None:
    from detect.verify import verify_run
    from review.app import create_app
    from review.config import ReviewConfig
    from review.export import export_dataset
    from sitewatch.config import build_config
    from tiles.config import TilesConfig
    from train.datasets import cut_labelled_folder

    data, run = detect_run
    truth = _labels(data / "sites.csv")
    client = TestClient(create_app(run, ReviewConfig(rerank_every=0, rerank_min_labels=6)))
    client.get("/queue?reviewer=ann")
    state = client.app.state.review
    assert len(state.run.sites) == 24 and state.queues.threshold_source == "run"
    order = state.queues.order("score")
    assert [state.run.sites[i].rank for i in order] == list(range(1, 25))

    top, low = state.run.sites[order[0]], state.run.sites[order[-1]]
    page = client.get(f"/site/{top.index}").text
    assert f"/chip/{top.chips['before']}" in page and f"/chip/{top.chips['heatmap']}" in page
    assert client.get(f"/chip/{top.chips['heatmap']}").content.startswith(b"\x89PNG")
    assert ">damage<" not in page and ">damage_style<" not in page  # the input's labels are never shown
    page = client.get(f"/site/{low.index}").text  # no chip from detect: cut on demand from the rasters
    assert f"/rendered-chip/{low.index}/after.png" in page
    assert client.get(f"/rendered-chip/{low.index}/after.png").content.startswith(b"\x89PNG")

    # "review" every site with its known label, in queue order, over HTTP
    csrf = client.cookies.get("sw_csrf")
    nxt = f"/site/{order[0]}"
    for _ in range(24):
        index = int(nxt.split("/site/")[1].split("?")[0])
        r = client.post(f"/site/{index}/verdict", data={"verdict": truth[state.run.sites[index].site_id], "csrf": csrf},
                        headers={"accept": "application/json"})
        nxt = r.json()["next"]
    p = client.get("/api/progress").json()
    assert p["reviewed"] == 24 and p["remaining"] == 0
    assert p["confirmed_destroyed"] == sum(1 for d in truth.values() if d == "destroyed")
    rr = client.post("/rerank", data={"csrf": csrf}, headers={"accept": "application/json"}).json()
    assert rr["ok"] and rr["labelled"] == sum(1 for d in truth.values() if d in ("destroyed", "major-damage", "no-damage"))

    out = export_dataset(run, tmp_path / "reviewed")
    assert _labels(out / "sites.csv") == truth
    assert sorted(p.name for p in (out / "before").iterdir()) == sorted(p.name for p in (data / "before").iterdir())
    tiles = build_config(TilesConfig, {"chip_px": 32})
    pairs = cut_labelled_folder(out, tiles, name="reviewed", data_hash="x", progress=False)
    assert len(pairs.site_ids) >= 20 and set(pairs.labels.tolist()) == {0, 1}

    # reviewing adds review.sqlite (and the chip cache) beside the run's outputs: verify still passes
    report = verify_run(run)
    assert report.differences == (), report.differences
