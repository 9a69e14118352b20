"""Semantic segmentation metrics: mIoU, per-class IoU, pixel and mean accuracy (:class:`SegmentationEvaluator`).

A confusion matrix accumulates with ``update``; ``compute`` reports. The IoU of a class absent from both the
ground truth and the predictions is ``nan`` and left out of the mean, as mmsegmentation does.
"""
import math
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor

from ..utils.checks import segmentation_classes

__all__ = ["SegmentationEvaluator"]


class SegmentationEvaluator:
    """Semantic segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy.

    Args:
        num_classes: Classes ``K``; targets are in ``[0, K)`` or ``ignore_index``.
        ignore_index: Target value excluded from every metric.
        class_names: Optional names for the per-class results (default ``"0"``, ``"1"``...).

    IoU of class c = TP / (TP + FP + FN) over all pixels seen; ``mIoU`` is the mean over classes with
    TP + FP + FN > 0 (a class absent from both targets and predictions is ``nan`` and not averaged).
    ``pixel_accuracy`` = correctly labelled / labelled pixels; ``mean_accuracy`` averages per-class recall.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Optional[Sequence[str]] = None) -> None:
        self.class_names = segmentation_classes(num_classes, ignore_index, class_names)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Zero the confusion matrix."""
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        """Add a batch.

        Args:
            predictions: Class indices ``(B, H, W)`` / ``(H, W)``, or logits ``(B, K, H, W)`` (argmax is taken).
            targets: Class indices of the same ``(B, H, W)`` / ``(H, W)`` shape, ``ignore_index`` for unlabelled.
        """
        predictions, targets = predictions.detach().cpu(), targets.detach().cpu().long()
        if predictions.is_floating_point():
            if predictions.dim() != targets.dim() + 1 or predictions.shape[-3] != self.num_classes:
                raise ValueError(
                    f"logits {list(predictions.shape)} do not fit targets {list(targets.shape)} with "
                    f"{self.num_classes} classes; expected (B, {self.num_classes}, H, W) logits or (B, H, W) labels"
                )
            predictions = predictions.argmax(-3)
        predictions = predictions.long()
        if predictions.shape != targets.shape:
            raise ValueError(
                f"predictions {list(predictions.shape)} and targets {list(targets.shape)} differ in shape; predict at "
                "the labels' resolution (Segmenter.predict returns the input's size)"
            )
        valid = targets != self.ignore_index
        target, pred = targets[valid], predictions[valid]
        bad_target = torch.unique(target[(target < 0) | (target >= self.num_classes)])
        if bad_target.numel():
            raise ValueError(
                f"targets contain class ids {bad_target.tolist()[:10]} outside [0, {self.num_classes}) and not "
                f"ignore_index={self.ignore_index}; set num_classes to at least {int(bad_target.max()) + 1} or map them to "
                f"{self.ignore_index}"
            )
        bad_pred = torch.unique(pred[(pred < 0) | (pred >= self.num_classes)])
        if bad_pred.numel():
            raise ValueError(
                f"predictions contain class ids {bad_pred.tolist()[:10]} outside [0, {self.num_classes}); the model "
                "predicts more classes than the evaluator was built for"
            )
        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> Dict[str, Any]:
        """``{"mIoU", "pixel_accuracy", "mean_accuracy", "per_class_iou", "per_class_accuracy", "num_pixels"}``.

        Scores are fractions in [0, 1]; per-class values are dicts keyed by class name (``nan`` if undefined).
        """
        confusion = self.confusion.double()
        total = float(confusion.sum())
        if total == 0:
            raise ValueError("no labelled pixels were evaluated (empty input, or every target pixel is ignore_index)")
        tp = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - tp
        gt = confusion.sum(1)
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
        return {
            "mIoU": float(torch.nanmean(iou)),
            "pixel_accuracy": float(tp.sum() / total),
            "mean_accuracy": float(torch.nanmean(acc)),
            "per_class_iou": dict(zip(self.class_names, iou.tolist())),
            "per_class_accuracy": dict(zip(self.class_names, acc.tolist())),
            "num_pixels": int(total),
        }
