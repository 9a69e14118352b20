"""Detection and segmentation with CrossFormer backbones (torchvision detectors, smp segmenters).

>>> from crossformer_vision import dense
>>> model = dense.maskrcnn("crossformer_small", num_classes=80, backbone_weights="crossformer-s.pth")
>>> model = dense.upernet("crossformer_small", num_classes=150)          # paper's UPerNet head + aux head
>>> model = dense.build_model(model.build_config)                        # rebuild from a saved config

Needs the ``dense`` extra (segmentation-models-pytorch, pycocotools). See docs/dense.md.
"""
from typing import Any, Callable, Dict, Mapping

from torch import nn

from .backbone import (
    HIGH_RESOLUTION,
    CrossFormerFPN,
    LastLevelP6P7,
    build_backbone,
    find_crossformer,
    load_backbone_weights,
)
from .datasets import (
    CocoInstances,
    SegmentationFolder,
    ade20k,
    collate_detection,
    collate_segmentation,
    detection_transforms,
    load_image,
    pad_to_multiple,
    segmentation_transforms,
)
from .detection import PAPER_DETECTION, fasterrcnn, maskrcnn, retinanet
from .metrics import CocoEvaluator, SegmentationEvaluator
from .mmcv_weights import DenseLoadReport, convert_mmcv_state_dict, load_dense_checkpoint
from .segmentation import PAPER_SEGMENTATION, Segmenter, segmentation_loss, semantic_fpn, upernet
from .synthetic import SHAPES, SyntheticDataset, make_synthetic_dataset
from .visualize import draw_detections, draw_segmentation, palette, save_png, side_by_side

#: Builders by architecture name (the ``arch`` of a model's ``build_config``).
ARCHITECTURES: Dict[str, Callable[..., nn.Module]] = {
    "retinanet": retinanet,
    "fasterrcnn": fasterrcnn,
    "maskrcnn": maskrcnn,
    "upernet": upernet,
    "semantic_fpn": semantic_fpn,
}

#: Tasks of the architectures: ``"detection"`` (torchvision detector API) or ``"segmentation"`` (:class:`Segmenter`).
TASKS: Dict[str, str] = {
    "retinanet": "detection",
    "fasterrcnn": "detection",
    "maskrcnn": "detection",
    "upernet": "segmentation",
    "semantic_fpn": "segmentation",
}


def build_model(config: Mapping[str, Any], **overrides: Any) -> nn.Module:
    """Build a model from a config mapping such as a model's ``build_config`` or a YAML ``model:`` section.

    Args:
        config: ``{"arch": "maskrcnn", "backbone": ..., "num_classes": ..., ...}``: ``arch`` picks the builder
            (:data:`ARCHITECTURES`), the rest are its keyword arguments; an optional ``kwargs`` entry holds
            extra arguments for the torchvision detector.
        **overrides: Replace or add arguments (e.g. ``backbone_weights=...``).
    """
    args = {**dict(config), **overrides}
    arch = args.pop("arch", None)
    if arch not in ARCHITECTURES:
        raise ValueError(f"config 'arch' must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    extra = dict(args.pop("kwargs", None) or {})
    return ARCHITECTURES[arch](**args, **extra)


__all__ = [
    "ARCHITECTURES",
    "HIGH_RESOLUTION",
    "PAPER_DETECTION",
    "PAPER_SEGMENTATION",
    "SHAPES",
    "TASKS",
    "CocoEvaluator",
    "CocoInstances",
    "CrossFormerFPN",
    "DenseLoadReport",
    "LastLevelP6P7",
    "SegmentationEvaluator",
    "SegmentationFolder",
    "Segmenter",
    "SyntheticDataset",
    "ade20k",
    "build_backbone",
    "build_model",
    "collate_detection",
    "collate_segmentation",
    "convert_mmcv_state_dict",
    "detection_transforms",
    "draw_detections",
    "draw_segmentation",
    "fasterrcnn",
    "find_crossformer",
    "load_backbone_weights",
    "load_dense_checkpoint",
    "load_image",
    "make_synthetic_dataset",
    "maskrcnn",
    "pad_to_multiple",
    "palette",
    "retinanet",
    "save_png",
    "segmentation_loss",
    "segmentation_transforms",
    "semantic_fpn",
    "side_by_side",
    "upernet",
]
