"""CrossFormer feature extractors with a feature pyramid, shaped for torchvision's detectors.

A torchvision detector needs a ``backbone`` module that maps an image batch ``(B, 3, H, W)`` to an
``OrderedDict`` of feature maps with a common channel count ``backbone.out_channels``.
:class:`CrossFormerFPN` is that module: a CrossFormer (timm ``features_only``) followed by torchvision's
:class:`~torchvision.ops.FeaturePyramidNetwork`. The two wirings of the paper (mmdetection's) are:

* RetinaNet: FPN over stages 2-4 (strides 8, 16, 32) plus P6 = stride-2 conv of stage 4's *output*
  (mmdet ``add_extra_convs='on_input'``) and P7 = stride-2 conv of P6 (:class:`LastLevelP6P7`).
* Mask R-CNN / Faster R-CNN: FPN over all four stages (strides 4-32) plus a max-pooled P6.
"""
import logging
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops import feature_pyramid_network as tv_fpn

from ..models import CrossFormer, create_model
from ..models.official import (
    CheckpointError,
    LoadReport,
    PathLike,
    convert_official_state_dict,
    load_checkpoint_file,
    load_state_dict_checked,
    unwrap_state_dict,
)

__all__ = [
    "EXTRA_LEVELS",
    "HIGH_RESOLUTION",
    "CrossFormerFPN",
    "LastLevelP6P7",
    "backbone_kwargs_for",
    "build_backbone",
    "find_crossformer",
    "load_backbone_weights",
]

_logger = logging.getLogger(__name__)

#: Group sizes and LDA intervals of the paper's high-resolution dense variants (the "double dagger"
#: models; used by the original Semantic FPN configs). Pass ``high_resolution=True`` to the builders.
HIGH_RESOLUTION: Dict[str, Tuple[int, ...]] = {"group_size": (14, 14, 7, 7), "crs_interval": (16, 8, 2, 1)}


class LastLevelP6P7(tv_fpn.LastLevelP6P7):
    """RetinaNet's extra levels as the paper built them: P6 from the last stage's output, then P7.

    torchvision's :class:`~torchvision.ops.feature_pyramid_network.LastLevelP6P7` applies a ReLU between
    P6 and P7 (Detectron's RetinaNet) and takes P5 instead of C5 when the channel counts agree.
    mmdetection's FPN with ``add_extra_convs='on_input'`` (used for the released CrossFormer RetinaNets)
    always starts from C5 and has no ReLU. Both are offered; the default follows the paper.

    Args:
        in_channels: Channels of the last backbone stage (C5).
        out_channels: FPN channels.
        relu_before_p7: Apply ReLU to P6 before computing P7 (torchvision/Detectron behaviour).
    """

    def __init__(self, in_channels: int, out_channels: int, relu_before_p7: bool = False) -> None:
        super().__init__(in_channels, out_channels)
        self.relu_before_p7 = relu_before_p7

    def forward(self, p: List[Tensor], c: List[Tensor], names: List[str]) -> Tuple[List[Tensor], List[str]]:
        p6 = self.p6(c[-1])
        p7 = self.p7(F.relu(p6) if self.relu_before_p7 else p6)
        p.extend([p6, p7])
        names.extend(["p6", "p7"])
        return p, names


