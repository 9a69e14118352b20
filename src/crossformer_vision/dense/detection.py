"""RetinaNet, Faster R-CNN and Mask R-CNN with CrossFormer backbones, as torchvision's own models.

Each builder returns an unmodified torchvision detector (:class:`~torchvision.models.detection.RetinaNet`,
:class:`~torchvision.models.detection.FasterRCNN`, :class:`~torchvision.models.detection.MaskRCNN`) whose
``backbone`` is a :class:`~crossformer_vision.dense.backbone.CrossFormerFPN` wired as in the paper, with
the mmdetection settings the paper used wherever torchvision exposes them (anchor sizes, test-time
thresholds, proposals kept per image).

Class convention (all builders): ``num_classes`` counts object classes only (COCO: 80). Targets and
predictions use labels ``1..num_classes``; label 0 is background, torchvision's convention, so the
torchvision modules are built with ``num_classes + 1`` outputs (RetinaNet's output 0 is never a positive
target, as in torchvision's own COCO RetinaNet). :class:`~crossformer_vision.dense.datasets.CocoInstances`
produces these labels and maps them back to COCO category ids for evaluation.

Training and inference follow torchvision: ``model(images, targets)`` returns a dict of losses in training
mode, ``model(images)`` a list of ``{"boxes", "labels", "scores"[, "masks"]}`` in eval mode. Images are
float tensors in [0, 1], any size (the model normalises with ImageNet statistics, resizes to ``min_size``
/ ``max_size`` and pads to multiples of 32). Outputs are in the input images' pixel coordinates.
"""
from typing import Any, Dict, Mapping, Optional, Sequence

from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator

from ..utils.files import PathLike
from .backbone import CrossFormerFPN, backbone_kwargs_for, build_backbone
from .mmcv_weights import finish_dense_model

__all__ = ["PAPER_DETECTION", "fasterrcnn", "maskrcnn", "retinanet", "retinanet_anchor_generator"]

#: COCO val2017, 1x schedule (paper Table 3 and the official detection README): parameters (millions,
#: 80 classes) and box / mask AP.
PAPER_DETECTION: Dict[str, Dict[str, float]] = {
    "retinanet_crossformer_small": dict(params_m=40.8, box_ap=44.4),
    "retinanet_crossformer_base": dict(params_m=62.1, box_ap=46.2),
    "maskrcnn_crossformer_small": dict(params_m=50.2, box_ap=45.4, mask_ap=41.4),
    "maskrcnn_crossformer_base": dict(params_m=71.5, box_ap=47.2, mask_ap=42.7),
}

_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def retinanet_anchor_generator(
    strides: Sequence[int] = (8, 16, 32, 64, 128), octave_base_scale: float = 4.0, scales_per_octave: int = 3
) -> AnchorGenerator:
    """mmdetection's RetinaNet anchors: sizes ``stride * 4 * 2**(i/3)``, ratios 0.5, 1, 2 (9 per position).

    torchvision's default truncates the sizes to integers (32, 40, 50); these are the exact values
    (32, 40.3, 50.8). torchvision still rounds anchor corners to integers, see docs/dense.md.
    """
    sizes = tuple(
        tuple(stride * octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave))
        for stride in strides
    )
    return AnchorGenerator(sizes, (_ASPECT_RATIOS,) * len(strides))


def _rcnn_anchor_generator() -> AnchorGenerator:
    """mmdetection's RPN anchors: one scale (8 x stride: 32 ... 512) and three ratios per level."""
    return AnchorGenerator(tuple((8 * s,) for s in (4, 8, 16, 32, 64)), (_ASPECT_RATIOS,) * 5)


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be the number of object classes, a positive int (COCO: 80), got {num_classes!r}; "
            "background is added internally"
        )


def retinanet(
    backbone: str = "crossformer_small",
    num_classes: int = 80,
    *,
    backbone_weights: Optional[PathLike] = None,
    weights: Optional[PathLike] = None,
    high_resolution: bool = False,
    lda_mode: str = "fixed_group",
    backbone_kwargs: Optional[Mapping[str, Any]] = None,
    fpn_channels: int = 256,
    relu_before_p7: bool = False,
    **kwargs: Any,
) -> RetinaNet:
    """torchvision RetinaNet with a CrossFormer backbone (paper: RetinaNet-S 40.8M, -B 62.1M parameters).

    FPN over stages 2-4 (strides 8, 16, 32; 256 channels), P6 by a stride-2 conv on stage 4's output and
    P7 on P6 (mmdetection ``add_extra_convs='on_input'``); head of 4+4 convs, 9 anchors per position.

    Args:
        backbone: CrossFormer variant name, e.g. ``"crossformer_small"``, ``"crossformer_base"``.
        num_classes: Object classes, without background (COCO: 80).
        backbone_weights: Backbone checkpoint (official classification or mmdet/mmseg file, or ours).
        weights: Complete detector checkpoint: an official mmdetection RetinaNet file (backbone, FPN and
            head are mapped, see :func:`~crossformer_vision.dense.load_dense_checkpoint`) or a state dict
            saved from a model built by this function.
        high_resolution: Use the dense variants' group sizes [14, 14, 7, 7] and intervals [16, 8, 2, 1].
        lda_mode: ``"fixed_group"`` (current official code) or ``"fixed_interval"`` (the original dense
            backbone, which the released detection checkpoints were trained with).
        backbone_kwargs: More CrossFormer options (``drop_path_rate``, ``use_checkpoint``, ...).
        fpn_channels: FPN and head channels.
        relu_before_p7: torchvision's P7 (ReLU on P6 first) instead of mmdetection's.
        **kwargs: Passed to torchvision's ``RetinaNet`` (``min_size``, ``max_size``, ``score_thresh``, ...).
            Default ``detections_per_img`` is 100 (mmdetection and COCO's maxDets) instead of 300.
    """
    _check_num_classes(num_classes)
    config = dict(arch="retinanet", backbone=backbone, num_classes=num_classes, high_resolution=high_resolution,
                  lda_mode=lda_mode, backbone_kwargs=dict(backbone_kwargs or {}), fpn_channels=fpn_channels,
                  relu_before_p7=relu_before_p7, kwargs=dict(kwargs))
    bkw = backbone_kwargs_for(high_resolution, lda_mode, backbone_kwargs)
    net = build_backbone(backbone, (1, 2, 3), fpn_channels, "p6p7", relu_before_p7, backbone_weights, **bkw)
    kwargs.setdefault("detections_per_img", 100)
    model = RetinaNet(net, num_classes + 1, anchor_generator=retinanet_anchor_generator(), **kwargs)
    return finish_dense_model(model, config, weights)


