"""CrossFormer and CrossFormer++ (Wang et al., ICLR 2022; TPAMI 2023), timm-native.

Layout of the network (all tensors between blocks are ``(B, H, W, C)``)::

    image -> CEL (stride 4) -> stage 1 -> CEL (stride 2) -> stage 2 -> ... -> stage 4 -> norm -> head

Each stage alternates SDA and LDA blocks (:class:`LSDAttention`); in CrossFormer++ every third block (except
a stage's last) ends with an activation cooling layer. ``stages[i]`` starts with the cross-scale merge that
brings the previous stage's output to its resolution (timm convention), so its output is the stride
``4 * 2**i`` feature map, the one dense heads use.

This file is the reference math, read top to bottom: helpers, attention, block, stage, model, checkpoint
filter, pretrained configs, timm entrypoints. The grouping rule is in :mod:`.grouping`, CEL/DPB/ACL in
:mod:`.layers`, official checkpoints in :mod:`.official`. How a call runs (CPU pieces, oneDNN, cached
biases, torch.compile and torch.export) is :mod:`crossformer_vision.runtime`'s business: an attention layer
and a block ask :func:`~crossformer_vision.runtime.dispatch.choose` for a plan once per call, and the
model's :class:`~crossformer_vision.runtime.RuntimeOptions` (given at construction, or by
:func:`crossformer_vision.optimize`) are its only switches.

Attribute names follow the official code where they exist (``patch_embed.projs``, ``attn.qkv``,
``attn.pos.pos_proj``, ``mlp.fc1``...), so official checkpoints convert with a handful of renames.
"""
import difflib
import logging
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, DropPath, Mlp, trunc_normal_, use_fused_attn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models import register_notrace_function, register_notrace_module
from timm.models._features import FeatureGetterNet, feature_take_indices
from torch import Tensor, nn
from torch.jit import Final
from torch.utils.checkpoint import checkpoint

from ..runtime import onednn
from ..runtime.cpu import BiasCache, forward_in_pieces, mlp_residual
from ..runtime.dispatch import EXPORT, PIECES, Plan, choose, reference_plan
from ..runtime.export import export_attention
from ..runtime.kernels import grouped_attention
from ..runtime.options import RuntimeOptions
from .grouping import (GroupLayout, group_layout, group_qkv, groups_per_side, is_small_map, padding_mask,
                       regular_layout, small_map_layout, token_coordinates, ungroup)
from .layers import AbsolutePositionEmbedding, ActivationCoolingLayer, CrossScaleEmbedding, position_bias_layer
from .official import (CheckpointError, PathLike, convert_official_state_dict, load_checkpoint_file,
                       load_state_dict_checked, unwrap_state_dict)

__all__ = [
    "ATTN_TYPES",
    "EMBED_LAYERS",
    "LDA_MODES",
    "MODELS",
    "PAPER",
    "PAPER_ABLATION_S",
    "POS_EMBED_TYPES",
    "SMALL_VARIANTS",
    "VARIANTS",
    "CrossFormer",
    "CrossFormerBlock",
    "CrossFormerStage",
    "LSDAttention",
    "check_input",
    "checkpoint_filter_fn",
    "create_model",
    "list_models",
]

_logger = logging.getLogger(__name__)

