"""The attention layers of the paper's attention ablation (CrossFormer, Table 5a), for ``CrossFormer(attn_type=...)``.

The paper replaces LSDA in CrossFormer-S by two earlier designs and reports only their accuracy; these are the
two replacements, written for the model's ``(B, H, W, C)`` maps of any size:

* :class:`ShiftedWindowAttention` (``attn_type="swin"``, Swin-like): every block attends within ``G x G``
  windows, the SDA groups of :mod:`.grouping`; every second block first rolls the map by ``G // 2`` towards the
  top left (Swin's shifted windows), masks the pairs that the roll brought together from opposite borders, and
  rolls back. A map no larger than the window is one window and is not shifted (Swin's rule). It is an
  :class:`~.crossformer.LSDAttention` with a shift, so grouping, padding, position bias and every speed path
  are LSDA's.
* :class:`SpatialReductionAttention` (``attn_type="pvt"``, PVT-like): every query attends to all keys of the
  image, keys and values computed from the map reduced ``R x R`` times by a stride-``R`` convolution and a
  LayerNorm (PVT's spatial-reduction attention). ``R`` is the stage's ``crs_interval`` (8, 4, 2, 1 in
  CrossFormer-S: PVT's own ratios). A map whose side is not a multiple of ``R`` is zero-padded at the
  bottom/right before the reduction. The dynamic position bias (DPB) stays: it is evaluated at the offset
  between each query and the centre token of each pooled key's region (integer token offsets), so the three
  rows of the ablation differ in which tokens attend to which, not in the position encoding.

:func:`ablation_attention` builds the layer of one block; :class:`~.crossformer.CrossFormerBlock` calls it
for ``attn_type`` other than ``"lsda"``.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtime.dispatch import Plan, choose
from ..runtime.options import RuntimeOptions
from ..runtime.tracing import is_exporting
from .crossformer import LSDAttention
from .grouping import GroupLayout, token_coordinates
from .layers import position_bias_layer

__all__ = ["ABLATION_ATTN_TYPES", "ShiftedWindowAttention", "SpatialReductionAttention", "ablation_attention"]

#: The attention types of the ablation besides LSDA.
ABLATION_ATTN_TYPES = ("pvt", "swin")


def _mask_value(dtype: torch.dtype) -> float:
    # the same finite values as LSDA's padding mask (float16 cannot hold -1e6)
    return -3.0e4 if dtype == torch.float16 else -1.0e6


class ShiftedWindowAttention(LSDAttention):
    """Swin-like window attention: SDA groups of ``G x G``, shifted by ``G // 2`` when ``shifted``.

    ``(B, H, W, C) -> (B, H, W, C)`` for any ``H, W``. Shifting rolls the unpadded map by ``-s`` along height
    and width (``s = G // 2``), attends within the SDA groups of the rolled map (padded at the bottom/right and
    masked as in LSDA), and rolls the result back by ``+s``. After the roll, rows ``>= H - s`` (columns
    ``>= W - s``) hold the map's first rows (columns): a query and a key on different sides of either line
    are masked, so no token attends across the map's border (Swin's mask, for any size). Maps no larger than
    the window (the small-map rule) are one group and never shifted.

    Args:
        shifted: Shift this block's windows (Swin shifts every second block).
        See :class:`~.crossformer.LSDAttention` for the rest (``interval`` and ``long_distance`` are fixed: 1, SDA).
    """

    def __init__(self, dim: int, num_heads: int, group_size: int, shifted: bool, **kwargs) -> None:
        super().__init__(dim, num_heads, group_size, 1, False, **kwargs)
        self.shift_size = group_size // 2 if shifted else 0

    def extra_repr(self) -> str:
        return f"Swin-like, shift={self.shift_size}, " + super().extra_repr()

    def shift(self, height: int, width: int) -> int:
        """The roll applied to a ``height x width`` map: ``G // 2`` in shifted blocks, 0 for maps within one window."""
        if self.shift_size == 0 or self.small_map(height, width):
            return 0
        return self.shift_size

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and is_exporting():
            raise NotImplementedError("the Swin-like ablation attention has no torch.export/ONNX path; export "
                                      "attn_type='lsda' models")
        return super().forward(x)

    def compute_bias(self, height: int, width: int, layout: GroupLayout, dtype: torch.dtype, device: torch.device,
                     coordinates: Optional[Tuple[Tensor, Tensor]] = None) -> Optional[Tensor]:
        """LSDA's bias (position bias, padding mask) plus, in a shifted block, the mask between the rolled map's
        regions: ``(nG, nH or 1, N, N)``."""
        bias = super().compute_bias(height, width, layout, dtype, device, coordinates)
        shift = self.shift(height, width)
        if shift == 0:
            return bias
        rows, cols = token_coordinates(layout, device) if coordinates is None else coordinates
        tokens = layout.gh * layout.gw
        region = ((rows >= height - shift).to(torch.long) * 2 + (cols >= width - shift).to(torch.long)).view(-1, tokens)
        apart = region.unsqueeze(2) != region.unsqueeze(1)  # (nG, N, N): query and key from different regions
        masked = (apart.to(dtype) * _mask_value(dtype)).unsqueeze(1)  # (nG, 1, N, N)
        return masked if bias is None else bias + masked

    def attend(self, x: Tensor, layout: GroupLayout, bias: Optional[Tensor], plan: Plan, residual: Optional[Tensor] = None,
               coordinates: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """LSDA's :meth:`~.crossformer.LSDAttention.attend` on the map rolled by ``-shift``, rolled back after."""
        shift = self.shift(x.shape[1], x.shape[2])
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        out = super().attend(x, layout, bias, plan, coordinates=coordinates)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out if residual is None else residual + out


class SpatialReductionAttention(nn.Module):
    """PVT-like attention: all queries of an image attend to keys and values of the map reduced ``R x R`` times.

    ``(B, H, W, C) -> (B, H, W, C)`` for any ``H, W``: ``q`` from every token; ``k, v`` from
    ``LayerNorm(conv_R(pad(x)))``, a stride-``R`` convolution of the map zero-padded to multiples of ``R``
    (``R = 1``: no convolution, no norm: global attention). With a DPB, the bias of query ``(y, x)`` and pooled
    key ``(j, i)`` is the DPB of the offset ``(y - (j R + (R - 1) // 2), x - (i R + (R - 1) // 2))`` in tokens.

    Args:
        dim: Channels.
        num_heads: Attention heads.
        sr_ratio: Reduction ratio ``R``.
        qkv_bias: Bias in the q and kv projections.
        qk_scale: Logit scale, ``head_dim ** -0.5`` if None.
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
        pos_embed: ``"dpb"``/``"dpb_residual"`` (a DPB at the pooled keys' offsets), ``"ape"``/``"none"`` (no bias
            here). ``"rpb"`` is refused: a learned table of offsets within a group has no entries for pooled keys.
        fused_attn: ``scaled_dot_product_attention`` where the runtime allows (as LSDA).
        runtime: Runtime options (the attention kernel is chosen by :func:`~crossformer_vision.runtime.dispatch.choose`).
        norm_layer: Norm after the reduction.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        pos_embed: str = "dpb",
        fused_attn: bool = True,
        runtime: Optional[RuntimeOptions] = None,
        norm_layer=nn.LayerNorm,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if sr_ratio < 1:
            raise ValueError(f"sr_ratio must be >= 1, got {sr_ratio}")
        if pos_embed == "rpb":
            raise ValueError("attn_type='pvt' cannot use pos_embed='rpb' (a table of offsets within a group has no "
                             "entries for pooled keys): use 'dpb', 'dpb_residual', 'ape' or 'none'")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = float(qk_scale) if qk_scale is not None else self.head_dim ** -0.5
        self.sr_ratio = sr_ratio
        self.fused_attn = fused_attn
        self.runtime = runtime if runtime is not None else RuntimeOptions()
        self.pos = position_bias_layer(pos_embed, dim, num_heads, 1)  # "rpb" refused above
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr: nn.Module = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm: nn.Module = norm_layer(dim)
        else:
            self.sr = nn.Identity()
            self.norm = nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f"PVT-like, dim={self.dim}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}, fused_attn={self.fused_attn}"

    def reduced_size(self, height: int, width: int) -> Tuple[int, int]:
        """Size of the key/value map of a ``height x width`` map: ``ceil(H / R) x ceil(W / R)``."""
        r = self.sr_ratio
        return (height + r - 1) // r, (width + r - 1) // r

    def compute_bias(self, height: int, width: int, dtype: torch.dtype, device: torch.device) -> Optional[Tensor]:
        """``(1, nH, H*W, h*w)``: the DPB of every (query, pooled key) offset; None without a DPB."""
        if self.pos is None:
            return None
        r = self.sr_ratio
        kh, kw = self.reduced_size(height, width)
        centre = (r - 1) // 2
        # integer offsets query - key centre: rows y - (j r + centre), in [-(kh-1) r - centre, height - 1 - centre]
        dy = torch.arange(height, device=device).view(-1, 1) - (torch.arange(kh, device=device) * r + centre).view(1, -1)
        dx = torch.arange(width, device=device).view(-1, 1) - (torch.arange(kw, device=device) * r + centre).view(1, -1)
        # DynamicPositionBias.table(gh, gw) holds the offsets (-(gh-1)..gh-1) x (-(gw-1)..gw-1), row-major
        gh = max(height, (kh - 1) * r + centre + 1)
        gw = max(width, (kw - 1) * r + centre + 1)
        table = self.pos.table(gh, gw)  # ((2gh-1) * (2gw-1), nH)
        index = (dy + gh - 1).view(height, 1, kh, 1) * (2 * gw - 1) + (dx + gw - 1).view(1, width, 1, kw)
        bias = table[index.reshape(-1)].view(height * width, kh * kw, self.num_heads)
        return bias.permute(2, 0, 1).unsqueeze(0).to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``."""
        batch, height, width, channels = x.shape
        plan = choose(self.runtime, x, self.training, self.q, self.fused_attn)
        q = self.q(x).reshape(batch, height * width, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nH, N, hd)
        r = self.sr_ratio
        kv_in = x
        if r > 1:
            pad_h, pad_w = (r - height % r) % r, (r - width % r) % r
            kv_in = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)).permute(0, 3, 1, 2)  # (B, C, Hp, Wp)
            kv_in = self.norm(self.sr(kv_in).permute(0, 2, 3, 1))  # (B, Hp/R, Wp/R, C)
        keys = kv_in.shape[1] * kv_in.shape[2]
        kv = self.kv(kv_in).reshape(batch, keys, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # (B, nH, M, hd)
        bias = self.compute_bias(height, width, x.dtype, x.device)
        dropout = self.attn_drop.p if self.training else 0.0
        if plan.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=self.scale)
        else:  # explicit (what FLOP counters see); runtime.kernels' version is written for square groups
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, nH, N, M)
            if bias is not None:
                attn = attn + bias
            attn = attn.softmax(dim=-1)
            if dropout > 0.0:
                attn = F.dropout(attn, dropout)
            out = attn @ v  # (B, nH, N, hd)
        out = out.transpose(1, 2).reshape(batch, height, width, channels)
        return self.proj_drop(self.proj(out))


def ablation_attention(attn_type: str, dim: int, num_heads: int, group_size: int, interval: int, long_distance: bool,
                       **kwargs) -> nn.Module:
    """The attention layer of one block for ``attn_type`` ``"swin"`` or ``"pvt"``.

    Takes :class:`~.crossformer.LSDAttention`'s arguments: ``"swin"`` shifts the windows of the blocks LSDA makes
    LDA (every second block) and ignores ``interval``; ``"pvt"`` uses ``interval`` as the reduction ratio and
    ignores ``group_size``, ``long_distance`` and ``fixed_interval``.
    """
    if attn_type == "swin":
        return ShiftedWindowAttention(dim, num_heads, group_size, shifted=long_distance, **kwargs)
    if attn_type == "pvt":
        kwargs.pop("fixed_interval", None)
        return SpatialReductionAttention(dim, num_heads, interval, **kwargs)
    raise ValueError(f"attn_type must be one of {('lsda',) + ABLATION_ATTN_TYPES}, got {attn_type!r}")
