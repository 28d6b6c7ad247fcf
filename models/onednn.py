"""bfloat16 CPU inference with the activation fused into each convolution (oneDNN post-ops).

Under bfloat16 autocast on a CPU with AMX/AVX-512 BF16, PyTorch runs each convolution in oneDNN
but every activation that follows it (ReLU6 in MobileNetV2, ReLU in the heads) as a separate
ATen pass over a bfloat16 tensor, and those passes are slow: profiled on the bundled model
(batches of 64 at 128 px, 1 thread), ``aten::clamp`` took 37 % of the forward pass, about as
much as all convolutions together. oneDNN can apply the activation inside the convolution
(``torch.ops.mkldnn._convolution_pointwise``, the op PyTorch's own compiler emits for this),
so the extra memory pass disappears.

The result is the same bytes: the convolution's bfloat16 output is clamped either way, and
clamping to ``[0, 6]`` or ``[0, inf)`` commutes with rounding to bfloat16 (both bounds are
exact in bfloat16). :func:`fuse_for_bf16_cpu` therefore only rewrites a network after checking,
on this machine and torch, that every rewritten layer gives bit-identical outputs to the
autocast path on a probe input; if the op is missing, fails or differs, the network is left as
it was (and the caller's plain autocast path runs).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["FusedConvBF16", "fuse_for_bf16_cpu"]

def _post_op(module: nn.Module) -> tuple[str, list[float]] | None:
    """The oneDNN post-op (name, scalars) that computes ``module``, or None if there is none."""
    if isinstance(module, nn.ReLU6):
        return "hardtanh", [0.0, 6.0]
    if isinstance(module, nn.Hardtanh) and module.min_val == 0.0:
        return "hardtanh", [float(module.min_val), float(module.max_val)]
    if isinstance(module, nn.ReLU):
        return "relu", []
    return None


class FusedConvBF16(nn.Module):
    """A folded ``Conv2d`` (and the activation after it) as one oneDNN bfloat16 primitive.

    Args:
        conv: the convolution (batch norm already folded into it), zero padding, int padding.
        post_op: oneDNN post-op name (``"hardtanh"``, ``"relu"`` or ``"none"``).
        scalars: the post-op's scalars (``[0.0, 6.0]`` for ReLU6).
    """

    def __init__(self, conv: nn.Conv2d, post_op: str = "none", scalars: list[float] | None = None) -> None:
        super().__init__()
        # parameters (frozen), not buffers: the network finds its memory format from its first
        # parameter (models.siamese.SiameseChangeNet._channels_last)
        weight = conv.weight.detach().to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        self.weight = nn.Parameter(weight, requires_grad=False)
        bias = conv.bias.detach().to(torch.bfloat16) if conv.bias is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.padding = [int(p) for p in conv.padding]  # type: ignore[union-attr]
        self.stride = [int(s) for s in conv.stride]
        self.dilation = [int(d) for d in conv.dilation]
        self.groups = int(conv.groups)
        self.post_op = post_op
        self.scalars = list(scalars or [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16:
            x = x.to(torch.bfloat16)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.post_op, self.scalars, "",
        )

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, stride={self.stride}, groups={self.groups}, post_op={self.post_op}"


def _fusable(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.weight.dtype == torch.float32
    )


def _identical(original: nn.Module, fused: nn.Module, in_channels: int, stride: int) -> bool:
    """Whether ``fused`` gives the same bytes as ``original`` under bfloat16 autocast on a probe."""
    gen = torch.Generator().manual_seed(7)
    side = 9 * stride
    # wide enough that activations clip at both ends (ReLU6's 0 and 6) in typical layers
    probe = (torch.rand(3, in_channels, side, side, generator=gen) * 16 - 6).to(torch.bfloat16)
    probe = probe.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = original(probe)
        got = fused(probe)
    return want.dtype == got.dtype and want.shape == got.shape and torch.equal(want, got)


def fuse_for_bf16_cpu(net: nn.Module) -> int:
    """Replace each ``Conv2d`` (+ ReLU6/ReLU after it in the same ``nn.Sequential``) by a
    :class:`FusedConvBF16`, for bfloat16 autocast inference on a CPU (``net`` in eval mode,
    batch norms already folded; modified in place).

    Every rewritten layer is checked to give bit-identical outputs to the autocast path on a
    probe input first; when the op is missing or any layer differs, nothing is rewritten.

    Returns:
        the number of convolutions rewritten (0 = the network is unchanged).
    """
    if not hasattr(torch.ops.mkldnn, "_convolution_pointwise") or not torch.backends.mkldnn.is_available():
        return 0
    plan: list[tuple[nn.Sequential, str, str | None, FusedConvBF16]] = []
    try:
        for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
            names = list(seq._modules)
            for i, name in enumerate(names):
                conv = seq._modules[name]
                if not _fusable(conv):
                    continue
                act_name = None
                j = i + 1
                while j < len(names) and isinstance(seq._modules[names[j]], nn.Identity):
                    j += 1
                post = _post_op(seq._modules[names[j]]) if j < len(names) else None
                if post is not None:
                    act_name = names[j]
                op, scalars = post if post is not None else ("none", [])
                fused = FusedConvBF16(conv, op, scalars)  # type: ignore[arg-type]
                original = nn.Sequential(conv, seq._modules[act_name]) if act_name else conv
                if not _identical(original, fused, conv.in_channels, int(conv.stride[0])):  # type: ignore[union-attr,arg-type]
                    log.debug("oneDNN fusion: layer %s differs from the autocast path; not fusing", name)
                    return 0
                plan.append((seq, name, act_name, fused))
    except Exception as exc:  # noqa: BLE001 - any failure of the internal op: keep the plain path
        log.debug("oneDNN fusion unavailable (%s); plain autocast path", exc)
        return 0
    for seq, name, act_name, fused in plan:
        seq._modules[name] = fused
        if act_name is not None:
            seq._modules[act_name] = nn.Identity()
    return len(plan)