LDA_MODES = ("fixed_group", "fixed_interval")
POS_EMBED_TYPES = ("dpb", "dpb_residual", "rpb", "ape", "none")
EMBED_LAYERS = ("cel", "conv")
#: Attention of the blocks: LSDA, or the paper's ablation (Table 5a) PVT-like / Swin-like (:mod:`.ablation`).
ATTN_TYPES = ("lsda", "pvt", "swin")
_NORM_LAYERS: Dict[str, Callable[..., nn.Module]] = {"layernorm": nn.LayerNorm}
_ACT_LAYERS: Dict[str, Callable[..., nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


# ================================================================================================ helpers
@register_notrace_function
def check_input(x: Tensor, in_chans: int, min_size: int) -> Tensor:
    """Validate an image batch ``(B, C, H, W)``; return it unchanged or raise ``ValueError``."""
    if x.dim() != 4:
        raise ValueError(
            "expected an image batch of shape (batch, channels, height, width), got a tensor with "
            + str(x.dim()) + " dimensions " + str(list(x.shape)) + "; add a batch dimension with x.unsqueeze(0)"
        )
    if x.shape[1] != in_chans:
        raise ValueError(
            "expected " + str(in_chans) + " input channels, got " + str(x.shape[1]) + " (shape "
            + str(list(x.shape)) + "); images must be (batch, channels, height, width) and the model was built "
            + "with in_chans=" + str(in_chans)
        )
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            "input of " + str(x.shape[2]) + "x" + str(x.shape[3]) + " pixels is too small: this model needs "
            + "height and width of at least " + str(min_size) + " (its total stride); resize or pad the images"
        )
    if not x.is_floating_point():
        raise ValueError(
            "expected a floating point image tensor, got dtype " + str(x.dtype)
            + "; convert with x.float() (and normalise) first"
        )
    return x


def _resolve_layer(layer: Union[str, Callable[..., nn.Module]], table: Dict[str, Callable[..., nn.Module]], what: str):
    if isinstance(layer, str):
        if layer.lower() not in table:
            raise ValueError(f"unknown {what} {layer!r}; choose one of {sorted(table)} or pass a class")
        return table[layer.lower()]
    return layer


def _check_counts(**values: Sequence[Any]) -> None:
    """ValueError unless every value is a positive int (``depths``: >= 0)."""
    for name, items in values.items():
        low = 0 if name == "depths" else 1
        bad = [v for v in items if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low]
        if bad:
            kind = "non-negative" if low == 0 else "positive"
            where = f" in {list(items)}" if len(items) > 1 else ""
            what = f"{kind} integers" if len(items) > 1 else f"a {kind} integer"
            raise ValueError(f"{name} must be {what}, got {bad[0]!r}{where}")


def _per_stage(name: str, value: Union[int, Sequence[Any]], num_stages: int) -> List[Any]:
    values = [value] * num_stages if isinstance(value, int) else list(value)
    if len(values) != num_stages:
        raise ValueError(f"{name} needs one entry per stage ({num_stages}), got {len(values)}: {value!r}")
    return values


# ================================================================================================ attention
@register_notrace_module
class LSDAttention(nn.Module):
    """Long/short distance attention (LSDA): multi-head self-attention within groups, with a position bias.

    Input and output are ``(B, H, W, C)``; ``H`` and ``W`` may be anything. The groups come from the size at
    hand (:func:`~.grouping.group_layout`): SDA takes ``G x G`` adjacent embeddings, LDA embeddings every
    ``I`` positions. ``qkv`` is computed on the unpadded map, then zero-padded and rearranged straight into
    per-group, per-head layout; padded keys are masked, so the result equals the official code's (which pads
    before ``qkv``).

    Args:
        dim: Embedding channels.
        num_heads: Attention heads.
        group_size: Group side ``G``.
        interval: LDA interval ``I``.
        long_distance: LDA (True) or SDA (False).
        fixed_interval: Grouping rule of the original dense backbone (``lda_mode="fixed_interval"``).
        qkv_bias: Bias in the qkv projection.
        qk_scale: Logit scale; ``head_dim ** -0.5`` if None.
        attn_drop: Dropout on attention weights.
        proj_drop: Dropout after the output projection.
        pos_embed: ``"dpb"``, ``"dpb_residual"``, ``"rpb"``, or ``"none"``/``"ape"`` (no bias here).
        fused_attn: ``scaled_dot_product_attention`` instead of the explicit softmax (timm's switch; on the
            CPU only with ``RuntimeOptions(sdpa_on_cpu=True)``, see :mod:`crossformer_vision.runtime.dispatch`).
        runtime: Runtime options (default: :class:`~crossformer_vision.runtime.RuntimeOptions`'s defaults).
    """

    fused_attn: Final[bool]
    __jit_ignored_attributes__ = ["runtime", "bias_cache"]

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
        runtime: Optional[RuntimeOptions] = None,
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
        self.has_pos_bias = pos_embed in ("dpb", "dpb_residual", "rpb")
        self.runtime = runtime if runtime is not None else RuntimeOptions()
        self.bias_cache = BiasCache()  # inference: bias per group layout (runtime.cpu.BiasCache)

        self.pos = position_bias_layer(pos_embed, dim, num_heads, group_size)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        kind = "LDA" if self.long_distance else "SDA"
        rule = "fixed_interval" if self.fixed_interval else "fixed_group"
        return (
            f"{kind}, dim={self.dim}, num_heads={self.num_heads}, group_size={self.group_size}, "
            f"interval={self.interval}, lda_mode={rule}, fused_attn={self.fused_attn}"
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``."""
        if torch.jit.is_scripting():
            plan = reference_plan(self.fused_attn)
        else:
            plan = choose(self.runtime, x, self.training, self.qkv, self.fused_attn)
            if plan.path == EXPORT:  # one graph for every size: the small-map rule as torch.cond
                return export_attention(self, x, plan)
        _, height, width, _ = x.shape
        return self.run(x, self.layout(height, width), plan)

    def run(self, x: Tensor, layout: GroupLayout, plan: Plan) -> Tensor:
        """Attention of ``x`` in the groups of ``layout``: :meth:`bias`, then :meth:`attend`."""
        _, height, width, _ = x.shape
        coordinates: Optional[Tuple[Tensor, Tensor]] = None
        if plan.gather:  # torch.export: tokens are gathered by their coordinates (computed once for both uses)
            coordinates = token_coordinates(layout, x.device)
        bias = self.bias(height, width, layout, x.dtype, x.device, plan, coordinates)
        return self.attend(x, layout, bias, plan, coordinates=coordinates)

    def small_map(self, height: int, width: int) -> bool:
        """Whether a ``height x width`` map is grouped as a whole (:func:`~.grouping.is_small_map`)."""
        return is_small_map(height, width, self.group_size)

    def layout(self, height: int, width: int, small: Optional[bool] = None) -> GroupLayout:
        """The groups of a ``height x width`` map (:func:`~.grouping.group_layout`); ``small`` fixes the outcome
        of the small-map rule instead (torch.export traces both)."""
        if small is None:
            return group_layout(height, width, self.group_size, self.interval, self.long_distance, self.fixed_interval)
        if small:
            return small_map_layout(height, width, self.fixed_interval)
        return regular_layout(height, width, self.group_size, self.interval, self.long_distance, self.fixed_interval)

    def bias(self, height: int, width: int, layout: GroupLayout, dtype: torch.dtype, device: torch.device,
             plan: Plan, coordinates: Optional[Tuple[Tensor, Tensor]] = None) -> Optional[Tensor]:
        """:meth:`compute_bias`, from the layer's cache where ``plan`` says so (inference)."""
        if not torch.jit.is_scripting() and plan.cached_bias:
            weights = [] if self.pos is None else list(self.pos.parameters())
            return self.bias_cache.get((height, width, layout, dtype, device), weights, self.compute_bias,
                                       height, width, layout, dtype, device)
        return self.compute_bias(height, width, layout, dtype, device, coordinates)

    def compute_bias(self, height: int, width: int, layout: GroupLayout, dtype: torch.dtype, device: torch.device,
                     coordinates: Optional[Tuple[Tensor, Tensor]] = None) -> Optional[Tensor]:
        """Additive attention bias of a ``height x width`` map grouped by ``layout``: the position bias
        ``(1, nH, N, N)``; where the map is padded, plus the padding mask, ``(nG, nH, N, N)``, or the mask alone
        ``(nG, 1, 1, N)``; None for neither. Given the tokens' ``coordinates`` (torch.export: sizes are
        symbolic), the mask is always added."""
        bias: Optional[Tensor] = None
        pos = self.pos
        if pos is not None:
            bias = pos(layout.gh, layout.gw).to(dtype).unsqueeze(0)  # (1, nH, N, N)
        if coordinates is not None or layout.hp != height or layout.wp != width:
            mask = padding_mask(height, width, layout, device, coordinates)  # (nG, N), True for padding
            # Added to the logits of padded keys, like the official -1e6. Finite on purpose: a group made only of
            # padding gets a uniform (discarded) softmax instead of NaNs that would poison the backward pass.
            # float16 cannot hold -1e6, so it gets a value that still underflows exp() to zero.
            mask_value = -3.0e4 if dtype == torch.float16 else -1.0e6
            masked = (mask.to(dtype) * mask_value).view(-1, 1, 1, layout.gh * layout.gw)  # (nG, 1, 1, N)
            bias = masked if bias is None else bias + masked
        return bias

    def attend(self, x: Tensor, layout: GroupLayout, bias: Optional[Tensor], plan: Plan,
               residual: Optional[Tensor] = None, coordinates: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """Attention within the groups of ``layout``, with the additive ``bias`` of :meth:`bias`.

        ``(B, H, W, C) -> (B, H, W, C)``; with ``residual`` (the block's shortcut, inference only) the result is
        ``residual + attention``, the add fused into the output projection where oneDNN runs it. Given the
        tokens' ``coordinates`` (torch.export), tokens are gathered instead of viewed into groups.
        """
        gather = coordinates is not None
        batch, height, width, _ = x.shape
        # padding: q, k, v of the unpadded map (group_qkv zero-pads them to hp x wp; the bias masks padded keys)
        if not torch.jit.is_scripting() and plan.onednn:
            qkv = onednn.linear(x, self.qkv)
        else:
            qkv = self.qkv(x)  # (B, H, W, C) -> (B, H, W, 3C)
        # group embeddings (torch.export: by gathers instead of views)
        q, k, v = group_qkv(qkv, layout, self.num_heads, coordinates)  # -> (B, Hp, Wp, 3C) -> 3 x (B*nG, nH, N, hd)
        # multi-head self-attention: softmax(q k^T * scale + bias) v within every group
        rh, rw = groups_per_side(layout)
        num_groups = rh * rw * layout.interval * layout.interval
        # padded (or a bias with one entry per group, e.g. shifted windows): the bias differs per group
        per_group_bias = gather or layout.hp != height or layout.wp != width or (bias is not None and bias.shape[0] > 1)
        dropout = self.attn_drop.p if self.training else 0.0
        x = grouped_attention(q, k, v, bias, num_groups, self.scale, dropout, per_group_bias, plan.attention)
        # ungroup embeddings
        x = ungroup(x, layout, batch, height, width, gather)  # (B*nG, nH, N, hd) -> (B, Hp, Wp, C) -> (B, H, W, C)
        if not torch.jit.is_scripting() and plan.onednn:
            return onednn.linear(x, self.proj, residual=residual)  # inference: proj_drop is the identity
        x = self.proj_drop(self.proj(x))
        return x if residual is None else residual + x

    def clear_bias_cache(self) -> None:
        """Forget cached biases (they are recomputed when the position-bias weights change anyway)."""
        self.bias_cache.clear()


# ================================================================================================ block
class CrossFormerBlock(nn.Module):
    """One CrossFormer block: ``x + LSDA(LN(x))``, then ``x + MLP(LN(x))``, then optionally ACL.

    Args:
        dim: Channels.
        num_heads: Attention heads.
        group_size: Group side ``G``.
        interval: LDA interval ``I``.
        long_distance: LDA (True) or SDA (False) block.
        mlp_ratio: MLP hidden width / ``dim``.
        use_acl: End with an activation cooling layer (CrossFormer++).
        drop_path: Stochastic depth probability.
        runtime: Runtime options, shared with the attention layer.
        attn_type: ``"lsda"``, or the ablation's ``"pvt"``/``"swin"`` (:func:`.ablation.ablation_attention`).
        See :class:`LSDAttention` for the rest.
    """

    __jit_ignored_attributes__ = ["runtime"]

    def __init__(
        self,
        dim: int,
        num_heads: int,
        group_size: int,
        interval: int,
        long_distance: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        use_acl: bool = False,
        fixed_interval: bool = False,
        pos_embed: str = "dpb",
        fused_attn: bool = True,
        runtime: Optional[RuntimeOptions] = None,
        attn_type: str = "lsda",
    ) -> None:
        super().__init__()
        self.runtime = runtime if runtime is not None else RuntimeOptions()
        self.norm1 = norm_layer(dim)
        attn_args = dict(fixed_interval=fixed_interval, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
                         proj_drop=proj_drop, pos_embed=pos_embed, fused_attn=fused_attn, runtime=self.runtime)
        if attn_type == "lsda":
            self.attn = LSDAttention(dim, num_heads, group_size, interval, long_distance, **attn_args)
        else:  # the paper's attention ablation; .ablation builds on LSDAttention, hence imported here
            from .ablation import ablation_attention

            self.attn = ablation_attention(attn_type, dim, num_heads, group_size, interval, long_distance, **attn_args)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.acl = ActivationCoolingLayer(dim, norm_layer=norm_layer) if use_acl else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``."""
        if not torch.jit.is_scripting() and isinstance(self.attn, LSDAttention):  # ablation's PVT-like: as written
            plan = choose(self.runtime, x, self.training, self.attn.qkv, self.attn.fused_attn, self.mlp)
            if plan.path == PIECES:  # CPU inference: cache-sized pieces, same numbers (runtime.cpu)
                return self.acl(forward_in_pieces(self, x, plan, self.runtime.cpu_pieces))
            if plan.fused_mlp:  # compiled inference of whole tensors: the MLP as two oneDNN calls
                return self.acl(mlp_residual(self, x + self.attn(self.norm1(x)), plan))
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return self.acl(x)


# ================================================================================================ stage
class CrossFormerStage(nn.Module):
    """Optional cross-scale merge (stride 2) followed by blocks alternating SDA and LDA.

    ``group_size`` may be one int for all blocks or one per block (progressive group sizes).
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        group_size: Union[int, Sequence[int]],
        interval: int,
        downsample: bool,
        merge_size: Sequence[int] = (2, 4),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Union[float, Sequence[float]] = 0.0,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        use_acl: bool = False,
        fixed_interval: bool = False,
        pos_embed: str = "dpb",
        fused_attn: bool = True,
        runtime: Optional[RuntimeOptions] = None,
        attn_type: str = "lsda",
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        runtime = runtime if runtime is not None else RuntimeOptions()
        group_sizes = [group_size] * depth if isinstance(group_size, int) else list(group_size)
        if len(group_sizes) != depth:
            raise ValueError(f"got {len(group_sizes)} group sizes for a stage of depth {depth}")
        drop_paths = [drop_path] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
        if downsample:
            self.downsample: nn.Module = CrossScaleEmbedding(
                in_dim, dim, tuple(merge_size), stride=2, norm_layer=norm_layer, norm_first=True, runtime=runtime
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[
                CrossFormerBlock(
                    dim,
                    num_heads,
                    group_size=group_sizes[j],
                    interval=interval,
                    long_distance=j % 2 == 1,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    proj_drop=proj_drop,
                    attn_drop=attn_drop,
                    drop_path=drop_paths[j],
                    act_layer=act_layer,
                    norm_layer=norm_layer,
                    # official rule: every third block, never the stage's last one
                    use_acl=use_acl and (j + 1) % 3 == 0 and j < depth - 1,
                    fixed_interval=fixed_interval,
                    pos_embed=pos_embed,
                    fused_attn=fused_attn,
                    runtime=runtime,
                    attn_type=attn_type,
                )
                for j in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)  # (B, H, W, C_in) -> (B, H/2, W/2, C)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
        else:
            x = self.blocks(x)
        return x


# ================================================================================================ model
class CrossFormer(nn.Module):
    """CrossFormer / CrossFormer++ image classifier and backbone.

    The constructor takes the official argument names, so a configuration of the official code builds
    directly: ``CrossFormer(embed_dim=64, depths=[1, 1, 8, 6], num_heads=[2, 4, 8, 16], group_size=[7] * 4,
    crs_interval=[8, 4, 2, 1])`` is CrossFormer-T. Any input size works (height and width of at least the
    total stride, 32): grouping and padding are decided for each input.

    Args:
        img_size: Nominal input size; only sets ``default_cfg`` and the APE grid. Not a constraint.
        patch_size: Kernel sizes of the stem CEL (stride = the smallest), e.g. ``(4, 8, 16, 32)``.
        in_chans: Image channels.
        num_classes: Classes of the head; 0 for no head (pooled features).
        embed_dim: Channels of stage 1 (doubled at every stage).
        depths: Blocks per stage.
        num_heads: Attention heads per stage.
        group_size: Group side ``G`` per stage (or one list per stage with a size per block).
        crs_interval: LDA interval ``I`` per stage.
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: Bias in the qkv projections.
        qk_scale: Attention logit scale, ``head_dim ** -0.5`` if None.
        drop_rate: Dropout before the classifier (timm meaning).
        proj_drop_rate: Dropout in MLPs and after attention projections (the official ``drop_rate``).
        attn_drop_rate: Dropout on attention weights.
        pos_drop_rate: Dropout after the stem (the official code uses its ``drop_rate`` here too).
        drop_path_rate: Stochastic depth, increasing linearly over all blocks to this value.
        norm_layer: Normalisation layer (class or ``"layernorm"``).
        act_layer: MLP activation (class or ``"gelu"``).
        ape: Official flag for absolute position embedding; same as ``pos_embed="ape"``.
        patch_norm: LayerNorm after the stem.
        use_checkpoint: Start with gradient checkpointing on (see :meth:`set_grad_checkpointing`).
        merge_size: Kernel sizes of the CELs between stages, one tuple per transition.
        use_acl: Activation cooling layers (CrossFormer++).
        lda_mode: ``"fixed_group"`` (default; fixed group size G and interval I, LDA pads to multiples of
            G*I) or ``"fixed_interval"`` (original dense backbone; the LDA group grows with the input).
        pos_embed: ``"dpb"``, ``"dpb_residual"``, ``"rpb"``, ``"ape"`` or ``"none"`` (ablations, Table 5).
        embed_layer: ``"cel"`` or ``"conv"`` (a single kernel equal to the stride, instead of the set).
        attn_type: ``"lsda"`` (default), or the attention ablation's (Table 5a) ``"swin"`` (shifted ``G x G``
            windows) or ``"pvt"`` (spatial-reduction keys/values, ratio ``crs_interval``); see :mod:`.ablation`.
        global_pool: Pooling of the head: ``"avg"``, ``"max"``... or ``""`` for none.
        fused_attn: Use ``scaled_dot_product_attention`` (default: timm's ``use_fused_attn()``).
        runtime: Speed switches (:class:`~crossformer_vision.runtime.RuntimeOptions`; default: its defaults,
            today's CPU speed paths). Change them later with :func:`crossformer_vision.optimize`.
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: Sequence[int] = (4, 8, 16, 32),
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        group_size: Union[int, Sequence[Union[int, Sequence[int]]]] = (7, 7, 7, 7),
        crs_interval: Union[int, Sequence[int]] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Union[str, Callable[..., nn.Module]] = nn.LayerNorm,
        act_layer: Union[str, Callable[..., nn.Module]] = nn.GELU,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        merge_size: Sequence[Sequence[int]] = ((2, 4), (2, 4), (2, 4)),
        use_acl: bool = False,
        lda_mode: str = "fixed_group",
        pos_embed: str = "dpb",
        embed_layer: str = "cel",
        attn_type: str = "lsda",
        global_pool: str = "avg",
        fused_attn: Optional[bool] = None,
        runtime: Optional[RuntimeOptions] = None,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        if num_stages < 1:
            raise ValueError("depths must list at least one stage")
        num_heads = _per_stage("num_heads", num_heads, num_stages)
        group_size = _per_stage("group_size", group_size, num_stages)
        crs_interval = _per_stage("crs_interval", crs_interval, num_stages)
        _check_counts(in_chans=[in_chans], embed_dim=[embed_dim], depths=list(depths), num_heads=num_heads,
                      crs_interval=crs_interval, patch_size=list(patch_size),
                      group_size=[g for entry in group_size for g in ([entry] if isinstance(entry, int) else entry)])
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: no classifier, pooled features), got {num_classes!r}")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio!r}")
        for name, rate in (("drop_rate", drop_rate), ("proj_drop_rate", proj_drop_rate), ("attn_drop_rate", attn_drop_rate),
                           ("pos_drop_rate", pos_drop_rate), ("drop_path_rate", drop_path_rate)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        merge_size = [tuple(m) for m in merge_size]
        if len(merge_size) < num_stages - 1:
            raise ValueError(f"merge_size needs {num_stages - 1} entries (one per stage transition), got {len(merge_size)}")
        if lda_mode not in LDA_MODES:
            raise ValueError(f"lda_mode must be one of {LDA_MODES}, got {lda_mode!r}")
        if ape:
            pos_embed = "ape"
        if pos_embed not in POS_EMBED_TYPES:
            raise ValueError(f"pos_embed must be one of {POS_EMBED_TYPES}, got {pos_embed!r}")
        if embed_layer not in EMBED_LAYERS:
            raise ValueError(f"embed_layer must be one of {EMBED_LAYERS}, got {embed_layer!r}")
        if attn_type not in ATTN_TYPES:
            raise ValueError(f"attn_type must be one of {ATTN_TYPES}, got {attn_type!r}")
        if runtime is not None and not isinstance(runtime, RuntimeOptions):
            raise TypeError(f"runtime must be a crossformer_vision.RuntimeOptions, got {type(runtime).__name__}")
        norm_layer = _resolve_layer(norm_layer, _NORM_LAYERS, "norm_layer")
        act_layer = _resolve_layer(act_layer, _ACT_LAYERS, "act_layer")
        if fused_attn is None:
            fused_attn = use_fused_attn()
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        patch_size = tuple(int(p) for p in patch_size)
        stem_stride = min(patch_size)

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = img_size
        self.embed_dim = embed_dim
        self.lda_mode = lda_mode
        self.pos_embed_type = pos_embed
        self.attn_type = attn_type
        self.output_fmt = "NCHW"
        self.runtime = runtime if runtime is not None else RuntimeOptions()
        dims = [int(embed_dim * 2**i) for i in range(num_stages)]
        self.num_features = self.head_hidden_size = dims[-1]
        self.min_input_size = stem_stride * 2 ** (num_stages - 1)

        self.patch_embed = CrossScaleEmbedding(
            in_chans,
            embed_dim,
            patch_size if embed_layer == "cel" else (stem_stride,),
            stride=stem_stride,
            norm_layer=norm_layer if patch_norm else None,
            runtime=self.runtime,
        )
        self.absolute_pos_embed = None
        if pos_embed == "ape":
            self.absolute_pos_embed = AbsolutePositionEmbedding(
                (img_size[0] // stem_stride, img_size[1] // stem_stride), embed_dim
            )
        self.pos_drop = nn.Dropout(pos_drop_rate)

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # works under a meta device
        stages = []
        self.feature_info = []
        for i in range(num_stages):
            merge = merge_size[i - 1] if i > 0 else (2,)
            stages.append(
                CrossFormerStage(
                    dims[i - 1] if i > 0 else embed_dim,
                    dims[i],
                    depths[i],
                    num_heads[i],
                    group_size=group_size[i],
                    interval=crs_interval[i],
                    downsample=i > 0,
                    merge_size=merge if embed_layer == "cel" else (2,),
                    attn_type=attn_type,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    act_layer=act_layer,
                    norm_layer=norm_layer,
                    use_acl=use_acl,
                    fixed_interval=lda_mode == "fixed_interval",
                    pos_embed=pos_embed,
                    fused_attn=fused_attn,
                    runtime=self.runtime,
                )
            )
            self.feature_info.append(
                dict(num_chs=dims[i], reduction=stem_stride * 2**i, module=f"stages.{i}")
            )
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features)
        self.head = ClassifierHead(
            self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, input_fmt="NCHW"
        )
        self.apply(self._init_weights)
        if use_checkpoint:
            self.set_grad_checkpointing(True)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # as the official code: truncated normal for linear layers, unit LayerNorm; convs keep torch's default
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ timm model API
    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Parameter names excluded from weight decay (besides biases and norms, which timm skips)."""
        return {
            name
            for name, _ in self.named_parameters()
            if name.endswith("absolute_pos_embed.pos_embed") or name.endswith("relative_position_bias_table")
        }

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm ``param_groups_layer_decay``)."""
        return dict(
            stem=r"^patch_embed|^absolute_pos_embed",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier with a new one for ``num_classes`` (0: none); optionally change pooling."""
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    @torch.jit.ignore
    def clear_bias_cache(self) -> None:
        """Forget cached attention biases (they are recomputed when the position-bias weights change anyway)."""
        for module in self.modules():
            if isinstance(module, LSDAttention):
                module.clear_bias_cache()

    def load_pretrained(self, path: PathLike) -> None:
        """Load an official or own checkpoint file, or a model folder, into this model (timm's ``custom_load`` hook).

        The file is read safely and converted from any official layout; a folder (``config.json`` +
        ``model.safetensors``, :mod:`.hub`) is read from its safetensors only, its shapes checked before loading. A
        classifier of another size (``num_classes`` changed, or 0 for features) is left freshly initialised; stem
        convolutions are adapted when ``in_chans`` differs (timm's ``adapt_input_conv``).

        Raises:
            CheckpointError: an unreadable or unsafe file, or weights that do not fit this model.
        """
        from timm.models import adapt_input_conv

        from .hub import is_model_folder, read_folder_weights  # (here: hub builds models with this module)

        if is_model_folder(path):
            state_dict = read_folder_weights(path, self)
        else:
            state_dict = convert_official_state_dict(unwrap_state_dict(load_checkpoint_file(path)), self)
        own = self.state_dict()
        for key in [k for k in state_dict if k.startswith("head.")]:
            if key not in own or own[key].shape != state_dict[key].shape:
                del state_dict[key]
        for key in [k for k in state_dict if k.startswith("patch_embed.projs.") and k.endswith(".weight")]:
            if key in own and state_dict[key].shape[1] != own[key].shape[1]:
                state_dict[key] = adapt_input_conv(own[key].shape[1], state_dict[key])
        missing, unexpected = load_state_dict_checked(self, state_dict, strict=False)
        missing = [k for k in missing if not k.startswith("head.")]
        if missing and all(k.startswith("norm.") for k in missing):
            # detection/segmentation checkpoints have no final norm; features_only models drop it anyway
            _logger.warning("%s has no final norm (a dense backbone checkpoint?); norm keeps its initial values", path)
            missing = []
        if missing or unexpected:
            raise CheckpointError(
                f"{path} does not fit {type(self).__name__}: missing {missing[:5]} ({len(missing)}), "
                f"unexpected {unexpected[:5]} ({len(unexpected)})"
            )

    # ------------------------------------------------------------------ forward
    def _embed(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, self.min_input_size)
        x = self.patch_embed(x)  # (B, C_in, H, W) -> (B, H/4, W/4, C)
        if self.absolute_pos_embed is not None:
            x = self.absolute_pos_embed(x)
        return self.pos_drop(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image ``(B, C, H, W)`` -> normalised last-stage features ``(B, C', H/32, W/32)``."""
        x = self.stages(self._embed(x))  # (B, H/32, W/32, C')
        # NCHW memory: a tiny copy, and pooling a channels-last view would tie an exported graph to batch > 1
        return self.norm(x).permute(0, 3, 1, 2).contiguous()

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Features from :meth:`forward_features` -> logits, or pooled features if ``pre_logits``."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """Forward pass that also returns stage outputs (after the blocks, before the next merge).

        Args:
            x: Image batch ``(B, C, H, W)``.
            indices: Stages to return: last ``n`` if int, all if None, or a list of indices.
            norm: Apply the final norm to the last stage's intermediate.
            stop_early: Stop after the last requested stage.
            output_fmt: ``"NCHW"`` or ``"NHWC"``.
            intermediates_only: Return only the list of intermediates.

        Returns:
            ``(final_features, intermediates)`` or ``intermediates``; ``final_features`` equals
            :meth:`forward_features` when every stage runs.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            # plain concatenation: TorchScript (smp's encoders are scripted) compiles no f-string conversions
            raise ValueError("output_fmt must be 'NCHW' or 'NHWC', got '" + output_fmt + "'")
        intermediates: List[Tensor] = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        num_stages = len(self.stages)
        x = self._embed(x)
        if torch.jit.is_scripting() or not stop_early:
            stages = self.stages
        else:
            stages = self.stages[: max_index + 1]
        last = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            last = i
            if i in take_indices:
                x_inter = self.norm(x) if norm and i == num_stages - 1 else x
                if output_fmt == "NCHW":
                    x_inter = x_inter.permute(0, 3, 1, 2).contiguous()
                intermediates.append(x_inter)
        if intermediates_only:
            return intermediates
        if last == num_stages - 1:
            x = self.norm(x)
        return x.permute(0, 3, 1, 2), intermediates

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Drop the stages (and norm/head) not needed to produce the given intermediates."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        self.feature_info = self.feature_info[: max_index + 1]
        self.min_input_size = self.patch_embed.stride * 2**max_index
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices


# ================================================================================================ checkpoint filter
def checkpoint_filter_fn(state_dict: Dict[str, Tensor], model: nn.Module) -> Dict[str, Tensor]:
    """timm ``pretrained_filter_fn``: official or own layout -> ours (:func:`~.official.convert_official_state_dict`)."""
    return convert_official_state_dict(state_dict, model)


# ================================================================================================ configs
_CROSSFORMER = dict(group_size=(7, 7, 7, 7), crs_interval=(8, 4, 2, 1))
_CROSSFORMER_PP = dict(group_size=(4, 4, 14, 7), crs_interval=(4, 2, 1, 1), use_acl=True)

#: Architecture of each published variant (CrossFormer constructor arguments): the official configs/*.yaml of
#: github.com/cheerss/CrossFormer. With 1000 classes their parameter counts equal the official models' exactly.
VARIANTS: Dict[str, Dict[str, Any]] = {
    "crossformer_tiny": dict(embed_dim=64, depths=(1, 1, 8, 6), num_heads=(2, 4, 8, 16), drop_path_rate=0.1, **_CROSSFORMER),
    "crossformer_small": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2, **_CROSSFORMER),
    "crossformer_base": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3, **_CROSSFORMER),
    "crossformer_large": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5, **_CROSSFORMER),
    "crossformerpp_small": dict(embed_dim=64, depths=(2, 2, 18, 2), num_heads=(2, 4, 8, 16), drop_path_rate=0.2, **_CROSSFORMER_PP),
    "crossformerpp_base": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3, **_CROSSFORMER_PP),
    "crossformerpp_large": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5, **_CROSSFORMER_PP),
    "crossformerpp_huge": dict(embed_dim=128, depths=(6, 6, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5, **_CROSSFORMER_PP),
}

#: Small configurations of the same architecture that no paper trained, registered like the variants (for the
#: demo, tests and laptops). ``crossformer_micro``: the stem's stride 4 turns a 32x32 image into an 8x8 token map,
#: the four stages see 8x8, 4x4, 2x2 and 1x1 maps; SDA groups are the whole map in stages 1-2 and LDA uses
#: interval 2 in stage 1 (1.7M parameters, 8.6M multiply-accumulates at 32x32).
SMALL_VARIANTS: Dict[str, Dict[str, Any]] = {
    "crossformer_micro": dict(
        patch_size=(4, 8, 16, 32),
        embed_dim=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8),
        group_size=(4, 4, 2, 1),
        crs_interval=(2, 1, 1, 1),
        merge_size=((2, 4), (2, 4), (2, 4)),
    ),
}

