"""CrossFormer and CrossFormer++ (Wang et al., ICLR 2022; TPAMI 2023).

Layout of the network (all tensors between blocks are ``(B, H, W, C)``)::

    image -> CEL (stride 4) -> stage 1 -> CEL (stride 2) -> stage 2 -> ... -> stage 4 -> norm -> head

Each stage alternates SDA and LDA blocks; in CrossFormer++ every third block (except a stage's last)
ends with an activation cooling layer. ``stages[i]`` starts with the cross-scale merge that brings the
previous stage's output to its resolution (timm convention), so its output is the stride ``4 * 2**i``
feature map, the one dense heads use.

Attribute names follow the official code where they exist (``patch_embed.projs``, ``attn.qkv``,
``attn.pos.pos_proj``, ``mlp.fc1``...), so official checkpoints convert with a handful of renames
(:mod:`crossformer_vision.weights`).
"""
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from timm.layers import ClassifierHead, DropPath, Mlp, resample_abs_pos_embed, trunc_normal_, use_fused_attn
from timm.models import register_notrace_function, register_notrace_module
from timm.models._features import feature_take_indices

from . import onednn
from ._tracing import _fx_tracing, _is_compiling, _is_exporting, _static_sizes
from .layers import POS_EMBED_TYPES, ActivationCoolingLayer, CrossScaleEmbedding, LSDAttention

__all__ = ["CrossFormer", "CrossFormerBlock", "CrossFormerStage"]

LDA_MODES = ("fixed_group", "fixed_interval")

