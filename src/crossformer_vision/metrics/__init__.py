"""Metrics: classification accuracy (:mod:`.classification`), COCO AP (:mod:`.coco`), mIoU (:mod:`.semantic`).

>>> from crossformer_vision.metrics import CocoEvaluator, SegmentationEvaluator, topk_hits
"""
from .classification import topk_hits
from .coco import COCO_METRICS, CocoEvaluator
from .semantic import SegmentationEvaluator

__all__ = ["COCO_METRICS", "CocoEvaluator", "SegmentationEvaluator", "topk_hits"]
