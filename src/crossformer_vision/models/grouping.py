"""How an LSDA layer splits a feature map into attention groups: the only statement of the SDA/LDA rule.

Short distance attention (SDA) groups ``G x G`` adjacent embeddings; long distance attention (LDA) groups
embeddings sampled every ``I`` positions. A layout ``(gh, gw, interval, hp, wp)`` (:class:`GroupLayout`)
says how: groups of ``gh x gw`` embeddings taken every ``interval`` positions (1 for SDA) from the map
zero-padded at the bottom/right to ``hp x wp``. With ``rh = hp / (gh * interval)`` and
``rw = wp / (gw * interval)`` groups of groups per side, embedding ``(y, x)`` of the padded map is::

    y = (ry * gh + gy) * interval + iy        x = (rx * gw + gx) * interval + ix

token ``(gy, gx)`` of group ``(ry, rx, iy, ix)``. So the padded map, viewed with the six axes
``(ry, gy, iy, rx, gx, ix)``, is in group order once those axes are permuted to ``(ry, rx, iy, ix, gy, gx)``
(:func:`group_axes`). Everything below derives from that permutation:

* :func:`token_coordinates`: where each token of each group sits in the padded map (the gather indices);
* :func:`group_qkv` / :func:`ungroup`: eagerly views and permutes; while exporting, gathers with those
  coordinates (computed indices keep one graph valid for every size);
* :func:`padding_mask`: which tokens of which group are padding.

The layout itself comes from the actual size in ``forward`` (:func:`group_layout`); nothing here keeps state.
"""
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GroupLayout",
    "group_axes",
    "group_layout",
    "group_qkv",
    "groups_per_side",
    "is_small_map",
    "padding_mask",
    "regular_layout",
    "small_map_layout",
    "token_coordinates",
    "ungroup",
]


class GroupLayout(NamedTuple):
    """Groups of ``gh x gw`` embeddings taken every ``interval`` positions of the map padded to ``hp x wp``."""

    gh: int
    gw: int
    interval: int
    hp: int
    wp: int


def _round_up(size: int, multiple: int) -> int:
    return (size + multiple - 1) // multiple * multiple


def _smaller(a: int, b: int) -> int:
    """``min(a, b)``; with symbolic sizes (torch.export) it stays symbolic instead of guarding on which is smaller."""
    if torch.jit.is_scripting():
        return min(a, b)
    if isinstance(a, torch.SymInt) or isinstance(b, torch.SymInt):
        return torch.sym_min(a, b)
    return min(a, b)  # ints, or the 0-d tensors torch.jit.trace gives for sizes


# ----------------------------------------------------------------------------------------------- the rule
def is_small_map(height: int, width: int, group_size: int) -> bool:
    """The small-map rule's test: a map with a side no longer than the group side is grouped as a whole."""
    return _smaller(height, width) <= group_size


def small_map_layout(height: int, width: int, fixed_interval: bool) -> GroupLayout:
    """Layout of a small map: SDA over the whole map as one group (``lda_mode="fixed_group"``, the official
    dense backbone's rule), or square groups of side ``min(height, width)`` (``lda_mode="fixed_interval"``,
    the original dense backbone's rule). LDA blocks do the same."""
    if fixed_interval:
        side = _smaller(height, width)
        return GroupLayout(side, side, 1, _round_up(height, side), _round_up(width, side))
    return GroupLayout(height, width, 1, height, width)


