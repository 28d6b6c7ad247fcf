"""Tiny CPU training runs on in-memory pairs: checkpoint, resume, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sitewatch.config import load_config
from sitewatch.errors import ConfigError, InputError
from sitewatch.jobs import TrainJob
from train.datasets import PairSet
from train.trainer import LOG_FILE, STATE_DIR, choose_split, train_model


def toy_pairs(n: int = 64, px: int = 32, seed: int = 0) -> PairSet:
    """Pairs where positives have a dark square in the after image's centre."""
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 2, 3, px, px)) * 120 + 60).astype(np.uint8)
    images[:, 1] = np.clip(images[:, 0].astype(int) + rng.integers(-10, 10, images[:, 0].shape), 0, 255)
    labels = (np.arange(n) % 3 == 0).astype(np.int8)
    c = px // 2
    images[labels == 1, 1, :, c - 6 : c + 6, c - 6 : c + 6] = 10
    return PairSet(
        images=images, labels=labels,
        groups=np.array([f"tile{i % 8}" for i in range(n)], dtype=object),
        site_ids=np.array([f"s{i}" for i in range(n)], dtype=object),
        lon=np.zeros(n), lat=np.zeros(n),
        scenes=np.array(["scene"] * n, dtype=object), damage=np.array(["x"] * n, dtype=object),
        name="toy", data_hash="0" * 64, gsd_m=0.5,
    )


def tiny_job(epochs: int = 3, **extra):
    """The sections of a tiny CPU run, as ``sitewatch train`` composes them (``TrainJob``)."""
    overrides = {
        "train.epochs": epochs, "train.batch_size": 16, "train.threads": 1, "train.lr": 0.003,
        "train.seed": 7,
        "tiles.chip_px": 32, "tiles.chip_size_m": 16.0,
        "model.arch": "siam-mobilenetv2-lite", "model.pretrained": False,
    }
    overrides.update(extra)
    job = load_config(TrainJob, None, overrides)
    # never stop early (null; a dotted override of None means "not given")
    return dataclasses.replace(job, train=dataclasses.replace(job.train, early_stopping_patience=None))


def sections(job) -> dict:
    """``train_model``'s keyword sections from a job."""
    return {"tiles": job.tiles, "model": job.model, "train": job.train, "synth": job.synth}


def _weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_train_writes_a_loadable_calibrated_checkpoint(tmp_path):
    from models.checkpoint import load_checkpoint

    lines = []
    job = tiny_job()
    res = train_model([], tmp_path / "m", **sections(job), extra_sets=[toy_pairs()], progress=False, on_epoch=lambda s: lines.append(s.line(3)))
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3") and "AP" in lines[0]
    _, meta = load_checkpoint(tmp_path / "m")
    assert meta.temperature > 0 and set(meta.operating_points) == {"screening", "evidence"}
    chosen = meta.metrics["operating_points"]
    assert meta.operating_points == {k: v["threshold"] for k, v in chosen.items()}
    assert meta.operating_points["screening"] <= job.train.screening_max_threshold <= meta.operating_points["evidence"]
    assert meta.metrics["n_val"] > 0 and meta.metrics["n_val"] + meta.metrics["n_train"] == 64
    assert meta.metrics["epochs_run"] == 3 and 1 <= meta.metrics["best_epoch"] == res.best_epoch <= 3
    assert meta.data_hashes == {"toy": "0" * 64} and meta.input_px == 32 and meta.gsd_m == 0.5
    assert not (tmp_path / "m" / STATE_DIR).exists()
    # the effective config is saved and reproduces the sections
    assert load_config(TrainJob, tmp_path / "m" / "config.yaml") == job
    assert meta.train_config["train"]["seed"] == 7 and meta.train_config["from"] is None
    # the training envelope is recorded (no synth:N data here, so no bound is known: no caution from it)
    from models.checkpoint import training_envelope

    assert meta.envelope == {"gsd_min_m": None, "gsd_max_m": None, "off_nadir_difference_max_deg": None, "unmeasured": []}
    assert training_envelope(meta).source == "meta.json" and not training_envelope(meta).known
    assert len(json.loads((tmp_path / "m" / LOG_FILE).read_text())["epochs"]) == 3
    # learned weights stored as float16 (model.weights_dtype), batch-norm statistics float32
    weights = _weights(tmp_path / "m")
    assert weights["score.weight"].dtype == np.float16
    assert all(v.dtype == np.float32 for k, v in weights.items() if k.endswith("running_var"))


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    job = tiny_job(epochs=3)
    train_model([], tmp_path / "full", **sections(job), extra_sets=[toy_pairs()], progress=False)

    def stop_after_two(summary):
        if summary.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model([], tmp_path / "cut", **sections(job), extra_sets=[toy_pairs()], progress=False, on_epoch=stop_after_two)
    assert (tmp_path / "cut" / STATE_DIR / "state.json").is_file()
    res = train_model([], tmp_path / "cut", **sections(job), extra_sets=[toy_pairs()], progress=False)
    assert res.resumed_from_epoch == 2 and len(res.history) == 3
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == cut.keys()
    for k in full:
        np.testing.assert_allclose(full[k], cut[k], atol=1e-3, err_msg=k)


