"""The checkpoint format: a folder with ``model.safetensors`` and ``meta.json``. Never pickle.

``model.safetensors`` holds the state dict (learned weights stored as float16 by default to keep
the bundled model small; batch-norm statistics and integer buffers keep their precision).
``meta.json`` holds :class:`CheckpointMeta`: the architecture and input contract, the calibration
temperature and operating points, metrics, the hashes of the training data, the training config
and the SHA-256 of the weights file. Loading checks all of this against the code and raises
:class:`sitewatch.errors.ModelError` saying exactly what does not match.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from models import default_model_dir
from models.config import ModelConfig
from models.envelope import TrainingEnvelope, envelope_from_train_config
from models.factory import ARCHITECTURES, build_model
from sitewatch.errors import ModelError
from sitewatch.hashing import sha256_file as file_sha256

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
#: Version of the folder layout and meta schema written by this code.
FORMAT_VERSION = 1

#: Default class map: the site score is the probability of the positive class.
DEFAULT_CLASS_MAP: dict[str, int] = {"negative": 0, "positive": 1}


def _sitewatch_version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("sitewatch")
    except Exception:  # noqa: BLE001 (not installed: running from a checkout)
        return "unknown"


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything needed to use and trust a checkpoint; stored as ``meta.json``.

    Attributes:
        arch: factory name (see :data:`models.factory.ARCHITECTURES`).
        in_channels: image channels ``C`` of the input ``(B, 2, C, H, W)``.
        input_px: chip side in pixels the model was trained on.
        gsd_m: ground sample distance of the training chips, metres per pixel.
        class_map: class name -> index; the score is the probability of ``"positive"``
            (xBD major-damage or destroyed).
        temperature: calibration temperature; probability = ``sigmoid(logit / temperature)``.
        operating_points: name -> threshold on the calibrated probability (e.g. ``"screening"``
            for high recall, ``"evidence"`` for high precision), as chosen by calibration
            (``train.screening_recall``, ``train.evidence_precision``). Empty = not calibrated:
            no threshold is made up here (``detect`` then warns and uses its documented
            fallback; ``evaluate`` asks for ``evaluate.threshold``).
        metrics: validation metrics (floats; ``{"provisional": true}`` marks an untrained model).
        data_hashes: training dataset name -> SHA-256 (or another stable fingerprint).
        train_config: the effective training config (plain nested dict).
        created: ISO 8601 UTC time the checkpoint was written.
        sitewatch_version: version of the code that wrote it.
        weights_sha256: SHA-256 of ``model.safetensors`` (filled in by :func:`save_checkpoint`).
        normalisation: how the network normalises its ``[0, 1]`` input (mean/std per channel);
            informational, the network does it internally.
        format_version: checkpoint layout version.
        feature_stats: mean and principal axes of the training pairs' site embeddings
            (:class:`models.assessment.FeatureStats`), for the scorer's ``feature_distance``;
            empty for checkpoints written before it existed (the signal is then not computed).
        envelope: the acquisition conditions the training pairs covered
            (:class:`models.envelope.TrainingEnvelope` as a dict); empty for checkpoints written
            before it existed, whose envelope :func:`training_envelope` derives from
            ``train_config``.
        epoch_head: the network has the per-epoch building head (``model.epoch_head``); false
            (also when the key is absent, as in checkpoints written before it existed) = the
            plain network.
    """

    arch: str
    in_channels: int = 3
    input_px: int = 128
    gsd_m: float = 0.5
    class_map: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CLASS_MAP))
    temperature: float = 1.0
    operating_points: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data_hashes: dict[str, str] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    sitewatch_version: str = ""
    weights_sha256: str = ""
    normalisation: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    feature_stats: dict[str, Any] = field(default_factory=dict)
    envelope: dict[str, Any] = field(default_factory=dict)
    epoch_head: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ModelError(f"checkpoint temperature must be a positive number, got {self.temperature!r}")
        for name, threshold in self.operating_points.items():
            if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
                raise ModelError(
                    f"operating point {name!r} must be a probability in [0, 1], got {threshold!r}"
                )

    @property
    def provisional(self) -> bool:
        """True for a placeholder model whose head was never trained."""
        return bool(self.metrics.get("provisional", False))

    def to_json(self) -> str:
        """The metadata as pretty JSON text."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False, default=str) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "meta.json") -> "CheckpointMeta":
        """Build from parsed JSON, checking required keys; unknown keys are ignored with a warning.

        Raises:
            ModelError: not a mapping, ``arch`` missing, or a value of the wrong kind.
        """
        if not isinstance(data, dict):
            raise ModelError(f"{where}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        if "arch" not in data:
            raise ModelError(f"{where}: required key 'arch' is missing (one of {', '.join(ARCHITECTURES)})")
        unknown = sorted(set(data) - names)
        if unknown:
            logger.warning("%s: ignoring unknown key(s) %s (written by a newer sitewatch?)", where, ", ".join(unknown))
        kwargs = {k: v for k, v in data.items() if k in names}
        for key, kind in (("class_map", dict), ("operating_points", dict), ("metrics", dict),
                          ("data_hashes", dict), ("train_config", dict), ("normalisation", dict),
                          ("feature_stats", dict), ("envelope", dict)):
            if key in kwargs and not isinstance(kwargs[key], kind):
                raise ModelError(f"{where}: {key!r} must be a JSON object, got {kwargs[key]!r}")
        for key in ("in_channels", "input_px", "format_version"):
            if key in kwargs and (isinstance(kwargs[key], bool) or not isinstance(kwargs[key], int)):
                raise ModelError(f"{where}: {key!r} must be an integer, got {kwargs[key]!r}")
        if "epoch_head" in kwargs and not isinstance(kwargs["epoch_head"], bool):
            raise ModelError(f"{where}: 'epoch_head' must be true or false, got {kwargs['epoch_head']!r}")
        for key in ("gsd_m", "temperature"):
            if key in kwargs and (isinstance(kwargs[key], bool) or not isinstance(kwargs[key], (int, float))):
                raise ModelError(f"{where}: {key!r} must be a number, got {kwargs[key]!r}")
        try:
            return cls(**kwargs)
        except ModelError as exc:
            raise ModelError(f"{where}: {exc}") from None


def _storage_state(model: nn.Module, weights_dtype: Literal["float16", "float32"]) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors; learned float weights cast to ``weights_dtype``.

    Batch-norm running statistics stay float32 (float16 would lose small variances).
    """
    params = {name for name, _ in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    target = torch.float16 if weights_dtype == "float16" else torch.float32
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(target if name in params else torch.float32)
        out[name] = t.contiguous()
    return out


def save_checkpoint(
    model: nn.Module,
    meta: CheckpointMeta,
    folder: str | Path,
    *,
    weights_dtype: Literal["float16", "float32"] = ModelConfig.weights_dtype,
) -> Path:
    """Write ``model.safetensors`` and ``meta.json`` into ``folder``; returns the folder.

    ``meta.weights_sha256``, ``created`` (when empty), ``sitewatch_version`` (when empty) and
    ``normalisation`` (when empty) are filled in. The model's architecture and input channels
    must agree with ``meta``.

    Args:
        model: a network built by :func:`models.factory.build_model`.
        meta: its metadata.
        folder: output folder (created).
        weights_dtype: storage type of learned weights ("float16" halves the size).

    Raises:
        ModelError: ``meta`` disagrees with the model, or the folder cannot be written.
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    model_arch = getattr(model, "arch", None)
    if model_arch and model_arch != meta.arch:
        raise ModelError(f"cannot save: model is {model_arch!r} but meta.arch is {meta.arch!r}")
    model_channels = getattr(model, "in_channels", None)
    if model_channels is not None and model_channels != meta.in_channels:
        raise ModelError(
            f"cannot save: model takes {model_channels} channels but meta.in_channels is {meta.in_channels}"
        )
    model_head = bool(getattr(model, "epoch_head", False))
    if model_head != meta.epoch_head:
        raise ModelError(
            f"cannot save: the model {'has' if model_head else 'has no'} per-epoch building head but "
            f"meta.epoch_head is {str(meta.epoch_head).lower()}"
        )
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        weights_path = folder / WEIGHTS_FILE
        tmp = folder / (WEIGHTS_FILE + ".partial")
        save_file(
            _storage_state(model, weights_dtype),
            str(tmp),
            metadata={"arch": meta.arch, "format": "sitewatch", "format_version": str(FORMAT_VERSION)},
        )
        tmp.replace(weights_path)
        weights_path.chmod(0o644)  # safetensors writes 0600; a checkpoint is shareable data
        from models.siamese import channel_stats  # noqa: PLC0415

        mean, std = channel_stats(meta.in_channels)
        meta = dataclasses.replace(
            meta,
            weights_sha256=file_sha256(weights_path),
            created=meta.created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            sitewatch_version=meta.sitewatch_version or _sitewatch_version(),
            normalisation=meta.normalisation or {"input_range": [0.0, 1.0], "mean": mean, "std": std},
        )
        (folder / META_FILE).write_text(meta.to_json(), encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot write checkpoint to {folder}: {exc}") from None
    logger.info("saved %s checkpoint to %s (weights sha256 %s)", meta.arch, folder, meta.weights_sha256[:12])
    return folder


def resolve_model_dir(folder_or_default: str | Path) -> Path:
    """``"default"`` -> the bundled model folder; anything else a path (a folder or its meta.json)."""
    if str(folder_or_default) == "default":
        return default_model_dir()
    path = Path(folder_or_default)
    if path.is_file() and path.name in (META_FILE, WEIGHTS_FILE):
        path = path.parent
    return path


def read_meta(folder_or_default: str | Path) -> CheckpointMeta:
    """Only the metadata of a checkpoint (cheap: no weights read).

    Raises:
        ModelError: the folder or ``meta.json`` is missing or invalid.
    """
    folder = resolve_model_dir(folder_or_default)
    meta_path = folder / META_FILE
    if not folder.is_dir():
        raise ModelError(
            f"model folder {folder} does not exist; give a folder written by 'sitewatch train' or 'default'"
        )
    if not meta_path.is_file():
        raise ModelError(f"{meta_path} is missing: {folder} is not a sitewatch checkpoint folder")
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{meta_path} is not valid JSON ({exc})") from None
    return CheckpointMeta.from_dict(data, where=str(meta_path))


def load_checkpoint(
    folder_or_default: str | Path = "default", *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointMeta]:
    """Load a checkpoint folder (or ``"default"``) as ``(model in eval mode, meta)``.

    Checks: ``meta.json`` is valid; the architecture is known; the weights file's SHA-256 equals
    ``meta.weights_sha256``; tensor names and shapes equal those of the architecture built with
    ``meta.in_channels``. Weights are loaded as float32.

    Raises:
        ModelError: anything missing or not matching; the message says what differs.
    """
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    folder = resolve_model_dir(folder_or_default)
    meta = read_meta(folder)
    weights_path = folder / WEIGHTS_FILE
    if meta.format_version > FORMAT_VERSION:
        raise ModelError(
            f"{folder}: checkpoint format {meta.format_version} is newer than this sitewatch "
            f"understands ({FORMAT_VERSION}); upgrade sitewatch"
        )
    if meta.arch not in ARCHITECTURES:
        raise ModelError(
            f"{folder / META_FILE}: unknown architecture {meta.arch!r}; this sitewatch knows "
            f"{', '.join(ARCHITECTURES)}"
        )
    if not weights_path.is_file():
        raise ModelError(f"{weights_path} is missing: the checkpoint folder {folder} is incomplete")
    actual_sha = file_sha256(weights_path)
    if meta.weights_sha256 and actual_sha != meta.weights_sha256:
        raise ModelError(
            f"{weights_path}: SHA-256 {actual_sha[:12]}... differs from meta.json's "
            f"{meta.weights_sha256[:12]}...: the weights were changed or belong to another checkpoint"
        )
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{weights_path} is not a readable safetensors file ({exc})") from None
    model = build_model(meta.arch, pretrained=False, in_channels=meta.in_channels, log_init=False, epoch_head=meta.epoch_head)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs code {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing from the file (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) in the file (e.g. {', '.join(unexpected[:3])})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatch(es) (e.g. {'; '.join(wrong_shape[:3])})")
    if problems:
        raise ModelError(
            f"{weights_path} does not match architecture {meta.arch!r} with in_channels="
            f"{meta.in_channels}{', epoch_head=true' if meta.epoch_head else ''}: " + "; ".join(problems)
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    model.to(device).eval()
    if meta.provisional:
        logger.warning("%s is a provisional model (untrained head): scores are not meaningful", folder)
    logger.info("loaded %s from %s (weights sha256 %s)", meta.arch, folder, actual_sha[:12])
    return model, meta


def training_envelope(meta: CheckpointMeta, *, _depth: int = 0) -> TrainingEnvelope:
    """The acquisition conditions ``meta``'s training covered (:mod:`models.envelope`).

    The recorded ``meta.envelope`` when the trainer wrote one, else derived from
    ``meta.train_config`` (the bundled model); a fine-tuned model's starting checkpoint
    (``train_config["from"]``) is read when it can be (``"default"`` or a folder), else listed as
    unmeasured.
    """
    if meta.envelope:
        return TrainingEnvelope.from_dict(meta.envelope, source="meta.json")

    def start(name: str) -> TrainingEnvelope | None:
        if _depth >= 8:
            return None
        try:
            return training_envelope(read_meta(name), _depth=_depth + 1)
        except (ModelError, OSError) as exc:
            logger.info("training envelope: starting model %s not readable (%s)", name, exc)
            return None

    return envelope_from_train_config(meta.train_config, start_envelope=start)
