"""The checkpoint format: safetensors + meta.json, round trips, and clear mismatch errors."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest
import torch

from models import default_model_dir
from models.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    CheckpointMeta,
    file_sha256,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from models.factory import build_model
from sitewatch.errors import ModelError

ARCH = "siam-mobilenetv2-lite"


@pytest.fixture(scope="module")
def trained_like():
    """A model with non-trivial BN statistics (a few training-mode passes)."""
    torch.manual_seed(0)
    model = build_model(ARCH, pretrained=False, log_init=False).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 2, 3, 32, 32))
    return model.eval()


def _meta(**kw) -> CheckpointMeta:
    base = dict(
        arch=ARCH,
        temperature=1.7,
        operating_points={"screening": 0.25, "evidence": 0.8},
        metrics={"val_ap": 0.91},
        data_hashes={"synth:64": "abc123"},
        train_config={"train": {"epochs": 3}},
    )
    base.update(kw)
    return CheckpointMeta(**base)


def _outputs(model, seed=0):
    x = torch.rand(3, 2, 3, 48, 48, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


def test_round_trip_float32_is_exact(tmp_path, trained_like):
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck", weights_dtype="float32")
    assert sorted(p.name for p in folder.iterdir()) == [META_FILE, WEIGHTS_FILE]
    model, meta = load_checkpoint(folder)
    assert not model.training
    ref, out = _outputs(trained_like), _outputs(model)
    torch.testing.assert_close(out.logit, ref.logit, atol=0, rtol=0)
    torch.testing.assert_close(out.heatmap, ref.heatmap, atol=0, rtol=0)
    assert meta.temperature == 1.7
    assert meta.operating_points == {"screening": 0.25, "evidence": 0.8}
    assert meta.data_hashes == {"synth:64": "abc123"}
    assert meta.train_config == {"train": {"epochs": 3}}
    assert meta.weights_sha256 == file_sha256(folder / WEIGHTS_FILE)
    assert meta.created and meta.sitewatch_version
    assert meta.normalisation["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_round_trip_float16_is_close_and_smaller(tmp_path, trained_like):
    f16 = save_checkpoint(trained_like, _meta(), tmp_path / "f16")
    f32 = save_checkpoint(trained_like, _meta(), tmp_path / "f32", weights_dtype="float32")
    size16 = (f16 / WEIGHTS_FILE).stat().st_size
    size32 = (f32 / WEIGHTS_FILE).stat().st_size
    assert size16 < 0.6 * size32
    model, _ = load_checkpoint(f16)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ref, out = _outputs(trained_like), _outputs(model)
    torch.testing.assert_close(out.logit, ref.logit, atol=2e-2, rtol=2e-2)


def test_weights_file_is_safetensors_not_pickle(tmp_path, trained_like):
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck")
    raw = (folder / WEIGHTS_FILE).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["arch"] == ARCH
    assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:4]  # no pickle / zip
    assert (folder / WEIGHTS_FILE).stat().st_mode & 0o044  # readable by others (package data)


def test_meta_json_is_plain_json_with_all_fields(tmp_path, trained_like):
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck")
    data = json.loads((folder / META_FILE).read_text())
    names = {f.name for f in dataclasses.fields(CheckpointMeta)}
    assert set(data) == names
    assert read_meta(folder) == load_checkpoint(folder)[1]


def _rewrite_meta(folder, **changes):
    data = json.loads((folder / META_FILE).read_text())
    data.update(changes)
    (folder / META_FILE).write_text(json.dumps(data))


def test_unknown_arch_in_meta_is_named(tmp_path, trained_like):
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck")
    _rewrite_meta(folder, arch="siam-unet-huge")
    with pytest.raises(ModelError, match=r"unknown architecture 'siam-unet-huge'.*siam-resnet18"):
        load_checkpoint(folder)


def test_other_arch_in_meta_reports_tensor_mismatch(tmp_path, trained_like):
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck")
    _rewrite_meta(folder, arch="siam-resnet18")
    with pytest.raises(ModelError, match=r"does not match architecture 'siam-resnet18'.*missing"):
        load_checkpoint(folder)


def test_in_channels_mismatch_reports_shapes(tmp_path, trained_like):
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck")
    _rewrite_meta(folder, in_channels=4)
    with pytest.raises(ModelError) as exc:
        load_checkpoint(folder)
    msg = str(exc.value)
    assert "in_channels=4" in msg and "shape mismatch" in msg
    assert "file (32, 3, 3, 3) vs code (32, 4, 3, 3)" in msg  # the first conv, named


def test_changed_weights_fail_the_hash_check(tmp_path, trained_like):
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck")
    raw = bytearray((folder / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="SHA-256"):
        load_checkpoint(folder)


def test_missing_and_corrupt_files(tmp_path, trained_like):
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="meta.json is missing"):
        load_checkpoint(tmp_path / "empty")
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck")
    (folder / META_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_checkpoint(folder)
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck2")
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match="model.safetensors is missing"):
        load_checkpoint(folder)
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck3")
    _rewrite_meta(folder, weights_sha256="")
    (folder / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_checkpoint(folder)


def test_bad_meta_values(tmp_path, trained_like):
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck")
    _rewrite_meta(folder, temperature=-1)
    with pytest.raises(ModelError, match="temperature"):
        load_checkpoint(folder)
    _rewrite_meta(folder, temperature=1.0, operating_points={"evidence": 7})
    with pytest.raises(ModelError, match="evidence"):
        load_checkpoint(folder)
    _rewrite_meta(folder, operating_points={}, in_channels="three")
    with pytest.raises(ModelError, match="in_channels"):
        load_checkpoint(folder)
    data = json.loads((folder / META_FILE).read_text())
    del data["arch"]
    (folder / META_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="'arch' is missing"):
        load_checkpoint(folder)


def test_unknown_meta_keys_are_ignored_with_a_warning(tmp_path, trained_like, caplog):
    folder = save_checkpoint(trained_like, _meta(), tmp_path / "ck")
    _rewrite_meta(folder, future_field=1)
    _, meta = load_checkpoint(folder)
    assert meta.arch == ARCH
    assert "future_field" in caplog.text


def test_save_refuses_meta_that_disagrees_with_the_model(tmp_path, trained_like):
    with pytest.raises(ModelError, match="meta.arch"):
        save_checkpoint(trained_like, _meta(arch="siam-resnet18"), tmp_path / "ck")
    with pytest.raises(ModelError, match="in_channels"):
        save_checkpoint(trained_like, _meta(in_channels=4), tmp_path / "ck")


def test_bundled_default_model_loads_and_is_small():
    folder = default_model_dir()
    assert (folder / META_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()
    assert (folder / WEIGHTS_FILE).stat().st_size < 20 * 1024 * 1024
    model, meta = load_checkpoint("default")
    assert meta.input_px > 0 and meta.temperature > 0
    assert set(meta.operating_points) >= {"screening", "evidence"}
    with torch.no_grad():
        out = model(torch.rand(1, 2, meta.in_channels, meta.input_px, meta.input_px))
    assert out.heatmap.shape == (1, 1, meta.input_px, meta.input_px)


def test_an_uncalibrated_checkpoint_carries_no_operating_points(tmp_path, trained_like):
    # no thresholds are made up: only calibration puts operating points into a checkpoint
    assert CheckpointMeta(arch=ARCH).operating_points == {}
    folder = save_checkpoint(trained_like, CheckpointMeta(arch=ARCH), tmp_path / "ck")
    data = json.loads((folder / META_FILE).read_text())
    assert data["operating_points"] == {}
    del data["operating_points"]  # a meta.json without the key reads the same
    (folder / META_FILE).write_text(json.dumps(data))
    assert read_meta(folder).operating_points == {}
