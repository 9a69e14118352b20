"""Which path a forward call takes: the one place that decides.

The model (:mod:`crossformer_vision.models.crossformer`) is written as the reference math. Its attention
layers and blocks ask :func:`choose` once per call and do what the returned :class:`Plan` says; everything
a plan can ask for beyond the reference lives in this package (:mod:`.cpu`, :mod:`.kernels`,
:mod:`.onednn`, :mod:`.export`). TorchScript always runs the reference (:func:`reference_plan`).

The rules, first match wins (``options`` are the model's :class:`~.options.RuntimeOptions`):

1. ``torch.export`` / ONNX -> ``EXPORT``: one graph for every input size. The small-map rule becomes
   ``torch.cond``, groups are gathered with computed indices, padding is always masked, explicit softmax,
   ``F.linear`` (:mod:`.export`).
2. training mode, autograd on, or a tracer recording the model (FX, ``torch.jit.trace``) -> ``REFERENCE``:
   the modules as written, biases computed at every call (weights may change between calls).
3. CPU inference of more than ``options.cpu_pieces`` tokens -> ``PIECES``: a block works on a few images
   (attention) and row blocks of tokens (MLP) at a time, so that the wide intermediates stay in cache
   (:mod:`.cpu`). Under torch.compile only while sizes are static: once dynamo makes them dynamic, whole
   tensors keep one graph for every size.
4. any other inference -> ``INFERENCE``: whole tensors.

Within a path (2-4):

* attention kernel: SDPA when the layer's ``fused_attn`` is on, except on the CPU unless
  ``options.sdpa_on_cpu``; else the explicit softmax, as one opaque op in inference under torch.compile on
  the CPU (inductor's softmax over rows of 49 is several times slower than eager's);
* inference (3, 4): linear layers through oneDNN where ``options.onednn`` and the kernels apply (fp32,
  CPU); position bias and padding mask from the layer's cache if ``options.bias_cache``, except under
  torch.compile (the compiled graph computes them);
* the block's MLP as two fused oneDNN calls in ``PIECES``, and in ``INFERENCE`` under torch.compile only:
  eagerly whole-tensor blocks run their MLP as written, which FX graphs of the model (that trace it)
  reproduce exactly.

The cross-scale embedding asks :func:`conv_in_blocks` for each of its convolutions: in eager CPU training
(autograd recording, no tracer, no torch.compile) with ``options.conv_blocks``, a kernel of at least four
times the stride (the stem's 16 and 32) runs as :func:`~.conv.space_to_depth_conv`; everything else is the
direct convolution.
"""
from typing import NamedTuple, Optional

import torch
from timm.layers import Mlp
from torch import Tensor, nn

from . import onednn
from .conv import blockable
from .kernels import opaque_attention_available
from .options import RuntimeOptions
from .tracing import is_compiling, is_exporting, is_fx_tracing, static_sizes

__all__ = ["EXPORT", "INFERENCE", "PIECES", "REFERENCE", "Plan", "choose", "conv_in_blocks", "fusable_mlp",
           "reference_plan"]

REFERENCE = "reference"
INFERENCE = "inference"
PIECES = "pieces"
EXPORT = "export"


class Plan(NamedTuple):
    """What one call of an attention layer or block does (see :func:`choose`)."""

    path: str  # REFERENCE, INFERENCE, PIECES or EXPORT
    attention: str  # attention kernel: "sdpa", "explicit" or "opaque" (the explicit one as one op under compile)
    onednn: bool  # linear layers through oneDNN
    cached_bias: bool  # position bias and padding mask from the layer's cache
    fused_mlp: bool  # the block's MLP as two fused oneDNN calls
    gather: bool  # groups gathered by computed indices, padding always masked: one graph for every size (export)


def reference_plan(fused_attn: bool) -> Plan:
    """The plan TorchScript runs, and FX tracing records: the modules as written."""
    # "reference" is REFERENCE: TorchScript compiles this function and cannot read module-level constants
    return Plan("reference", "sdpa" if fused_attn else "explicit", False, False, False, False)


