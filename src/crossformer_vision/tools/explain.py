"""What CrossFormer's own parts do on one image, drawn: groups, position biases, attention, cross-scale embedding.

``crossformer explain`` (:mod:`crossformer_vision.cli.explain`) calls :func:`explain_image`, which writes PNGs
and an ``index.html`` that shows them together. Every number in a picture comes from the model's own code, so
the picture and the computation cannot disagree:

* **feature-map sizes and attention inputs**: one real forward pass of the image; a forward hook on every
  block's ``norm1`` records the block's attention input, ``(1, H, W, C)`` (:func:`record_attention_inputs`).
  Nothing in the model changes and no extra work happens outside this tool.
* **groups** (:func:`token_group`): the layer's own :meth:`~crossformer_vision.models.LSDAttention.layout` for
  the recorded map size (the grouping rule of :mod:`crossformer_vision.models.grouping`, small-map rule and
  padding included), :func:`~crossformer_vision.models.grouping.token_coordinates` (where each token of each
  group sits) and :func:`~crossformer_vision.models.grouping.padding_mask`. ``tests/tools/test_explain.py``
  checks the members against the tokens the layer actually mixes, by perturbing one input token.
* **attention weights** (:func:`attention_weights`): the layer's ``qkv``, its bias (:meth:`compute_bias`: the
  position bias plus the padding mask), :func:`~crossformer_vision.models.grouping.group_qkv` and the
  explicit attention kernel of :mod:`crossformer_vision.runtime.kernels` with the identity matrix as values
  (``softmax(q k^T * scale + bias) @ I`` is the weight matrix), on the recorded input. The test checks that
  these weights, applied to the layer's values and its output projection, give the layer's output.
* **position bias** (:func:`position_bias_map`): the layer's position-bias module for the group shape the
  layer uses on this image, arranged by offset (query minus key).
* **cross-scale embedding** (:func:`embedding_footprints`): the kernel sizes, stride and padding of the
  convolutions of every cross-scale embedding layer (the stem and the merges).

A pixel belongs to the token whose central ``stride x stride`` cell covers it (every kernel of a CEL is centred
on that cell); pixels of the bottom/right remainder that a stride drops belong to the last token
(:func:`pixel_token`).
"""
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..models.crossformer import LSDAttention
from ..models.grouping import GroupLayout, group_qkv, padding_mask, token_coordinates
from ..runtime.kernels import grouped_attention

__all__ = [
    "AttentionInput",
    "TokenGroup",
    "attention_weights",
    "embedding_footprints",
    "explain_image",
    "image_tensor",
    "pixel_token",
    "position_bias_map",
    "record_attention_inputs",
    "shrink_image",
    "stage_strides",
    "token_group",
]


# ================================================================================================ the model's numbers
@dataclass
class AttentionInput:
    """The input of one block's attention layer in a real forward pass."""

    stage: int
    block: int
    attn: nn.Module
    x: Tensor  # (1, H, W, C): the block's norm1 output

    @property
    def size(self) -> Tuple[int, int]:
        return int(self.x.shape[1]), int(self.x.shape[2])


@dataclass
class TokenGroup:
    """The group of one token in one attention layer: the layout of the map, and the group's tokens."""

    layout: GroupLayout
    map_size: Tuple[int, int]
    token: Tuple[int, int]
    index: int  # the group's index in group order (grouping.group_axes)
    position: int  # the token's index within the group
    tokens: List[Tuple[int, int]] = field(default_factory=list)  # every token of the group in group order (padded map)
    padding: List[bool] = field(default_factory=list)  # True where tokens[i] is padding (outside the map)
    small_map: bool = False  # the layer's small-map rule applied (a side no longer than the group side)

    @property
    def members(self) -> List[Tuple[int, int]]:
        """The group's tokens inside the map."""
        return [t for t, pad in zip(self.tokens, self.padding) if not pad]

    @property
    def padded(self) -> List[Tuple[int, int]]:
        """The group's padding tokens (outside the map, in the zero-padded border)."""
        return [t for t, pad in zip(self.tokens, self.padding) if pad]


