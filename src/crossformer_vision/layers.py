"""Building blocks of CrossFormer / CrossFormer++.

* :class:`CrossScaleEmbedding` (CEL): several convolutions of different kernel sizes and one stride whose
  outputs are concatenated along channels; used for the stem (stride 4) and between stages (stride 2).
* :class:`DynamicPositionBias` (DPB): a small MLP that maps relative offsets ``(dy, dx)`` to one bias per
  head, so the bias exists for any group shape.
* :class:`LSDAttention`: multi-head self-attention inside groups of embeddings, either adjacent ones
  (short distance attention, SDA) or ones sampled at a fixed interval (long distance attention, LDA).
* :class:`ActivationCoolingLayer` (ACL, CrossFormer++): depth-wise 3x3 convolution followed by LayerNorm.

Tensors between blocks are channels-last: ``(B, H, W, C)``. Grouping, padding and masks are derived from
the size of the feature map at hand in ``forward``; no module changes its own settings while running.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from timm.layers import trunc_normal_
from timm.models import register_notrace_module

from . import onednn
from ._tracing import _is_compiling, _is_exporting, opaque_op

__all__ = [
    "POS_EMBED_TYPES",
    "ActivationCoolingLayer",
    "CrossScaleEmbedding",
    "DynamicPositionBias",
    "LSDAttention",
    "RelativePositionBias",
    "cel_channel_split",
    "group_layout",
]

POS_EMBED_TYPES = ("dpb", "dpb_residual", "rpb", "ape", "none")


def cel_channel_split(out_dim: int, num_kernels: int) -> List[int]:
    """Output channels of each kernel of a cross-scale embedding, as in the official code.

    Kernel ``i`` (smallest first) gets ``out_dim / 2**(i+1)`` channels and the largest kernel gets the
    remainder ``out_dim / 2**(n-1)``, e.g. ``96 -> [48, 24, 12, 12]`` and ``192 -> [96, 96]``.
    """
    if num_kernels == 1:
        return [out_dim]
    dims = [out_dim // 2 ** (i + 1) for i in range(num_kernels - 1)]
    dims.append(out_dim // 2 ** (num_kernels - 1))
    return dims


class CrossScaleEmbedding(nn.Module):
    """Cross-scale embedding layer (CEL).

    Every kernel samples patches around the same centres (stride ``stride``, padding ``(k - stride) / 2``),
    so all outputs have the same spatial size ``floor(H / stride) x floor(W / stride)`` and are concatenated
    along channels. The stem normalises after the convolutions; the merging layers between stages
    normalise their input first, as in the official code.

    Args:
        in_dim: Input channels.
        out_dim: Output channels (sum over kernels).
        kernel_sizes: Kernel sizes, smallest first, e.g. ``(4, 8, 16, 32)`` or ``(2, 4)``.
        stride: Stride shared by all kernels.
        norm_layer: Normalisation layer constructor, or ``None`` for none.
        norm_first: Normalise the input (``in_dim``) instead of the output (``out_dim``).
        channels_last_input: Input is ``(B, H, W, C)``; otherwise ``(B, C, H, W)``. Output is always
            ``(B, H', W', out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_sizes: Tuple[int, ...],
        stride: int,
        norm_layer: Optional[type] = nn.LayerNorm,
        norm_first: bool = False,
        channels_last_input: bool = False,
    ) -> None:
        super().__init__()
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not kernel_sizes:
            raise ValueError("kernel_sizes must name at least one kernel size")
        for k in kernel_sizes:
            if k < stride or (k - stride) % 2:
                raise ValueError(
                    f"kernel size {k} does not fit stride {stride}: every kernel must be at least the stride "
                    f"and differ from it by an even number so that all kernels share their centres"
                )
        dims = cel_channel_split(out_dim, len(kernel_sizes))
        if min(dims) < 1:
            raise ValueError(
                f"{out_dim} output channels cannot be split over {len(kernel_sizes)} kernels {kernel_sizes}; "
                f"use at least {2 ** (len(kernel_sizes) - 1)} channels"
            )
        self.kernel_sizes = kernel_sizes
        self.stride = stride
        self.norm_first = norm_first
        self.channels_last_input = channels_last_input
        self.projs = nn.ModuleList(
            nn.Conv2d(in_dim, d, kernel_size=k, stride=stride, padding=(k - stride) // 2)
            for k, d in zip(kernel_sizes, dims)
        )
        if norm_layer is None:
            self.norm = nn.Identity()
        else:
            self.norm = norm_layer(in_dim if norm_first else out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.norm_first:
            # (B, H, W, C): normalise channels, then view as NCHW (channels_last memory, no copy)
            x = self.norm(x).permute(0, 3, 1, 2)
        elif self.channels_last_input:
            x = x.permute(0, 3, 1, 2)
        if not torch.jit.is_scripting() and _is_exporting() and (self.norm_first or self.channels_last_input):
            # with a symbolic batch, channels-last strides make the convolution's layout choice guard on
            # batch > 1; a plain NCHW copy keeps one exported graph valid for every batch size
            x = x.contiguous()
        outs = [proj(x).permute(0, 2, 3, 1) for proj in self.projs]  # each (B, H', W', d_i)
        x = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        if not self.norm_first:
            x = self.norm(x)
        return x


def _relative_position_index(group_h: int, group_w: int, device: torch.device) -> Tensor:
    """Index ``(N, N)`` into a ``(2*Gh-1) * (2*Gw-1)`` table of offsets, query minus key, row-major."""
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(group_h, device=device), torch.arange(group_w, device=device), indexing="ij"
        )
    ).flatten(1)  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (rel[0] + group_h - 1) * (2 * group_w - 1) + (rel[1] + group_w - 1)