def regular_layout(
    height: int, width: int, group_size: int, interval: int, long_distance: bool, fixed_interval: bool
) -> GroupLayout:
    """Layout of a map larger than the group.

    * SDA: ``G x G`` groups; pad to a multiple of ``G``.
    * LDA, ``fixed_group``: ``G x G`` groups every ``I``; pad to a multiple of ``G * I``.
    * LDA, ``fixed_interval``: interval ``I``; pad to a multiple of ``I``; the group covers the map.
    """
    if not long_distance:
        return GroupLayout(group_size, group_size, 1, _round_up(height, group_size), _round_up(width, group_size))
    if fixed_interval:
        hp, wp = _round_up(height, interval), _round_up(width, interval)
        return GroupLayout(hp // interval, wp // interval, interval, hp, wp)
    span = group_size * interval
    return GroupLayout(group_size, group_size, interval, _round_up(height, span), _round_up(width, span))


def group_layout(
    height: int, width: int, group_size: int, interval: int, long_distance: bool, fixed_interval: bool
) -> GroupLayout:
    """How a ``height x width`` map is split into groups (:func:`small_map_layout` or :func:`regular_layout`).

    Args:
        height, width: Size of the (unpadded) map.
        group_size: Group side ``G``.
        interval: LDA interval ``I``.
        long_distance: LDA (True) or SDA (False).
        fixed_interval: ``lda_mode="fixed_interval"`` (the original dense backbone's rule).
    """
    if is_small_map(height, width, group_size):
        return small_map_layout(height, width, fixed_interval)
    return regular_layout(height, width, group_size, interval, long_distance, fixed_interval)


def groups_per_side(layout: GroupLayout) -> Tuple[int, int]:
    """``(rh, rw)``: groups of groups along the padded map's height and width."""
    return layout.hp // (layout.gh * layout.interval), layout.wp // (layout.gw * layout.interval)


# ----------------------------------------------------------------------------------------------- group order
def group_axes() -> List[int]:
    """The group order: the padded map's axes ``(ry, gy, iy, rx, gx, ix)`` permuted to
    ``(ry, rx, iy, ix, gy, gx)`` (groups, then the tokens of a group). The only statement of it."""
    return [0, 3, 2, 5, 1, 4]


def _inverse(order: List[int]) -> List[int]:
    return [order.index(axis) for axis in range(len(order))]


def _map_axes(layout: GroupLayout) -> List[int]:
    """Sizes of the padded map's axes ``(ry, gy, iy, rx, gx, ix)``."""
    rh, rw = groups_per_side(layout)
    return [rh, layout.gh, layout.interval, rw, layout.gw, layout.interval]


def _arange_along(size: int, dim: int, device: torch.device) -> Tensor:
    """``arange(size)`` shaped to broadcast along dimension ``dim`` of a 6-D grid."""
    shape = [1, 1, 1, 1, 1, 1]
    shape[dim] = -1
    return torch.arange(size, device=device).view(shape)


def token_coordinates(layout: GroupLayout, device: torch.device) -> Tuple[Tensor, Tensor]:
    """Row and column in the padded map of every token, in group order: two ``(nG * N,)`` tensors.

    Built from broadcast ``arange`` grids (no division or remainder by a size, which exporters handle poorly).
    """
    order = group_axes()
    where = _inverse(order)  # dimension of each map axis in the group-order grid
    sizes = _map_axes(layout)
    step = layout.interval
    y = (_arange_along(sizes[0], where[0], device) * (layout.gh * step)
         + _arange_along(sizes[1], where[1], device) * step + _arange_along(sizes[2], where[2], device))
    x = (_arange_along(sizes[3], where[3], device) * (layout.gw * step)
         + _arange_along(sizes[4], where[4], device) * step + _arange_along(sizes[5], where[5], device))
    grid = [sizes[axis] for axis in order]
    return y.expand(grid).reshape(-1), x.expand(grid).reshape(-1)


def _ungroup_index(layout: GroupLayout, device: torch.device) -> Tensor:
    """Inverse of the group order: the group-order index of each padded position, row-major ``(hp * wp,)``."""
    order = group_axes()
    where = _inverse(order)
    sizes = _map_axes(layout)
    strides = [1, 1, 1, 1, 1, 1]  # of the group-order grid
    for dim in range(4, -1, -1):
        strides[dim] = strides[dim + 1] * sizes[order[dim + 1]]
    index = _arange_along(sizes[0], 0, device) * strides[where[0]]
    for axis in range(1, 6):
        index = index + _arange_along(sizes[axis], axis, device) * strides[where[axis]]
    return index.expand(sizes).reshape(-1)


def padding_mask(height: int, width: int, layout: GroupLayout, device: torch.device,
                 coordinates: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    """``(nG, N)``, True where a group's token is padding (outside the ``height x width`` map); ``coordinates``:
    :func:`token_coordinates` if already computed."""
    rows, cols = token_coordinates(layout, device) if coordinates is None else coordinates
    tokens = layout.gh * layout.gw
    return ((rows >= height) | (cols >= width)).view(-1, tokens)


# ----------------------------------------------------------------------------------------------- group / ungroup
def group_qkv(qkv: Tensor, layout: GroupLayout, num_heads: int,
              coordinates: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Padding and grouping of q, k, v: ``(B, H, W, 3C) -> 3 x (B*nG, nH, N, hd)``.

    ``qkv`` of the unpadded map is zero-padded to ``hp x wp`` (padded keys are masked by the attention bias).
    Eagerly a view and one permuting copy; given :func:`token_coordinates` (torch.export), an index gather.
    """
    batch, height, width, channels3 = qkv.shape
    head_dim = channels3 // (3 * num_heads)
    gh, gw, step, hp, wp = layout
    rh, rw = groups_per_side(layout)
    tokens = gh * gw
    num_groups = rh * rw * step * step
    if coordinates is not None or hp != height or wp != width:
        qkv = F.pad(qkv, (0, 0, 0, wp - width, 0, hp - height))
    if coordinates is not None:
        rows, cols = coordinates
        qkv = qkv.reshape(batch, hp * wp, channels3).index_select(1, rows * wp + cols)
        qkv = qkv.reshape(batch * num_groups, tokens, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    else:
        a = [axis + 1 for axis in group_axes()]  # after the batch dimension
        # (B, ry, gy, iy, rx, gx, ix, 3, nH, hd) -> (3, B, ry, rx, iy, ix, nH, gy, gx, hd)
        qkv = qkv.view(batch, rh, gh, step, rw, gw, step, 3, num_heads, head_dim)
        qkv = qkv.permute([7, 0, a[0], a[1], a[2], a[3], 8, a[4], a[5], 9])
        qkv = qkv.reshape(3, batch * num_groups, num_heads, tokens, head_dim)
    q, k, v = qkv.unbind(0)
    return q, k, v


def ungroup(x: Tensor, layout: GroupLayout, batch: int, height: int, width: int, gather: bool = False) -> Tensor:
    """Ungrouping and cropping: ``(B*nG, nH, N, hd) -> (B, H, W, C)``, the inverse of :func:`group_qkv`; with
    ``gather`` (torch.export) by index gathers."""
    num_heads, head_dim = x.shape[1], x.shape[3]
    channels = num_heads * head_dim
    gh, gw, step, hp, wp = layout
    rh, rw = groups_per_side(layout)
    if gather:
        x = x.transpose(1, 2).reshape(batch, hp * wp, channels)  # (B*nG, N, nH, hd) -> (B, nG*N, C)
        x = x.index_select(1, _ungroup_index(layout, x.device)).view(batch, hp, wp, channels)
        # crop by gathering rows/columns 0..H-1 / 0..W-1: the size is exactly (H, W) with no proof that it fits,
        # so both branches of torch.cond return identical shapes and strides
        x = x.index_select(1, torch.arange(height, device=x.device))
        return x.index_select(2, torch.arange(width, device=x.device))
    back = _inverse(group_axes())
    # position of each map axis in (B, ry, rx, iy, ix, nH, gy, gx, hd): group axes at 1-4, token axes at 6-7
    dims = [1 + d if d < 4 else 2 + d for d in back]
    # (B, ry, rx, iy, ix, nH, gy, gx, hd) -> (B, ry, gy, iy, rx, gx, ix, nH, hd) -> (B, hp, wp, C)
    x = x.view(batch, rh, rw, step, step, num_heads, gh, gw, head_dim)
    x = x.permute([0, dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], 5, 8]).reshape(batch, hp, wp, channels)
    if hp != height or wp != width:
        x = x[:, :height, :width, :]
    return x
