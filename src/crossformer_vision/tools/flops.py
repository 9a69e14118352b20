"""Parameter and multiply-accumulate (MAC) counts, as papers report "FLOPs".

``count_macs`` runs one forward pass under a counter with attention on its explicit path (matmul +
softmax), so the attention matmuls are counted for any model that has timm's ``fused_attn`` switch
(ours and timm's transformers): CPU ``scaled_dot_product_attention`` is invisible to the counters.

Backends: ``"fvcore"`` (the tool behind the CrossFormer and Swin papers' figures; counts convolutions,
matmuls and normalisation layers) and ``"torch"`` (``torch.utils.flop_counter``; convolutions and
matmuls only, halved to MACs). ``"auto"`` uses fvcore when installed.
"""
import contextlib
import logging
import warnings
from typing import Iterator, Sequence

import torch
from torch import nn

from ..runtime import onednn

__all__ = ["count_macs", "count_params", "explicit_attention"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def explicit_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily switch every module with a ``fused_attn`` flag to the explicit attention path."""
    switched = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool) and m.fused_attn]
    for m in switched:
        m.fused_attn = False
    try:
        yield model
    finally:
        for m in switched:
            m.fused_attn = True


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), backend: str = "auto") -> int:
    """Multiply-accumulates of one forward pass of a single image of ``input_size`` (C, H, W).

    Args:
        model: Any image model.
        input_size: ``(channels, height, width)``.
        backend: ``"fvcore"``, ``"torch"`` or ``"auto"``.
    """
    if backend not in ("auto", "fvcore", "torch"):
        raise ValueError(f"backend must be 'auto', 'fvcore' or 'torch', got {backend!r}")
    if backend == "auto":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import fvcore.nn  # noqa: F401

            backend = "fvcore"
        except ImportError:
            backend = "torch"
    param = next(model.parameters())
    x = torch.randn(1, *input_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with explicit_attention(model), torch.no_grad():
            if backend == "fvcore":
                from fvcore.nn import FlopCountAnalysis

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    logging.getLogger("fvcore").setLevel(logging.ERROR)
                    analysis = FlopCountAnalysis(model, x)
                    analysis.unsupported_ops_warnings(False)
                    analysis.uncalled_modules_warnings(False)
                    return int(analysis.total())
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False, custom_mapping=onednn.flop_formulas()) as counter:
                model(x)
            return counter.get_total_flops() // 2
    finally:
        model.train(was_training)