#: Every registered model: the published variants, then the small ones.
MODELS: Dict[str, Dict[str, Any]] = {**VARIANTS, **SMALL_VARIANTS}

#: The papers' ImageNet-1K figures at 224x224: parameters, GFLOPs (multiply-accumulates), top-1 accuracy,
#: the exact parameter count of the official code with 1000 classes, and fvcore's count on the official code.
PAPER: Dict[str, Dict[str, float]] = {
    "crossformer_tiny": dict(params_m=27.8, gflops=2.9, top1=81.5, exact_params=27_776_794, official_fvcore_gflops=2.870),
    "crossformer_small": dict(params_m=30.7, gflops=4.9, top1=82.5, exact_params=30_657_394, official_fvcore_gflops=4.925),
    "crossformer_base": dict(params_m=52.0, gflops=9.2, top1=83.4, exact_params=51_971_554, official_fvcore_gflops=9.188),
    "crossformer_large": dict(params_m=92.0, gflops=16.1, top1=84.0, exact_params=91_971_184, official_fvcore_gflops=16.146),
    "crossformerpp_small": dict(params_m=23.3, gflops=4.9, top1=83.2, exact_params=23_325_340, official_fvcore_gflops=4.451),
    "crossformerpp_base": dict(params_m=52.0, gflops=9.5, top1=84.2, exact_params=51_994_594, official_fvcore_gflops=9.626),
    "crossformerpp_large": dict(params_m=92.0, gflops=16.6, top1=84.7, exact_params=92_001_904, official_fvcore_gflops=16.768),
    "crossformerpp_huge": dict(params_m=96.0, gflops=21.8, top1=84.9, exact_params=95_962_944, official_fvcore_gflops=22.073),
}

