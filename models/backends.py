"""Optional inference backends: the bundled network exported to ONNX, run by ONNX Runtime or OpenVINO.

:func:`make_scorer` returns a :class:`models.inference.Scorer` (``backend="torch"``, the default)
or an :class:`ExportedScorer` with the same ``score(images) -> ScoreBatch`` contract. The
exported scorer loads the checkpoint itself, folds batch norm into the convolutions, exports the
float32 network to ONNX once per chip shape (cached under ``$SITEWATCH_CACHE/onnx`` by weights
SHA-256, shape and torch version; the export takes seconds) and runs it on the CPU:

- ``"onnx"``: ONNX Runtime, float32 (``pip install sitewatch[onnx]``);
- ``"openvino"``: OpenVINO, bfloat16 on a CPU with native bfloat16 (``precision="auto"``), else
  float32 (``pip install sitewatch[openvino]``).

Scores are not bit-identical to the torch path (different kernels and rounding), but rank the same
sites the same way: ``benchmarks/bench_backends.py`` measures the AUC difference on a labelled
set and the speed side by side. Test-time augmentation and CUDA stay on the torch backend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from models.inference import Precision, ScoreBatch, Scorer, cpu_has_fast_bfloat16
from sitewatch.errors import ModelError, UsageError

log = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "openvino"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "openvino")
_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}


def _cache_dir() -> Path:
    env = os.environ.get("SITEWATCH_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "sitewatch") / "onnx"


def _import_runtime(backend: str) -> Any:
    package = _PACKAGES[backend]
    try:
        if backend == "onnx":
            import onnxruntime  # noqa: PLC0415

            return onnxruntime
        import openvino  # noqa: PLC0415

        return openvino
    except ImportError:
        raise UsageError(
            f"backend {backend!r} needs the {package} package: pip install 'sitewatch[{backend}]' "
            "(or use the torch backend)"
        ) from None


class _TupleOutputs(nn.Module):
    """Wraps the network so that it returns a plain tuple (what the ONNX exporter needs)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.inner(x)
        return out.logit, out.heatmap, out.embedding


