"""Datasets, transforms and collate functions for detection, instance and semantic segmentation.

* :class:`CocoInstances`: COCO-format detection / instance segmentation (an image folder and an
  ``instances_*.json``). The annotations are validated when the dataset is built: structural problems
  (unknown image or category ids, duplicate ids, missing image files, malformed boxes or RLEs) raise a
  ``ValueError`` naming the file, the ids and the fix; annotations that cannot be used (zero-area boxes,
  boxes entirely outside their image, instance annotations without a mask) are dropped, counted in
  :attr:`CocoInstances.issues` and logged. The cleaned ground truth (:attr:`CocoInstances.coco`) is what
  :class:`~crossformer_vision.dense.metrics.CocoEvaluator` scores against, so dropped annotations cannot
  silently cost recall.
* :class:`SegmentationFolder` (and :func:`ade20k`): images plus single-channel label PNGs of the same
  size, class index per pixel, ``ignore_index`` (255) for unlabelled pixels, optional
  ``reduce_zero_label`` (ADE20K: 0 = "other" -> ignored, 1..150 -> 0..149).

Samples are ``(image, target)`` with the image a float tensor ``(3, H, W)`` in [0, 1] (a torchvision
``tv_tensors.Image``), so torchvision ``transforms.v2`` apply to images, boxes and masks together.
"""
import contextlib
import io
import json
import logging
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..data import UnreadableError, apply_transform
from ..data import load_image as read_image
from ..weights import PathLike

__all__ = [
    "ADE20K_NUM_CLASSES",
    "IMAGE_SUFFIXES",
    "CocoInstances",
    "SegmentationFolder",
    "ade20k",
    "collate_detection",
    "collate_segmentation",
    "detection_transforms",
    "load_image",
    "pad_to_multiple",
    "segmentation_transforms",
]

_logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_SHOW = 5  # ids / files listed in error messages


def _listing(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in list(items)[:_SHOW])
    return f"{shown}{', ...' if len(items) > _SHOW else ''} ({len(items)} in all)"


def load_image(path: PathLike) -> tv_tensors.Image:
    """An image file as a float ``(3, H, W)`` tensor in [0, 1], converted to RGB by
    :func:`crossformer_vision.data.to_mode` (grey, palette, CMYK, 16-bit and float images scaled properly)."""
    array = np.asarray(read_image(path, "RGB"), dtype=np.uint8)
    return tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0))


def _load_or_unreadable(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)``; a decoding failure becomes :class:`~crossformer_vision.data.UnreadableError` (skipped and counted)."""
    try:
        return load(path)
    except Exception as err:  # decoders raise OSError, ValueError, SyntaxError, struct.error...
        raise UnreadableError(path, err) from None


def _image_headers(paths: Sequence[Path]) -> List[Any]:
    """``(width, height)`` from each file's header, or the reason it cannot be read (a str); threaded, nothing decoded."""
    def header(path: Path) -> Any:
        try:
            with Image.open(path) as img:
                return img.size
        except Exception as err:  # decoders raise many kinds of errors for damaged files
            return f"{type(err).__name__}: {err}"

    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 4)) as pool:
        return list(pool.map(header, paths))