#: CrossFormer-S position-encoding ablation (paper Table 5): parameters in millions.
PAPER_ABLATION_S: Dict[str, float] = {"ape": 30.9342, "rpb": 30.6159, "dpb": 30.6573, "dpb_residual": 30.6573}

_OFFICIAL_WEIGHTS = "https://github.com/cheerss/CrossFormer#model-zoo"


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": ("patch_embed.projs.0", "patch_embed.projs.1", "patch_embed.projs.2", "patch_embed.projs.3"),
        "classifier": "head.fc",
        # official weights are published outside any hub: download them from the official model zoo and pass
        # pretrained_cfg_overlay=dict(file=PATH); CrossFormer.load_pretrained reads them (custom_load)
        "custom_load": True,
        "origin_url": _OFFICIAL_WEIGHTS,
        "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "crossformer_tiny.in1k": _cfg(paper_ids="arXiv:2108.00154"),
        "crossformer_small.in1k": _cfg(paper_ids="arXiv:2108.00154"),
        "crossformer_base.in1k": _cfg(paper_ids="arXiv:2108.00154"),
        "crossformer_large.in1k": _cfg(paper_ids="arXiv:2108.00154"),
        "crossformerpp_small.in1k": _cfg(paper_ids="arXiv:2303.06908"),
        "crossformerpp_base.in1k": _cfg(paper_ids="arXiv:2303.06908"),
        "crossformerpp_large.in1k": _cfg(paper_ids="arXiv:2303.06908"),
        "crossformerpp_huge.in1k": _cfg(paper_ids="arXiv:2303.06908"),
        # no weights anywhere: a configuration for 32x32 inputs (the digits demo trains it in a minute on a CPU)
        "crossformer_micro.untrained": _cfg(input_size=(3, 32, 32), pool_size=(1, 1), crop_pct=1.0,
                                           origin_url=None, custom_load=False),
    }
)


