"""Fine-tune briefly on part of the real xBD Santa Rosa dev set; a held-out set of tiles must
beat the non-learned baseline. Uses ../shared/data (skipped when absent); nothing is copied:
the test dataset folder holds symlinks to the shared rasters."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from sitewatch.config import load_config
from sitewatch.jobs import TrainJob
from tiles.config import TilesConfig
from train.baseline import pixel_difference_score
from train.datasets import load_labelled_folder
from train.metrics import roc_auc
from train.trainer import train_model

TRAIN_TILES = ("00000019", "00000052", "00000113", "00000204", "00000358", "00000086")
TEST_TILES = ("00000021", "00000028", "00000257", "00000354", "00000292", "00000273", "00000000")


def subset_folder(dev: Path, out: Path, tiles: tuple[str, ...]) -> Path:
    """A labelled dataset folder with only ``tiles``: filtered sites.csv, symlinked rasters."""
    names = {f"santa-rosa-wildfire_{t}" for t in tiles}
    for epoch in ("before", "after"):
        (out / epoch).mkdir(parents=True)
        for name in names:
            (out / epoch / f"{name}.tif").symlink_to(dev / epoch / f"{name}.tif")
    with open(dev / "sites.csv", newline="", encoding="utf-8") as src, open(out / "sites.csv", "w", newline="", encoding="utf-8") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(r for r in reader if r["tile"] in names)
    return out


@pytest.mark.realdata
@pytest.mark.slow
def test_finetuned_beats_baseline_on_held_out_tiles(shared_data, tmp_path):
    from models.inference import Scorer

    dev = shared_data / "xbd-santa-rosa-dev"
    cache = tmp_path / "cache"
    train_dir = subset_folder(dev, tmp_path / "train", TRAIN_TILES)
    test_dir = subset_folder(dev, tmp_path / "test", TEST_TILES)
    job = load_config(
        TrainJob,
        Path(__file__).resolve().parents[2] / "configs" / "train-finetune.yaml",
        {"train.epochs": 2, "train.threads": 1, "train.cache_dir": str(cache), "train.val_fraction": 0.34},
    )
    res = train_model(
        [str(train_dir)], tmp_path / "model", tiles=job.tiles, model=job.model, train=job.train, synth=job.synth,
        init_from="default", progress=False,
    )
    assert res.meta.metrics["n_train"] > 100

    test = load_labelled_folder(test_dir, TilesConfig(), cache_dir=cache, progress=False)
    assert not set(test.groups) & {f"santa-rosa-wildfire_{t}" for t in TRAIN_TILES}
    scorer = Scorer(tmp_path / "model", threads=1)
    prob = np.concatenate([scorer.score(test.as_float(slice(i, i + 64))).prob for i in range(0, len(test), 64)])
    model_auc = roc_auc(test.labels, prob)
    base_auc = roc_auc(test.labels, pixel_difference_score(test.images))
    print(f"held-out tiles: {len(test)} pairs, model AUC {model_auc:.3f}, baseline AUC {base_auc:.3f}")
    assert model_auc > base_auc


def dev_as_xbd(dev: Path, out: Path, tiles: tuple[str, ...]) -> Path:
    """Tiles of the (georeferenced) dev set written back into the public xBD layout: PNGs and
    label files with a 6 m square footprint around each site in ``lng_lat`` and, through each
    image's geotransform, in pixel ``xy``. Written under ``out`` (a test folder), never the repo."""
    import json
    import math

    import rasterio
    from PIL import Image

    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    with open(dev / "sites.csv", newline="", encoding="utf-8") as f:
        sites = [r for r in csv.DictReader(f) if r["tile"] in tiles]

    def wkt(pts):
        return "POLYGON ((" + ", ".join("%.12f %.12f" % p for p in pts) + "))"

    for tile in tiles:
        for epoch, tag in (("before", "pre"), ("after", "post")):
            with rasterio.open(dev / epoch / f"{tile}.tif") as ds:
                Image.fromarray(ds.read().transpose(1, 2, 0)).save(out / "images" / f"{tile}_{tag}_disaster.png")
                ia, ib, ic, id_, ie, if_ = tuple(~ds.transform)[:6]
                tags = ds.tags()
            xy, ll = [], []
            for s in (s for s in sites if s["tile"] == tile):
                lon, lat = float(s["lon"]), float(s["lat"])
                dlat = 3.0 / 111_195.0
                dlon = dlat / math.cos(math.radians(lat))
                ring = [(lon - dlon, lat - dlat), (lon + dlon, lat - dlat), (lon + dlon, lat + dlat), (lon - dlon, lat + dlat), (lon - dlon, lat - dlat)]
                props = {"feature_type": "building", "uid": s["site_id"], **({"subtype": s["damage"]} if tag == "post" else {})}
                xy.append({"properties": props, "wkt": wkt([(ia * x + ib * y + ic, id_ * x + ie * y + if_) for x, y in ring])})
                ll.append({"properties": props, "wkt": wkt(ring)})
            meta = {"capture_date": tags.get("ACQUISITION_DATETIME"), "sensor": tags.get("SENSOR"), "gsd": 1.9}
            (out / "labels" / f"{tile}_{tag}_disaster.json").write_text(json.dumps({"features": {"xy": xy, "lng_lat": ll}, "metadata": meta}))
    return out


@pytest.mark.realdata
def test_xbd_layout_of_the_dev_set_gives_the_folder_pairs(shared_data, tmp_path):
    from train.datasets import load_xbd

    dev = shared_data / "xbd-santa-rosa-dev"
    tiles = ("00000019", "00000021")
    folder = load_labelled_folder(subset_folder(dev, tmp_path / "folder", tiles), TilesConfig(), cache_dir=tmp_path / "c1", progress=False)
    names = tuple(f"santa-rosa-wildfire_{t}" for t in tiles)
    xbd = load_xbd(dev_as_xbd(dev, tmp_path / "xbd", names), TilesConfig(), cache_dir=tmp_path / "c2", progress=False)
    assert len(folder) > 40
    assert [s.split(":", 1)[1] for s in xbd.site_ids] == list(folder.site_ids)
    diff = np.abs(xbd.images.astype(int) - folder.images.astype(int))
    print(f"{len(xbd)} pairs: max difference {diff.max()} levels, {(diff > 0).mean():.2e} of values differ")
    assert diff.max() <= 2 and (diff > 0).mean() < 0.001
    np.testing.assert_array_equal(xbd.labels, folder.labels)
