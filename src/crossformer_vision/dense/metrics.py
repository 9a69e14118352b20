"""Former home of the detection and segmentation metrics; kept as re-exports for one release.

They are now :mod:`crossformer_vision.metrics.coco` and :mod:`crossformer_vision.metrics.semantic`.
"""
from ..metrics.coco import COCO_METRICS, CocoEvaluator
from ..metrics.semantic import SegmentationEvaluator

__all__ = ["COCO_METRICS", "CocoEvaluator", "SegmentationEvaluator"]
