"""The Scorer: calibrated scores, heatmaps, precision choices, TTA and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointMeta, save_checkpoint
from models.factory import build_model
from models.inference import ScoreBatch, Scorer, choose_precision, dihedral, undo_dihedral
from sitewatch.errors import ModelError, UsageError

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


def _pairs(b=5, h=48, w=48, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((b, 2, 3, h, w), dtype=np.float32)


def test_scores_have_the_contract_shapes_and_dtypes(checkpoint):
    scorer = Scorer(checkpoint, device="cpu", precision="float32")
    out = scorer.score(_pairs(5, 48, 80))
    assert isinstance(out, ScoreBatch)
    assert out.prob.shape == (5,) and out.prob.dtype == np.float64
    assert out.logit.shape == (5,) and out.logit.dtype == np.float64
    assert out.heatmap.shape == (5, 48, 80) and out.heatmap.dtype == np.float32
    assert out.embedding.shape[0] == 5 and out.embedding.dtype == np.float32
    assert ((out.heatmap >= 0) & (out.heatmap <= 1)).all()
    assert scorer.weights_sha256 == scorer.meta.weights_sha256 and len(scorer.weights_sha256) == 64


def test_probability_is_calibrated_with_the_temperature(checkpoint):
    out = Scorer(checkpoint, device="cpu", precision="float32").score(_pairs())
    np.testing.assert_allclose(out.prob, 1.0 / (1.0 + np.exp(-out.logit / 2.0)), rtol=1e-12)


def test_scores_match_the_plain_model_in_float32(checkpoint):
    from models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    x = _pairs(3)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    out = Scorer(checkpoint, device="cpu", precision="float32").score(x)
    np.testing.assert_allclose(out.logit, ref.logit.double().numpy(), atol=1e-4)
    np.testing.assert_allclose(out.heatmap, torch.sigmoid(ref.heatmap[:, 0]).numpy(), atol=1e-4)


def test_bfloat16_is_close_to_float32(checkpoint):
    x = _pairs(4, seed=3)
    f32 = Scorer(checkpoint, device="cpu", precision="float32").score(x)
    bf16 = Scorer(checkpoint, device="cpu", precision="bfloat16").score(x)
    spread = np.ptp(f32.logit) + 1e-3
    assert np.abs(bf16.logit - f32.logit).max() < max(0.1 * spread, 0.05)
    assert np.abs(bf16.heatmap - f32.heatmap).max() < 0.05


def test_chunking_does_not_change_results(checkpoint):
    x = _pairs(5, seed=4)
    whole = Scorer(checkpoint, device="cpu", precision="float32").score(x)
    chunked = Scorer(checkpoint, device="cpu", precision="float32", batch_size=2).score(x)
    np.testing.assert_allclose(chunked.logit, whole.logit, atol=1e-5)
    np.testing.assert_allclose(chunked.heatmap, whole.heatmap, atol=1e-5)


def test_dihedral_transforms_are_eight_distinct_invertible_maps():
    x = torch.rand(2, 3, 5, 5)
    seen = []
    for k in range(8):
        y = dihedral(x, k)
        torch.testing.assert_close(undo_dihedral(y, k), x)
        seen.append(y)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.equal(seen[i], seen[j])


def test_tta_makes_the_score_rotation_invariant(checkpoint):
    x = _pairs(2, seed=5)
    rotated = np.ascontiguousarray(np.rot90(x, 1, axes=(-2, -1)))
    plain = Scorer(checkpoint, device="cpu", precision="float32")
    tta = Scorer(checkpoint, device="cpu", precision="float32", tta=True)
    a, b = tta.score(x), tta.score(rotated)
    np.testing.assert_allclose(a.logit, b.logit, atol=1e-6)
    # the heatmap follows the image: rotating the input rotates the averaged heatmap
    np.testing.assert_allclose(np.rot90(a.heatmap, 1, axes=(-2, -1)), b.heatmap, atol=1e-6)
    # without TTA the model is not exactly invariant, so the checks above are not vacuous
    p, q = plain.score(x), plain.score(rotated)
    assert np.abs(p.logit - q.logit).max() > 1e-5
    assert np.abs(np.rot90(p.heatmap, 1, axes=(-2, -1)) - q.heatmap).max() > 1e-4


def test_bad_inputs_are_explained(checkpoint):
    scorer = Scorer(checkpoint, device="cpu")
    with pytest.raises(ModelError, match=r"\(B, 2, C, H, W\)"):
        scorer.score(np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(ModelError, match="channel"):
        scorer.score(np.zeros((2, 2, 4, 64, 64), np.float32))
    with pytest.raises(ModelError, match="float"):
        scorer.score(np.zeros((2, 2, 3, 64, 64), np.uint8))
    with pytest.raises(ModelError, match="numpy"):
        scorer.score(torch.zeros(2, 2, 3, 64, 64))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="device"):
        Scorer(checkpoint, device="tpu")
    with pytest.raises(UsageError, match="precision"):
        Scorer(checkpoint, precision="int4")  # type: ignore[arg-type]


def test_empty_batch_and_nan_pixels(checkpoint):
    scorer = Scorer(checkpoint, device="cpu")
    empty = scorer.score(np.zeros((0, 2, 3, 64, 64), np.float32))
    assert empty.prob.shape == (0,) and empty.heatmap.shape == (0, 64, 64)
    assert empty.embedding.shape[1] > 0
    x = _pairs(2)
    x[0, 1, :, :10, :10] = np.nan
    out = scorer.score(x)
    assert np.isfinite(out.prob).all() and np.isfinite(out.heatmap).all()


def test_default_model_scores():
    scorer = Scorer("default", device="cpu")
    px = scorer.meta.input_px
    out = scorer.score(_pairs(2, px, px))
    assert out.prob.shape == (2,) and ((out.prob > 0) & (out.prob < 1)).all()


def test_precision_choice_per_device():
    assert choose_precision(torch.device("cpu"), "float32") is None
    assert choose_precision(torch.device("cpu"), "bfloat16") is torch.bfloat16
    auto = choose_precision(torch.device("cpu"), "auto")
    assert auto in (None, torch.bfloat16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_scores_match_cpu(checkpoint):
    x = _pairs(4, seed=7)
    cpu = Scorer(checkpoint, device="cpu", precision="float32").score(x)
    gpu = Scorer(checkpoint, device="cuda", precision="float32").score(x)
    np.testing.assert_allclose(gpu.logit, cpu.logit, atol=1e-3)


@pytest.mark.parametrize("arch", ["siam-mobilenetv2-lite", "siam-mobilenetv2", "siam-resnet18"])
def test_folding_batchnorm_keeps_outputs(arch):
    import copy

    from models.inference import fuse_conv_batchnorm

    torch.manual_seed(0)
    model = build_model(arch, pretrained=False, log_init=False).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, 2, 3, 48, 48))
    model.eval()
    fused = copy.deepcopy(model)
    n = fuse_conv_batchnorm(fused)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert n >= 0.9 * n_bn  # nearly every batch norm follows a conv
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules()) == n_bn - n
    x = torch.rand(2, 2, 3, 48, 48)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    torch.testing.assert_close(out.logit, ref.logit, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.heatmap, ref.heatmap, atol=1e-4, rtol=1e-4)
    with pytest.raises(ModelError, match="eval"):
        fuse_conv_batchnorm(model.train())
