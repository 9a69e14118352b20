"""The attention kernels an LSDA layer runs on: ``softmax(q @ k^T * scale + bias) @ v`` within every group.

* ``"sdpa"``: ``F.scaled_dot_product_attention`` with the bias as ``attn_mask`` (flash/efficient kernels on
  GPUs);
* ``"explicit"``: the same arithmetic written out (:func:`softmax_attention`); on the CPU it is about 30%
  faster than SDPA's kernel for groups of 49 tokens, and it is what FLOP counters and exporters see;
* ``"opaque"``: :func:`softmax_attention` as the custom op ``crossformer_vision::softmax_attention``, which
  torch.compile keeps as one call (its own softmax over rows of 49 is several times slower than eager's).

:func:`crossformer_vision.runtime.dispatch.choose` picks one per call.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .tracing import opaque_op

__all__ = ["grouped_attention", "opaque_attention_available", "softmax_attention"]


def softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], num_groups: int, dropout: float = 0.0
) -> Tensor:
    """``softmax(q @ k^T + bias) @ v`` for ``(B*nG, nH, N, hd)`` inputs, ``q`` already scaled.

    ``bias`` is broadcast over the batch: ``(1, nH, N, N)`` shared by all groups, or per group
    ``(nG, nH, N, N)`` / ``(nG, 1, 1, N)``. ``dropout`` on the attention weights (training only).
    """
    attn = q @ k.transpose(-2, -1)  # (B*nG, nH, N, N)
    if bias is not None:
        nh, tokens = attn.shape[1], attn.shape[2]
        attn = (attn.view(-1, num_groups, nh, tokens, tokens) + bias).view(-1, nh, tokens, tokens)
    attn = attn.softmax(dim=-1)
    if dropout > 0.0:
        attn = F.dropout(attn, dropout)
    return attn @ v


def _softmax_attention_shape(
    q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], num_groups: int, dropout: float = 0.0
) -> Tensor:
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


_SOFTMAX_ATTENTION_OP = opaque_op("softmax_attention", softmax_attention, _softmax_attention_shape)


def opaque_attention_available() -> bool:
    """Whether the explicit attention can run as one opaque op under torch.compile (torch >= 2.4)."""
    return _SOFTMAX_ATTENTION_OP is not None


def grouped_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], num_groups: int, scale: float, dropout: float,
    per_group: bool, kernel: str,
) -> Tensor:
    """Softmax attention of ``(B*nG, nH, N, hd)`` queries, keys and values with an additive ``bias``.

    Args:
        bias: ``(1, nH, N, N)`` shared by all groups, or (``per_group``) ``(nG, nH, N, N)`` or
            ``(nG, 1, 1, N)``; None for none.
        num_groups: ``nG``, groups per image.
        scale: Logit scale.
        dropout: Dropout on the attention weights (0 outside training).
        kernel: ``"sdpa"``, ``"explicit"`` or ``"opaque"`` (see the module docstring).
    """
    if kernel == "sdpa":
        if bias is not None and per_group:  # SDPA wants a per-group bias per batch element
            nh, tokens = q.shape[1], q.shape[2]
            bias = bias.unsqueeze(0).expand(q.shape[0] // num_groups, num_groups, nh, tokens, tokens)
            bias = bias.reshape(q.shape[0], nh, tokens, tokens)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=scale)
    if not torch.jit.is_scripting() and kernel == "opaque":
        return _SOFTMAX_ATTENTION_OP(q * scale, k, v, bias, num_groups)
    return softmax_attention(q * scale, k, v, bias, num_groups, dropout)