def record_attention_inputs(model: nn.Module, image: Tensor) -> List[AttentionInput]:
    """Run ``model`` on ``image`` (``(1, C, H, W)``, eval mode, no autograd) and return every block's attention
    input, recorded by a forward hook on the block's ``norm1`` (the last call wins; with one image there is one)."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, C, H, W), got shape {list(image.shape)}")
    found: Dict[Tuple[int, int], AttentionInput] = {}
    handles = []
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            def hook(module: nn.Module, args: Any, output: Tensor, i: int = i, j: int = j, block: nn.Module = block) -> None:
                found[(i, j)] = AttentionInput(i, j, block.attn, output.detach())

            handles.append(block.norm1.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.forward_features(image) if hasattr(model, "forward_features") else model(image)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [found[key] for key in sorted(found)]


def stage_strides(model: nn.Module) -> List[int]:
    """Pixels per token of each stage: the stem's stride times every merge's (from the CEL modules)."""
    stride = int(model.patch_embed.stride)
    strides = []
    for i, stage in enumerate(model.stages):
        if i > 0:
            stride *= int(getattr(stage.downsample, "stride", 1))
        strides.append(stride)
    return strides


def pixel_token(x: int, y: int, stride: int, map_size: Tuple[int, int]) -> Tuple[int, int]:
    """``(row, col)`` of the token of pixel ``(x, y)`` in a map of ``map_size`` tokens of ``stride`` pixels."""
    return min(y // stride, map_size[0] - 1), min(x // stride, map_size[1] - 1)


def token_group(attn: nn.Module, height: int, width: int, row: int, col: int) -> TokenGroup:
    """The group of token ``(row, col)`` of a ``height x width`` map in LSDA layer ``attn``: its layout from the
    layer (:meth:`~crossformer_vision.models.LSDAttention.layout`), its tokens from
    :func:`~crossformer_vision.models.grouping.token_coordinates`, its padding from
    :func:`~crossformer_vision.models.grouping.padding_mask`."""
    if not 0 <= row < height or not 0 <= col < width:
        raise ValueError(f"token ({row}, {col}) is outside the {height}x{width} map")
    layout = attn.layout(height, width)
    device = torch.device("cpu")
    coordinates = token_coordinates(layout, device)
    tokens = layout.gh * layout.gw
    rows, cols = coordinates[0].view(-1, tokens), coordinates[1].view(-1, tokens)
    padding = padding_mask(height, width, layout, device, coordinates)  # (nG, N)
    hits = ((rows == row) & (cols == col)).nonzero()
    if hits.shape[0] != 1:  # every position of the padded map is in exactly one group
        raise RuntimeError(f"token ({row}, {col}) is in {hits.shape[0]} groups of {layout}")
    g, n = int(hits[0, 0]), int(hits[0, 1])
    return TokenGroup(layout, (height, width), (row, col), g, n,
                      [(int(r), int(c)) for r, c in zip(rows[g], cols[g])], [bool(p) for p in padding[g]],
                      bool(attn.small_map(height, width)))


def attention_weights(attn: nn.Module, x: Tensor, row: int, col: int) -> Tuple[TokenGroup, Tensor]:
    """Where query ``(row, col)`` attends in LSDA layer ``attn`` given its input ``x`` (``(1, H, W, C)``).

    Returns the query's :class:`TokenGroup` and its weights ``(num_heads, N)`` over the group's tokens (group
    order; padding tokens get ~0): the layer's qkv projection, its bias (position bias + padding mask), its
    grouping, and the explicit kernel of :mod:`crossformer_vision.runtime.kernels` with identity values.
    """
    _, height, width, _ = x.shape
    group = token_group(attn, height, width, row, col)
    layout = group.layout
    with torch.no_grad():
        bias = attn.compute_bias(height, width, layout, x.dtype, x.device)
        q, k, _ = group_qkv(attn.qkv(x), layout, attn.num_heads)  # 3 x (nG, nH, N, hd)
        g = group.index
        if bias is not None and bias.shape[0] > 1:  # per-group bias (padding): this group's
            bias = bias[g : g + 1]
        tokens = layout.gh * layout.gw
        identity = torch.eye(tokens, dtype=x.dtype, device=x.device).expand(1, attn.num_heads, tokens, tokens)
        weights = grouped_attention(q[g : g + 1], k[g : g + 1], identity, bias, 1, attn.scale, 0.0, False, "explicit")
    return group, weights[0, :, group.position]


def position_bias_map(attn: nn.Module, group_h: int, group_w: int) -> Optional[Tensor]:
    """The position bias of ``attn`` for a ``group_h x group_w`` group as ``(num_heads, 2*group_h-1, 2*group_w-1)``:
    entry ``[h, dy + group_h - 1, dx + group_w - 1]`` is what head ``h`` adds to the logit of a query ``(dy, dx)``
    group positions below/right of its key. None for a layer without one."""
    pos = getattr(attn, "pos", None)
    if pos is None:
        return None
    with torch.no_grad():
        if hasattr(pos, "table"):  # DPB: the MLP evaluated at every offset, row-major (dy, dx)
            table = pos.table(group_h, group_w)
            return table.transpose(0, 1).reshape(-1, 2 * group_h - 1, 2 * group_w - 1).float()
        bias = pos(group_h, group_w)  # (nH, N, N) for query i and key j
    heads = bias.shape[0]
    grid = torch.zeros(heads, 2 * group_h - 1, 2 * group_w - 1)
    yy, xx = torch.meshgrid(torch.arange(group_h), torch.arange(group_w), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    dy = (yy[:, None] - yy[None, :] + group_h - 1).flatten()
    dx = (xx[:, None] - xx[None, :] + group_w - 1).flatten()
    grid[:, dy, dx] = bias.reshape(heads, -1).float()
    return grid


def embedding_footprints(model: nn.Module, x: int, y: int, map_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Any]]:
    """The pixels each kernel of each cross-scale embedding layer reads for the token of pixel ``(x, y)``.

    One entry per CEL (``"stem"``, then ``"merge 2"``...): its kernels with their size, output channels and the
    box ``(x0, y0, x1, y1)`` in image pixels (may reach outside the image: zero padding). For a merge the box is
    what its kernel reads of the previous stage's tokens, drawn at their stride (not the full receptive field).
    """
    layers = [("stem", model.patch_embed, 1)]
    strides = stage_strides(model)
    for i, stage in enumerate(model.stages):
        if i > 0 and hasattr(stage.downsample, "projs"):
            layers.append((f"merge {i + 1}", stage.downsample, strides[i - 1]))
    out = []
    for name, cel, unit in layers:
        stage = 0 if name == "stem" else int(name.split()[1]) - 1
        row, col = pixel_token(x, y, strides[stage], map_sizes[stage])
        kernels = []
        for proj in cel.projs:
            k, s, p = proj.kernel_size[0], proj.stride[0], proj.padding[0]
            y0, x0 = (row * s - p) * unit, (col * s - p) * unit
            kernels.append(dict(kernel=k, channels=proj.out_channels, box=(x0, y0, x0 + k * unit, y0 + k * unit)))
        out.append(dict(layer=name, stride=strides[stage], token=(row, col), kernels=kernels))
    return out


# ================================================================================================ input
def shrink_image(image: Image.Image, max_side: Optional[int] = None) -> Tuple[Image.Image, float]:
    """``image`` shrunk (bicubic) so that its longer side is at most ``max_side``; returns it and the scale applied
    (1.0: its own size, also for None)."""
    if max_side is None:
        return image, 1.0
    if max_side < 1:
        raise ValueError(f"--max-side must be a positive number of pixels, got {max_side}")
    longer = max(image.size)
    if longer <= max_side:
        return image, 1.0
    scale = max_side / longer
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return image.resize(size, Image.BICUBIC), scale


def image_tensor(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(1, C, H, W)`` float tensor of a PIL image, normalised with the model's mean and std."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    x = torch.from_numpy(array.copy()).permute(2, 0, 1)
    channels = x.shape[0]
    mean_t = torch.tensor(list(mean)[:channels] if len(mean) >= channels else list(mean) * channels).view(-1, 1, 1)
    std_t = torch.tensor(list(std)[:channels] if len(std) >= channels else list(std) * channels).view(-1, 1, 1)
    return ((x - mean_t) / std_t).unsqueeze(0)


# ================================================================================================ drawing
_SDA_COLOUR = (0.12, 0.47, 0.71)
_LDA_COLOUR = (0.85, 0.37, 0.01)
_QUERY_COLOUR = (0.89, 0.10, 0.11)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _background(image: Image.Image) -> np.ndarray:
    """A washed-out grey copy of the image, so that coloured overlays stay readable."""
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return 0.35 + 0.6 * grey


def _panel_size(width: float, height: float, panel: float = 3.4) -> Tuple[float, float]:
    return (panel, panel * height / width) if width >= height else (panel * width / height, panel)


def _save(fig, path: Path, dpi: int) -> None:
    """The figure as a palette PNG (256 colours: a quarter of the bytes of a full-colour one)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    buffer.seek(0)
    with Image.open(buffer) as picture:
        picture = picture.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        picture.save(path, optimize=True)