def export_onnx(model: str | Path, path: Path, *, height: int, width: int) -> Path:
    """Export a checkpoint's network (batch norm folded, float32) to an ONNX file, batch dynamic.

    Args:
        model: a checkpoint folder or ``"default"``.
        path: where to write the ``.onnx`` file (written to a temporary name, then renamed).
        height, width: the chip shape (the network's centre pooling depends on it).

    Returns:
        ``path``.
    """
    from models.checkpoint import load_checkpoint  # noqa: PLC0415
    from models.inference import fuse_conv_batchnorm  # noqa: PLC0415

    net, meta = load_checkpoint(model, device="cpu")
    fuse_conv_batchnorm(net)
    wrapped = _TupleOutputs(net).eval()
    example = torch.zeros((2, 2, meta.in_channels, height, width), dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        import warnings  # noqa: PLC0415

        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                (example,),
                tmp,
                input_names=["pairs"],
                output_names=["logit", "heatmap", "embedding"],
                dynamic_axes={name: {0: "batch"} for name in ("pairs", "logit", "heatmap", "embedding")},
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class ExportedScorer:
    """Scores pairs with the exported network in ONNX Runtime or OpenVINO (CPU).

    Args:
        model: a checkpoint folder or ``"default"``.
        backend: ``"onnx"`` or ``"openvino"``.
        threads: CPU threads for the runtime (None: the runtime's default).
        precision: ``"auto"`` (OpenVINO: bfloat16 where the CPU has it natively), ``"float32"``
            or ``"bfloat16"`` (OpenVINO only).
        batch_size: pairs per forward pass; larger inputs to :meth:`score` are split.

    Attributes:
        meta: the checkpoint's :class:`models.checkpoint.CheckpointMeta`.
        backend: the runtime used.
        precision: ``"float32"`` or ``"bfloat16"``, as run.

    Raises:
        UsageError: the runtime package is missing, or a setting it cannot honour.
        ModelError: the checkpoint cannot be loaded.
    """

    def __init__(
        self,
        model: str | Path = "default",
        *,
        backend: Backend = "onnx",
        threads: int | None = None,
        precision: Precision = "auto",
        batch_size: int = 64,
    ) -> None:
        from models.checkpoint import load_checkpoint  # noqa: PLC0415

        if backend not in _PACKAGES:
            raise UsageError(f"backend {backend!r} is not one of {', '.join(_PACKAGES)}")
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        if precision == "float16" or (precision == "bfloat16" and backend == "onnx"):
            raise UsageError(f"backend {backend!r} does not run {precision}; use 'auto' or 'float32'")
        self._runtime = _import_runtime(backend)
        self.backend = backend
        self.model_dir = str(model)
        self.batch_size = batch_size
        self.threads = threads
        if backend == "openvino" and (precision == "bfloat16" or (precision == "auto" and cpu_has_fast_bfloat16())):
            self.precision = "bfloat16"
        else:
            self.precision = "float32"
        net, self.meta = load_checkpoint(model, device="cpu")  # checks the checkpoint and its hash
        self._embedding_dim = int(net.score.in_features)  # type: ignore[union-attr]
        del net
        self._sessions: dict[tuple[int, int], Any] = {}
        log.info("scorer: %s exported to ONNX, %s %s", self.meta.arch, backend, self.precision)

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the checkpoint's weights file (for provenance)."""
        return self.meta.weights_sha256

    @property
    def temperature(self) -> float:
        """Calibration temperature from the checkpoint."""
        return float(self.meta.temperature)

    def onnx_path(self, height: int, width: int) -> Path:
        """The cached ONNX export for one chip shape."""
        key = hashlib.sha256(f"{self.meta.weights_sha256}|{height}x{width}|{torch.__version__}".encode()).hexdigest()[:20]
        return _cache_dir() / f"{self.meta.arch}-{key}.onnx"

    def _session(self, height: int, width: int) -> Any:
        sess = self._sessions.get((height, width))
        if sess is not None:
            return sess
        path = self.onnx_path(height, width)
        if not path.is_file():
            log.info("exporting the model to ONNX for %dx%d chips: %s", height, width, path)
            export_onnx(self.model_dir, path, height=height, width=width)
        if self.backend == "onnx":
            ort = self._runtime
            opts = ort.SessionOptions()
            if self.threads is not None:
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

            def run(x: np.ndarray) -> list[np.ndarray]:
                return session.run(None, {"pairs": x})

        else:
            core = self._runtime.Core()
            props: dict[str, Any] = {
                "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bfloat16" else "f32",
                "PERFORMANCE_HINT": "LATENCY",
            }
            if self.threads is not None:
                props["INFERENCE_NUM_THREADS"] = self.threads
            compiled = core.compile_model(core.read_model(str(path)), "CPU", props)

            def run(x: np.ndarray) -> list[np.ndarray]:
                out = compiled(x)
                return [np.asarray(out[i]) for i in range(3)]

        self._sessions[(height, width)] = run
        return run

    def score(self, images: np.ndarray) -> ScoreBatch:
        """Score a batch of pairs (the contract of :meth:`models.inference.Scorer.score`)."""
        if not isinstance(images, np.ndarray):
            raise ModelError(f"ExportedScorer.score expects a numpy array, got {type(images).__name__}")
        if images.ndim != 5 or images.shape[1] != 2:
            raise ModelError(f"ExportedScorer.score expects pairs shaped (B, 2, C, H, W), got {images.shape}")
        if images.shape[2] != self.meta.in_channels:
            raise ModelError(
                f"model {self.meta.arch} takes {self.meta.in_channels} channel(s) but the pairs have "
                f"{images.shape[2]}; set tiles.bands to {self.meta.in_channels} band(s)"
            )
        if not np.issubdtype(images.dtype, np.floating):
            raise ModelError(f"pairs must be float in [0, 1], got dtype {images.dtype}")
        b, _, _, h, w = images.shape
        if min(h, w) < 16 and b > 0:
            raise ModelError(f"pairs of {h}x{w} px are too small (min 16)")
        if b == 0:
            return ScoreBatch(
                prob=np.zeros(0, np.float64),
                logit=np.zeros(0, np.float64),
                heatmap=np.zeros((0, h, w), np.float32),
                embedding=np.zeros((0, self._embedding_dim), np.float32),
            )
        run = self._session(h, w)
        logits, heats, embeds = [], [], []
        for start in range(0, b, self.batch_size):
            chunk = np.nan_to_num(np.asarray(images[start : start + self.batch_size], dtype=np.float32), nan=0.0)
            np.clip(chunk, 0.0, 1.0, out=chunk)
            logit, heat, embed = run(np.ascontiguousarray(chunk))
            logits.append(np.asarray(logit, np.float32).reshape(-1))
            heats.append(expit(np.asarray(heat, np.float32)[:, 0]))
            embeds.append(np.asarray(embed, np.float32))
        logit_np = np.concatenate(logits).astype(np.float64)
        return ScoreBatch(
            prob=expit(logit_np / self.temperature),
            logit=logit_np,
            heatmap=np.concatenate(heats).astype(np.float32, copy=False),
            embedding=np.concatenate(embeds).astype(np.float32, copy=False),
        )


def make_scorer(
    model: str | Path = "default",
    *,
    backend: Backend = "torch",
    device: str = "auto",
    tta: bool = False,
    threads: int | None = None,
    precision: Precision = "auto",
    batch_size: int = 64,
) -> Scorer | ExportedScorer:
    """The scorer for a backend (``"torch"``: :class:`models.inference.Scorer`).

    Raises:
        UsageError: an unknown backend, or a setting the exported backends cannot honour
            (test-time augmentation, a CUDA device).
    """
    if backend == "torch":
        return Scorer(model, device=device, tta=tta, threads=threads, precision=precision, batch_size=batch_size)
    if backend not in BACKENDS:
        raise UsageError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if tta:
        raise UsageError(f"backend {backend!r} does not do test-time augmentation; use the torch backend for tta")
    if device not in ("auto", "cpu"):
        raise UsageError(f"backend {backend!r} runs on the CPU; use the torch backend for device {device!r}")
    return ExportedScorer(model, backend=backend, threads=threads, precision=precision, batch_size=batch_size)
