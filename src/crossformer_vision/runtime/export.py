"""The ``torch.export`` (and ONNX) path: one graph for every batch size, height and width.

What differs from the eager path, and why:

* the small-map rule (a map no larger than the group is one group) becomes ``torch.cond`` (an ONNX ``If``)
  where the exported size range allows both outcomes (:func:`export_attention`), and is traced for one side only
  where the range allows one (a branch that can never run could still constrain the graph);
* tokens are gathered into groups with computed indices instead of split views, padding and masking are
  unconditional and the crop is a gather too, so that no shape fact of the example input is baked into the
  graph (:mod:`crossformer_vision.models.grouping`, given the tokens' coordinates);
* attention is the explicit softmax (SDPA's traced output strides differ from its decomposition's, which
  breaks the ONNX exporter's reshapes) and linear layers are ``F.linear``;
* convolutions of channels-last views get a plain NCHW copy (:func:`plain_layout`).

:func:`crossformer_vision.runtime.dispatch.choose` sends every call made while exporting here.
"""
from typing import Callable

import torch
from torch import Tensor, nn

from .dispatch import Plan
from .tracing import is_exporting

__all__ = ["export_attention", "plain_layout"]


def export_attention(attn: nn.Module, x: Tensor, plan: Plan) -> Tensor:
    """An LSDA layer's forward while exporting: ``attn.run`` with the layout of each side of the small-map
    rule, chosen in the graph."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    def side(small: bool) -> Callable[[Tensor], Tensor]:
        def run(t: Tensor) -> Tensor:
            return attn.run(t, attn.layout(t.shape[1], t.shape[2], small), plan)

        return run

    small = attn.small_map(x.shape[1], x.shape[2])
    if isinstance(small, bool):  # static shapes (strict torch.export traces torch.sym_not of a bool as an op)
        return side(small)(x)
    if statically_known_true(torch.sym_not(small)):
        return side(False)(x)
    if statically_known_true(small):
        return side(True)(x)
    return torch.cond(small, side(True), side(False), (x,))


def plain_layout(x: Tensor) -> Tensor:
    """``x`` as a contiguous NCHW tensor while exporting, else ``x``: with a symbolic batch, channels-last strides
    make a convolution's layout choice guard on batch > 1, and a plain copy keeps one exported graph valid for
    every batch size."""
    if is_exporting():
        return x.contiguous()
    return x
