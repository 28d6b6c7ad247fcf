"""Run-time adaptation (AdaBN) and the "out of its depth" signals of the Scorer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from models.assessment import FeatureStats, sharpness_log_ratio
from models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from models.factory import build_model
from models.inference import Scorer
from sitewatch.errors import ModelError

ARCH = "siam-mobilenetv2-lite"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(ARCH, pretrained=False, log_init=False).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 2, 3, 32, 32))
    folder = tmp_path_factory.mktemp("model")
    return save_checkpoint(model.eval(), CheckpointMeta(arch=ARCH, temperature=2.0), folder)


def _pairs(b=6, side=48, seed=0, scale=1.0, offset=0.0) -> np.ndarray:
    x = np.random.default_rng(seed).random((b, 2, 3, side, side), dtype=np.float32)
    return np.clip(x * scale + offset, 0, 1).astype(np.float32)


def test_adabn_sets_the_batchnorm_statistics_to_the_runs_own(checkpoint):
    dark = _pairs(8, scale=0.3)  # a run whose imagery is much darker than anything seen
    scorer = Scorer(checkpoint, device="cpu", precision="float32")
    before = scorer.score(dark).logit
    assert scorer.adapt(dark) is scorer and scorer.adapted_on == 8
    after = scorer.score(dark).logit
    assert not np.allclose(before, after)
    # known answer: the first batch norm after adaptation holds the mean of its inputs on these pairs
    net, _ = load_checkpoint(checkpoint)
    first_conv = next(m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.from_numpy(dark).reshape(16, 3, 48, 48)
    with torch.no_grad():
        feats = first_conv((x - net.mean) / net.std)
    ref = Scorer(checkpoint, device="cpu", precision="float32")
    ref_net, _ = load_checkpoint(checkpoint)
    bn = next(m for m in ref_net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    for m in ref_net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats(); m.momentum = None; m.train()  # noqa: E702
    with torch.no_grad():
        ref_net(torch.from_numpy(dark))
    np.testing.assert_allclose(bn.running_mean.numpy(), feats.mean(dim=(0, 2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    # and the adapted scorer is that network, folded
    ref_net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(after, ref_net(torch.from_numpy(dark)).logit.double().numpy(), atol=1e-4)
    del ref


def test_adapt_scope_encoder_leaves_the_decoder_statistics(checkpoint):
    dark = _pairs(8, scale=0.3)
    a = Scorer(checkpoint, device="cpu", precision="float32").adapt(dark, scope="encoder").score(dark).logit
    b = Scorer(checkpoint, device="cpu", precision="float32").adapt(dark, scope="all").score(dark).logit
    assert not np.allclose(a, b)
    with pytest.raises(ModelError, match="at least 2 pairs"):
        Scorer(checkpoint, device="cpu").adapt(dark[:1])


def test_signals_are_off_by_default_and_on_when_asked(checkpoint):
    x = _pairs(4)
    plain = Scorer(checkpoint, device="cpu", precision="float32").score(x)
    assert plain.tta_spread is None and plain.sharpness_ratio is None and plain.feature_distance is None
    sig = Scorer(checkpoint, device="cpu", precision="float32", signals=True).score(x)
    # signals do not change the score (the plain pass is reported), only add columns
    np.testing.assert_allclose(sig.logit, plain.logit, atol=1e-6)
    assert sig.tta_spread.shape == (4,) and (sig.tta_spread >= 0).all()
    assert sig.feature_distance is None  # this checkpoint stores no feature statistics
    # a rotation-invariant pair (constant image) has no spread
    flat = np.full((2, 2, 3, 48, 48), 0.4, np.float32)
    assert np.allclose(Scorer(checkpoint, device="cpu", precision="float32", signals=True).score(flat).tta_spread, 0, atol=1e-4)


def test_sharpness_ratio_knows_a_blurred_epoch():
    rng = np.random.default_rng(0)
    sharp = rng.random((48, 48)).astype(np.float32)
    k = np.ones(5) / 5
    blurred = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 0, np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, sharp))
    pair = np.stack([np.stack([sharp] * 3), np.stack([blurred] * 3)])[None]  # after is blurred
    same = np.stack([np.stack([sharp] * 3)] * 2)[None]
    ratio = sharpness_log_ratio(np.concatenate([pair, same, pair[:, ::-1]]))
    assert ratio[0] < -2 and ratio[1] == pytest.approx(0.0, abs=1e-9) and ratio[2] == pytest.approx(-ratio[0])


def test_feature_stats_distance_is_mahalanobis_and_round_trips(tmp_path, checkpoint):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(500, 3)) * np.array([1.0, 10.0, 0.1])
    stats = FeatureStats.fit(emb)
    # known answer: along the axis with std 10, a step of 10 is one unit; along std 0.1, 0.1 is
    d = stats.distance(np.array([stats.mean + [0, 10, 0], stats.mean + [0, 0, 0.1]]))
    np.testing.assert_allclose(d, [1.0, 1.0], rtol=0.1)
    back = FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    np.testing.assert_allclose(back.distance(emb[:5]), stats.distance(emb[:5]), rtol=1e-4)
    assert np.median(stats.relative(emb)) == pytest.approx(1.0)
    # stored in a checkpoint, the Scorer reports the distance
    net, meta = load_checkpoint(checkpoint)
    d_emb = Scorer(checkpoint, device="cpu", precision="float32").score(_pairs(40, seed=3)).embedding
    folder = save_checkpoint(net, dataclasses.replace(meta, feature_stats=FeatureStats.fit(d_emb).to_dict()), tmp_path / "m")
    s = Scorer(folder, device="cpu", precision="float32", signals=True)
    near = s.score(_pairs(4, seed=3)).feature_distance
    far = s.score(_pairs(4, seed=4, scale=0.05, offset=0.9)).feature_distance
    assert near.shape == (4,) and far.min() > near.max()
    with pytest.raises(ModelError, match="feature_stats"):
        FeatureStats.from_dict({"mean": [0.0]})
