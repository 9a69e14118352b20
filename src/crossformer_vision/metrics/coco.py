"""COCO box and mask AP with pycocotools (:class:`CocoEvaluator`).

It accumulates with ``update`` and reports with ``compute``; it validates what it is given (unknown image ids,
labels beyond the class count) and raises ``ValueError`` rather than return a wrong number. Undefined values
are ``nan``, never a sentinel: pycocotools' ``-1`` (e.g. AP over small objects when the ground truth has none)
becomes ``nan``. Only images passed to ``update`` are evaluated, on every rank together (``synchronize``).
"""
import contextlib
import io
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..utils.distributed import all_gather_object

__all__ = ["COCO_METRICS", "CocoEvaluator"]

#: Names of pycocotools' 12 summary numbers, in its order (AP is averaged over IoU 0.50:0.95).
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class CocoEvaluator:
    """COCO-style detection / instance segmentation metrics (pycocotools' COCOeval).

    Args:
        coco_gt: ``pycocotools.coco.COCO`` ground truth (use :meth:`from_dataset` for a
            :class:`~crossformer_vision.dense.datasets.CocoInstances`, whose cleaned ground truth it takes).
        label_to_category_id: Model label (1..K) -> COCO category id.
        iou_types: ``"bbox"`` and/or ``"segm"``.
        mask_threshold: Probability above which a soft mask pixel belongs to the instance (torchvision
            Mask R-CNN returns probabilities).

    Only images passed to :meth:`update` are evaluated (pass an empty prediction for an image without
    detections, so its ground truth counts as missed). Predictions labelled 0 (background; RetinaNet's
    unused output) are dropped and counted in :attr:`num_background_predictions`.
    """

    def __init__(
        self,
        coco_gt: Any,
        label_to_category_id: Mapping[int, int],
        iou_types: Sequence[str] = ("bbox",),
        mask_threshold: float = 0.5,
    ) -> None:
        bad = [t for t in iou_types if t not in ("bbox", "segm")]
        if bad or not iou_types:
            raise ValueError(f"iou_types must be a non-empty subset of ('bbox', 'segm'), got {list(iou_types)}")
        self.coco_gt = coco_gt
        self.label_to_category_id = dict(label_to_category_id)
        self.iou_types = tuple(iou_types)
        self.mask_threshold = mask_threshold
        self.summary = ""
        self.reset()

    @classmethod
    def from_dataset(cls, dataset: Any, iou_types: Optional[Sequence[str]] = None, **kwargs: Any) -> "CocoEvaluator":
        """Evaluator for a :class:`~crossformer_vision.dense.datasets.CocoInstances` (box AP, plus mask AP
        when the dataset has masks)."""
        if iou_types is None:
            iou_types = ("bbox", "segm") if dataset.masks else ("bbox",)
        return cls(dataset.coco, dataset.label_to_category_id, iou_types, **kwargs)

    def reset(self) -> None:
        """Forget all predictions."""
        self.image_ids: List[int] = []
        self._seen: set = set()
        self._results: Dict[str, List[Dict[str, Any]]] = {t: [] for t in self.iou_types}
        self.num_background_predictions = 0

    def update(self, image_ids: Sequence[int], predictions: Sequence[Mapping[str, Tensor]]) -> None:
        """Add the predictions for some images.

        Args:
            image_ids: COCO image ids (``target["image_id"]``), one per prediction.
            predictions: torchvision detector outputs in original image pixels: ``boxes`` ``(N, 4)`` XYXY,
                ``scores`` ``(N,)``, ``labels`` ``(N,)`` in 1..K, and for ``"segm"`` ``masks`` ``(N, 1, H, W)``
                probabilities or ``(N, H, W)`` booleans at the image's size.
        """
        from pycocotools import mask as mask_utils

        if len(image_ids) != len(predictions):
            raise ValueError(f"got {len(image_ids)} image ids for {len(predictions)} predictions")
        for image_id, pred in zip(image_ids, predictions):
            image_id = int(image_id)
            if image_id not in self.coco_gt.imgs:
                raise ValueError(f"image id {image_id} is not in the ground truth; pass target['image_id']")
            if image_id in self._seen:
                raise ValueError(f"image {image_id} was already evaluated; call reset() between evaluations")
            self._seen.add(image_id)
            self.image_ids.append(image_id)
            boxes = pred["boxes"].detach().float().cpu().reshape(-1, 4)
            scores = pred["scores"].detach().float().cpu().reshape(-1)
            labels = pred["labels"].detach().cpu().reshape(-1).long()
            if not len(boxes) == len(scores) == len(labels):
                raise ValueError(f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
            bad = sorted({int(v) for v in labels if int(v) != 0 and int(v) not in self.label_to_category_id})
            if bad:
                raise ValueError(
                    f"image {image_id}: predicted labels {bad[:10]} are not in 1..{len(self.label_to_category_id)}; the "
                    "model was built for a different number of classes than the dataset has"
                )
            keep = labels != 0
            self.num_background_predictions += int((~keep).sum())
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            categories = [self.label_to_category_id[int(v)] for v in labels]
            if "bbox" in self._results:
                xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
                self._results["bbox"] += [
                    {"image_id": image_id, "category_id": c, "bbox": b, "score": float(s)}
                    for c, b, s in zip(categories, xywh, scores)
                ]
            if "segm" in self._results:
                masks = self._binary_masks(image_id, pred, keep)
                rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(masks) else []
                for rle, c, s in zip(rles, categories, scores):
                    rle["counts"] = rle["counts"].decode("ascii")
                    self._results["segm"].append({"image_id": image_id, "category_id": c, "segmentation": rle, "score": float(s)})

    def synchronize(self) -> None:
        """Under ``torchrun``, merge every process's predictions into each evaluator (a collective call: every
        rank must make it; no-op in a single process). Each rank should have evaluated its own images."""
        parts = all_gather_object((self.image_ids, self._results, self.num_background_predictions))
        if len(parts) == 1:
            return
        self.reset()
        for image_ids, results, background in parts:
            repeated = self._seen.intersection(image_ids)
            if repeated:
                raise ValueError(f"images {sorted(repeated)[:5]} were evaluated by several processes; give each its own shard")
            self._seen.update(image_ids)
            self.image_ids += list(image_ids)
            for iou_type in self.iou_types:
                self._results[iou_type] += results[iou_type]
            self.num_background_predictions += background

    def _binary_masks(self, image_id: int, pred: Mapping[str, Tensor], keep: Tensor) -> np.ndarray:
        if "masks" not in pred:
            raise ValueError("mask AP ('segm') needs predictions with 'masks'; evaluate with iou_types=('bbox',)")
        masks = pred["masks"].detach().cpu()
        if masks.dim() == 4:
            masks = masks[:, 0]
        info = self.coco_gt.imgs[image_id]
        if tuple(masks.shape[-2:]) != (info["height"], info["width"]) or len(masks) != len(keep):
            raise ValueError(
                f"image {image_id}: masks {list(masks.shape)} do not match its {len(keep)} detections at "
                f"{info['height']}x{info['width']} (height x width); masks must be at the original image size"
            )
        masks = masks[keep]
        binary = masks > self.mask_threshold if masks.is_floating_point() else masks.bool()
        return binary.numpy().astype(np.uint8)

    def _empty_results(self) -> Any:
        from pycocotools.coco import COCO

        coco = COCO()
        coco.dataset = {"images": list(self.coco_gt.imgs.values()), "categories": list(self.coco_gt.cats.values()),
                        "annotations": []}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def compute(self) -> Dict[str, Dict[str, float]]:
        """``{"bbox": {"AP": ..., "AP50": ..., ...}, "segm": {...}}`` over the images seen (values in [0, 1] or nan,
        rounded to 10 decimals).

        The printed pycocotools summary is kept in :attr:`summary`.
        """
        from pycocotools.cocoeval import COCOeval

        if not self.image_ids:
            raise ValueError("no predictions to evaluate; call update(image_ids, predictions) first")
        results: Dict[str, Dict[str, float]] = {}
        text = io.StringIO()
        for iou_type in self.iou_types:
            with contextlib.redirect_stdout(text):
                dt = self.coco_gt.loadRes(self._results[iou_type]) if self._results[iou_type] else self._empty_results()
                evaluator = COCOeval(self.coco_gt, dt, iou_type)
                evaluator.params.imgIds = sorted(self.image_ids)
                evaluator.evaluate()
                evaluator.accumulate()
                print(f"IoU metric: {iou_type}")
                evaluator.summarize()
            # pycocotools divides by (tp + fp + machine epsilon): round that artefact away (1 - 2e-16 -> 1.0)
            results[iou_type] = {name: (math.nan if v < 0 else round(float(v), 10))
                                 for name, v in zip(COCO_METRICS, evaluator.stats)}
        self.summary = "\n".join(line for line in text.getvalue().splitlines() if not line.startswith(
            ("Loading and preparing", "DONE", "creating index", "index created", "Running per image",
             "Evaluate annotation", "Accumulating")))
        return results
