"""Fast scoring of before/after pairs with a checkpoint: :class:`Scorer`.

CPU: ``channels_last`` weights and activations plus bfloat16 autocast when the CPU has native
bfloat16 support (measured several times faster than float32 here; see
``benchmarks/bench_model.py``), ``torch.inference_mode``. CUDA when present (bfloat16 or float16
autocast). Optional test-time augmentation over the 8 flips/90-degree rotations with averaged
logits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from scipy.special import expit
import torch
from torch import nn

from models.assessment import FeatureStats, sharpness_log_ratio
from models.checkpoint import CheckpointMeta, load_checkpoint
from models.onednn import fuse_for_bf16_cpu
from sitewatch.errors import ModelError, UsageError

logger = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16", "float16"]


class ScoreBatch(NamedTuple):
    """Scores of a batch of ``B`` pairs.

    Attributes:
        prob: calibrated probability of severe damage ``(B,)`` float64,
            ``sigmoid(logit / temperature)``.
        logit: raw site logit ``(B,)`` float64.
        heatmap: change probability per pixel ``(B, H, W)`` float32 in ``[0, 1]``.
        embedding: site descriptor ``(B, D)`` float32.
        tta_spread: standard deviation of the logit over the 8 flips/rotations ``(B,)``
            (with ``tta`` or ``signals``), else None.
        feature_distance: Mahalanobis distance of the embedding from the training pairs', over
            their median (1 = typical; :class:`models.assessment.FeatureStats`) ``(B,)``, when
            ``signals`` is on and the checkpoint stores the statistics, else None.
        sharpness_ratio: ``log(after / before)`` Laplacian energy ``(B,)`` with ``signals``, else
            None (:func:`models.assessment.sharpness_log_ratio`).
        standing: with a per-epoch building head (``meta.epoch_head``), the probability
            ``(B, 2)`` float64 that an intact building stands at the centre in the before and in
            the after epoch (uncalibrated; averaged in logit space over the flips with ``tta``),
            else None. The site ``prob`` already includes it (see :mod:`models.siamese`).
    """

    prob: np.ndarray
    logit: np.ndarray
    heatmap: np.ndarray
    embedding: np.ndarray
    tta_spread: np.ndarray | None = None
    feature_distance: np.ndarray | None = None
    sharpness_ratio: np.ndarray | None = None
    standing: np.ndarray | None = None


def choose_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given (checked).

    Raises:
        UsageError: an unknown device string or CUDA requested but not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"device {device!r} is not valid; use 'auto', 'cpu' or 'cuda[:N]'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_precision(device: torch.device, precision: Precision) -> torch.dtype | None:
    """The autocast dtype for ``device`` (None = plain float32).

    ``"auto"``: bfloat16 on a CPU with native bfloat16 (float32 otherwise, where emulated
    bfloat16 is slower); bfloat16 on CUDA when supported, else float16.
    """
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "float16":
        return torch.float16
    if precision != "auto":
        raise UsageError(f"precision {precision!r} is not one of auto, float32, bfloat16, float16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bfloat16() else None
    return None


def fuse_conv_batchnorm(model: nn.Module) -> int:
    """Fold every batch norm that directly follows a convolution into that convolution.

    Eval-mode batch norm is an affine map per channel, so it can be folded into the preceding
    convolution's weights and bias (the batch norm becomes ``nn.Identity``). Outputs are
    unchanged up to float rounding; inference skips one memory pass per layer. Covers the
    MobileNetV2 encoder, the ResNet blocks (``convN`` followed by ``bnN``; the ResNet stem is
    rebuilt as a Sequential) and the fusion/decoder blocks.

    Args:
        model: a network in eval mode (modified in place).

    Returns:
        the number of conv/batch-norm pairs folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval  # noqa: PLC0415

    if model.training:
        raise ModelError("fuse_conv_batchnorm needs a model in eval mode")
    def foldable(conv: object, bn: object) -> bool:
        return isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats

    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            pairs = list(zip(names, names[1:]))
        else:  # torchvision ResNet blocks: conv1 -> bn1, conv2 -> bn2, ... applied in sequence
            pairs = [(f"conv{i}", f"bn{i}") for i in range(1, 4)]
        for conv_name, bn_name in pairs:
            conv, bn = module._modules.get(conv_name), module._modules.get(bn_name)
            if foldable(conv, bn):
                module._modules[conv_name] = fuse_conv_bn_eval(conv, bn)  # type: ignore[arg-type]
                module._modules[bn_name] = nn.Identity()
                folded += 1
    return folded


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 flips/rotations of the last two axes (``k = 0`` is identity).

    ``k % 4`` quarter turns, then a horizontal flip when ``k >= 4``.
    """
    y = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def undo_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`dihedral`."""
    y = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(y, -(k % 4), dims=(-2, -1)) if k % 4 else y