def _rcnn_backbone(
    backbone: str,
    backbone_weights: Optional[PathLike],
    high_resolution: bool,
    lda_mode: str,
    backbone_kwargs: Optional[Mapping[str, Any]],
    fpn_channels: int,
) -> CrossFormerFPN:
    bkw = backbone_kwargs_for(high_resolution, lda_mode, backbone_kwargs)
    return build_backbone(backbone, (0, 1, 2, 3), fpn_channels, "maxpool", False, backbone_weights, **bkw)


def _rcnn_defaults(kwargs: Dict[str, Any]) -> None:
    kwargs.setdefault("rpn_anchor_generator", _rcnn_anchor_generator())
    # mmdetection keeps 1000 proposals per image after NMS in training (torchvision: 2000)
    kwargs.setdefault("rpn_post_nms_top_n_train", 1000)


def fasterrcnn(
    backbone: str = "crossformer_small",
    num_classes: int = 80,
    *,
    backbone_weights: Optional[PathLike] = None,
    weights: Optional[PathLike] = None,
    high_resolution: bool = False,
    lda_mode: str = "fixed_group",
    backbone_kwargs: Optional[Mapping[str, Any]] = None,
    fpn_channels: int = 256,
    **kwargs: Any,
) -> FasterRCNN:
    """torchvision Faster R-CNN with a CrossFormer backbone: Mask R-CNN's detector without the mask branch.

    FPN over all four stages (strides 4-32) plus a max-pooled P6; RPN with 3 anchors per position; RoI
    head of two 1024-wide fully connected layers. Arguments as :func:`maskrcnn`.
    """
    _check_num_classes(num_classes)
    config = dict(arch="fasterrcnn", backbone=backbone, num_classes=num_classes, high_resolution=high_resolution,
                  lda_mode=lda_mode, backbone_kwargs=dict(backbone_kwargs or {}), fpn_channels=fpn_channels,
                  kwargs=dict(kwargs))
    net = _rcnn_backbone(backbone, backbone_weights, high_resolution, lda_mode, backbone_kwargs, fpn_channels)
    _rcnn_defaults(kwargs)
    return finish_dense_model(FasterRCNN(net, num_classes + 1, **kwargs), config, weights)


def maskrcnn(
    backbone: str = "crossformer_small",
    num_classes: int = 80,
    *,
    backbone_weights: Optional[PathLike] = None,
    weights: Optional[PathLike] = None,
    high_resolution: bool = False,
    lda_mode: str = "fixed_group",
    backbone_kwargs: Optional[Mapping[str, Any]] = None,
    fpn_channels: int = 256,
    **kwargs: Any,
) -> MaskRCNN:
    """torchvision Mask R-CNN with a CrossFormer backbone (paper: Mask R-CNN-S 50.2M, -B 71.5M parameters).

    FPN over all four stages plus max-pool (P2-P6, 256 channels), RPN (3 anchors per position, sizes 32 to
    512), RoIAlign 7x7 box head (2 x 1024 fc) and 14x14 mask head (4 convs, deconv, per-class logits).

    Args:
        backbone: CrossFormer variant name.
        num_classes: Object classes, without background (COCO: 80).
        backbone_weights: Backbone checkpoint (official classification or mmdet/mmseg file, or ours).
        weights: Complete checkpoint: an official mmdetection Mask R-CNN file (backbone, FPN, RPN and RoI
            heads are mapped) or a state dict saved from a model built by this function.
        high_resolution: Dense variants' group sizes [14, 14, 7, 7] and intervals [16, 8, 2, 1].
        lda_mode: ``"fixed_group"`` or ``"fixed_interval"`` (released checkpoints).
        backbone_kwargs: More CrossFormer options.
        fpn_channels: FPN channels.
        **kwargs: Passed to torchvision's ``MaskRCNN`` (``min_size``, ``max_size``, ``box_score_thresh``...).
    """
    _check_num_classes(num_classes)
    config = dict(arch="maskrcnn", backbone=backbone, num_classes=num_classes, high_resolution=high_resolution,
                  lda_mode=lda_mode, backbone_kwargs=dict(backbone_kwargs or {}), fpn_channels=fpn_channels,
                  kwargs=dict(kwargs))
    net = _rcnn_backbone(backbone, backbone_weights, high_resolution, lda_mode, backbone_kwargs, fpn_channels)
    _rcnn_defaults(kwargs)
    return finish_dense_model(MaskRCNN(net, num_classes + 1, **kwargs), config, weights)