# ================================================================================================ entrypoints
class CrossFormerFeatures(FeatureGetterNet):
    """``features_only=True``: timm's feature getter (:meth:`CrossFormer.forward_intermediates`), typed as a list of
    stage outputs so that TorchScript can script it (smp's ``tu-crossformer_*`` encoders iterate over it)."""

    def forward(self, x: Tensor) -> List[Tensor]:
        features = self.model.forward_intermediates(
            x, indices=self.out_indices, norm=self.norm, output_fmt=self.output_fmt, intermediates_only=True
        )
        assert isinstance(features, list)  # intermediates_only: always the list (narrows the Union for TorchScript)
        return features


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> CrossFormer:
    from .hub import local_dir_cfg  # (here: hub builds models with this module)

    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    output_stride = kwargs.pop("output_stride", None)  # smp's tu- encoders pass it for their dilated mode
    if output_stride is not None and output_stride != 32:
        raise ValueError(
            f"{variant} does not support dilated mode: output_stride={output_stride!r} asks for dilated stages, but "
            f"CrossFormer's stages always have strides 4, 8, 16 and 32; use output_stride=32 (smp: leave "
            f"encoder_output_stride at its default, or choose a decoder that needs no dilated encoder)"
        )
    folder_cfg = local_dir_cfg(kwargs.get("pretrained_cfg"))
    if folder_cfg is not None:
        # timm.create_model("local-dir:DIR"): the folder's weights always load, and only through the safe reader
        # (safetensors checked before allocating, CrossFormer.load_pretrained); timm's would unpickle .bin files
        kwargs["pretrained_cfg"], pretrained = folder_cfg, True
    overlay = kwargs.get("pretrained_cfg_overlay")
    if overlay and overlay.get("file"):
        # files go through CrossFormer.load_pretrained (safe reader, official layouts, head/in_chans adaptation);
        # recent timm resets custom_load when an overlay names a source unless it is set explicitly
        kwargs["pretrained_cfg_overlay"] = {"custom_load": True, **overlay}
    model_args = {**MODELS[variant], **kwargs}
    model = build_model_with_cfg(
        CrossFormer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls=CrossFormerFeatures),
        **model_args,
    )
    if folder_cfg is not None:
        model.pretrained_cfg["source"] = "local-dir"  # where the weights came from, as timm names it
    return model