# ---------------------------------------------------------------------------------------------- COCO
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
                raise ValueError(f"{name}: duplicate {what} ids {_listing(dupes)}; ids must be unique")
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
                f"{name}: annotations {_listing([a.get('id') for a in unknown_images])} refer to image ids "
                f"{_listing(sorted({a['image_id'] for a in unknown_images}))} that are not in 'images'; add those images "
                "or remove the annotations"
            )
        unknown_cats = [a for a in annotations if a["category_id"] not in category_ids]
        if unknown_cats:
            raise ValueError(
                f"{name}: annotations {_listing([a.get('id') for a in unknown_cats])} use category ids "
                f"{_listing(sorted({a['category_id'] for a in unknown_cats}))} that are not in 'categories' "
                f"(known: {sorted(category_ids)[:20]}); add the categories or fix the annotations"
            )
        ann_ids = [a["id"] for a in annotations if "id" in a]
        dupes = sorted(i for i, n in Counter(ann_ids).items() if n > 1)
        if dupes:
            raise ValueError(f"{name}: duplicate annotation ids {_listing(dupes)}; ids must be unique")
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
                f"{_listing([img['file_name'] for img in missing])}. Check image_dir, add the files, or pass "
                "skip_missing_images=True to drop them (and their annotations) with a count in .issues"
            )
        self.issues["missing_image"] = [img["id"] for img in missing]
        missing_ids = set(self.issues["missing_image"])
        return [img for img in images if img["id"] not in missing_ids]

    def _check_headers(self, images: List[Dict]) -> List[Dict]:
        """Read every image's header: unreadable files are dropped (counted in ``issues``, like a classification
        folder's), a size that differs from the json's ``width``/``height`` is an error (boxes and masks are
        relative to the real image), both before anything trains."""
        headers = _image_headers([self.image_dir / img["file_name"] for img in images])
        self.skipped = [(str(self.image_dir / img["file_name"]), h) for img, h in zip(images, headers) if isinstance(h, str)]
        wrong = [f"{img['file_name']} is {h[0]}x{h[1]}, json {img['width']}x{img['height']}" for img, h in zip(images, headers)
                 if not isinstance(h, str) and tuple(h) != (img["width"], img["height"])]
        if wrong:
            raise ValueError(
                f"{len(wrong)} images in {self.image_dir} differ in size from what {self.ann_file} says (width x height): "
                f"{_listing(wrong)}. Fix the json's width/height (boxes and masks are relative to the real image)"
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
        image = _load_or_unreadable(path, load_image)
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


# ---------------------------------------------------------------------------------------------- semantic
_LABEL_MODES = ("L", "P", "I", "I;16", "1")


def _decode_label(path: Path) -> Tuple[str, np.ndarray]:
    """A label file's mode and pixels as stored (int64 ``(H, W)``; other modes give their raw array)."""
    with Image.open(path) as img:
        return img.mode, np.asarray(img, dtype=np.int64).copy()


class SegmentationFolder(Dataset):
    """Semantic segmentation from an image folder and a folder of label PNGs with the same names.

    ``image_dir/a/b.jpg`` pairs with ``label_dir/a/b.png``. Label PNGs are single-channel (mode ``L``, ``P``
    or 16-bit) class indices of the image's size.

    Args:
        image_dir: Images (any of :data:`IMAGE_SUFFIXES`, searched recursively).
        label_dir: Label PNGs.
        num_classes: Classes; labels (after ``reduce_zero_label``) must be in ``[0, num_classes)`` or
            ``ignore_index``.
        reduce_zero_label: Label 0 means "not annotated": it becomes ``ignore_index`` and every other label
            is lowered by one (ADE20K).
        ignore_index: Label value excluded from losses and metrics.
        transforms: ``transforms(image, mask) -> (image, mask)``, e.g. :func:`segmentation_transforms`.
        class_names: Optional class names (``num_classes`` of them).
        check_sizes: Compare every image's size with its label's when the dataset is built (reads only the
            file headers); sizes are always checked when a sample is loaded.

    Sample:
        ``image``: float ``(3, H, W)`` in [0, 1]; ``label``: int64 ``(H, W)`` (a ``tv_tensors.Mask``).
    """

    def __init__(
        self,
        image_dir: PathLike,
        label_dir: PathLike,
        num_classes: int,
        *,
        reduce_zero_label: bool = False,
        ignore_index: int = 255,
        transforms: Optional[Callable[[Any, Any], Tuple[Any, Any]]] = None,
        class_names: Optional[Sequence[str]] = None,
        check_sizes: bool = True,
    ) -> None:
        self.image_dir, self.label_dir = Path(image_dir), Path(label_dir)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index={ignore_index} is a class id (num_classes={num_classes}); use 255 or -1")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        self.transforms = transforms
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise ValueError(f"folder not found: {folder}")
        images = sorted(p for p in self.image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.image_dir}")
        self.samples: List[Tuple[Path, Path]] = [(p, self.label_dir / p.relative_to(self.image_dir).with_suffix(".png"))
                                                 for p in images]
        unlabelled = [str(img.relative_to(self.image_dir)) for img, label in self.samples if not label.is_file()]
        if unlabelled:
            raise ValueError(
                f"{len(unlabelled)} images in {self.image_dir} have no label PNG of the same name in {self.label_dir}: "
                f"{_listing(unlabelled)}. Add the labels or remove those images"
            )
        self.skipped: List[Tuple[str, str]] = []  # (file, reason) of pairs whose image or label header is unreadable
        if check_sizes:
            image_sizes = _image_headers([img for img, _ in self.samples])
            label_sizes = _image_headers([label for _, label in self.samples])
            mismatched, kept = [], []
            for (img, label), a, b in zip(self.samples, image_sizes, label_sizes):
                if isinstance(a, str) or isinstance(b, str):
                    self.skipped.append((str(img if isinstance(a, str) else label), a if isinstance(a, str) else b))
                    continue
                kept.append((img, label))
                if a != b:
                    mismatched.append(f"{img.name} {a[0]}x{a[1]} vs {label.name} {b[0]}x{b[1]}")
            if not kept:
                raise ValueError(f"none of the {len(self.samples)} image/label pairs in {self.image_dir} can be read "
                                 f"(e.g. {self.skipped[0][0]}: {self.skipped[0][1]})")
            self.samples = kept
            if mismatched:
                raise ValueError(
                    f"{len(mismatched)} label PNGs in {self.label_dir} differ in size from their images (width x height): "
                    f"{_listing(mismatched)}. Labels must have their image's size; resize them with nearest-neighbour "
                    "interpolation, never bilinear"
                )

    def __len__(self) -> int:
        return len(self.samples)

    def load_label(self, index: int) -> np.ndarray:
        """Label map ``(H, W)`` int64 of sample ``index`` after ``reduce_zero_label``, validated."""
        path = self.samples[index][1]
        mode, label = _decode_label(path)
        return self._check_label(mode, label, path)

    def _check_label(self, mode: str, label: np.ndarray, path: Path) -> np.ndarray:
        if mode not in _LABEL_MODES:
            raise ValueError(
                f"{path} is a {mode} image; label PNGs must hold one class index per pixel (mode L, P or 16-bit). "
                "Convert colour-coded labels to class indices first"
            )
        if self.reduce_zero_label:
            ignored = (label == 0) | (label == self.ignore_index)
            label = label - 1
            label[ignored] = self.ignore_index
        bad = np.unique(label[(label != self.ignore_index) & ((label < 0) | (label >= self.num_classes))])
        if bad.size:
            raise ValueError(
                f"{path} contains class ids {bad.tolist()[:10]} outside [0, {self.num_classes}) "
                f"(num_classes={self.num_classes}, reduce_zero_label={self.reduce_zero_label}, ignore_index="
                f"{self.ignore_index}); build the dataset with num_classes={int(bad.max()) + 1} or more, or map those "
                f"ids to {self.ignore_index}"
            )
        return label

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        image_path, label_path = self.samples[index]
        image = _load_or_unreadable(image_path, load_image)
        label = self._check_label(*_load_or_unreadable(label_path, _decode_label), label_path)
        if tuple(image.shape[-2:]) != label.shape:
            raise ValueError(
                f"{label_path} is {label.shape[1]}x{label.shape[0]} but {image_path} is {image.shape[2]}x{image.shape[1]} "
                "(width x height); labels must have their image's size"
            )
        mask = tv_tensors.Mask(torch.from_numpy(label))
        image, mask = apply_transform(self.transforms, image_path, image, mask)
        return image, mask


#: ADE20K's 150 classes, in label order (after reduce_zero_label).
ADE20K_NUM_CLASSES = 150


def ade20k(root: PathLike, split: str = "training", **kwargs: Any) -> SegmentationFolder:
    """ADE20K (ADEChallengeData2016 layout: ``images/{split}/*.jpg``, ``annotations/{split}/*.png``).

    150 classes, label 0 ignored (``reduce_zero_label=True``), as in the paper's mmsegmentation setup.
    """
    if split not in ("training", "validation"):
        raise ValueError(f"split must be 'training' or 'validation', got {split!r}")
    root = Path(root)
    kwargs.setdefault("reduce_zero_label", True)
    return SegmentationFolder(root / "images" / split, root / "annotations" / split, ADE20K_NUM_CLASSES, **kwargs)


# ---------------------------------------------------------------------------------------------- transforms
def detection_transforms(train: bool, flip_prob: float = 0.5) -> Optional[Callable]:
    """Joint image/box/mask augmentation for :class:`CocoInstances` (the paper's: horizontal flip only).

    Resizing (short side 800, long side at most 1333) and padding to multiples of 32 are done inside the
    torchvision detectors (``min_size``, ``max_size``), so evaluation needs no transform (``None``).
    """
    return v2.RandomHorizontalFlip(flip_prob) if train else None


def segmentation_transforms(
    crop_size: Tuple[int, int] = (512, 512),
    short_side_range: Tuple[int, int] = (256, 1024),
    flip_prob: float = 0.5,
    photometric: bool = True,
    ignore_index: int = 255,
) -> Callable:
    """Training augmentation for :class:`SegmentationFolder`, after the paper's mmseg ADE20K pipeline.

    Random rescale (short side uniform in ``short_side_range``: mmseg's scale 512 x ratio 0.5-2.0), colour
    jitter (brightness, contrast, saturation, hue: a stand-in for mmseg's PhotoMetricDistortion), random crop
    to ``crop_size`` (padding images with 0 and labels with ``ignore_index`` where the image is smaller),
    horizontal flip.
    Evaluation needs no transform: use ``Segmenter.predict(images, short_side=512)`` on full images.
    """
    steps: List[Callable] = [v2.RandomResize(short_side_range[0], short_side_range[1] + 1)]
    if photometric:  # before padding, so padded pixels stay 0 (mmseg pads after its photometric distortion)
        steps.append(v2.ColorJitter(brightness=32 / 255, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=18 / 360))
    steps += [
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0.0, tv_tensors.Mask: ignore_index}),
        v2.RandomHorizontalFlip(flip_prob),
    ]
    return v2.Compose(steps)


