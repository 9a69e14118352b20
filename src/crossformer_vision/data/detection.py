"""Detection and instance segmentation data: COCO-format folders, their augmentation and collate function.

:class:`CocoInstances` reads an image folder and an ``instances_*.json``. The annotations are validated when the
dataset is built: structural problems (unknown image or category ids, duplicate ids, missing image files,
malformed boxes or RLEs, an image whose real size contradicts the json) raise a ``ValueError`` naming the
file, the ids and the fix; annotations that cannot be used (zero-area boxes, boxes entirely outside their
image, instance annotations without a mask) and images whose header cannot be read are dropped, counted in
:attr:`CocoInstances.issues` and logged. The cleaned ground truth (:attr:`CocoInstances.coco`) is what
:class:`~crossformer_vision.metrics.coco.CocoEvaluator` scores against, so dropped annotations cannot silently
cost recall.

Samples are ``(image, target)`` with the image a float tensor ``(3, H, W)`` in [0, 1] (a torchvision
``tv_tensors.Image``), so torchvision ``transforms.v2`` apply to images, boxes and masks together.
"""
import contextlib
import io
import json
import logging
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..utils.files import PathLike
from .images import image_headers, load_image_tensor
from .samples import apply_transform, load_or_unreadable

__all__ = ["CocoInstances", "collate_detection", "detection_transforms"]

_logger = logging.getLogger(__name__)

_SHOW = 5  # ids / files listed in error messages


def listing(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in list(items)[:_SHOW])
    return f"{shown}{', ...' if len(items) > _SHOW else ''} ({len(items)} in all)"


