"""``run_detect`` on a tiny real GeoTIFF scene: the run-folder contract, determinism, bad input."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from detect.runfolder import read_scores_csv
from detect.verify import verify_run
from detect.run import run_detect
from sitewatch.config import load_config
from sitewatch.errors import ModelError, RasterError, RunFolderError
from sitewatch.jobs import DetectJob
from tiles.index import PAIR_META_COLUMNS

JOB = load_config(DetectJob, None, {"detect.chips_top_n": 4, "detect.batch_size": 8})


@pytest.fixture(scope="module")
def baseline(tiny_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "baseline"
    summary = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], out, tiles=JOB.tiles, detect=JOB.detect, progress=False)
    return summary


def test_run_folder_contract(baseline, tiny_scene):
    run = baseline.run_dir
    for name in ("scores.csv", "scores.geojson", "report.html", "manifest.json", "config.yaml", "embeddings.npz"):
        assert (run / name).is_file(), name
    rows = read_scores_csv(run / "scores.csv")
    with open(run / "scores.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:8] == ["site_id", "lon", "lat", "score", "rank", "status", "reason", "flagged"]
    assert header[-3:] == ["chip_before", "chip_after", "chip_heatmap"]
    assert set(PAIR_META_COLUMNS) - {"status", "reason"} <= set(header)
    assert "note" in header and "kind" in header and "damage" in header  # input columns pass through
    # every input site exactly once
    with open(tiny_scene.sites, newline="") as fh:
        input_ids = [r["site_id"] for r in csv.DictReader(fh)]
    assert sorted(r["site_id"] for r in rows) == sorted(input_ids)
    # descending score, ranks 1..n, ties by site_id
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == baseline.ok == tiny_scene.n_sites
    keys = [(-float(r["score"]), r["site_id"]) for r in ok]
    assert keys == sorted(keys)
    assert [int(r["rank"]) for r in ok] == list(range(1, len(ok) + 1))
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in ok)
    threshold = baseline.operating_point.threshold
    assert all((r["flagged"] == "true") == (float(r["score"]) >= threshold) for r in ok)
    # chips for the top 4 only, files exist
    with_chips = [r for r in rows if r["chip_before"]]
    assert [r["rank"] for r in with_chips] == ["1", "2", "3", "4"]
    for r in with_chips:
        for col in ("chip_before", "chip_after", "chip_heatmap"):
            assert (run / r[col]).is_file()
    # GeoJSON: same sites, same order, valid points
    gj = json.loads((run / "scores.geojson").read_text())
    assert gj["type"] == "FeatureCollection"
    assert [f["properties"]["site_id"] for f in gj["features"]] == [r["site_id"] for r in rows]
    for f, r in zip(gj["features"], rows):
        assert f["geometry"]["type"] == "Point"
        assert f["geometry"]["coordinates"] == pytest.approx([float(r["lon"]), float(r["lat"])])
    # embeddings of ok sites in scores.csv order
    with np.load(run / "embeddings.npz", allow_pickle=False) as data:
        assert list(data["site_id"]) == [r["site_id"] for r in ok]
        assert data["embedding"].dtype == np.float16 and data["embedding"].shape[0] == len(ok)
    # manifest: inputs hashed, model, per-site scenes, outputs
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["inputs"]["sites"]["sha256"]) == 64
    assert [len(e["sha256"]) for e in manifest["inputs"]["before"] + manifest["inputs"]["after"]] == [64, 64]
    assert len(manifest["model"]["weights_sha256"]) == 64 and manifest["model"]["meta"]["arch"]
    assert manifest["software"]["torch"] and manifest["started"] and manifest["finished"]
    columns = manifest["per_site_columns"]
    per_site = [dict(zip(columns, values)) for values in manifest["per_site"]]
    assert {p["site_id"] for p in per_site} == set(input_ids)
    assert per_site[0]["before_scene"] == "before_scene" and per_site[0]["after_time"].startswith("2021-09-01")
    assert "scores.csv" in manifest["outputs"] and "journal.jsonl" not in manifest["outputs"]
    assert manifest["config"]["values"]["detect"]["chips_top_n"] == 4
    html = (run / "report.html").read_text()
    # the report shows exactly the flagged sites, in rank order, and never raw input markup
    flagged = [r for r in ok if r["flagged"] == "true"]
    assert len(flagged) == baseline.flagged
    assert html.count('<div class="site">') == min(len(flagged), JOB.detect.report_max_sites)
    positions = [html.index(f"#{r['rank']} <b>{r['site_id']}") for r in flagged[: JOB.detect.report_max_sites]]
    assert positions == sorted(positions)
    assert "block <" not in html
    assert verify_run(run).ok


def test_same_inputs_give_byte_identical_outputs(baseline, tiny_scene, tmp_path):
    again = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / "again", tiles=JOB.tiles, detect=JOB.detect, progress=False)
    for name in ("scores.csv", "scores.geojson", "embeddings.npz"):
        assert (again.run_dir / name).read_bytes() == (baseline.run_dir / name).read_bytes(), name


def test_rerun_of_finished_run_is_identical_and_different_config_is_refused(baseline, tiny_scene, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(baseline.run_dir, run)
    before = (run / "scores.csv").read_bytes()
    summary = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], run, tiles=JOB.tiles, detect=JOB.detect, progress=False)
    assert summary.batches_resumed == summary.batches_total
    assert (run / "scores.csv").read_bytes() == before
    other = load_config(DetectJob, None, {"detect.chips_top_n": 4, "detect.batch_size": 8, "tiles.chip_size_m": 48})
    with pytest.raises(RunFolderError, match="different config.*--overwrite"):
        run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], run, tiles=other.tiles, detect=other.detect, progress=False)
    other_sites = tmp_path / "sites.csv"
    other_sites.write_text(tiny_scene.sites.read_text().replace("home", "school"))
    with pytest.raises(RunFolderError, match="different sites"):
        run_detect(other_sites, [tiny_scene.before], [tiny_scene.after], run, tiles=JOB.tiles, detect=JOB.detect, progress=False)


def test_refuses_a_folder_that_is_not_a_run(tiny_scene, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a sitewatch run folder"):
        run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path, tiles=JOB.tiles, detect=JOB.detect, progress=False)
    summary = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path, tiles=JOB.tiles, detect=JOB.detect, overwrite=True, progress=False)
    assert summary.ok == tiny_scene.n_sites
    assert (tmp_path / "notes.txt").read_text() == "mine"  # --overwrite removes only what sitewatch wrote
    assert verify_run(tmp_path).differences[0].path == "notes.txt"  # ...and verify notices the stranger


def test_verify_catches_a_changed_input_and_output(baseline, tiny_scene, tmp_path):
    import rasterio

    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene.root, scene)
    run = run_detect(scene / "sites.csv", [scene / "before"], [scene / "after"], tmp_path / "run", tiles=JOB.tiles, detect=JOB.detect, progress=False).run_dir
    assert verify_run(run).ok
    with rasterio.open(scene / "after" / "after_scene.tif", "r+") as ds:
        ds.write(np.zeros((3, 4, 4), np.uint8), window=rasterio.windows.Window(0, 0, 4, 4))
    rows = (run / "scores.csv").read_text().splitlines()
    (run / "scores.csv").write_text("\n".join([rows[0], rows[2], rows[1], *rows[3:]]) + "\n")
    problems = {(d.kind, d.problem, d.path.rsplit("/", 1)[-1]) for d in verify_run(run).differences}
    assert problems == {("input", "changed", "after_scene.tif"), ("output", "changed", "scores.csv")}


def test_bad_rows_and_corrupt_raster_give_statuses(tiny_scene, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene.root, scene)
    # bad rows: NaN, non-numeric, out of range, far outside coverage
    with open(scene / "sites.csv", "a", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["bad_nan", "nan", "36.1", "home", "no-damage", ""])
        w.writerow(["bad_text", "east", "36.1", "home", "no-damage", ""])
        w.writerow(["bad_range", "15.0", "123.4", "home", "no-damage", ""])
        w.writerow(["far_away", "-70.0", "-30.0", "home", "no-damage", ""])
    # a file that is not a GeoTIFF among the after inputs: skipped with a warning
    (scene / "after" / "broken.tif").write_bytes(b"II*\x00 this is not a tiff")
    # corrupt the pixel data of the before raster's first tiles: reads there fail per site
    tif = scene / "before" / "before_scene.tif"
    import rasterio

    with rasterio.open(tif) as ds:
        offsets = [int(ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1)) for r in range(2) for c in range(4)]
    data = bytearray(tif.read_bytes())
    for off in offsets:
        data[off : off + 64] = b"\xff" * 64
    tif.write_bytes(bytes(data))
    summary = run_detect(scene / "sites.csv", [scene / "before"], [scene / "after"], tmp_path / "run", tiles=JOB.tiles, detect=JOB.detect, progress=False)
    rows = {r["site_id"]: r for r in read_scores_csv(summary.scores_csv)}
    assert len(rows) == tiny_scene.n_sites + 4
    for sid in ("bad_nan", "bad_text", "bad_range"):
        assert rows[sid]["status"] == "cannot_assess" and rows[sid]["reason"] == "invalid_site"
        assert rows[sid]["score"] == "" and rows[sid]["rank"] == ""
    assert rows["far_away"]["status"] == "cannot_assess" and "coverage" in rows["far_away"]["reason"]
    assert summary.ok >= 1 and summary.cannot_assess >= 4
    for r in rows.values():
        assert (r["status"] == "ok") == (r["score"] != ""), r
        assert r["status"] == "ok" or r["reason"], r
    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    assert any("broken.tif" in p for p, _ in manifest["inputs"]["skipped_rasters"]["after"])


def test_run_level_errors_stop_early(tiny_scene, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RasterError, match="--after"):
        run_detect(tiny_scene.sites, [tiny_scene.before], [empty], tmp_path / "r1", tiles=JOB.tiles, detect=JOB.detect, progress=False)
    bad_model = tmp_path / "model"
    bad_model.mkdir()
    (bad_model / "meta.json").write_text("{}")
    with pytest.raises(ModelError):
        run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / "r2", model=bad_model, tiles=JOB.tiles, detect=JOB.detect, progress=False)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_a_detect_that_cannot_take_the_lock_never_deletes_it(tiny_scene, tmp_path):
    """Issue 10 item 9: two detects on one folder; the one refused leaves the holder's lock alone."""
    import fcntl

    from detect.run import LOCK_NAME, run_lock

    run = tmp_path / "run"
    run.mkdir()
    lock = run / LOCK_NAME
    with run_lock(run):  # the running job
        inode = lock.stat().st_ino
        with pytest.raises(RunFolderError, match="another sitewatch detect is writing"):
            run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], run, tiles=JOB.tiles, detect=JOB.detect, progress=False)
        assert lock.is_file() and lock.stat().st_ino == inode  # not deleted, not replaced
        with open(lock, "a+") as other:  # and still held: a third process is refused too
            with pytest.raises(OSError):
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not (run / "scores.csv").exists()
    assert not lock.exists()  # the holder removed it when done
    summary = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], run, tiles=JOB.tiles, detect=JOB.detect, progress=False)
    assert summary.ok == tiny_scene.n_sites and not lock.exists()


def test_phases_are_logged_in_run_order(tiny_scene, tmp_path, caplog):
    """The debug log's ``timing: PHASE at T`` lines (benchmarks/bench_detect.py reads them to say
    where a run's time goes): every step once, in run order, at non-decreasing times; the
    rasters' SHA-256 is recorded although it now starts before the model is loaded."""
    import logging
    import re

    with caplog.at_level(logging.DEBUG, logger="detect.run"):
        summary = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], tmp_path / "r", tiles=JOB.tiles, detect=JOB.detect, progress=False)
    marks = [re.fullmatch(r"timing: (.+) at ([0-9.]+)", r.getMessage()) for r in caplog.records if r.name == "detect.run"]
    marks = [(m.group(1), float(m.group(2))) for m in marks if m]
    assert [name for name, _ in marks] == [
        "run_detect", "inputs read", "torch imported", "scorer ready", "planned", "first batch", "last batch",
        "journal read", "chips written", "scores written", "gis written", "report written", "manifest written",
    ]
    times = [t for _, t in marks]
    assert times == sorted(times)
    import hashlib
    from pathlib import Path

    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    for entry in manifest["inputs"]["before"] + manifest["inputs"]["after"]:
        assert entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest(), entry["path"]