@dataclass
class _Panel:
    """One stage's SDA or LDA block, for the token under the pixel."""

    stage: int
    kind: str  # "SDA" or "LDA"
    record: AttentionInput
    stride: int
    group: TokenGroup


def _panels(records: List[AttentionInput], strides: List[int], pixel: Tuple[int, int]) -> List[Dict[str, _Panel]]:
    """Per stage, the first SDA and the first LDA block with the group of the pixel's token."""
    out: List[Dict[str, _Panel]] = []
    for stage in sorted({r.stage for r in records}):
        panels: Dict[str, _Panel] = {}
        for rec in records:
            kind = "LDA" if getattr(rec.attn, "long_distance", False) else "SDA"
            if rec.stage != stage or kind in panels:
                continue
            height, width = rec.size
            token = pixel_token(pixel[0], pixel[1], strides[stage], (height, width))
            panels[kind] = _Panel(stage, kind, rec, strides[stage], token_group(rec.attn, height, width, *token))
        out.append(panels)
    return out


def _extent(image: Image.Image, rows: List[Dict[str, _Panel]]) -> Tuple[int, int]:
    """Width and height of the canvas: the image and every padded map drawn."""
    width, height = image.size
    for panels in rows:
        for p in panels.values():
            width = max(width, p.group.layout.wp * p.stride)
            height = max(height, p.group.layout.hp * p.stride)
    return width, height


