"""Contract tests every architecture passes, plus the factory's errors.

Each architecture's test class subclasses :class:`ArchitectureContract` and sets ``arch``.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from models.factory import ARCHITECTURES, build_model
from models.siamese import CentreWeightedPool, ModelOutput
from sitewatch.errors import ModelError


class ArchitectureContract:
    """Shapes, dtype, gradients, batch of one, odd sizes and channels_last for one ``arch``."""

    arch: ClassVar[str]
    size: ClassVar[int] = 48
    #: build the variant with the per-epoch building head (``model.epoch_head``)
    epoch_head: ClassVar[bool] = False

    def build(self, **kw) -> torch.nn.Module:
        return build_model(self.arch, pretrained=False, epoch_head=self.epoch_head, **kw)

    @pytest.fixture(scope="class")
    def model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return self.build().eval()

    def pairs(self, b: int, h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.rand(b, 2, c, h, w, generator=g)

    def test_output_shapes_and_dtype(self, model):
        with torch.no_grad():
            out = model(self.pairs(3, self.size, self.size))
        assert isinstance(out, ModelOutput)
        assert out.logit.shape == (3,)
        assert out.heatmap.shape == (3, 1, self.size, self.size)
        assert out.embedding.ndim == 2 and out.embedding.shape[0] == 3 and out.embedding.shape[1] > 0
        assert (out.standing is not None) == self.epoch_head
        if self.epoch_head:
            assert out.standing.shape == (3, 2)
        for t in (t for t in out if t is not None):
            assert t.dtype == torch.float32
            assert torch.isfinite(t).all()

    def test_batch_of_one_matches_batch(self, model):
        x = self.pairs(3, self.size, self.size, seed=1)
        with torch.no_grad():
            full = model(x)
            single = model(x[1:2])
        assert single.logit.shape == (1,)
        torch.testing.assert_close(single.logit, full.logit[1:2], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(single.heatmap, full.heatmap[1:2], atol=1e-4, rtol=1e-4)

    def test_odd_sizes(self, model):
        with torch.no_grad():
            out = model(self.pairs(2, 97, 131))
        assert out.logit.shape == (2,)
        assert out.heatmap.shape == (2, 1, 97, 131)

    def test_gradients_reach_every_parameter_and_both_epochs(self):
        torch.manual_seed(0)
        model = self.build().train()
        x = self.pairs(2, self.size, self.size).requires_grad_(True)
        out = model(x)
        loss = out.logit.sum() + out.heatmap.mean() + out.embedding.mean()
        if out.standing is not None:
            loss = loss + out.standing.sum()
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"no gradient reached: {missing[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        first = next(model.encoder.parameters())
        assert first.grad.abs().sum() > 0
        assert x.grad[:, 0].abs().sum() > 0 and x.grad[:, 1].abs().sum() > 0  # before and after

    def test_channels_last_gives_same_output(self, model):
        x = self.pairs(2, self.size, self.size, seed=2)
        with torch.no_grad():
            ref = model(x)
            fast = self.build(log_init=False)
            fast.load_state_dict(model.state_dict())
            fast = fast.eval().to(memory_format=torch.channels_last)
            out = fast(x)
        torch.testing.assert_close(out.logit, ref.logit, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out.heatmap, ref.heatmap, atol=1e-4, rtol=1e-4)

    def test_shared_encoder_runs_once_on_both_epochs(self, model):
        calls: list[tuple[int, ...]] = []
        handle = model.encoder.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
        try:
            with torch.no_grad():
                model(self.pairs(3, self.size, self.size))
        finally:
            handle.remove()
        assert calls == [(6, 3, self.size, self.size)]

    def test_wrong_input_shape_is_rejected(self, model):
        with pytest.raises(ValueError, match=r"\(B, 2, 3, H, W\)"):
            model(torch.rand(2, 3, self.size, self.size))

    def test_other_channel_counts(self):
        for c in (1, 4):
            m = self.build(in_channels=c, log_init=False).eval()
            with torch.no_grad():
                out = m(self.pairs(2, self.size, self.size, c=c))
            assert out.heatmap.shape == (2, 1, self.size, self.size)


class TestSiamMobilenetV2Lite(ArchitectureContract):
    arch = "siam-mobilenetv2-lite"


class TestSiamMobilenetV2(ArchitectureContract):
    arch = "siam-mobilenetv2"


class TestSiamResnet18(ArchitectureContract):
    arch = "siam-resnet18"


class TestSiamMobilenetV2LiteEpochHead(ArchitectureContract):
    arch = "siam-mobilenetv2-lite"
    epoch_head = True


class TestSiamResnet18EpochHead(ArchitectureContract):
    arch = "siam-resnet18"
    epoch_head = True


def test_every_architecture_has_a_contract_test():
    tested = {cls.arch for cls in ArchitectureContract.__subclasses__()}
    assert tested == set(ARCHITECTURES)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ModelError) as exc:
        build_model("siam-vgg99")
    msg = str(exc.value)
    assert "siam-vgg99" in msg
    for name in ARCHITECTURES:
        assert name in msg


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_in_channels(bad):
    with pytest.raises(ModelError, match="in_channels"):
        build_model(ARCHITECTURES[0], pretrained=False, in_channels=bad)


def test_centre_weighted_pool_prefers_the_centre():
    pool = CentreWeightedPool(init_sigma=0.35)
    w = pool.weights(9, 9, torch.device("cpu"), torch.float32)
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    assert w[4, 4] == w.max()
    torch.testing.assert_close(w, w.flip(0))
    torch.testing.assert_close(w, w.flip(1))
    centre = torch.zeros(1, 1, 9, 9)
    centre[..., 4, 4] = 1.0
    corner = torch.zeros(1, 1, 9, 9)
    corner[..., 0, 0] = 1.0
    assert pool(centre).item() > 10 * pool(corner).item()


def test_default_arch_in_config_is_known():
    from models.config import ModelConfig

    assert ModelConfig().arch in ARCHITECTURES