# ---------------------------------------------------------------------------------------------- collate
def _plain(value: Any) -> Any:
    return value.as_subclass(Tensor) if isinstance(value, Tensor) else value


def collate_detection(batch: Sequence[Tuple[Any, Dict[str, Any]]]) -> Tuple[List[Tensor], List[Dict[str, Any]]]:
    """``DataLoader`` collate for detection: lists of images and targets (torchvision detectors' input)."""
    images = [_plain(image) for image, _ in batch]
    targets = [{k: _plain(v) for k, v in target.items()} for _, target in batch]
    return images, targets


def pad_to_multiple(tensor: Tensor, multiple: int = 32, value: float = 0.0) -> Tensor:
    """Pad the last two dimensions (bottom and right) up to multiples of ``multiple``.

    smp models need inputs whose height and width are multiples of 32; use ``value=255`` (the ignore index)
    for label maps and crop predictions back to the original size afterwards. ``(..., H, W)`` -> ``(..., H', W')``.
    """
    pad_h, pad_w = -tensor.shape[-2] % multiple, -tensor.shape[-1] % multiple
    if not (pad_h or pad_w):
        return tensor
    return torch.nn.functional.pad(tensor, (0, pad_w, 0, pad_h), value=value)


def collate_segmentation(batch: Sequence[Tuple[Tensor, Tensor]], ignore_index: int = 255) -> Tuple[Tensor, Tensor]:
    """``DataLoader`` collate for segmentation: pad to the largest size (images with 0, labels with ignore).

    Returns:
        images ``(B, 3, H, W)`` float and labels ``(B, H, W)`` int64.
    """
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    images = torch.zeros(len(batch), batch[0][0].shape[0], height, width)
    labels = torch.full((len(batch), height, width), ignore_index, dtype=torch.int64)
    for i, (image, label) in enumerate(batch):
        images[i, :, : image.shape[-2], : image.shape[-1]] = _plain(image)
        labels[i, : label.shape[-2], : label.shape[-1]] = _plain(label)
    return images, labels