def _start_panel(ax, image: Image.Image, extent: Tuple[int, int]) -> None:
    width, height = image.size
    ax.imshow(_background(image), cmap="gray", vmin=0, vmax=1, extent=(0, width, height, 0))
    ax.set_xlim(0, extent[0])
    ax.set_ylim(extent[1], 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _cells(ax, tokens: Sequence[Tuple[int, int]], stride: int, points: float, **style) -> None:
    """Token cells as square markers (at least 2.5 points wide, so that 4-pixel cells stay visible)."""
    if tokens:
        ys, xs = zip(*tokens)
        ax.scatter([(c + 0.5) * stride for c in xs], [(r + 0.5) * stride for r in ys], s=max(2.5, points) ** 2,
                   marker="s", **style)


def _draw_group(ax, image: Image.Image, panel: _Panel, extent: Tuple[int, int], panel_w: float) -> None:
    from matplotlib.patches import Rectangle

    group, stride = panel.group, panel.stride
    layout = group.layout
    colour = _SDA_COLOUR if panel.kind == "SDA" else _LDA_COLOUR
    _start_panel(ax, image, extent)
    map_h, map_w = group.map_size
    # the zero padding this layer adds on this image: tokens beyond the map, up to the padded size
    for x0, y0, w, h in ((map_w * stride, 0, (layout.wp - map_w) * stride, layout.hp * stride),
                         (0, map_h * stride, map_w * stride, (layout.hp - map_h) * stride)):
        if w > 0 and h > 0:
            ax.add_patch(Rectangle((x0, y0), w, h, facecolor=(0.85, 0.85, 0.85), edgecolor=(0.55, 0.55, 0.55),
                                   hatch="///", linewidth=0.5, zorder=1))
    if panel.kind == "SDA" and (layout.hp, layout.wp) != (layout.gh, layout.gw):  # SDA group borders
        for r in range(0, layout.hp + 1, layout.gh):
            ax.plot([0, layout.wp * stride], [r * stride, r * stride], color="white", linewidth=0.4, zorder=2)
        for c in range(0, layout.wp + 1, layout.gw):
            ax.plot([c * stride, c * stride], [0, layout.hp * stride], color="white", linewidth=0.4, zorder=2)
    points = panel_w * 72.0 * stride / extent[0]
    _cells(ax, group.members, stride, points, color=colour, alpha=0.65, linewidths=0, zorder=3)
    _cells(ax, group.padded, stride, points, facecolors="none", edgecolors=colour, linewidths=0.6, zorder=3)
    _cells(ax, [group.token], stride, max(points, 4.0), color=_QUERY_COLOUR, edgecolors="black", linewidths=0.5, zorder=4)


def _layout_text(panel: _Panel) -> str:
    group = panel.group
    layout = group.layout
    h, w = group.map_size
    lines = [f"stage {panel.stage + 1} {panel.kind} (block {panel.record.block + 1}): map {h}x{w}, {panel.stride}px tokens"]
    if group.small_map and (layout.gh, layout.gw) == (h, w):
        lines.append("small map: the whole map is one group")
    elif group.small_map:
        lines.append(f"small map: square groups of {layout.gh}x{layout.gw} (fixed_interval)")
    elif layout.interval > 1:
        lines.append(f"groups of {layout.gh}x{layout.gw} tokens every {layout.interval}")
    else:
        lines.append(f"groups of {layout.gh}x{layout.gw} adjacent tokens")
    padded = f"padded to {layout.hp}x{layout.wp}; " if (layout.hp, layout.wp) != (h, w) else "no padding; "
    lines.append(padded + f"this group: {len(group.members)} tokens + {len(group.padded)} padding")
    return "\n".join(lines)


def _grid(image: Image.Image, rows: List[Dict[str, _Panel]], extent: Tuple[int, int]):
    pw, ph = _panel_size(*extent)
    fig = _figure(2 * pw + 0.3, len(rows) * (ph + 0.75) + 0.4)
    return fig, pw


def _panel_axes(fig, rows: List[Dict[str, _Panel]]) -> Iterator[Tuple[Any, str, Optional[_Panel]]]:
    """Per stage, a row of two axes: ``(axes, "SDA" or "LDA", panel)``; panel None (axes off) where the stage has no
    such block."""
    for row, panels in enumerate(rows):
        for column, kind in enumerate(("SDA", "LDA")):
            ax = fig.add_subplot(len(rows), 2, 2 * row + column + 1)
            if kind not in panels:
                ax.axis("off")
            yield ax, kind, panels.get(kind)


def _groups_info(rows: List[Dict[str, _Panel]]) -> List[Dict[str, Any]]:
    """The numbers behind the groups picture (explain.json)."""
    info = []
    for panels in rows:
        first = next(iter(panels.values()))
        entry: Dict[str, Any] = dict(stage=first.stage + 1, stride=first.stride, map_size=list(first.group.map_size),
                                     token=list(first.group.token))
        for kind, p in panels.items():
            entry[kind] = dict(block=p.record.block + 1, layout=p.group.layout._asdict(), small_map=p.group.small_map,
                               group_index=p.group.index, members=[list(t) for t in p.group.members],
                               padding=[list(t) for t in p.group.padded])
        info.append(entry)
    return info


def _groups_figure(image, rows: List[Dict[str, _Panel]], pixel, path, dpi) -> None:
    extent = _extent(image, rows)
    fig, pw = _grid(image, rows, extent)
    for ax, kind, panel in _panel_axes(fig, rows):
        if panel is None:
            ax.set_title(f"no {kind} block in this stage", fontsize=7)
            continue
        _draw_group(ax, image, panel, extent, pw)
        ax.set_title(_layout_text(panel), fontsize=6.5)
    fig.suptitle(f"SDA (blue) and LDA (orange) group of the token at pixel x={pixel[0]}, y={pixel[1]} (red)\n"
                 f"hatched: zero padding; hollow squares: the group's padding tokens", fontsize=8)
    _save(fig, path, dpi)


def _attention_figure(image, rows: List[Dict[str, _Panel]], pixel, path, dpi) -> List[Dict[str, Any]]:
    import matplotlib

    extent = _extent(image, rows)
    fig, pw = _grid(image, rows, extent)
    cmap = matplotlib.colormaps["inferno"]
    info = []
    for ax, kind, panel in _panel_axes(fig, rows):
        if panel is None:
            continue
        rec, stride = panel.record, panel.stride
        group, weights = attention_weights(rec.attn, rec.x, *panel.group.token)
        mean = weights.mean(0)  # over heads
        keep = [i for i, pad in enumerate(group.padding) if not pad]
        values = mean[keep]
        top = float(values.max())
        order = torch.argsort(values).tolist()  # strongest drawn last
        points = pw * 72.0 * stride / extent[0]
        _start_panel(ax, image, extent)
        ys = [(group.tokens[keep[i]][0] + 0.5) * stride for i in order]
        xs = [(group.tokens[keep[i]][1] + 0.5) * stride for i in order]
        colours = [cmap(0.2 + 0.8 * float(values[i]) / top) for i in order]
        ax.scatter(xs, ys, s=max(2.5, points) ** 2, marker="s", c=colours, alpha=0.8, linewidths=0, zorder=3)
        _cells(ax, [group.token], stride, max(points, 5.0), facecolors="none", edgecolors="cyan",
               linewidths=1.2, zorder=4)
        uniform = 1.0 / len(keep)
        ax.set_title(f"stage {panel.stage + 1} {kind} (block {rec.block + 1}): {len(keep)} keys\n"
                     f"largest weight {top:.3f} (uniform: {uniform:.3f})", fontsize=6.5)
        info.append(dict(stage=panel.stage + 1, kind=kind, block=rec.block + 1, keys=len(keep), max_weight=top,
                         weights_by_head=[[round(float(w), 5) for w in head[keep]] for head in weights],
                         keys_at=[list(group.tokens[i]) for i in keep]))
    fig.suptitle(f"Attention weights of the query at pixel x={pixel[0]}, y={pixel[1]} (cyan)\n"
                 f"mean over heads; brighter: more weight", fontsize=8)
    _save(fig, path, dpi)
    return info


def _position_bias_figure(records: List[AttentionInput], stage: int, path: Path, dpi: int) -> bool:
    """The position bias of the stage's first SDA and LDA block for the group shape each uses on this image."""
    maps = []
    for kind in ("SDA", "LDA"):
        rec = next((r for r in records if r.stage == stage and isinstance(r.attn, LSDAttention)
                    and ("LDA" if r.attn.long_distance else "SDA") == kind), None)
        if rec is None:
            continue
        height, width = rec.size
        layout = rec.attn.layout(height, width)
        grid = position_bias_map(rec.attn, layout.gh, layout.gw)
        if grid is not None:
            maps.append((kind, rec, layout, grid))
    if not maps:
        return False
    from matplotlib.ticker import MaxNLocator

    columns = min(8, max(g.shape[0] for _, _, _, g in maps))
    rows = sum(math.ceil(g.shape[0] / columns) for _, _, _, g in maps)
    fig = _figure(1.3 * columns + 0.5, 1.45 * rows + 0.6)
    row = 0
    for kind, rec, layout, grid in maps:
        heads = grid.shape[0]
        limit = float(grid.abs().max()) or 1.0
        for h in range(heads):
            ax = fig.add_subplot(rows, columns, row * columns + h + 1)
            gh, gw = layout.gh, layout.gw
            unit = f"x{layout.interval}" if layout.interval > 1 else ""
            ax.imshow(grid[h].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest",
                      extent=(-(gw - 1) - 0.5, gw - 1 + 0.5, gh - 1 + 0.5, -(gh - 1) - 0.5))
            ax.set_title(f"{kind} head {h + 1}", fontsize=6)
            ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
            ax.tick_params(labelsize=5, length=2)
            if h % columns == 0:
                ax.set_ylabel(f"dy{unit}", fontsize=6)
            ax.set_xlabel(f"dx{unit}", fontsize=6)
        row += math.ceil(heads / columns)
    fig.suptitle(f"Stage {stage + 1}: position bias by offset (query - key, in group positions; xI: LDA positions\n"
                 f"are I tokens apart); red: added to the logit, blue: subtracted", fontsize=7)
    _save(fig, path, dpi)
    return True


def _embedding_figure(image, footprints, pixel, path, dpi) -> None:
    from matplotlib.patches import Rectangle

    colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
    width, height = image.size
    pw, ph = _panel_size(width, height)
    fig = _figure(2 * max(pw, 3.6) + 0.4, max(ph, 3.6) + 0.5)
    rgb = np.asarray(image.convert("RGB"))
    # left: the stem's kernels around the pixel, zoomed
    stem = footprints[0]
    ax = fig.add_subplot(1, 2, 1)
    boxes = [k["box"] for k in stem["kernels"]]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    margin = max(4, (x1 - x0) // 6)
    ax.imshow(rgb, extent=(0, width, height, 0), interpolation="nearest")
    for k, colour in zip(stem["kernels"], colours):
        bx0, by0, bx1, by1 = k["box"]
        ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, edgecolor=colour, linewidth=1.6,
                               label=f"{k['kernel']}x{k['kernel']} -> {k['channels']} ch"))
    ax.plot([pixel[0] + 0.5], [pixel[1] + 0.5], marker="+", color="red", markersize=10)
    ax.set_xlim(x0 - margin, x1 + margin)
    ax.set_ylim(y1 + margin, y0 - margin)
    ax.legend(fontsize=6, loc="upper right", framealpha=0.8)
    ax.set_title(f"stem CEL (stride {stem['stride']}): kernels of token {tuple(stem['token'])}\n"
                 f"(outside the image: zero padding)", fontsize=7)
    ax.tick_params(labelsize=5)
    # right: every CEL's kernels on the whole image
    ax = fig.add_subplot(1, 2, 2)
    ax.imshow(_background(image), cmap="gray", vmin=0, vmax=1, extent=(0, width, height, 0))
    for layer, colour in zip(footprints, colours):
        for n, k in enumerate(layer["kernels"]):
            bx0, by0, bx1, by1 = k["box"]
            ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, edgecolor=colour,
                                   linewidth=1.2, linestyle="-" if n == 0 else "--",
                                   label=f"{layer['layer']}: {', '.join(str(q['kernel']) for q in layer['kernels'])}"
                                   if n == 0 else None))
    ax.plot([pixel[0] + 0.5], [pixel[1] + 0.5], marker="+", color="red", markersize=8)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, loc="lower right", framealpha=0.8, title="kernels (tokens of the layer's input)",
              title_fontsize=6)
    ax.set_title("every cross-scale embedding layer: what its kernels read, in pixels", fontsize=7)
    _save(fig, path, dpi)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}}img{{max-width:100%;border:1px solid #ccc}}
td{{padding:2px 10px 2px 0;vertical-align:top}}code{{background:#f4f4f4}}</style></head><body>
<h1>{title}</h1>
<table>{rows}</table>
{sections}
</body></html>
"""


def _page(out: Path, title: str, facts: Sequence[Tuple[str, str]], sections: Sequence[Tuple[str, str, List[str]]]) -> None:
    rows = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in facts)
    parts = []
    for heading, text, images in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")
        parts.extend(f'<p><img src="{html.escape(name)}" alt="{html.escape(heading)}"></p>' for name in images)
    (out / "index.html").write_text(_PAGE.format(title=html.escape(title), rows=rows, sections="\n".join(parts)))


# ================================================================================================ entry point
def explain_image(
    model: nn.Module,
    image: Image.Image,
    output: str,
    at: Optional[Tuple[int, int]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    facts: Sequence[Tuple[str, str]] = (),
    dpi: int = 80,
) -> Dict[str, Any]:
    """Draw what ``model`` (a :class:`~crossformer_vision.models.CrossFormer`) does on ``image`` into ``output``.

    Writes ``groups.png`` (SDA and LDA group of the pixel's token at every stage), ``attention.png`` (where that
    token attends in the first SDA and LDA block of every stage), ``position_bias_stage{i}.png`` (each stage's
    position bias by offset, one panel per head), ``embedding.png`` (the cross-scale embedding's kernels around the
    pixel), ``explain.json`` (the numbers: map sizes, layouts, group members) and ``index.html`` showing them.

    Args:
        model: The model, at the image's own size (no resize here; see :func:`shrink_image`).
        image: ``L`` or ``RGB`` PIL image matching ``model.in_chans``.
        output: Folder for the files (created).
        at: Pixel ``(x, y)``; default: the centre.
        mean, std: Normalisation (default: ``model.pretrained_cfg``'s).
        facts: Extra ``(name, value)`` rows for the page (model, weights, command).
        dpi: Resolution of the PNGs.

    Returns:
        ``{"files": [...], "pixel": (x, y), "size": (w, h), "stages": [...]}`` (``stages`` as in explain.json).

    Raises:
        ValueError: the pixel is outside the image or the image is smaller than ``model.min_input_size``.
    """
    if not hasattr(model, "stages") or not hasattr(model, "patch_embed"):
        raise ValueError(f"explain draws CrossFormer models, got {type(model).__name__}")
    width, height = image.size
    in_chans = 1 if image.mode == "L" else 3
    if getattr(model, "in_chans", in_chans) != in_chans:
        raise ValueError(f"the model takes {model.in_chans} channels, the image has {in_chans} ({image.mode})")
    low = int(getattr(model, "min_input_size", 1))
    if width < low or height < low:
        raise ValueError(f"the image is {width}x{height} pixels; this model needs at least {low}x{low} "
                         f"(its total stride)")
    pixel = (width // 2, height // 2) if at is None else (int(at[0]), int(at[1]))
    if not (0 <= pixel[0] < width and 0 <= pixel[1] < height):
        raise ValueError(f"--at {pixel[0]},{pixel[1]} is outside the {width}x{height} image (x in 0..{width - 1}, "
                         f"y in 0..{height - 1})")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = mean if mean is not None else cfg.get("mean", (0.485, 0.456, 0.406))
    std = std if std is not None else cfg.get("std", (0.229, 0.224, 0.225))
    param = next(model.parameters())
    x = image_tensor(image, mean, std).to(device=param.device, dtype=param.dtype)
    records = record_attention_inputs(model, x)
    strides = stage_strides(model)
    sizes: List[Tuple[int, int]] = []
    for i in range(len(model.stages)):
        rec = next((r for r in records if r.stage == i), None)
        sizes.append(rec.size if rec is not None else (0, 0))
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    files: List[str] = []
    sections: List[Tuple[str, str, List[str]]] = []
    lsda = [r for r in records if type(r.attn) is LSDAttention]  # groups of the ablation's layers are not LSDA's
    stages_info: List[Dict[str, Any]] = []
    if lsda:
        rows = _panels(lsda, strides, pixel)
        stages_info = _groups_info(rows)
        _groups_figure(image, rows, pixel, out / "groups.png", dpi)
        attention = _attention_figure(image, rows, pixel, out / "attention.png", dpi)
        for entry in stages_info:
            for item in attention:
                if item["stage"] == entry["stage"] and item["kind"] in entry:
                    entry[item["kind"]]["attention"] = {k: item[k] for k in ("max_weight", "weights_by_head", "keys_at")}
        files += ["groups.png", "attention.png"]
        sections.append(("Groups", "At every stage, the short-distance (SDA, blue) and long-distance (LDA, orange) "
                         "group of the token under the chosen pixel (red), from the model's own grouping of this "
                         "image's feature maps. Hatched: the zero padding the layer adds at the bottom/right; hollow "
                         "squares: the group's padding tokens (masked keys). White lines: SDA group borders.",
                         ["groups.png"]))
        sections.append(("Attention", "Where the token under the pixel (cyan) attends in the first SDA and LDA block "
                         "of each stage: its softmax weights over its group, averaged over heads, from this image's "
                         "real attention inputs. With random weights q.k is close to zero and the pattern is mostly "
                         "the position bias.",
                         ["attention.png"]))
    else:
        sections.append(("Groups and attention", "Not drawn: this model's attention is not LSDA "
                         f"(attn_type={getattr(model, 'attn_type', '?')}).", []))
    bias_files = []
    for stage in range(len(model.stages)):
        name = f"position_bias_stage{stage + 1}.png"
        if _position_bias_figure(records, stage, out / name, dpi):
            bias_files.append(name)
    files += bias_files
    sections.append(("Position bias", "Each stage's position bias (dynamic position bias: an MLP of the offset) for "
                     "the group shape the layer uses on this image, one panel per head: the value added to the "
                     "attention logit of a query dy rows and dx columns from its key (in group positions; LDA "
                     "positions are the interval apart). Works for random weights too.", bias_files))
    footprints = embedding_footprints(model, pixel[0], pixel[1], sizes)
    _embedding_figure(image, footprints, pixel, out / "embedding.png", dpi)
    files.append("embedding.png")
    sections.append(("Cross-scale embedding", "The stem samples the same centre with kernels of several sizes (each "
                     "drawn square; each gives part of the token's channels); every merge between stages does the "
                     "same on the previous stage's tokens.", ["embedding.png"]))
    summary = dict(size=[width, height], pixel=list(pixel), mean=[float(m) for m in mean], std=[float(v) for v in std],
                   strides=strides, map_sizes=[list(s) for s in sizes],
                   stages=stages_info, embedding=footprints)
    (out / "explain.json").write_text(json.dumps(summary, indent=1))
    files.append("explain.json")
    page_facts = [("image", f"{width}x{height} pixels"), ("pixel", f"x={pixel[0]}, y={pixel[1]}"),
                  ("feature maps", ", ".join(f"stage {i + 1}: {h}x{w}" for i, (h, w) in enumerate(sizes)))]
    _page(out, "CrossFormer explained on one image", list(facts) + page_facts, sections)
    files.append("index.html")
    return dict(files=[str(out / f) for f in files], pixel=pixel, size=(width, height), stages=stages_info)