@pytest.mark.slow
def test_same_seed_same_model_other_seed_differs(tmp_path):
    a = train_model([], tmp_path / "a", **sections(tiny_job(epochs=1)), extra_sets=[toy_pairs()], progress=False)
    b = train_model([], tmp_path / "b", **sections(tiny_job(epochs=1)), extra_sets=[toy_pairs()], progress=False)
    c = train_model([], tmp_path / "c", **sections(tiny_job(epochs=1, **{"train.seed": 8})), extra_sets=[toy_pairs()], progress=False)
    wa, wb, wc = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    # compare tensors, not file hashes: safetensors may write its header metadata in any order
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not all(np.array_equal(wa[k], wc[k]) for k in wa)
    assert a.history[0].train_loss == b.history[0].train_loss


def test_split_never_puts_a_group_on_both_sides():
    ps = toy_pairs(96)
    for folds, fold in ((1, 0), (4, 0), (4, 3)):
        job = tiny_job(**{"train.folds": folds, "train.fold": fold})
        tr, va, how = choose_split(ps, job.train)
        assert not set(ps.groups[tr]) & set(ps.groups[va]), how
        assert tr.size + va.size == len(ps)


def test_one_class_data_is_refused(tmp_path):
    ps = toy_pairs()
    one_class = PairSet(**{**ps.__dict__, "labels": np.zeros(len(ps), np.int8)})
    with pytest.raises(InputError, match="one class"):
        train_model([], tmp_path / "m", **sections(tiny_job()), extra_sets=[one_class], progress=False)


@pytest.mark.slow
def test_weights_dtype_setting_decides_the_stored_type(tmp_path):
    job = tiny_job(epochs=1, **{"model.weights_dtype": "float32"})
    train_model([], tmp_path / "m32", **sections(job), extra_sets=[toy_pairs()], progress=False)
    train_model([], tmp_path / "m16", **sections(tiny_job(epochs=1)), extra_sets=[toy_pairs()], progress=False)
    w32, w16 = _weights(tmp_path / "m32"), _weights(tmp_path / "m16")
    assert w32["score.weight"].dtype == np.float32 and w16["score.weight"].dtype == np.float16
    # the same training, stored at two precisions
    np.testing.assert_allclose(w32["score.weight"], w16["score.weight"].astype(np.float32), rtol=1e-3, atol=1e-4)


def test_no_sentinel_settings():
    # "not set" is null, never 0 or "" merged by truthiness
    from train.config import EvaluateConfig, TrainConfig

    cfg = TrainConfig()
    assert cfg.cache_dir is None and cfg.threads is None and cfg.epoch_pairs is None
    assert EvaluateConfig().cache_dir is None and EvaluateConfig().data is None
    for key in ("early_stopping_patience", "epoch_pairs", "threads"):
        with pytest.raises(ConfigError, match=f"train.{key} must be at least 1, or null"):
            load_config(TrainJob, None, {f"train.{key}": 0})
    with pytest.raises(ConfigError, match="train.cache_dir is empty"):
        load_config(TrainJob, None, {"train.cache_dir": " "})


@pytest.mark.slow
def test_calibration_holdout_keeps_epoch_selection_apart_and_feature_stats_are_stored(tmp_path):
    from models.assessment import FeatureStats
    from models.checkpoint import read_meta
    from train.trainer import load_training_data

    job = tiny_job(epochs=1, **{"train.calibration_holdout": 0.5, "train.temperature_share": 0.5, "train.feature_stats_pairs": 20})
    data = load_training_data([], job.tiles, job.train, job.synth, extra_sets=[toy_pairs(96)])
    assert data.calib is not None
    val_groups, calib_groups = set(data.val.groups), set(data.calib.groups)
    assert val_groups.isdisjoint(calib_groups) and data.calib.positives > 0 and data.val.positives > 0
    train_model([], tmp_path / "m", **sections(job), extra_sets=[toy_pairs(96)], progress=False)
    meta = read_meta(tmp_path / "m")
    # the reported validation figures are on the operating-point half of the calibration groups only
    assert meta.metrics["validation"]["n"] < len(data.calib)
    stats = FeatureStats.from_dict(meta.feature_stats)
    assert stats.n == 20 and stats.mean.shape == (64,)