def _relative_offsets(group_h: int, group_w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """All offsets ``(dy, dx)`` a group of ``Gh x Gw`` can hold: ``((2*Gh-1) * (2*Gw-1), 2)``."""
    dy = torch.arange(1 - group_h, group_h, device=device, dtype=dtype)
    dx = torch.arange(1 - group_w, group_w, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(dy, dx, indexing="ij")).flatten(1).transpose(0, 1)


class DynamicPositionBias(nn.Module):
    """Dynamic position bias (DPB): an MLP from relative offsets to per-head biases.

    ``pos_proj: 2 -> D``, then three ``LayerNorm -> ReLU -> Linear`` blocks (the last one to ``num_heads``).
    With ``residual=True`` the first two blocks are residual (the paper's "DPB-residual" ablation).

    Args:
        dim: Hidden width ``D`` of the MLP (the official code uses attention dim / 16).
        num_heads: Number of attention heads.
        residual: Residual connections around the two hidden blocks.
    """

    def __init__(self, dim: int, num_heads: int, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.num_heads = num_heads
        self.pos_proj = nn.Linear(2, dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(dim), nn.ReLU(inplace=True), nn.Linear(dim, num_heads))

    def table(self, group_h: int, group_w: int) -> Tensor:
        """Bias of every offset: ``((2*Gh-1) * (2*Gw-1), num_heads)``."""
        weight = self.pos_proj.weight
        pos = self.pos_proj(_relative_offsets(group_h, group_w, weight.device, weight.dtype))
        if self.residual:
            pos = pos + self.pos1(pos)
            pos = pos + self.pos2(pos)
        else:
            pos = self.pos2(self.pos1(pos))
        return self.pos3(pos)

    def forward(self, group_h: int, group_w: int) -> Tensor:
        """Bias for a ``Gh x Gw`` group: ``(num_heads, N, N)`` with ``N = Gh * Gw``."""
        n = group_h * group_w
        index = _relative_position_index(group_h, group_w, self.pos_proj.weight.device)
        return self.table(group_h, group_w)[index.reshape(n * n)].reshape(n, n, self.num_heads).permute(2, 0, 1)


class RelativePositionBias(nn.Module):
    """Learned relative position bias table (Swin's RPB), for the paper's position-encoding ablation.

    The table covers a ``G x G`` group; other group shapes (small stages, dense inputs) get the table
    resampled bicubically to ``(2*Gh-1, 2*Gw-1)``, which is what RPB can offer for variable sizes.
    """

    def __init__(self, group_size: int, num_heads: int) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_heads = num_heads
        side = 2 * group_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(side * side, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, group_h: int, group_w: int) -> Tensor:
        side = 2 * self.group_size - 1
        table = self.relative_position_bias_table
        if group_h != self.group_size or group_w != self.group_size:
            grid = table.transpose(0, 1).reshape(1, self.num_heads, side, side)
            grid = F.interpolate(grid, size=(2 * group_h - 1, 2 * group_w - 1), mode="bicubic", align_corners=False)
            table = grid.reshape(self.num_heads, (2 * group_h - 1) * (2 * group_w - 1)).transpose(0, 1)
        n = group_h * group_w
        index = _relative_position_index(group_h, group_w, table.device)
        return table[index.reshape(n * n)].reshape(n, n, self.num_heads).permute(2, 0, 1)


def _round_up(size: int, multiple: int) -> int:
    return (size + multiple - 1) // multiple * multiple


def group_layout(
    height: int, width: int, group_size: int, interval: int, long_distance: bool, fixed_interval: bool
) -> Tuple[int, int, int, int, int]:
    """How a ``height x width`` map is split into attention groups.

    Returns ``(gh, gw, i, hp, wp)``: groups hold ``gh x gw`` embeddings taken every ``i`` positions
    (``i == 1`` for SDA), from the map zero-padded at the bottom/right to ``hp x wp``. Embedding ``(y, x)`` of
    the padded map belongs to group ``(y // (gh*i), x // (gw*i), y % i, x % i)``.

    Rules, all decided from the actual size:
      * Small map (``min(height, width) <= group_size``): SDA over the whole map as one group
        (``lda_mode="fixed_group"``, the official dense backbone's rule), or square groups of side
        ``min(height, width)`` (``lda_mode="fixed_interval"``, the original dense backbone's rule).
      * SDA: ``G x G`` groups; pad to a multiple of ``G``.
      * LDA, ``fixed_group``: ``G x G`` groups every ``I``; pad to a multiple of ``G * I``.
      * LDA, ``fixed_interval``: interval ``I``; pad to a multiple of ``I``; the group covers the map.
    """
    if min(height, width) <= group_size:
        if fixed_interval:
            side = min(height, width)
            return side, side, 1, _round_up(height, side), _round_up(width, side)
        return height, width, 1, height, width
    if not long_distance:
        return group_size, group_size, 1, _round_up(height, group_size), _round_up(width, group_size)
    if fixed_interval:
        hp, wp = _round_up(height, interval), _round_up(width, interval)
        return hp // interval, wp // interval, interval, hp, wp
    span = group_size * interval
    return group_size, group_size, interval, _round_up(height, span), _round_up(width, span)


def _padding_mask(height: int, width: int, gh: int, gw: int, i: int, rh: int, rw: int, device: torch.device) -> Tensor:
    """``(num_groups, gh*gw)``, True where the key is padding; groups in the order used by the attention."""
    rows = torch.arange(rh * gh * i, device=device) >= height
    cols = torch.arange(rw * gw * i, device=device) >= width
    pad = rows[:, None] | cols[None, :]  # (hp, wp)
    # (rh, gh, i, rw, gw, i) -> (rh, rw, i, i, gh, gw)
    return pad.view(rh, gh, i, rw, gw, i).permute(0, 3, 2, 5, 1, 4).reshape(rh * rw * i * i, gh * gw)


def _axis(size: int, dim: int, device: torch.device) -> Tensor:
    """``arange(size)`` shaped to broadcast along axis ``dim`` of a 6-D grid."""
    shape = [1, 1, 1, 1, 1, 1]
    shape[dim] = -1
    return torch.arange(size, device=device).view(shape)


def _group_coordinates(gh: int, gw: int, i: int, rh: int, rw: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """For the export path: row and column of each token in group order, each ``(rh*rw*i*i*gh*gw,)``.

    Group order is ``(rh, rw, i, i)`` groups of ``(gh, gw)`` tokens, as in :meth:`LSDAttention._attend`. Built
    from broadcast ``arange`` grids (no division or remainder by a symbolic size, which exporters handle
    poorly).
    """
    y = _axis(rh, 0, device) * (gh * i) + _axis(i, 2, device) + _axis(gh, 4, device) * i
    x = _axis(rw, 1, device) * (gw * i) + _axis(i, 3, device) + _axis(gw, 5, device) * i
    shape = (rh, rw, i, i, gh, gw)
    return y.expand(shape).reshape(-1), x.expand(shape).reshape(-1)


def _ungrouped_order(gh: int, gw: int, i: int, rh: int, rw: int, device: torch.device) -> Tensor:
    """Inverse of the group order: group-order index of each padded position, in row-major order."""
    # source position (y, x) = (ry, gy, iy) x (rx, gx, ix) in mixed radix; group order is (ry, rx, iy, ix, gy, gw)
    ry, gy, iy = _axis(rh, 0, device), _axis(gh, 1, device), _axis(i, 2, device)
    rx, gx, ix = _axis(rw, 3, device), _axis(gw, 4, device), _axis(i, 5, device)
    index = ((((ry * rw + rx) * i + iy) * i + ix) * gh + gy) * gw + gx
    return index.expand(rh, gh, i, rw, gw, i).reshape(-1)


def _softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], num_groups: int, dropout: float = 0.0
) -> Tensor:
    """``softmax(q @ k^T + bias) @ v`` for ``(B*nG, nH, N, hd)`` inputs, ``q`` already scaled; ``bias`` as in
    :meth:`LSDAttention._grouped_attention` (broadcast over the batch, per group where it has ``nG`` rows);
    ``dropout`` on the attention weights (training only)."""
    attn = q @ k.transpose(-2, -1)  # (B*nG, nH, N, N)
    if bias is not None:
        nh, tokens = attn.shape[1], attn.shape[2]
        attn = (attn.view(-1, num_groups, nh, tokens, tokens) + bias).view(-1, nh, tokens, tokens)
    attn = attn.softmax(dim=-1)
    if dropout > 0.0:
        attn = F.dropout(attn, dropout)
    return attn @ v


def _softmax_attention_fake(
    q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], num_groups: int, dropout: float = 0.0
) -> Tensor:
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


