"""The per-epoch building head (``model.epoch_head``): its fusion rule, its symmetry, and both
kinds of checkpoint (with and without the head) through the checkpoint format."""

from __future__ import annotations

import json
import math

import pytest
import torch

from models import default_model_dir
from models.checkpoint import META_FILE, CheckpointMeta, load_checkpoint, read_meta, save_checkpoint
from models.factory import build_model
from models.siamese import gone_logit
from sitewatch.errors import ModelError

ARCH = "siam-mobilenetv2-lite"


def _pairs(b: int = 3, size: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _trained_like(epoch_head: bool) -> torch.nn.Module:
    """A network with non-trivial batch-norm statistics (a few training-mode passes)."""
    torch.manual_seed(0)
    model = build_model(ARCH, pretrained=False, log_init=False, epoch_head=epoch_head).train()
    with torch.no_grad():
        for i in range(3):
            model(_pairs(4, 32, seed=10 + i))
    return model.eval()


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_gone_logit_is_the_log_odds_of_standing_before_and_not_after():
    cases = [(2.0, -1.0), (0.0, 0.0), (-1.5, 3.0), (0.3, 0.7)]
    got = gone_logit(torch.tensor(cases))
    for (lb, la), value in zip(cases, got.tolist()):
        q = _sigmoid(lb) * (1 - _sigmoid(la))
        assert value == pytest.approx(_logit(q), abs=1e-5)
    # both epochs at even odds: q = 1/4, log-odds log(1/3)
    assert float(gone_logit(torch.zeros(1, 2))) == pytest.approx(math.log(1 / 3), abs=1e-6)


def test_gone_logit_orders_the_cases_and_stays_finite_at_the_extremes():
    standing_then_gone, both_standing, never_there = gone_logit(torch.tensor([[12.0, -12.0], [12.0, 12.0], [-12.0, -12.0]])).tolist()
    assert standing_then_gone > 10 and both_standing < -10 and never_there < -10
    extreme = gone_logit(torch.tensor([[200.0, -200.0], [-200.0, 200.0], [200.0, 200.0]]))
    assert torch.isfinite(extreme).all() and extreme[0] > 10 and extreme[1] < -100


def test_the_site_logit_adds_epoch_gain_times_the_gone_logit():
    model = _trained_like(True)
    x = _pairs(4)
    with torch.no_grad():
        gain = float(model.epoch_gain)
        out = model(x)
        model.epoch_gain.fill_(0.0)
        plain = model(x)
        model.epoch_gain.fill_(gain)
    assert out.standing.shape == (4, 2)
    torch.testing.assert_close(plain.standing, out.standing)
    torch.testing.assert_close(out.logit, plain.logit + gain * gone_logit(out.standing), atol=1e-5, rtol=1e-5)
    # the damage path is untouched by the head: heatmap and embedding do not depend on it
    torch.testing.assert_close(out.heatmap, plain.heatmap)


def test_each_epoch_is_judged_on_its_own_with_shared_weights():
    model = _trained_like(True)
    x = _pairs(3, seed=4)
    with torch.no_grad():
        out = model(x)
        swapped = model(x.flip(1))
        before_twice = model(torch.stack([x[:, 0], x[:, 0]], dim=1))
    # swapping the epochs swaps the per-epoch judgements exactly (one head, both epochs)
    torch.testing.assert_close(swapped.standing, out.standing.flip(1), atol=1e-5, rtol=1e-5)
    # an epoch's judgement does not depend on the other epoch
    torch.testing.assert_close(before_twice.standing[:, 0], out.standing[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(before_twice.standing[:, 1], out.standing[:, 0], atol=1e-5, rtol=1e-5)


def test_without_the_head_the_network_is_the_plain_one():
    torch.manual_seed(3)
    plain = build_model(ARCH, pretrained=False, log_init=False)
    torch.manual_seed(3)
    headed = build_model(ARCH, pretrained=False, log_init=False, epoch_head=True)
    extra = set(headed.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("building_head.") or k == "epoch_gain" for k in extra)
    assert set(plain.state_dict()) <= set(headed.state_dict())
    assert not any(k.startswith("building_head") for k in plain.state_dict())
    with torch.no_grad():
        assert plain.eval()(_pairs(2)).standing is None


@pytest.mark.parametrize("epoch_head", [False, True])
def test_checkpoint_round_trip_of_both_kinds(tmp_path, epoch_head):
    model = _trained_like(epoch_head)
    folder = save_checkpoint(model, CheckpointMeta(arch=ARCH, epoch_head=epoch_head), tmp_path / "ck", weights_dtype="float32")
    assert json.loads((folder / META_FILE).read_text())["epoch_head"] is epoch_head
    loaded, meta = load_checkpoint(folder)
    assert meta.epoch_head is epoch_head and loaded.epoch_head is epoch_head
    x = _pairs(3, seed=5)
    with torch.no_grad():
        ref, out = model(x), loaded(x)
    assert torch.equal(ref.logit, out.logit)
    assert (out.standing is None) == (not epoch_head)
    if epoch_head:
        assert torch.equal(ref.standing, out.standing)


def test_meta_without_the_key_is_a_plain_network_and_a_wrong_flag_is_named(tmp_path):
    # checkpoints written before the head existed (the bundled model) carry no epoch_head key
    assert "epoch_head" not in json.loads((default_model_dir() / META_FILE).read_text())
    assert read_meta("default").epoch_head is False
    folder = save_checkpoint(_trained_like(True), CheckpointMeta(arch=ARCH, epoch_head=True), tmp_path / "ck")
    data = json.loads((folder / META_FILE).read_text())
    data["epoch_head"] = False
    (folder / META_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="unexpected tensor"):
        load_checkpoint(folder)
    data["epoch_head"] = "yes"
    (folder / META_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="epoch_head"):
        read_meta(folder)


def test_save_refuses_a_flag_that_disagrees_with_the_network(tmp_path):
    with pytest.raises(ModelError, match="per-epoch building head"):
        save_checkpoint(_trained_like(True), CheckpointMeta(arch=ARCH), tmp_path / "a")
    with pytest.raises(ModelError, match="per-epoch building head"):
        save_checkpoint(_trained_like(False), CheckpointMeta(arch=ARCH, epoch_head=True), tmp_path / "b")