class CrossFormerFPN(nn.Module):
    """CrossFormer stages followed by a torchvision feature pyramid (torchvision ``backbone`` protocol).

    Args:
        body: A timm ``features_only`` CrossFormer (returns a list of NCHW maps, has ``feature_info``).
        out_channels: FPN channels (256 in the paper).
        extra_blocks: torchvision ``ExtraFPNBlock`` adding levels above the last stage (P6/P7 or max-pool).

    Shapes:
        input ``(B, 3, H, W)`` with H, W >= 32 -> ``OrderedDict`` ``{"0": (B, C, H/s0, W/s0), ...}``, one
        entry per stage used (``s0`` = 4 for all four stages, 8 from stage 2) followed by the extra levels
        (``"pool"`` or ``"p6"``, ``"p7"``). Sizes are floors of the stage sizes, e.g. 800x1333 gives
        200x333, 100x166, 50x83, 25x41.
    """

    def __init__(self, body: nn.Module, out_channels: int = 256, extra_blocks: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.body = body
        self.in_channels_list: List[int] = list(body.feature_info.channels())
        self.strides: List[int] = list(body.feature_info.reduction())
        self.fpn = FeaturePyramidNetwork(self.in_channels_list, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def backbone_kwargs_for(
    high_resolution: bool = False, lda_mode: str = "fixed_group", backbone_kwargs: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """CrossFormer constructor options for a dense model (explicit ``backbone_kwargs`` win)."""
    kwargs: Dict[str, Any] = dict(HIGH_RESOLUTION) if high_resolution else {}
    kwargs["lda_mode"] = lda_mode
    kwargs.update(backbone_kwargs or {})
    return kwargs


EXTRA_LEVELS = ("none", "maxpool", "p6p7")


def build_backbone(
    name: str = "crossformer_small",
    out_indices: Sequence[int] = (0, 1, 2, 3),
    fpn_channels: int = 256,
    extra_levels: str = "maxpool",
    relu_before_p7: bool = False,
    weights: Optional[PathLike] = None,
    **backbone_kwargs: Any,
) -> CrossFormerFPN:
    """CrossFormer + FPN for torchvision detectors.

    Args:
        name: A registered variant (``crossformer_vision.list_models()``), e.g. ``"crossformer_small"``.
        out_indices: Stages fed to the FPN (0 = stride 4 ... 3 = stride 32).
        fpn_channels: FPN output channels.
        extra_levels: Levels above the last stage: ``"maxpool"`` (one, R-CNNs), ``"p6p7"`` (two stride-2
            convs from the last stage's output, RetinaNet; see :class:`LastLevelP6P7`) or ``"none"``.
        relu_before_p7: With ``"p6p7"``: ReLU on P6 before P7 (torchvision) instead of none (paper).
        weights: Optional backbone checkpoint: an official classification file, an official
            mmdetection/mmsegmentation file (its backbone part), or this package's weights.
        **backbone_kwargs: CrossFormer options (``group_size``, ``crs_interval``, ``lda_mode``,
            ``drop_path_rate``, ``use_checkpoint``...).
    """
    if extra_levels not in EXTRA_LEVELS:
        raise ValueError(f"extra_levels must be one of {EXTRA_LEVELS}, got {extra_levels!r}")
    body = create_model(name, features_only=True, out_indices=tuple(out_indices), **backbone_kwargs)
    extra_blocks: Optional[nn.Module] = None
    if extra_levels == "maxpool":
        extra_blocks = tv_fpn.LastLevelMaxPool()
    elif extra_levels == "p6p7":
        extra_blocks = LastLevelP6P7(body.feature_info.channels()[-1], fpn_channels, relu_before_p7)
    backbone = CrossFormerFPN(body, fpn_channels, extra_blocks)
    if weights is not None:
        load_backbone_weights(backbone, weights)
    return backbone


def find_crossformer(model: nn.Module) -> CrossFormer:
    """The CrossFormer inside a detector, segmenter or backbone; ``ValueError`` if there is none."""
    for module in model.modules():
        if isinstance(module, CrossFormer):
            return module
    raise ValueError(
        f"{type(model).__name__} contains no CrossFormer backbone; build it with crossformer_vision.dense "
        "(retinanet, maskrcnn, upernet...) or pass the backbone module itself"
    )


def load_backbone_weights(model: nn.Module, path: PathLike) -> LoadReport:
    """Load backbone weights from a checkpoint file into the CrossFormer inside ``model``.

    Accepts official classification checkpoints (any layout the package reads), official mmdetection /
    mmsegmentation checkpoints (only their ``backbone.`` part is used here; see
    :func:`crossformer_vision.dense.load_dense_checkpoint` for necks and heads) and this package's files.
    Every backbone tensor must be present; a classifier head and final norm in the file are ignored
    (dense models do not use them).

    Returns:
        :class:`~crossformer_vision.weights.LoadReport`: ``unexpected_keys`` lists the ignored head/norm keys.

    Raises:
        CheckpointError: unreadable/unsafe file, or tensors missing or of the wrong shape for this variant.
    """
    backbone = find_crossformer(model)
    raw = unwrap_state_dict(load_checkpoint_file(path))
    state_dict = convert_official_state_dict(raw, backbone)
    own = backbone.state_dict()
    ignored = [k for k in state_dict if k not in own and k.startswith(("head.", "norm."))]
    for key in ignored:
        del state_dict[key]
    try:
        load_state_dict_checked(backbone, state_dict, strict=True)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    _logger.info("loaded %d backbone tensors from %s (ignored %d head/norm tensors)", len(state_dict), path, len(ignored))
    return LoadReport([], ignored, [])