class Scorer:
    """Scores before/after pairs with a checkpoint, as fast as the device allows.

    Args:
        model: a checkpoint folder or ``"default"`` (the bundled model).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        tta: average logits over the 8 flips/90-degree rotations (8x slower).
        signals: also compute the "out of its depth" signals of every pair (the logit spread
            over the 8 flips/rotations, the embedding's distance from the training pairs when
            the checkpoint stores their statistics, the sharpness ratio of the epochs); the
            flips make scoring 8x slower unless ``tta`` is on anyway. See :class:`ScoreBatch`.
        threads: CPU threads for torch (sets ``torch.set_num_threads``, process-wide);
            None keeps torch's setting.
        precision: ``"auto"`` chooses per device (see :func:`choose_precision`).
        batch_size: pairs per forward pass; larger inputs to :meth:`score` are split.

    Attributes:
        meta: the checkpoint's :class:`models.checkpoint.CheckpointMeta`.
        device: the torch device used.
        autocast_dtype: the autocast dtype, or None for float32.

    Raises:
        ModelError: the checkpoint cannot be loaded.
        UsageError: a bad device or precision.
    """

    def __init__(
        self,
        model: str | Path = "default",
        *,
        device: str = "auto",
        tta: bool = False,
        threads: int | None = None,
        precision: Precision = "auto",
        batch_size: int = 64,
        signals: bool = False,
    ) -> None:
        if threads is not None:
            if threads < 1:
                raise UsageError(f"threads must be at least 1, got {threads}")
            torch.set_num_threads(threads)
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        self.device = choose_device(device)
        self.autocast_dtype = choose_precision(self.device, precision)
        self.tta = tta
        self.signals = signals
        self.batch_size = batch_size
        net, meta = load_checkpoint(model, device=self.device)
        self.meta: CheckpointMeta = meta
        self.model_dir = str(model)
        self._channels_last = self.device.type == "cpu" or self.autocast_dtype is not None
        self._net = self._prepare(net)
        #: pairs the batch-norm statistics were re-estimated on by :meth:`adapt` (0 = as shipped)
        self.adapted_on = 0
        self.feature_stats: FeatureStats | None = (
            FeatureStats.from_dict(meta.feature_stats, where=f"{model}/meta.json") if meta.feature_stats else None
        )
        logger.info(
            "scorer: %s on %s, %s%s",
            meta.arch,
            self.device,
            "float32" if self.autocast_dtype is None else f"{self.autocast_dtype} autocast".replace("torch.", ""),
            ", test-time augmentation x8" if tta else "",
        )

    def _prepare(self, net: nn.Module) -> nn.Module:
        """Fold batch norms into convolutions, set the memory format and, for bfloat16 on a CPU,
        fuse each activation into its convolution (net in eval mode)."""
        fuse_conv_batchnorm(net)
        if self._channels_last:
            net = net.to(memory_format=torch.channels_last)
        if self.device.type == "cpu" and self.autocast_dtype == torch.bfloat16:
            # each activation inside its convolution (oneDNN post-op): same bytes, checked
            # layer by layer on this machine first (models/onednn.py)
            fused = fuse_for_bf16_cpu(net)
            logger.debug("scorer: %d convolutions fused with their activation (oneDNN bfloat16)", fused)
        return net

    def adapt(self, images: np.ndarray, *, scope: Literal["all", "encoder"] = "all") -> "Scorer":
        """Re-estimate batch-norm statistics on a run's own pairs (AdaBN); no labels, no gradients.

        The checkpoint is reloaded (its batch norms are folded into the convolutions for
        speed), every batch-norm layer in ``scope`` forgets its training statistics and averages
        the per-batch mean and variance of ``images`` instead (``momentum=None``), then the
        network is folded again. Learned weights are unchanged; :attr:`temperature` and the
        operating points stay those of the checkpoint.

        Args:
            images: ``(N, 2, C, H, W)`` float in ``[0, 1]``: the run's pairs (all of them, or
                a random sample of a few hundred).
            scope: ``"all"`` batch norms, or only the ``"encoder"``'s.

        Returns:
            self (adapted in place; :attr:`adapted_on` says on how many pairs).

        Raises:
            ModelError: bad images, or fewer than 2 pairs.
        """
        images = self._check(images)
        if images.shape[0] < 2:
            raise ModelError(f"Scorer.adapt needs at least 2 pairs to estimate statistics from, got {images.shape[0]}")
        if scope not in ("all", "encoder"):
            raise UsageError(f"adapt scope {scope!r} is not one of all, encoder")
        net, _ = load_checkpoint(self.model_dir, device=self.device)
        root = net.encoder if scope == "encoder" else net
        norms = [m for m in root.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the batches
            bn.train()
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch_size):
                chunk = torch.from_numpy(images[start : start + self.batch_size])
                net(torch.nan_to_num(chunk, nan=0.0).clamp_(0.0, 1.0).to(self.device))
        for bn in norms:
            bn.momentum = 0.1
        net.eval()
        self._net = self._prepare(net)
        self.adapted_on = int(images.shape[0])
        logger.info("scorer: batch-norm statistics (%s, %d layers) re-estimated on %d pairs", scope, len(norms), images.shape[0])
        return self

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the checkpoint's weights file (for provenance)."""
        return self.meta.weights_sha256

    @property
    def temperature(self) -> float:
        """Calibration temperature from the checkpoint."""
        return float(self.meta.temperature)

    def _check(self, images: np.ndarray) -> np.ndarray:
        if not isinstance(images, np.ndarray):
            raise ModelError(f"Scorer.score expects a numpy array, got {type(images).__name__}")
        if images.ndim != 5 or images.shape[1] != 2:
            raise ModelError(
                f"Scorer.score expects pairs shaped (B, 2, C, H, W), got {images.shape}"
            )
        if images.shape[2] != self.meta.in_channels:
            raise ModelError(
                f"model {self.meta.arch} takes {self.meta.in_channels} channel(s) but the pairs have "
                f"{images.shape[2]}; set tiles.bands to {self.meta.in_channels} band(s)"
            )
        if min(images.shape[-2:]) < 16 and images.shape[0] > 0:
            raise ModelError(f"pairs of {images.shape[-2]}x{images.shape[-1]} px are too small (min 16)")
        if not np.issubdtype(images.dtype, np.floating):
            raise ModelError(f"pairs must be float in [0, 1], got dtype {images.dtype}")
        return np.ascontiguousarray(images, dtype=np.float32)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Logits ``(b,)``, heatmap logits ``(b, H, W)``, embeddings ``(b, D)``, all float32, the
        logit spread over the flips ``(b,)`` when they were run (``tta`` or ``signals``), and the
        per-epoch building logits ``(b, 2)`` of a network with the head (else None).

        With ``signals`` but not ``tta`` the reported logit, heatmap and embedding are those of
        the plain pass; the other 7 passes only give the spread.
        """
        ks = range(8) if (self.tta or self.signals) else (0,)
        logits, heats, embeds, standings = [], [], [], []
        for k in ks:
            xk = dihedral(x, k) if k else x
            with torch.autocast(
                self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
            ):
                out = self._net(xk)
            logits.append(out.logit.float())
            heats.append(undo_dihedral(out.heatmap.float()[:, 0], k) if k else out.heatmap.float()[:, 0])
            embeds.append(out.embedding.float())
            if out.standing is not None:
                standings.append(out.standing.float())
        if len(ks) == 1:
            return logits[0], heats[0], embeds[0], None, standings[0] if standings else None
        spread = torch.stack(logits).std(0)
        if not self.tta:
            return logits[0], heats[0], embeds[0], spread, standings[0] if standings else None
        return (
            torch.stack(logits).mean(0),
            torch.stack(heats).mean(0),
            torch.stack(embeds).mean(0),
            spread,
            torch.stack(standings).mean(0) if standings else None,
        )

    def score(self, images: np.ndarray) -> ScoreBatch:
        """Score a batch of pairs.

        Args:
            images: ``(B, 2, C, H, W)`` float32 in ``[0, 1]`` (before, after). NaN is treated
                as 0 (callers mark such pairs themselves).

        Returns:
            :class:`ScoreBatch` with ``prob (B,)`` float64, ``logit (B,)`` float64,
            ``heatmap (B, H, W)`` float32 in ``[0, 1]``, ``embedding (B, D)`` float32 and, with
            ``tta``/``signals``, the signals of :class:`ScoreBatch`.

        Raises:
            ModelError: the array has the wrong shape, channel count or dtype.
        """
        images = self._check(images)
        b, _, _, h, w = images.shape
        if b == 0:
            d = self._net.score.in_features  # type: ignore[union-attr]
            return ScoreBatch(
                prob=np.zeros(0, np.float64),
                logit=np.zeros(0, np.float64),
                heatmap=np.zeros((0, h, w), np.float32),
                embedding=np.zeros((0, d), np.float32),
                standing=np.zeros((0, 2), np.float64) if self.meta.epoch_head else None,
            )
        logits, heats, embeds, spreads, standings = [], [], [], [], []
        with torch.inference_mode():
            for start in range(0, b, self.batch_size):
                chunk = torch.from_numpy(images[start : start + self.batch_size])
                chunk = torch.nan_to_num(chunk, nan=0.0).clamp_(0.0, 1.0).to(self.device)
                logit, heat, embed, spread, standing = self._forward(chunk)
                logits.append(logit.cpu())
                heats.append(torch.sigmoid(heat).cpu())
                embeds.append(embed.cpu())
                if spread is not None:
                    spreads.append(spread.cpu())
                if standing is not None:
                    standings.append(torch.sigmoid(standing).cpu())
        logit_np = torch.cat(logits).double().numpy()
        prob = expit(logit_np / self.temperature)
        embedding = torch.cat(embeds).numpy().astype(np.float32, copy=False)
        distance = sharpness = None
        if self.signals:
            sharpness = sharpness_log_ratio(images)
            if self.feature_stats is not None:
                distance = self.feature_stats.relative(embedding)
        return ScoreBatch(
            prob=prob,
            logit=logit_np,
            heatmap=torch.cat(heats).numpy().astype(np.float32, copy=False),
            embedding=embedding,
            tta_spread=torch.cat(spreads).double().numpy() if spreads else None,
            feature_distance=distance,
            sharpness_ratio=sharpness,
            standing=torch.cat(standings).double().numpy() if standings else None,
        )
