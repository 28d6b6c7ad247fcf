"""The exported backends (ONNX Runtime, OpenVINO) score like the torch path."""

from __future__ import annotations

import numpy as np
import pytest

from models.backends import ExportedScorer, make_scorer
from models.inference import Scorer
from sitewatch.errors import UsageError


def _pairs(n=6, px=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2, 3, px, px), dtype=np.float32) * 0.3 + 0.3
    x[: n // 2, 1, :, 20:44, 20:44] = 0.05  # a dark change in the centre of half the pairs
    return x


@pytest.fixture(scope="module")
def torch_result():
    return Scorer("default", device="cpu", threads=1, precision="float32").score(_pairs())


@pytest.mark.parametrize("backend,precision,tol", [("onnx", "float32", 1e-4), ("openvino", "float32", 1e-3), ("openvino", "auto", 0.1)])
def test_exported_backend_agrees_with_torch(backend, precision, tol, torch_result, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime" if backend == "onnx" else "openvino")
    monkeypatch.setenv("SITEWATCH_CACHE", str(tmp_path))
    scorer = ExportedScorer("default", backend=backend, threads=1, precision=precision, batch_size=4)
    got = scorer.score(_pairs())  # 6 pairs in batches of 4: the split path too
    assert scorer.onnx_path(64, 64).is_file()  # exported once, cached by weights and shape
    assert got.prob.shape == (6,) and got.heatmap.shape == (6, 64, 64) and got.embedding.shape == torch_result.embedding.shape
    assert np.abs(got.logit - torch_result.logit).max() < tol * max(1.0, np.abs(torch_result.logit).max())
    assert np.array_equal(np.argsort(got.prob), np.argsort(torch_result.prob)) or tol >= 0.1
    assert ((got.heatmap >= 0) & (got.heatmap <= 1)).all()
    empty = scorer.score(np.zeros((0, 2, 3, 64, 64), np.float32))
    assert empty.prob.shape == (0,) and empty.embedding.shape == (0, torch_result.embedding.shape[1])


def test_make_scorer_choices_and_refusals():
    assert isinstance(make_scorer("default", backend="torch", device="cpu", threads=1), Scorer)
    with pytest.raises(UsageError, match="test-time augmentation"):
        make_scorer("default", backend="onnx", tta=True)
    with pytest.raises(UsageError, match="runs on the CPU"):
        make_scorer("default", backend="openvino", device="cuda")
    with pytest.raises(UsageError, match="not one of"):
        make_scorer("default", backend="tensorrt")  # type: ignore[arg-type]
