"""bfloat16 CPU inference with activations fused into the convolutions: same bytes, checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import models.inference as inference
from models.checkpoint import CheckpointMeta, save_checkpoint
from models.factory import build_model
from models.inference import Scorer, cpu_has_fast_bfloat16
from models.onednn import FusedConvBF16, _identical, fuse_for_bf16_cpu

ARCH = "siam-mobilenetv2-lite"

needs_bf16 = pytest.mark.skipif(not cpu_has_fast_bfloat16(), reason="this CPU has no native bfloat16")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    model = build_model(ARCH, pretrained=False, log_init=False).train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial batch-norm statistics, folded into the convolutions
            model(torch.rand(4, 2, 3, 32, 32))
    return save_checkpoint(model.eval(), CheckpointMeta(arch=ARCH, temperature=1.5), tmp_path_factory.mktemp("model"))


def _fused_count(scorer: Scorer) -> int:
    return sum(isinstance(m, FusedConvBF16) for m in scorer._net.modules())


@needs_bf16
@pytest.mark.parametrize("shape", [(5, 2, 3, 48, 80), (64, 2, 3, 128, 128)])
def test_fused_scorer_gives_the_same_bytes_as_the_autocast_path(checkpoint, monkeypatch, shape):
    pairs = np.random.default_rng(3).random(shape, dtype=np.float32)
    fused = Scorer(checkpoint, device="cpu", precision="bfloat16")
    assert _fused_count(fused) > 20  # the encoder's and the heads' convolutions
    monkeypatch.setattr(inference, "fuse_for_bf16_cpu", lambda net: 0)
    plain = Scorer(checkpoint, device="cpu", precision="bfloat16")
    assert _fused_count(plain) == 0
    a, b = fused.score(pairs), plain.score(pairs)
    for name in ("logit", "prob", "heatmap", "embedding"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


@needs_bf16
def test_the_bundled_model_is_fused_with_identical_scores(monkeypatch):
    pairs = np.random.default_rng(4).random((16, 2, 3, 128, 128), dtype=np.float32)
    fused = Scorer("default", device="cpu")
    assert _fused_count(fused) > 0
    monkeypatch.setattr(inference, "fuse_for_bf16_cpu", lambda net: 0)
    plain = Scorer("default", device="cpu")
    assert fused.score(pairs).logit.tobytes() == plain.score(pairs).logit.tobytes()


def test_float32_scoring_is_not_rewritten(checkpoint):
    assert _fused_count(Scorer(checkpoint, device="cpu", precision="float32")) == 0


@needs_bf16
def test_the_layer_check_refuses_a_layer_that_differs():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1).eval()
    with torch.no_grad():
        conv.weight.mul_(4.0)  # outputs well beyond 6, where ReLU6 and ReLU differ
    relu6 = nn.Sequential(conv, nn.ReLU6())
    assert _identical(relu6, FusedConvBF16(conv, "hardtanh", [0.0, 6.0]), 8, 1)
    # the wrong activation (ReLU instead of ReLU6) is caught by the probe
    assert not _identical(relu6, FusedConvBF16(conv, "relu", []), 8, 1)


@needs_bf16
def test_fusion_rewrites_only_convolutions_in_sequences_and_keeps_the_rest():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 3, padding="same"),
    ).eval().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = net(x)
    assert fuse_for_bf16_cpu(net) == 2  # "same" padding (a string) is left as it is
    assert isinstance(net[0], FusedConvBF16) and net[0].post_op == "hardtanh" and isinstance(net[1], nn.Identity)
    assert isinstance(net[2], FusedConvBF16) and net[2].post_op == "none"
    assert isinstance(net[3], nn.Conv2d)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = net(x)
    assert torch.equal(want, got)
