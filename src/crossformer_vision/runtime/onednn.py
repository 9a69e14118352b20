"""oneDNN linear layers for CPU inference (fp32, no autograd), optionally fused with GELU or a residual add.

On x86 CPUs ``F.linear`` calls the BLAS library PyTorch was built with (MKL in the official wheels). On
some CPUs, AMD ones with AVX-512 among them, that reaches about half the rate of oneDNN's kernels for the
same products (``python benchmarks/linear_backends.py`` measures both), and the linear layers are most
of CrossFormer's time. So eval-mode blocks without autograd send their linear layers to
``torch.ops.mkldnn._linear_pointwise``: same arithmetic (tests compare against ``F.linear``), fused with the
MLP's GELU and the residual adds.

* Eager mode calls the oneDNN kernel directly.
* Under ``torch.compile`` it is the custom op ``crossformer_vision::onednn_linear`` (torch >= 2.4), which the
  compiler keeps as one opaque call while it fuses everything around it.
* Whether a call uses it is decided in :func:`crossformer_vision.runtime.dispatch.choose` (training, autograd,
  tracers and ``optimize(model, onednn=False)`` keep ``F.linear``); :func:`usable` says where the kernels
  can run at all.

The kernels are probed once at import (a few tiny products compared with ``F.linear``); a build without
them, or one where they disagree, never takes this path.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tracing import is_compiling, is_exporting, is_fx_tracing, opaque_op

__all__ = ["available", "flop_formulas", "linear", "usable"]


def _call(x: Tensor, weight: Tensor, bias: Optional[Tensor], gelu: bool, residual: Optional[Tensor]) -> Tensor:
    op = torch.ops.mkldnn._linear_pointwise
    if residual is not None:
        return op.binary(x, residual, weight, bias, "add")
    return op(x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")


def _probe() -> bool:
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(shape, generator=gen) for shape in ((5, 3, 8), (6, 8), (6,)))
        with torch.no_grad():
            plain = F.linear(x, w, b)
            checks = (
                (_call(x, w, b, False, None), plain),
                (_call(x, w, b, True, None), F.gelu(plain)),
                (_call(x, w, None, False, plain), plain + F.linear(x, w)),
            )
            return all(got.shape == want.shape and torch.allclose(got, want, atol=1e-5) for got, want in checks)
    except (RuntimeError, TypeError, AttributeError):  # a build or version without these kernels
        return False


_AVAILABLE = _probe()


def _onednn_linear_fake(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], gelu: bool, residual: Optional[Tensor]
) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


# under torch.compile the kernel is this custom op; None without kernels (or torch < 2.4): compiled graphs
# then use F.linear
_COMPILED_OP = opaque_op("onednn_linear", _call, _onednn_linear_fake) if _AVAILABLE else None


def available() -> bool:
    """Whether this PyTorch build has working oneDNN linear kernels (probed at import)."""
    return _AVAILABLE


def compiled_op_available() -> bool:
    """Whether torch.compile can keep the kernel as the custom op ``crossformer_vision::onednn_linear``."""
    return _COMPILED_OP is not None


def usable(x: Tensor, layer: nn.Module) -> bool:
    """Whether :func:`linear` can compute ``layer(x)``: fp32 on the CPU without autograd, eagerly or under
    torch.compile, never while a tracer records the model (``torch.jit.trace``, FX, ``torch.export``)."""
    if not _AVAILABLE or torch.is_grad_enabled() or torch.jit.is_tracing() or is_fx_tracing() or is_exporting():
        return False
    if is_compiling() and _COMPILED_OP is None:
        return False
    return x.device.type == "cpu" and x.dtype == torch.float32 and layer.weight.dtype == torch.float32


def linear(x: Tensor, layer: nn.Module, gelu: bool = False, residual: Optional[Tensor] = None) -> Tensor:
    """``layer(x)`` of an ``nn.Linear``, then exact GELU if ``gelu``, or plus ``residual``, in one oneDNN call.

    Check :func:`usable` first. ``residual`` must have the output's shape.
    """
    if is_compiling():
        return _COMPILED_OP(x, layer.weight, layer.bias, gelu, residual)
    return _call(x, layer.weight, layer.bias, gelu, residual)


def flop_formulas() -> dict:
    """``torch.utils.flop_counter.FlopCounterMode(custom_mapping=...)`` entries for the oneDNN linear kernels
    (2 x output elements x input features; the fused GELU/add are not counted, as for ``F.linear``)."""
    if not _AVAILABLE:
        return {}

    def linear_flops(x_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * x_shape[-1] * math.prod(out_shape)

    return {torch.ops.mkldnn._linear_pointwise: linear_flops}