#: Token count of the pieces an eval-mode block works in on the CPU (see :meth:`CrossFormerBlock._forward_chunked`).
DEFAULT_CHUNK_TOKENS = 2048
EMBED_LAYERS = ("cel", "conv")
_NORM_LAYERS: Dict[str, Callable[..., nn.Module]] = {"layernorm": nn.LayerNorm}
_ACT_LAYERS: Dict[str, Callable[..., nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


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


def _compile_region(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn`` as a nested compile region where torch has them (>= 2.8): under torch.compile it is traced and
    compiled once per input shapes and the compiled code is reused for every later call with the same
    shapes; eagerly it is ``fn``."""
    region = getattr(torch.compiler, "nested_compile_region", None)
    if region is None:
        return fn
    # one entry per block kind (SDA/LDA, stage width) and piece shape; more than the default 8
    return region(fn, max_reuse_entries=256)


@_compile_region
def _attention_piece(block: "CrossFormerBlock", x: Tensor, layout: Tuple[int, int, int, int, int],
                     bias: Optional[Tensor]) -> Tensor:
    """``x + attn(norm1(x))`` for whole images ``x`` of a block's eval-mode forward (residual fused)."""
    return block.attn._attend(block.norm1(x), *layout, bias, residual=x)


@_compile_region
def _mlp_piece(block: "CrossFormerBlock", rows: Tensor) -> Tensor:
    """``rows + mlp(norm2(rows))`` for ``(tokens, C)`` rows of a block's eval-mode forward."""
    if block._fused_mlp(rows):
        return block._mlp_fused(rows)
    return rows + block.mlp(block.norm2(rows))


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
        See :class:`~crossformer_vision.layers.LSDAttention` for the rest.
    """

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
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = LSDAttention(
            dim,
            num_heads,
            group_size,
            interval,
            long_distance,
            fixed_interval=fixed_interval,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=proj_drop,
            pos_embed=pos_embed,
            fused_attn=fused_attn,
        )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.acl = ActivationCoolingLayer(dim, norm_layer=norm_layer) if use_acl else nn.Identity()
        #: CPU inference (eval mode, no autograd) works in pieces of this many tokens (see :meth:`_forward_chunked`),
        #: eagerly and under torch.compile; 0 turns it off.
        self.chunk_tokens = DEFAULT_CHUNK_TOKENS

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting() and self._chunked(x):
            return self.acl(self._forward_chunked(x))
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        # whole tensors: fused oneDNN MLP only in compiled graphs; eagerly the modules run as written, so
        # that FX graphs of the model (which trace them) give exactly the eager numbers
        if not torch.jit.is_scripting() and self._compiled_fused_mlp(x):
            return self.acl(self._mlp_fused(x))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return self.acl(x)

    @torch.jit.unused
    def _chunked(self, x: Tensor) -> bool:
        """Whether this call runs :meth:`_forward_chunked`."""
        if self.training or torch.is_grad_enabled() or _is_exporting() or _fx_tracing():
            return False
        # CPU only: on GPUs whole tensors keep the kernels large, and their caches are not the limit
        if x.device.type != "cpu":
            return False
        # torch.compile unrolls the loop over pieces for the sizes it specialises on; once it makes sizes
        # dynamic (a second input size), whole tensors keep one graph for every size (checked before any
        # comparison of sizes, which would add a guard)
        if _is_compiling() and not _static_sizes(x):
            return False
        return 0 < self.chunk_tokens < x.shape[0] * x.shape[1] * x.shape[2]

    @torch.jit.unused
    def _forward_chunked(self, x: Tensor) -> Tensor:
        """Inference forward (eval mode, no autograd) in pieces of about ``chunk_tokens`` tokens: same numbers.

        Attention runs on a few whole images at a time (groups never cross images); the MLP, which acts on
        each token alone, on row blocks of tokens. The wide intermediates (``3C`` for q/k/v, ``4C`` in the MLP)
        then stay in cache instead of streaming through memory: stage 1 of CrossFormer-S runs about twice
        as fast on a CPU. Used on the CPU only. The attention bias is computed once for all pieces. Under
        torch.compile each kind of piece is a nested compile region: compiled once, reused for every piece
        and every block of the same shape, so the unrolled loop costs seconds to compile, not minutes.
        """
        batch, height, width, channels = x.shape
        chunk = self.chunk_tokens
        images = max(1, chunk // (height * width))
        layout = self.attn.layout(height, width)
        bias = self.attn.layout_bias(height, width, *layout, x.dtype, x.device)
        pieces = []  # (tokens, C) in token order; joined by one cat (writes into slices of a preallocated
        # output would become a copy of the whole output per piece under torch.compile's functionalization)
        for start in range(0, batch, images):
            xb = _attention_piece(self, x[start : start + images], layout, bias).reshape(-1, channels)
            pieces += [_mlp_piece(self, xb[row : row + chunk]) for row in range(0, xb.shape[0], chunk)]
        return torch.cat(pieces).view(batch, height, width, channels)

    @torch.jit.unused
    def _mlp_fused(self, x: Tensor) -> Tensor:
        """``x + mlp(norm2(x))`` as two oneDNN calls: fc1 with GELU, fc2 with the residual add."""
        hidden = onednn.linear(self.norm2(x), self.mlp.fc1, gelu=True)
        return onednn.linear(hidden, self.mlp.fc2, residual=x)

    @torch.jit.unused
    def _compiled_fused_mlp(self, x: Tensor) -> bool:
        return _is_compiling() and self._fused_mlp(x)

    @torch.jit.unused
    def _fused_mlp(self, x: Tensor) -> bool:
        """Whether the MLP is timm's plain ``fc1 -> exact GELU -> fc2`` and oneDNN can run it fused (eval mode:
        no dropout or drop path to apply between the fused steps)."""
        mlp = self.mlp
        plain = (
            not self.training
            and isinstance(mlp, Mlp)
            and isinstance(mlp.act, nn.GELU)
            and mlp.act.approximate == "none"
            and isinstance(mlp.norm, nn.Identity)
            and isinstance(mlp.fc1, nn.Linear)
            and isinstance(mlp.fc2, nn.Linear)
        )
        return plain and onednn.usable(x, mlp.fc1) and onednn.usable(x, mlp.fc2)


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
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        group_sizes = [group_size] * depth if isinstance(group_size, int) else list(group_size)
        if len(group_sizes) != depth:
            raise ValueError(f"got {len(group_sizes)} group sizes for a stage of depth {depth}")
        drop_paths = [drop_path] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
        if downsample:
            self.downsample: nn.Module = CrossScaleEmbedding(
                in_dim, dim, tuple(merge_size), stride=2, norm_layer=norm_layer, norm_first=True
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
                )
                for j in range(depth)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
        else:
            x = self.blocks(x)
        return x


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
            raise ValueError(f"{name} must be {kind} integer{'s' if len(items) > 1 else ''}, got {bad[0]!r}{where}")


def _per_stage(name: str, value: Union[int, Sequence[Any]], num_stages: int) -> List[Any]:
    values = [value] * num_stages if isinstance(value, int) else list(value)
    if len(values) != num_stages:
        raise ValueError(f"{name} needs one entry per stage ({num_stages}), got {len(values)}: {value!r}")
    return values


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
        global_pool: Pooling of the head: ``"avg"``, ``"max"``... or ``""`` for none.
        fused_attn: Use ``scaled_dot_product_attention`` (default: timm's ``use_fused_attn()``).
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
        global_pool: str = "avg",
        fused_attn: Optional[bool] = None,
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
        self.output_fmt = "NCHW"
        dims = [int(embed_dim * 2**i) for i in range(num_stages)]
        self.num_features = self.head_hidden_size = dims[-1]
        self.min_input_size = stem_stride * 2 ** (num_stages - 1)

        self.patch_embed = CrossScaleEmbedding(
            in_chans,
            embed_dim,
            patch_size if embed_layer == "cel" else (stem_stride,),
            stride=stem_stride,
            norm_layer=norm_layer if patch_norm else None,
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
        """Forget cached attention biases; needed only after editing weights through ``.data``."""
        for module in self.modules():
            if isinstance(module, LSDAttention):
                module.clear_bias_cache()

    # ------------------------------------------------------------------ forward
    def _embed(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_chans, self.min_input_size)
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        if self.absolute_pos_embed is not None:
            x = self.absolute_pos_embed(x)
        return self.pos_drop(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image ``(B, C, H, W)`` -> normalised last-stage features ``(B, C', H/32, W/32)``."""
        x = self.stages(self._embed(x))
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
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
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
