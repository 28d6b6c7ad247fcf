"""Per-epoch building targets and the head's loss: known answers from a generated scene, the
mask for sets without targets, the pair cache, and a tiny training run of each kind."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.siamese import ModelOutput
from sitewatch.config import load_config
from sitewatch.errors import ConfigError, InputError
from sitewatch.jobs import TrainJob
from tiles.config import TilesConfig
from tiles.synth import SynthConfig, generate_dataset
from train.datasets import load_labelled_folder
from train.pairs import concat_pairsets, load_pairset, save_pairset
from train.trainer import epoch_head_loss, train_model, training_loss
from tests.train.test_trainer import sections, tiny_job, toy_pairs

TILES = TilesConfig(chip_size_m=32.0, chip_px=32)
SCENE = SynthConfig(sites=20, seed=3, size_px=640, destroyed_fraction=0.3, major_fraction=0.1, minor_fraction=0.1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate_dataset(out, SCENE, progress=False)
    return out


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "sites.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write_rows(folder: Path, rows: list[dict[str, str]], drop: tuple[str, ...] = ()) -> None:
    cols = [c for c in rows[0] if c not in drop]
    with open(folder / "sites.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _copy_scene(scene: Path, dest: Path) -> Path:
    dest.mkdir()
    for epoch in ("before", "after"):
        (dest / epoch).mkdir()
        for p in (scene / epoch).glob("*.tif"):
            (dest / epoch / p.name).symlink_to(p)
    return dest


def test_generated_scene_says_what_stands_in_each_epoch(scene):
    rows = _rows(scene)
    assert {r["damage"] for r in rows} == {"destroyed", "major-damage", "minor-damage", "no-damage"}
    for r in rows:
        # every site is a building of the before epoch; destroyed or major-damaged ones are gone after
        assert r["standing_before"] == "1", r
        assert r["standing_after"] == ("1" if r["damage"] in ("no-damage", "minor-damage") else "0"), r


def test_cut_pairs_carry_the_targets_intact_standing_twice_destroyed_only_before(scene, tmp_path):
    ps = load_labelled_folder(scene, TILES, cache_dir=tmp_path / "cache", progress=False)
    assert ps.standing is not None and ps.standing.shape == (len(ps), 2) and ps.standing.dtype == np.int8
    damage = {r["site_id"]: r["damage"] for r in _rows(scene)}
    for sid, label, (before, after) in zip(ps.site_ids, ps.labels, ps.standing):
        assert before == 1
        assert after == (0 if damage[sid] in ("destroyed", "major-damage") else 1)
        assert after == 1 - label
    # the cache keeps them
    again = load_labelled_folder(scene, TILES, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again.standing, ps.standing)


def test_a_folder_without_the_columns_has_no_targets_and_bad_cells_are_named(scene, tmp_path):
    rows = _rows(scene)
    plain = _copy_scene(scene, tmp_path / "plain")
    _write_rows(plain, rows, drop=("standing_before", "standing_after"))
    ps = load_labelled_folder(plain, TILES, cache_dir=tmp_path / "c", progress=False)
    assert ps.standing is None and not ps.has_standing
    assert (ps.standing_targets() == -1).all() and ps.standing_targets().shape == (len(ps), 2)
    bad = _copy_scene(scene, tmp_path / "bad")
    _write_rows(bad, [{**r, "standing_after": "maybe"} if i == 2 else r for i, r in enumerate(rows)])
    with pytest.raises(InputError, match=rf"{rows[2]['site_id']}: standing_after is 'maybe'"):
        load_labelled_folder(bad, TILES, cache_dir=tmp_path / "c", progress=False)
    # a blank cell is unknown, not 0
    blank = _copy_scene(scene, tmp_path / "blank")
    _write_rows(blank, [{**r, "standing_after": ""} for r in rows])
    ps = load_labelled_folder(blank, TILES, cache_dir=tmp_path / "c", progress=False)
    assert (ps.standing[:, 0] == 1).all() and (ps.standing[:, 1] == -1).all()


def test_pair_sets_with_and_without_targets_concatenate_and_round_trip(tmp_path):
    a = dataclasses.replace(toy_pairs(8), standing=np.tile(np.array([[1, 0]], np.int8), (8, 1)))
    b = toy_pairs(4)
    both = concat_pairsets([a, b])
    assert both.standing.shape == (12, 2)
    assert (both.standing[:8] == [1, 0]).all() and (both.standing[8:] == -1).all()
    assert concat_pairsets([b, toy_pairs(4, seed=1)]).standing is None
    save_pairset(both, tmp_path / "p.npz")
    np.testing.assert_array_equal(load_pairset(tmp_path / "p.npz").standing, both.standing)
    np.testing.assert_array_equal(both.subset(np.array([9, 0])).standing, [[-1, -1], [1, 0]])
    # a cache file written before the targets existed has no such array: it loads without them
    save_pairset(b, tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as z:
        assert "standing" not in z.files
    assert load_pairset(tmp_path / "old.npz").standing is None


def test_epoch_head_loss_counts_only_known_targets():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0], [-2.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[1, 0], [-1, -1], [1, -1]])
    loss = epoch_head_loss(logits, targets)
    known = [(2.0, 1.0), (-1.0, 0.0), (-2.0, 1.0)]
    expected = np.mean([float(F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t))) for x, t in known])
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert (logits.grad[1] == 0).all() and logits.grad[2, 1] == 0 and logits.grad[0, 0] != 0
    # a batch without any known target (a real labelled set) adds nothing and moves nothing
    none_known = torch.zeros(3, 2, requires_grad=True)
    zero = epoch_head_loss(none_known, torch.full((3, 2), -1))
    zero.backward()
    assert float(zero) == 0.0 and (none_known.grad == 0).all()


def test_training_loss_adds_the_weighted_head_term_only_where_it_applies():
    cfg = tiny_job().train
    y = torch.tensor([1.0, 0.0])
    out = ModelOutput(logit=torch.tensor([0.3, -0.2]), heatmap=torch.zeros(2, 1, 8, 8), embedding=torch.zeros(2, 4),
                      standing=torch.tensor([[1.0, -2.0], [0.5, 0.5]]))
    st = torch.tensor([[1, 0], [1, 1]])
    pw = torch.tensor(2.0)
    base = training_loss(out._replace(standing=None), y, cfg, pos_weight=pw, disc=None)
    assert float(training_loss(out, y, cfg, pos_weight=pw, disc=None)) == pytest.approx(float(base))  # no targets given
    with_head = training_loss(out, y, cfg, pos_weight=pw, disc=None, standing=st)
    assert float(with_head) == pytest.approx(float(base) + cfg.epoch_head_weight * float(epoch_head_loss(out.standing, st)))
    off = dataclasses.replace(cfg, epoch_head_weight=0.0)
    assert float(training_loss(out, y, off, pos_weight=pw, disc=None, standing=st)) == pytest.approx(float(base))


@pytest.mark.parametrize("bad", [-0.1, float("inf"), float("nan")])
def test_epoch_head_weight_is_validated(bad):
    with pytest.raises(ConfigError, match="train.epoch_head_weight"):
        load_config(TrainJob, None, {"train.epoch_head_weight": bad})


def _with_targets(n: int = 64, seed: int = 0):
    ps = toy_pairs(n, seed=seed)
    standing = np.stack([np.ones(n, np.int8), (1 - ps.labels).astype(np.int8)], axis=1)
    return dataclasses.replace(ps, standing=standing)


@pytest.mark.slow
def test_tiny_runs_of_both_kinds_write_checkpoints_the_scorer_loads(tmp_path, caplog):
    from models.checkpoint import read_meta
    from models.inference import Scorer

    head = tiny_job(epochs=1, **{"model.epoch_head": True})
    train_model([], tmp_path / "head", **sections(head), extra_sets=[_with_targets(), toy_pairs(32, seed=2)], progress=False)
    plain = tiny_job(epochs=1)
    train_model([], tmp_path / "plain", **sections(plain), extra_sets=[_with_targets()], progress=False)
    assert read_meta(tmp_path / "head").epoch_head is True
    assert read_meta(tmp_path / "plain").epoch_head is False
    assert read_meta(tmp_path / "head").train_config["model"]["epoch_head"] is True
    x = toy_pairs(6, seed=3).as_float()
    for name, has_head in (("head", True), ("plain", False)):
        res = Scorer(tmp_path / name, device="cpu", precision="float32").score(x)
        assert res.prob.shape == (6,) and np.isfinite(res.prob).all()
        assert (res.standing is not None) == has_head
        if has_head:
            assert res.standing.shape == (6, 2) and ((res.standing > 0) & (res.standing < 1)).all()
    # a head on data without any per-epoch target still trains (the loss is masked out), with a warning
    caplog.set_level("WARNING")
    train_model([], tmp_path / "real", **sections(head), extra_sets=[toy_pairs()], progress=False)
    assert "no training pair has per-epoch targets" in caplog.text
    assert read_meta(tmp_path / "real").epoch_head is True