_SOFTMAX_ATTENTION = opaque_op("softmax_attention", _softmax_attention, _softmax_attention_fake)


@register_notrace_module
class LSDAttention(nn.Module):
    """Long/short distance attention (LSDA): grouped multi-head self-attention with a position bias.

    Input and output are ``(B, H, W, C)``; ``H`` and ``W`` may be anything. ``qkv`` is computed on the
    unpadded map, then padded with zeros and rearranged straight into per-group, per-head layout. Padded
    keys are masked, so the result equals the official code's (which pads before ``qkv``).

    In eval mode without autograd the position bias (and padding mask) of each group layout is computed
    once and reused until the bias weights change (in-place updates, optimizer steps, ``load_state_dict``,
    ``.to()``); see :meth:`clear_bias_cache`.

    Args:
        dim: Embedding channels.
        num_heads: Attention heads.
        group_size: Group side ``G``.
        interval: LDA interval ``I``.
        long_distance: LDA (True) or SDA (False).
        fixed_interval: Grouping rule of the original dense backbone (see :func:`group_layout`).
        qkv_bias: Bias in the qkv projection.
        qk_scale: Logit scale; ``head_dim ** -0.5`` if None.
        attn_drop: Dropout on attention weights.
        proj_drop: Dropout after the output projection.
        pos_embed: ``"dpb"``, ``"dpb_residual"``, ``"rpb"``, or ``"none"``/``"ape"`` (no bias here).
        fused_attn: Use ``scaled_dot_product_attention`` on GPUs and other accelerators; otherwise the
            explicit softmax path. On the CPU the explicit path is used unless ``sdpa_on_cpu`` is set: for
            groups of 49 tokens it is about 30% faster there than SDPA's CPU kernel (same numbers).
    """

    __jit_ignored_attributes__ = ["_bias_cache", "_bias_signature"]

    def __init__(
        self,
        dim: int,
        num_heads: int,
        group_size: int,
        interval: int,
        long_distance: bool,
        fixed_interval: bool = False,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        pos_embed: str = "dpb",
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if group_size < 1 or interval < 1:
            raise ValueError(f"group_size and interval must be >= 1, got {group_size} and {interval}")
        if pos_embed not in POS_EMBED_TYPES:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_TYPES}, got {pos_embed!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = float(qk_scale) if qk_scale is not None else self.head_dim ** -0.5
        self.group_size = group_size
        self.interval = interval
        self.long_distance = long_distance
        self.fixed_interval = fixed_interval
        self.fused_attn = fused_attn
        #: Use SDPA on the CPU too (when ``fused_attn``); the explicit path is faster there for small groups.
        self.sdpa_on_cpu = False
        self.has_pos_bias = pos_embed in ("dpb", "dpb_residual", "rpb")

        self.pos = None
        if pos_embed in ("dpb", "dpb_residual"):
            if dim // 16 < 1:
                raise ValueError(f"dynamic position bias needs dim >= 16 (its width is dim // 16), got dim={dim}")
            self.pos = DynamicPositionBias(dim // 16, num_heads, residual=pos_embed == "dpb_residual")
        elif pos_embed == "rpb":
            self.pos = RelativePositionBias(group_size, num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._bias_cache = {}  # (layout, dtype, device) -> bias; Python-only (not scripted)
        self._bias_signature = ()  # (data_ptr, _version) of the bias weights the cache belongs to

    def extra_repr(self) -> str:
        kind = "LDA" if self.long_distance else "SDA"
        rule = "fixed_interval" if self.fixed_interval else "fixed_group"
        return (
            f"{kind}, dim={self.dim}, num_heads={self.num_heads}, group_size={self.group_size}, "
            f"interval={self.interval}, lda_mode={rule}, fused_attn={self.fused_attn}"
        )

    # ------------------------------------------------------------------ bias (position bias + padding mask)
    def _position_bias(self, gh: int, gw: int) -> Optional[Tensor]:
        pos = self.pos
        if pos is None:
            return None
        return pos(gh, gw)

    def _compute_bias(
        self, height: int, width: int, gh: int, gw: int, i: int, rh: int, rw: int, padded: bool, dtype: torch.dtype,
        device: torch.device,
    ) -> Optional[Tensor]:
        """Additive attention bias: ``(1, nH, N, N)``, or ``(num_groups, nH, N, N)`` when padding is masked."""
        bias = self._position_bias(gh, gw)
        if bias is not None:
            bias = bias.to(dtype).unsqueeze(0)
        if not padded:
            return bias
        mask = _padding_mask(height, width, gh, gw, i, rh, rw, device)
        # Added to the logits of padded keys, like the official -1e6. Finite on purpose: a group made only of
        # padding gets a uniform (discarded) softmax instead of NaNs that would poison the backward pass.
        # float16 cannot hold -1e6, so it gets a value that still underflows exp() to zero.
        mask_value = -3.0e4 if dtype == torch.float16 else -1.0e6
        masked = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(mask, mask_value)[:, None, None, :]
        return masked if bias is None else bias + masked

    def _weights_signature(self) -> Tuple[Tuple[int, int], ...]:
        pos = self.pos
        if pos is None:
            return ()
        return tuple((p.data_ptr(), p._version) for p in pos.parameters())

    @torch.jit.unused
    def _cached_bias(
        self, height: int, width: int, gh: int, gw: int, i: int, rh: int, rw: int, padded: bool, dtype: torch.dtype,
        device: torch.device,
    ) -> Optional[Tensor]:
        if _is_compiling():
            return self._compute_bias(height, width, gh, gw, i, rh, rw, padded, dtype, device)
        signature = self._weights_signature()
        if signature != self._bias_signature:
            self._bias_cache.clear()
            self._bias_signature = signature
        key = (height, width, gh, gw, i, rh, rw, dtype, device)
        if key not in self._bias_cache:
            if len(self._bias_cache) >= 16:  # many input sizes: keep memory bounded
                self._bias_cache.pop(next(iter(self._bias_cache)))
            self._bias_cache[key] = self._compute_bias(height, width, gh, gw, i, rh, rw, padded, dtype, device)
        return self._bias_cache[key]

    def clear_bias_cache(self) -> None:
        """Forget cached biases (needed only after writing weights through ``.data``, which autograd can't see)."""
        self._bias_cache.clear()
        self._bias_signature = ()

    def attention_bias(
        self, height: int, width: int, gh: int, gw: int, i: int, rh: int, rw: int, padded: bool, dtype: torch.dtype,
        device: torch.device,
    ) -> Optional[Tensor]:
        """Position bias plus padding mask for one group layout (cached in eval mode without autograd).

        Args:
            height, width: Size of the unpadded map.
            gh, gw, i: Group shape and interval; rh, rw: groups per padded map side (see :func:`group_layout`).
            padded: Whether the map was padded (adds the key mask).
        """
        if torch.jit.is_scripting() or self.training or torch.is_grad_enabled():
            return self._compute_bias(height, width, gh, gw, i, rh, rw, padded, dtype, device)
        return self._cached_bias(height, width, gh, gw, i, rh, rw, padded, dtype, device)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and _is_exporting():
            return self._forward_export(x)
        _, height, width, _ = x.shape
        gh, gw, i, hp, wp = self.layout(height, width)
        bias = self.layout_bias(height, width, gh, gw, i, hp, wp, x.dtype, x.device)
        return self._attend(x, gh, gw, i, hp, wp, bias)

    def layout(self, height: int, width: int) -> Tuple[int, int, int, int, int]:
        """``(gh, gw, i, hp, wp)`` for a ``height x width`` map (see :func:`group_layout`)."""
        return group_layout(height, width, self.group_size, self.interval, self.long_distance, self.fixed_interval)

    def layout_bias(
        self, height: int, width: int, gh: int, gw: int, i: int, hp: int, wp: int, dtype: torch.dtype,
        device: torch.device,
    ) -> Optional[Tensor]:
        """:meth:`attention_bias` for the layout ``(gh, gw, i, hp, wp)`` of a ``height x width`` map."""
        padded = hp != height or wp != width
        return self.attention_bias(height, width, gh, gw, i, hp // (gh * i), wp // (gw * i), padded, dtype, device)

    def _attend(
        self, x: Tensor, gh: int, gw: int, i: int, hp: int, wp: int, bias: Optional[Tensor],
        residual: Optional[Tensor] = None,
    ) -> Tensor:
        """Attention within ``gh x gw`` groups taken every ``i`` positions of ``x`` padded to ``hp x wp``.

        ``bias`` is :meth:`layout_bias` of that layout. With ``residual`` (eval mode only: no dropout in
        between) the result is ``residual + attention``, the add fused into the output projection.
        """
        batch, height, width, channels = x.shape
        rh, rw = hp // (gh * i), wp // (gw * i)
        num_groups, tokens = rh * rw * i * i, gh * gw
        nh, hd = self.num_heads, self.head_dim
        padded = hp != height or wp != width

        fast = not torch.jit.is_scripting() and self._use_onednn(x)
        qkv = self._onednn_qkv(x) if fast else self.qkv(x)  # (B, H, W, 3C)
        if padded:
            qkv = F.pad(qkv, (0, 0, 0, wp - width, 0, hp - height))
        # (B, rh, gh, i, rw, gw, i, 3, nH, hd) -> (3, B, rh, rw, i, i, nH, gh, gw, hd)
        qkv = qkv.view(batch, rh, gh, i, rw, gw, i, 3, nh, hd).permute(7, 0, 1, 4, 3, 6, 8, 2, 5, 9)
        q, k, v = qkv.reshape(3, batch * num_groups, nh, tokens, hd).unbind(0)  # (B*nG, nH, N, hd)
        x = self._grouped_attention(q, k, v, bias, batch, num_groups, padded)

        # (B, rh, rw, i, i, nH, gh, gw, hd) -> (B, rh, gh, i, rw, gw, i, nH, hd) -> (B, hp, wp, C)
        x = x.view(batch, rh, rw, i, i, nh, gh, gw, hd).permute(0, 1, 6, 3, 2, 7, 4, 5, 8)
        x = x.reshape(batch, hp, wp, channels)
        if padded:
            x = x[:, :height, :width, :]
        if fast:
            return self._onednn_proj(x, residual)
        x = self.proj_drop(self.proj(x))
        return x if residual is None else residual + x

    @torch.jit.unused
    def _use_onednn(self, x: Tensor) -> bool:
        """Whether qkv and proj run through :mod:`~crossformer_vision.onednn` (CPU inference without autograd)."""
        return onednn.usable(x, self.qkv) and onednn.usable(x, self.proj)

    @torch.jit.unused
    def _onednn_qkv(self, x: Tensor) -> Tensor:
        return onednn.linear(x, self.qkv)

    @torch.jit.unused
    def _onednn_proj(self, x: Tensor, residual: Optional[Tensor]) -> Tensor:
        """``proj(x)``, plus ``residual`` in the same call (eval: ``proj_drop`` is the identity)."""
        if residual is None or self.training:
            x = self.proj_drop(onednn.linear(x, self.proj))
            return x if residual is None else residual + x
        return onednn.linear(x, self.proj, residual=residual)

    def _grouped_attention(
        self, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], batch: int, num_groups: int, per_group: bool,
        fused: bool = True,
    ) -> Tensor:
        """Softmax attention of ``(B*nG, nH, N, hd)`` queries/keys/values with an additive ``bias``.

        ``bias`` is ``(1, nH, N, N)`` shared by all groups, or per group (``per_group``): ``(nG, nH, N, N)``,
        or ``(nG, 1, 1, N)`` for a padding mask alone.
        """
        nh, tokens = q.shape[1], q.shape[2]
        if fused and self.fused_attn and (self.sdpa_on_cpu or q.device.type != "cpu"):
            if bias is not None and per_group:  # SDPA wants a per-group bias per batch element
                bias = bias.unsqueeze(0).expand(batch, num_groups, nh, tokens, tokens)
                bias = bias.reshape(batch * num_groups, nh, tokens, tokens)
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale
            )
        if not torch.jit.is_scripting() and self._opaque_attention(q):
            return self._compiled_attention(q * self.scale, k, v, bias, num_groups)
        return _softmax_attention(q * self.scale, k, v, bias, num_groups, self.attn_drop.p if self.training else 0.0)

    @torch.jit.unused
    def _opaque_attention(self, q: Tensor) -> bool:
        """Under torch.compile on the CPU, inference (no autograd, no dropout) runs the explicit attention as
        the opaque op ``crossformer_vision::softmax_attention``: inductor's softmax over rows of 49 is
        several times slower than eager's kernel, while the layout copies around it compile well."""
        return (_SOFTMAX_ATTENTION is not None and q.device.type == "cpu" and _is_compiling()
                and not torch.is_grad_enabled() and not (self.training and self.attn_drop.p > 0))

    @torch.jit.unused
    def _compiled_attention(self, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], num_groups: int) -> Tensor:
        return _SOFTMAX_ATTENTION(q, k, v, bias, num_groups)

    # ------------------------------------------------------------------ torch.export / ONNX
    @torch.jit.unused
    def _forward_export(self, x: Tensor) -> Tensor:
        """``torch.export`` path: one graph for every input size, equal to :meth:`forward`.

        The small-map rule becomes ``torch.cond`` (an ONNX ``If``) where the exported size range allows both
        outcomes. Tokens are gathered into groups with computed indices instead of split views, padding and
        masking are unconditional, so no shape fact of the example input is baked into the graph.
        """
        from torch.fx.experimental.symbolic_shapes import statically_known_true

        _, height, width, _ = x.shape
        group_size, interval = self.group_size, self.interval

        def small_map(t: Tensor) -> Tensor:
            _, h, w, _ = t.shape
            if self.fixed_interval:
                side = torch.sym_min(h, w)
                return self._attend_export(t, side, side, 1, _round_up(h, side), _round_up(w, side))
            return self._attend_export(t, h, w, 1, h, w)

        def regular(t: Tensor) -> Tensor:
            _, h, w, _ = t.shape
            if not self.long_distance:
                return self._attend_export(t, group_size, group_size, 1, _round_up(h, group_size), _round_up(w, group_size))
            if self.fixed_interval:
                hp, wp = _round_up(h, interval), _round_up(w, interval)
                return self._attend_export(t, hp // interval, wp // interval, interval, hp, wp)
            span = group_size * interval
            return self._attend_export(t, group_size, group_size, interval, _round_up(h, span), _round_up(w, span))

        # trace only what the exported size range allows: a branch that can never run could still
        # constrain the graph
        small = torch.sym_min(height, width) <= group_size
        if statically_known_true(torch.sym_min(height, width) > group_size):
            return regular(x)
        if statically_known_true(small):
            return small_map(x)
        return torch.cond(small, small_map, regular, (x,))

    @torch.jit.unused
    def _attend_export(self, x: Tensor, gh: int, gw: int, i: int, hp: int, wp: int) -> Tensor:
        """:meth:`_attend` with gathers in place of split views (export-friendly, same numbers)."""
        batch, height, width, channels = x.shape
        tokens, nh, hd = gh * gw, self.num_heads, self.head_dim
        num_groups = (hp * wp) // tokens
        rh, rw = hp // (gh * i), wp // (gw * i)
        rows, cols = _group_coordinates(gh, gw, i, rh, rw, x.device)  # (hp*wp,) each, in group order
        order = rows * wp + cols

        qkv = F.pad(self.qkv(x), (0, 0, 0, wp - width, 0, hp - height)).reshape(batch, hp * wp, 3 * channels)
        qkv = qkv.index_select(1, order).reshape(batch * num_groups, tokens, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B*nG, nH, N, hd)

        is_pad = (rows >= height) | (cols >= width)
        bias = is_pad.view(num_groups, 1, 1, tokens).to(q.dtype) * (-3.0e4 if q.dtype == torch.float16 else -1.0e6)
        position = self._position_bias(gh, gw)
        if position is not None:
            bias = bias + position.to(q.dtype).unsqueeze(0)
        # explicit softmax attention: SDPA's traced output strides differ from its decomposition's, which
        # breaks the ONNX exporter's reshape below
        x = self._grouped_attention(q, k, v, bias, batch, num_groups, True, fused=False)

        x = x.transpose(1, 2).reshape(batch, hp * wp, channels)  # (B*nG, N, nH, hd) -> (B, nG*N, C)
        x = x.index_select(1, _ungrouped_order(gh, gw, i, rh, rw, x.device)).view(batch, hp, wp, channels)
        # crop by gathering rows/columns 0..H-1 / 0..W-1: the size is exactly (H, W) with no proof that it fits,
        # so both branches of torch.cond return identical shapes and strides
        x = x.index_select(1, torch.arange(height, device=x.device)).index_select(2, torch.arange(width, device=x.device))
        return self.proj_drop(self.proj(x))


class ActivationCoolingLayer(nn.Module):
    """Activation cooling layer (ACL) of CrossFormer++: depth-wise conv then LayerNorm, no residual.

    It replaces the block output (the official code applies it after the MLP residual), which keeps
    the activation magnitudes of deep stages from growing.
    """

    def __init__(self, dim: int, kernel_size: int = 3, norm_layer: type = nn.LayerNorm) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim)
        self.norm = norm_layer(dim)

    def forward(self, x: Tensor) -> Tensor:
        # (B, H, W, C) -> NCHW view (channels_last memory) -> conv -> back to (B, H, W, C)
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))