def _entrypoint(name: str) -> Callable[..., CrossFormer]:
    """The timm entrypoint ``name(pretrained=False, **kwargs)`` of a variant, registered with timm."""

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> CrossFormer:
        return _create(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    paper = PAPER.get(name)
    entrypoint.__doc__ = (f"{name} ({paper['params_m']}M params, {paper['gflops']} GFLOPs, {paper['top1']}% ImageNet "
                          f"top-1)." if paper else f"{name}: a configuration without published weights.")
    return register_model(entrypoint)


# the registered entrypoints (timm.create_model("crossformer_small") calls crossformer_small), one per variant
crossformer_tiny = _entrypoint("crossformer_tiny")
crossformer_small = _entrypoint("crossformer_small")
crossformer_base = _entrypoint("crossformer_base")
crossformer_large = _entrypoint("crossformer_large")
crossformerpp_small = _entrypoint("crossformerpp_small")
crossformerpp_base = _entrypoint("crossformerpp_base")
crossformerpp_large = _entrypoint("crossformerpp_large")
crossformerpp_huge = _entrypoint("crossformerpp_huge")
crossformer_micro = _entrypoint("crossformer_micro")


def list_models(small: bool = False) -> List[str]:
    """Names of the published variants, CrossFormer first; with ``small``, also :data:`SMALL_VARIANTS`."""
    return list(MODELS if small else VARIANTS)


def create_model(name: str, pretrained: bool = False, checkpoint_path: Optional[str] = None, **kwargs: Any) -> CrossFormer:
    """Build a registered variant (``timm.create_model`` with a clear error for unknown names).

    The model runs today's speed paths (default :class:`~crossformer_vision.runtime.RuntimeOptions`); pass
    ``runtime=RuntimeOptions(...)``, or call :func:`crossformer_vision.optimize` on it, to change them.

    Args:
        name: A name from :func:`list_models`, optionally with a timm tag (``crossformer_small.in1k``).
        pretrained: Load official weights from ``checkpoint_path`` (no network access is attempted).
        checkpoint_path: Official or own checkpoint file (``.pth``/``.safetensors``).
        **kwargs: Passed to :class:`CrossFormer` or timm (``num_classes``, ``in_chans``, ``features_only``,
            ``lda_mode``, ``drop_path_rate``, ``runtime``...).
    """
    import timm

    if not isinstance(name, str):
        raise TypeError(f"the model name must be a string such as 'crossformer_small', got {name!r}")
    base = name.split(".")[0]
    if base not in MODELS:
        close = difflib.get_close_matches(base, list(MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} Available: {', '.join(MODELS)}")
    if pretrained and checkpoint_path is None:
        raise ValueError(
            f"pretrained=True needs checkpoint_path: official weights are not downloadable here; get them from "
            f"{_OFFICIAL_WEIGHTS} and pass the file"
        )
    if checkpoint_path is not None:
        kwargs.setdefault("pretrained_cfg_overlay", {})["file"] = str(checkpoint_path)
        pretrained = True
    return timm.create_model(name, pretrained=pretrained, **kwargs)
