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
    res = train_model([str(train_dir)], tmp_path / "model", job, init_from="default", progress=False)
    assert res.meta.metrics["n_train"] > 100

    test = load_labelled_folder(test_dir, TilesConfig(), cache_dir=cache, progress=False)
    assert not set(test.groups) & {f"santa-rosa-wildfire_{t}" for t in TRAIN_TILES}
    scorer = Scorer(tmp_path / "model", threads=1)
    prob = np.concatenate([scorer.score(test.as_float(slice(i, i + 64))).prob for i in range(0, len(test), 64)])
    model_auc = roc_auc(test.labels, prob)
    base_auc = roc_auc(test.labels, pixel_difference_score(test.images))
    print(f"held-out tiles: {len(test)} pairs, model AUC {model_auc:.3f}, baseline AUC {base_auc:.3f}")
    assert model_auc > base_auc