class CocoInstances(Dataset):
    """COCO-format detection / instance segmentation dataset (images + ``instances_*.json``).

    Labels are contiguous: the categories sorted by id get labels ``1..num_classes`` (0 is background, the
    torchvision convention the detectors of :mod:`crossformer_vision.dense` use).

    Args:
        image_dir: Folder the json's ``file_name`` entries are relative to.
        ann_file: COCO instances json.
        masks: Also return instance masks (for Mask R-CNN); annotations without a usable mask are dropped.
        transforms: ``transforms(image, target) -> (image, target)``, e.g. torchvision ``transforms.v2``.
        skip_missing_images: Drop images whose file is missing (and their annotations, from training and
            evaluation) instead of raising.
        skip_empty_images: Drop images without any usable annotation (training); by default they are kept
            (they are valid negatives and part of the evaluation).

    Attributes:
        coco: ``pycocotools.coco.COCO`` with the cleaned ground truth (clipped boxes, unusable annotations
            removed, skipped images removed).
        ids: Image ids, in dataset order.
        num_classes: Number of categories.
        class_names: Category names in label order (label ``i`` is ``class_names[i - 1]``).
        label_to_category_id: Label (1..num_classes) -> COCO category id.
        issues: What was dropped or changed, as lists of ids: ``"missing_image"``, ``"empty_image"`` (image
            ids; ``empty_image`` lists images without usable annotations whether kept or skipped),
            ``"zero_area_box"``, ``"box_outside_image"``, ``"empty_mask"`` (dropped annotation ids),
            ``"clipped_box"`` (annotation ids clipped to their image), ``"crowd"`` (``iscrowd`` annotation ids:
            used by the evaluation as "ignore" regions, not as training targets).

    Sample:
        ``image``: float ``(3, H, W)`` in [0, 1]; ``target``: ``boxes`` ``(N, 4)`` float XYXY pixels,
        ``labels`` ``(N,)`` int64 in 1..num_classes, ``image_id`` int, ``masks`` ``(N, H, W)`` uint8 if
        ``masks``. Crowd annotations are not in the target.
    """

    def __init__(
        self,
        image_dir: PathLike,
        ann_file: PathLike,
        *,
        masks: bool = False,
        transforms: Optional[Callable[[Any, Dict[str, Any]], Tuple[Any, Dict[str, Any]]]] = None,
        skip_missing_images: bool = False,
        skip_empty_images: bool = False,
        check_files: bool = True,
    ) -> None:
        from pycocotools.coco import COCO

        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.masks = masks
        self.transforms = transforms
        data = self._read_json()
        images, categories, annotations = self._check_structure(data)
        self.issues: Dict[str, List[int]] = {
            k: [] for k in ("missing_image", "unreadable_image", "empty_image", "zero_area_box", "box_outside_image",
                            "empty_mask", "clipped_box", "crowd")
        }
        images = self._check_files(images, skip_missing_images)
        self.skipped: List[Tuple[str, str]] = []  # (file, reason) of images whose header cannot be read
        if check_files:
            images = self._check_headers(images)
        kept_ids = {img["id"] for img in images}
        annotations = [a for a in annotations if a["image_id"] in kept_ids]
        annotations = self._clean_annotations(annotations, {img["id"]: img for img in images})
        with_targets = {a["image_id"] for a in annotations if not a["iscrowd"]}
        self.issues["empty_image"] = [img["id"] for img in images if img["id"] not in with_targets]
        if not any(not a["iscrowd"] for a in annotations):
            raise ValueError(
                f"{self.ann_file} has no usable annotations ({len(data['annotations'])} in the file, "
                f"{self._dropped_summary()}): there is nothing to train on or evaluate against. Fix the annotations; "
                "for predictions only, use a folder of images instead"
            )
        if skip_empty_images:
            images = [img for img in images if img["id"] in with_targets]

        self.categories = sorted(categories, key=lambda c: c["id"])
        self.num_classes = len(self.categories)
        self.class_names: List[str] = [str(c.get("name", c["id"])) for c in self.categories]
        self.label_to_category_id: Dict[int, int] = {i + 1: c["id"] for i, c in enumerate(self.categories)}
        self.category_id_to_label: Dict[int, int] = {c: label for label, c in self.label_to_category_id.items()}
        self.ids: List[int] = [img["id"] for img in images]
        gt = {"images": images, "categories": self.categories, "annotations": annotations}
        for key in ("info", "licenses"):
            if key in data:
                gt[key] = data[key]
        self.coco = COCO()
        self.coco.dataset = gt
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        self._log_issues()

    # ---------------------------------------------------------------- validation
    def _read_json(self) -> Dict[str, Any]:
        if not self.ann_file.is_file():
            raise ValueError(f"annotation file not found: {self.ann_file}")
        try:
            with open(self.ann_file) as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.ann_file} is not valid JSON ({err}); expected a COCO instances file") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.ann_file}: expected a JSON object with images, annotations and categories")
        missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
        if missing:
            raise ValueError(
                f"{self.ann_file} lacks the list(s) {missing}; a COCO instances file has 'images', 'annotations' and "
                "'categories' (an image-info file without annotations cannot be used for training or evaluation)"
            )
        return data

    def _check_structure(self, data: Dict[str, Any]) -> Tuple[List[Dict], List[Dict], List[Dict]]:
        name = self.ann_file
        images, categories = data["images"], data["categories"]
        if not images:
            raise ValueError(f"{name} lists no images")
        if not categories:
            raise ValueError(f"{name} lists no categories; add {{'id': ..., 'name': ...}} entries for the classes")
        for i, img in enumerate(images):
            bad = [k for k in ("id", "file_name", "width", "height") if k not in img]
            if bad or not (isinstance(img.get("width"), int) and isinstance(img.get("height"), int)) \
                    or img["width"] <= 0 or img["height"] <= 0:
                raise ValueError(
                    f"{name}: images[{i}] ({img.get('file_name', '?')}) needs 'id', 'file_name' and positive integer "
                    f"'width' and 'height'; got keys {sorted(img)} with width={img.get('width')!r}, height={img.get('height')!r}"
                )
        for what, entries in (("image", images), ("category", categories)):
            dupes = sorted(i for i, n in Counter(e["id"] for e in entries).items() if n > 1)
            if dupes:
                raise ValueError(f"{name}: duplicate {what} ids {listing(dupes)}; ids must be unique")
        image_ids = {img["id"] for img in images}
        category_ids = {c["id"] for c in categories}
        annotations = [dict(a) for a in data["annotations"]]
        for i, ann in enumerate(annotations):
            bad = [k for k in ("image_id", "category_id", "bbox") if k not in ann]
            if bad:
                raise ValueError(f"{name}: annotations[{i}] (id {ann.get('id')}) lacks {bad}")
        unknown_images = [a for a in annotations if a["image_id"] not in image_ids]
        if unknown_images:
            raise ValueError(
                f"{name}: annotations {listing([a.get('id') for a in unknown_images])} refer to image ids "
                f"{listing(sorted({a['image_id'] for a in unknown_images}))} that are not in 'images'; add those images "
                "or remove the annotations"
            )
        unknown_cats = [a for a in annotations if a["category_id"] not in category_ids]
        if unknown_cats:
            raise ValueError(
                f"{name}: annotations {listing([a.get('id') for a in unknown_cats])} use category ids "
                f"{listing(sorted({a['category_id'] for a in unknown_cats}))} that are not in 'categories' "
                f"(known: {sorted(category_ids)[:20]}); add the categories or fix the annotations"
            )
        ann_ids = [a["id"] for a in annotations if "id" in a]
        dupes = sorted(i for i, n in Counter(ann_ids).items() if n > 1)
        if dupes:
            raise ValueError(f"{name}: duplicate annotation ids {listing(dupes)}; ids must be unique")
        next_id = max(ann_ids, default=0) + 1
        unnamed = 0
        for ann in annotations:
            if "id" not in ann:
                ann["id"], next_id, unnamed = next_id, next_id + 1, unnamed + 1
        if unnamed:
            _logger.info("%s: gave ids to %d annotations without one", name, unnamed)
        return images, categories, annotations

    def _check_files(self, images: List[Dict], skip_missing: bool) -> List[Dict]:
        missing = [img for img in images if not (self.image_dir / img["file_name"]).is_file()]
        if not missing:
            return images
        if not skip_missing:
            raise ValueError(
                f"{len(missing)} of the {len(images)} images listed in {self.ann_file} are not in {self.image_dir}: "
                f"{listing([img['file_name'] for img in missing])}. Check image_dir, add the files, or pass "
                "skip_missing_images=True to drop them (and their annotations) with a count in .issues"
            )
        self.issues["missing_image"] = [img["id"] for img in missing]
        missing_ids = set(self.issues["missing_image"])
        return [img for img in images if img["id"] not in missing_ids]

    def _check_headers(self, images: List[Dict]) -> List[Dict]:
        """Read every image's header: unreadable files are dropped (counted in ``issues``, like a classification
        folder's), a size that differs from the json's ``width``/``height`` is an error (boxes and masks are
        relative to the real image), both before anything trains."""
        headers = image_headers([self.image_dir / img["file_name"] for img in images])
        self.skipped = [(str(self.image_dir / img["file_name"]), h) for img, h in zip(images, headers) if isinstance(h, str)]
        wrong = [f"{img['file_name']} is {h[0]}x{h[1]}, json {img['width']}x{img['height']}" for img, h in zip(images, headers)
                 if not isinstance(h, str) and tuple(h) != (img["width"], img["height"])]
        if wrong:
            raise ValueError(
                f"{len(wrong)} images in {self.image_dir} differ in size from what {self.ann_file} says (width x height): "
                f"{listing(wrong)}. Fix the json's width/height (boxes and masks are relative to the real image)"
            )
        self.issues["unreadable_image"] = [img["id"] for img, h in zip(images, headers) if isinstance(h, str)]
        bad = set(self.issues["unreadable_image"])
        return [img for img in images if img["id"] not in bad]

    def _clean_annotations(self, annotations: List[Dict], images: Mapping[int, Dict]) -> List[Dict]:
        from pycocotools import mask as mask_utils

        kept = []
        for ann in annotations:
            img = images[ann["image_id"]]
            box = ann["bbox"]
            if not (isinstance(box, (list, tuple)) and len(box) == 4
                    and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
                raise ValueError(
                    f"{self.ann_file}: annotation {ann['id']} (image {ann['image_id']}) has bbox {box!r}; expected "
                    "[x, y, width, height] with 4 finite numbers"
                )
            ann["iscrowd"] = int(ann.get("iscrowd", 0))
            x, y, w, h = (float(v) for v in box)
            if w <= 0 or h <= 0:
                self.issues["zero_area_box"].append(ann["id"])
                continue
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(img["width"])), min(y + h, float(img["height"]))
            if x2 <= x1 or y2 <= y1:
                self.issues["box_outside_image"].append(ann["id"])
                continue
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                self.issues["clipped_box"].append(ann["id"])
                ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            segmentation = ann.get("segmentation")
            if self.masks or segmentation:
                segmentation = self._check_segmentation(ann, img)
                if segmentation is None:
                    if self.masks and not ann["iscrowd"]:
                        self.issues["empty_mask"].append(ann["id"])
                        continue
                    ann.pop("segmentation", None)
                else:
                    ann["segmentation"] = segmentation
            if not isinstance(ann.get("area"), (int, float)) or ann["area"] <= 0:
                if ann.get("segmentation") is not None:
                    ann["area"] = float(mask_utils.area(self._rle(ann["segmentation"], img)))
                else:
                    ann["area"] = ann["bbox"][2] * ann["bbox"][3]
            if ann["iscrowd"]:
                self.issues["crowd"].append(ann["id"])
            kept.append(ann)
        return kept

    @staticmethod
    def _rle(segmentation: Any, img: Mapping[str, Any]) -> Dict[str, Any]:
        from pycocotools import mask as mask_utils

        if isinstance(segmentation, list):
            return mask_utils.merge(mask_utils.frPyObjects(segmentation, img["height"], img["width"]))
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, img["height"], img["width"])
        return segmentation

    def _check_segmentation(self, ann: Dict[str, Any], img: Mapping[str, Any]) -> Optional[Any]:
        """Polygons with at least 3 points, or an RLE of the image's size; None if nothing usable is left."""
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list):
            polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
            return polygons or None
        if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
            if list(segmentation["size"]) != [img["height"], img["width"]]:
                raise ValueError(
                    f"{self.ann_file}: annotation {ann['id']} has an RLE mask of size {segmentation['size']} but its image "
                    f"{img['file_name']} is {img['height']}x{img['width']} (height x width); the RLE must cover the image"
                )
            return segmentation
        if segmentation in (None, [], {}):
            return None
        raise ValueError(
            f"{self.ann_file}: annotation {ann['id']} has a segmentation of type {type(segmentation).__name__}; expected "
            "a list of polygons [[x1, y1, x2, y2, ...], ...] or an RLE {'size': [h, w], 'counts': ...}"
        )

    def _dropped_summary(self) -> str:
        parts = [f"{len(v)} {k.replace('_', ' ')}" for k, v in self.issues.items()
                 if v and k in ("missing_image", "unreadable_image", "zero_area_box", "box_outside_image", "empty_mask")]
        return ", ".join(parts) or "none dropped"

    def _log_issues(self) -> None:
        dropped = {k: len(v) for k, v in self.issues.items()
                   if v and k in ("missing_image", "unreadable_image", "zero_area_box", "box_outside_image", "empty_mask")}
        if dropped:
            _logger.warning("%s: dropped %s (ids in .issues)", self.ann_file, self._dropped_summary())
        for key in ("clipped_box", "crowd", "empty_image"):
            if self.issues[key]:
                _logger.info("%s: %d %s (ids in .issues[%r])", self.ann_file, len(self.issues[key]),
                             key.replace("_", " "), key)

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """Path of the image of sample ``index``."""
        return self.image_dir / self.coco.imgs[self.ids[index]]["file_name"]

    def __getitem__(self, index: int) -> Tuple[Any, Dict[str, Any]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_path(index)
        image = load_or_unreadable(path, load_image_tensor)
        height, width = image.shape[-2:]
        if (height, width) != (info["height"], info["width"]):
            raise ValueError(
                f"{path} is {width}x{height} pixels but {self.ann_file} says {info['width']}x{info['height']} "
                "(width x height); fix the json's width/height (boxes and masks are relative to the real image)"
            )
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a["iscrowd"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        target: Dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([self.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": image_id,
        }
        if self.masks:
            with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 DeprecationWarning
                warnings.simplefilter("ignore", DeprecationWarning)
                masks = [self.coco.annToMask(a) for a in anns]
            masks = np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        image, target = apply_transform(self.transforms, path, image, target)
        return image, target

    def check_num_classes(self, num_classes: int) -> None:
        """Raise ``ValueError`` unless a model with ``num_classes`` object classes fits this dataset."""
        if num_classes != self.num_classes:
            raise ValueError(
                f"{self.ann_file} has {self.num_classes} categories but the model predicts {num_classes} classes; "
                f"build the model with num_classes={self.num_classes}"
            )


def detection_transforms(train: bool, flip_prob: float = 0.5) -> Optional[Callable]:
    """Joint image/box/mask augmentation for :class:`CocoInstances` (the paper's: horizontal flip only).

    Resizing (short side 800, long side at most 1333) and padding to multiples of 32 are done inside the
    torchvision detectors (``min_size``, ``max_size``), so evaluation needs no transform (``None``).
    """
    return v2.RandomHorizontalFlip(flip_prob) if train else None


def plain_tensor(value: Any) -> Any:
    return value.as_subclass(Tensor) if isinstance(value, Tensor) else value


def collate_detection(batch: Sequence[Tuple[Any, Dict[str, Any]]]) -> Tuple[List[Tensor], List[Dict[str, Any]]]:
    """``DataLoader`` collate for detection: lists of images and targets (torchvision detectors' input)."""
    images = [plain_tensor(image) for image, _ in batch]
    targets = [{k: plain_tensor(v) for k, v in target.items()} for _, target in batch]
    return images, targets
