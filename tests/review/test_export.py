"""Export: verdicts become a labelled dataset that the training stage reads."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from review.export import export_dataset
from review.store import VerdictStore
from sitewatch.errors import InputError, RunFolderError


def _verdicts(run_dir: Path) -> None:
    store = VerdictStore.for_run(run_dir)
    store.add_verdict("s00000", "alice", "destroyed")
    store.add_verdict("s00000", "bob", "destroyed")
    store.add_verdict("s00001", "alice", "no-damage")
    store.add_verdict("s00002", "alice", "major-damage")
    store.add_verdict("s00002", "bob", "no-damage")  # tie: left out until adjudicated
    store.add_verdict("s00003", "alice", "destroyed")
    store.add_verdict("s00003", "bob", "no-damage")
    store.add_verdict("s00003", "lead", "destroyed", kind="adjudication")
    store.add_verdict("s00004", "alice", "cannot_assess")
    store.add_verdict("s00005", "alice", "no-damage")
    store.add_verdict("s00005", "alice", "minor-damage")  # changed mind: latest counts


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_export_writes_labels_agreement_and_raster_links(run_dir: Path, tmp_path: Path) -> None:
    _verdicts(run_dir)
    out = export_dataset(run_dir, tmp_path / "dataset")
    rows = {r["site_id"]: r for r in _read(out / "sites.csv")}
    assert set(rows) == {"s00000", "s00001", "s00003", "s00005"}
    assert rows["s00000"]["damage"] == "destroyed" and rows["s00000"]["agreement"] == "1.000"
    assert rows["s00000"]["n_reviewers"] == "2" and rows["s00000"]["verdicts"] == "alice:destroyed;bob:destroyed"
    assert rows["s00003"]["damage"] == "destroyed" and rows["s00003"]["adjudicated"] == "true"
    assert rows["s00003"]["agreement"] == "0.500" and rows["s00003"]["decision"] == "adjudicated"
    assert rows["s00005"]["damage"] == "minor-damage"
    assert float(rows["s00001"]["lon"]) == pytest.approx(-122.6999 - 0.00003)
    for epoch in ("before", "after"):
        links = list((out / epoch).iterdir())
        assert len(links) == 1 and links[0].is_symlink() and links[0].resolve().suffix == ".tif"
    record = json.loads((out / "export.json").read_text())
    assert record["skipped_cannot_assess"] == 1 and record["skipped_undecided"] == 1
    assert any(e["action"] == "export" for e in VerdictStore.for_run(run_dir).audit())
    # exporting again into the same folder refreshes it
    VerdictStore.for_run(run_dir).add_verdict("s00002", "lead", "no-damage", kind="adjudication")
    export_dataset(run_dir, out)
    assert "s00002" in {r["site_id"] for r in _read(out / "sites.csv")}


def test_exported_dataset_is_readable_by_training(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tiles.cut")
    from sitewatch.config import build_config
    from tiles.config import TilesConfig
    from tiles.sites import read_sites
    from train.datasets import cut_labelled_folder

    _verdicts(run_dir)
    out = export_dataset(run_dir, tmp_path / "dataset")
    sites = {s.site_id: s for s in read_sites(out / "sites.csv")}
    assert sites["s00000"].damage == "destroyed" and sites["s00001"].problem is None
    tiles = build_config(TilesConfig, {"chip_px": 16, "chip_size_m": 16.0, "coregister": False})
    pairs = cut_labelled_folder(out, tiles, name="review", data_hash="x", progress=False)
    assert sorted(pairs.site_ids) == ["s00000", "s00001", "s00003"]  # minor-damage is not in the binary task
    assert dict(zip(pairs.site_ids, pairs.labels.tolist())) == {"s00000": 1, "s00001": 0, "s00003": 1}


def test_export_refuses_other_folders_and_missing_rasters(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "sites.csv").write_text("site_id,lon,lat\n")
    with pytest.raises(InputError, match="no review export wrote"):
        export_dataset(run_dir, other)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    Path(manifest["inputs"]["before"][0]["path"]).unlink()
    with pytest.raises(RunFolderError, match="no longer exists"):
        export_dataset(run_dir, tmp_path / "d2")
    with pytest.raises(RunFolderError, match="no scores.csv"):
        export_dataset(tmp_path, tmp_path / "d3")


def test_cli_export_and_usage_errors(run_dir: Path, tmp_path: Path) -> None:
    _verdicts(run_dir)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "ds"
    r = subprocess.run([sys.executable, "-m", "sitewatch", "review", "export", str(run_dir), "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "exported 4 reviewed site(s)" in r.stdout and (out / "sites.csv").is_file()
    r = subprocess.run([sys.executable, "-m", "sitewatch", "review", "export", str(run_dir)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--out DATASET is required" in r.stderr
    r = subprocess.run([sys.executable, "-m", "sitewatch", "review", str(tmp_path / "nope")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "no such run folder" in r.stderr


def test_cli_export_without_verdicts_says_to_review_first_not_to_train(run_dir: Path, tmp_path: Path, capsys) -> None:
    from sitewatch.cli import main

    assert main(["review", "export", str(run_dir), "--out", str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert "exported 0 reviewed site(s)" in out
    assert "nothing to train on yet" in out and f"sitewatch review {run_dir}" in out
    assert "sitewatch train" not in out
    _verdicts(run_dir)
    assert main(["review", "export", str(run_dir), "--out", str(tmp_path / "full")]) == 0
    assert "train on it: sitewatch train --data" in capsys.readouterr().out
