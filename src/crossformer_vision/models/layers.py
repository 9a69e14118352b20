"""CrossFormer's building blocks besides attention: cross-scale embedding, position biases, cooling.

* :class:`CrossScaleEmbedding` (CEL): several convolutions of different kernel sizes and one stride whose
  outputs are concatenated along channels; the stem (stride 4) and the merges between stages (stride 2).
* :class:`DynamicPositionBias` (DPB): a small MLP that maps relative offsets ``(dy, dx)`` to one bias per
  head, so the bias exists for any group shape. :class:`RelativePositionBias` (Swin's RPB) and
  :class:`AbsolutePositionEmbedding` (APE) are the paper's position-encoding ablations.
* :class:`ActivationCoolingLayer` (ACL, CrossFormer++): depth-wise 3x3 convolution followed by LayerNorm.

Tensors between blocks are channels-last: ``(B, H, W, C)``. These layers are kept apart from
:mod:`.crossformer` so that the model file reads as the architecture (attention, block, stage, model); each
is one screen and none of them has a speed path.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models import register_notrace_module
from torch import Tensor, nn

from ..runtime.conv import space_to_depth_conv
from ..runtime.dispatch import conv_in_blocks
from ..runtime.export import plain_layout
from ..runtime.options import RuntimeOptions

__all__ = [
    "ActivationCoolingLayer",
    "AbsolutePositionEmbedding",
    "CrossScaleEmbedding",
    "DynamicPositionBias",
    "RelativePositionBias",
    "cel_channel_split",
    "position_bias_layer",
]


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
        runtime: The model's runtime options: in CPU training the large kernels may run in ``stride x stride``
            blocks (same numbers, :func:`crossformer_vision.runtime.dispatch.conv_in_blocks`).
    """

    __jit_ignored_attributes__ = ["runtime"]

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_sizes: Tuple[int, ...],
        stride: int,
        norm_layer: Optional[type] = nn.LayerNorm,
        norm_first: bool = False,
        channels_last_input: bool = False,
        runtime: Optional[RuntimeOptions] = None,
    ) -> None:
        super().__init__()
        self.runtime = runtime if runtime is not None else RuntimeOptions()
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
        if not torch.jit.is_scripting() and (self.norm_first or self.channels_last_input):
            x = plain_layout(x)  # torch.export: NCHW memory keeps the graph valid for every batch size
        outs: List[Tensor] = []
        for proj in self.projs:  # each (B, H', W', d_i); large kernels in CPU training in blocks (same numbers)
            if torch.jit.is_scripting():
                y = proj(x)
            elif conv_in_blocks(self.runtime, x, proj):
                y = space_to_depth_conv(x, proj)
            else:
                y = proj(x)
            outs.append(y.permute(0, 2, 3, 1))
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


def position_bias_layer(pos_embed: str, dim: int, num_heads: int, group_size: int) -> Optional[nn.Module]:
    """The position bias of an attention layer of ``dim`` channels: a :class:`DynamicPositionBias` of width
    ``dim // 16`` (``"dpb"``, ``"dpb_residual"``), a :class:`RelativePositionBias` of a ``group_size`` group
    (``"rpb"``), or None (``"ape"``, ``"none"``: no bias in the attention)."""
    if pos_embed in ("dpb", "dpb_residual"):
        if dim // 16 < 1:
            raise ValueError(f"dynamic position bias needs dim >= 16 (its width is dim // 16), got dim={dim}")
        return DynamicPositionBias(dim // 16, num_heads, residual=pos_embed == "dpb_residual")
    if pos_embed == "rpb":
        return RelativePositionBias(group_size, num_heads)
    return None


@register_notrace_module
class AbsolutePositionEmbedding(nn.Module):
    """Learned absolute position embedding (the paper's APE ablation), resampled to the actual map size."""

    def __init__(self, grid_size: Tuple[int, int], dim: int) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_size[0], grid_size[1], dim))
        trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[1], x.shape[2]
        pos = self.pos_embed
        if (height, width) != self.grid_size:
            pos = resample_abs_pos_embed(
                pos.flatten(1, 2), (height, width), self.grid_size, num_prefix_tokens=0
            ).reshape(1, height, width, -1)
        return x + pos


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
