"""Detection and segmentation with CrossFormer backbones (torchvision detectors, smp segmenters).

>>> from crossformer_vision import dense
>>> model = dense.maskrcnn("crossformer_small", num_classes=80, backbone_weights="crossformer-s.pth")
>>> model = dense.upernet("crossformer_small", num_classes=150)          # paper's UPerNet head + aux head
>>> model = dense.build_model(model.build_config)                        # rebuild from a saved config

Needs the ``dense`` extra (segmentation-models-pytorch, pycocotools). See docs/dense.md. This package holds the
models and their official-weight mapping only; their data are in :mod:`crossformer_vision.data` (COCO, label
folders, the synthetic shapes), metrics in :mod:`crossformer_vision.metrics`, training in
:mod:`crossformer_vision.train`.
"""
import importlib
import warnings
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
from .detection import PAPER_DETECTION, fasterrcnn, maskrcnn, retinanet
from .mmcv_weights import DenseLoadReport, convert_mmcv_state_dict, load_dense_checkpoint
from .segmentation import PAPER_SEGMENTATION, Segmenter, pad_to_multiple, segmentation_loss, semantic_fpn, upernet

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


#: Names this package held before the data, metrics and drawing code moved to their own layers, and where they
#: are now; ``crossformer_vision.dense.<name>`` still works (with a DeprecationWarning) for one release.
_MOVED = {
    **{name: "crossformer_vision.data.detection" for name in ("CocoInstances", "collate_detection", "detection_transforms")},
    **{name: "crossformer_vision.data.segmentation" for name in ("SegmentationFolder", "ade20k", "collate_segmentation",
                                                               "segmentation_transforms")},
    **{name: "crossformer_vision.data.synthetic" for name in ("SHAPES", "SyntheticDataset", "make_synthetic_dataset")},
    "load_image": "crossformer_vision.data.images:load_image_tensor",
    "CocoEvaluator": "crossformer_vision.metrics.coco",
    "SegmentationEvaluator": "crossformer_vision.metrics.semantic",
    **{name: "crossformer_vision.train.visualize" for name in ("draw_detections", "draw_segmentation", "palette",
                                                             "save_png", "side_by_side")},
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = _MOVED[name].partition(":")
    warnings.warn(f"crossformer_vision.dense.{name} moved to {module}"
                  f"{f' as {attribute}' if attribute else ''}; the old name goes in the next release",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), attribute or name)


__all__ = [
    "ARCHITECTURES",
    "HIGH_RESOLUTION",
    "PAPER_DETECTION",
    "PAPER_SEGMENTATION",
    "TASKS",
    "CrossFormerFPN",
    "DenseLoadReport",
    "LastLevelP6P7",
    "Segmenter",
    "build_backbone",
    "build_model",
    "convert_mmcv_state_dict",
    "fasterrcnn",
    "find_crossformer",
    "load_backbone_weights",
    "load_dense_checkpoint",
    "maskrcnn",
    "pad_to_multiple",
    "retinanet",
    "segmentation_loss",
    "semantic_fpn",
    "upernet",
]
