"""models.mobilenetv2 builds torchvision's MobileNetV2 exactly, without importing torchvision.

Exactly means: the same parameter and buffer names, shapes and values under the same seed; the
global random generator left in the same state (so a seeded training run initialises its decoder
the same way); the same outputs; and the ImageNet state dict loading strictly.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from models.mobilenetv2 import MobileNetV2

tvm = pytest.importorskip("torchvision.models")


def _build_both(seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    ours = MobileNetV2()
    ours_rng = torch.get_rng_state()
    torch.manual_seed(seed)
    ref = tvm.mobilenet_v2(weights=None)
    ref_rng = torch.get_rng_state()
    return ours, ours_rng, ref, ref_rng


def test_same_tensors_names_and_random_state_as_torchvision() -> None:
    ours, ours_rng, ref, ref_rng = _build_both(1234)
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for name in b:
        assert a[name].shape == b[name].shape, name
        assert torch.equal(a[name], b[name]), name
    assert torch.equal(ours_rng, ref_rng), "the global generator must end in the same state"
    assert [type(m).__name__ for m in ours.modules() if not list(m.children())] == [
        type(m).__name__ for m in ref.modules() if not list(m.children())
    ]


def test_same_outputs_as_torchvision_in_eval_and_train_mode() -> None:
    ours, _, ref, _ = _build_both(7)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for train in (False, True):
        ours.train(train)
        ref.train(train)
        with torch.no_grad():
            torch.manual_seed(0)  # dropout draws the same mask
            ya = ours(x)
            torch.manual_seed(0)
            yb = ref(x)
        assert torch.equal(ya, yb)
        assert torch.equal(ours.features[:14](x), ref.features[:14](x))


def test_imagenet_state_dict_loads_strictly() -> None:
    ref = tvm.mobilenet_v2(weights=None)
    ours = MobileNetV2()
    ours.load_state_dict(ref.state_dict(), strict=True)


def test_scoring_does_not_import_torchvision() -> None:
    code = (
        "import sys\n"
        "from models.inference import Scorer\n"
        "s = Scorer('default', threads=1)\n"
        "import numpy as np\n"
        "s.score(np.zeros((1, 2, 3, 128, 128), np.float32))\n"
        "assert 'torchvision' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torchvision'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
