"""Former home of the detection and segmentation datasets; kept as re-exports for one release.

They are now :mod:`crossformer_vision.data.detection` and :mod:`crossformer_vision.data.segmentation`.
"""
from ..data.detection import CocoInstances, collate_detection, detection_transforms
from ..data.images import IMAGE_EXTENSIONS as IMAGE_SUFFIXES
from ..data.images import load_image_tensor as load_image
from ..data.segmentation import (ADE20K_NUM_CLASSES, SegmentationFolder, ade20k, collate_segmentation,
                                 segmentation_transforms)
from .segmentation import pad_to_multiple

__all__ = ["ADE20K_NUM_CLASSES", "IMAGE_SUFFIXES", "CocoInstances", "SegmentationFolder", "ade20k", "collate_detection",
           "collate_segmentation", "detection_transforms", "load_image", "pad_to_multiple", "segmentation_transforms"]