def choose(options: RuntimeOptions, x: Tensor, training: bool, linear: nn.Module, fused_attn: bool = True,
           mlp: Optional[nn.Module] = None) -> Plan:
    """The plan of one call with input ``x`` (``(B, H, W, C)``) of a module built with ``options``.

    Args:
        options: The model's runtime options.
        x: The call's input.
        training: The module's training mode.
        linear: One of the module's linear layers (its weights' dtype decides whether oneDNN applies).
        fused_attn: The attention layer's ``fused_attn`` switch.
        mlp: A block's MLP (None for an attention layer): fused only if it is timm's plain fc1 -> exact GELU -> fc2.
    """
    # 1. torch.export / ONNX: one graph for every size
    if is_exporting():
        return Plan(EXPORT, "explicit", onednn=False, cached_bias=False, fused_mlp=False, gather=True)
    # 2. tracers, training, autograd: the modules as written. Under FX ``x`` is a proxy and nothing about it is
    #    known; the attention layers are FX leaves and choose again when the traced graph runs
    if is_fx_tracing():
        return reference_plan(fused_attn)
    cpu = x.device.type == "cpu"
    sdpa = fused_attn and (not cpu or options.sdpa_on_cpu)
    if training or torch.is_grad_enabled() or torch.jit.is_tracing():
        return Plan(REFERENCE, "sdpa" if sdpa else "explicit", onednn=False, cached_bias=False, fused_mlp=False,
                    gather=False)
    # 3. and 4. inference: in pieces on the CPU above options.cpu_pieces tokens (under torch.compile only for
    #    static sizes, checked before any comparison of sizes, which would add a guard), else whole tensors
    compiling = is_compiling()
    tokens = x.shape[0] * x.shape[1] * x.shape[2]
    pieces = cpu and (not compiling or static_sizes(x)) and 0 < options.cpu_pieces < tokens
    fast_linear = options.onednn and onednn.usable(x, linear)
    if sdpa:
        attention = "sdpa"
    elif cpu and compiling and opaque_attention_available():
        attention = "opaque"
    else:
        attention = "explicit"
    return Plan(
        PIECES if pieces else INFERENCE,
        attention,
        onednn=fast_linear,
        cached_bias=options.bias_cache and not compiling,
        fused_mlp=fast_linear and (pieces or compiling) and mlp is not None and fusable_mlp(mlp),
        gather=False,
    )


def fusable_mlp(mlp: nn.Module) -> bool:
    """Whether ``mlp`` is timm's plain ``fc1 -> exact GELU -> fc2`` with fp32 weights (what the fused oneDNN
    MLP computes; no dropout, since only eval mode fuses)."""
    return (
        isinstance(mlp, Mlp)
        and isinstance(mlp.act, nn.GELU)
        and mlp.act.approximate == "none"
        and isinstance(mlp.norm, nn.Identity)
        and isinstance(mlp.fc1, nn.Linear)
        and isinstance(mlp.fc2, nn.Linear)
        and mlp.fc1.weight.dtype == mlp.fc2.weight.dtype == torch.float32
    )


def conv_in_blocks(options: RuntimeOptions, x: Tensor, conv: nn.Conv2d) -> bool:
    """Whether the cross-scale embedding computes ``conv(x)`` as :func:`~.conv.space_to_depth_conv`: eager CPU
    training of a kernel at least four times its stride (measured in :mod:`.conv`; smaller kernels, merges and
    inference are faster direct). Tracers and torch.compile record the direct convolution."""
    if is_fx_tracing() or is_exporting() or is_compiling() or torch.jit.is_tracing():
        return False
    return (
        options.conv_blocks
        and x.device.type == "cpu"
        and conv.training  # training mode, not just grad: evaluation with gradients keeps the direct numbers
        and torch.is_grad_enabled()
        and conv.weight.requires_grad
        and conv.kernel_size[0] >= 4 * conv.stride[0]
        and blockable(conv)
    )
