"""Semantic segmentation data: image folders with label PNGs (ADE20K included), augmentation, collate function.

:class:`SegmentationFolder` pairs images with single-channel label PNGs of the same size, class index per pixel,
``ignore_index`` (255) for unlabelled pixels, optional ``reduce_zero_label`` (ADE20K: 0 = "other" -> ignored,
1..150 -> 0..149). Samples are ``(image, label)``: a float ``(3, H, W)`` tensor in [0, 1] and an int64 ``(H, W)``
``tv_tensors.Mask``.
"""
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..utils.checks import segmentation_classes
from ..utils.files import PathLike
from .images import image_headers, load_image_tensor
from .samples import apply_transform, load_or_unreadable
from .detection import listing, plain_tensor
from .images import IMAGE_EXTENSIONS

__all__ = ["ADE20K_NUM_CLASSES", "SegmentationFolder", "ade20k", "collate_segmentation", "segmentation_transforms"]

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
        image_dir: Images (any of :data:`IMAGE_EXTENSIONS`, searched recursively).
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
        self.class_names = segmentation_classes(num_classes, ignore_index, class_names)
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        self.transforms = transforms
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise ValueError(f"folder not found: {folder}")
        images = sorted(p for p in self.image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.image_dir}")
        self.samples: List[Tuple[Path, Path]] = [(p, self.label_dir / p.relative_to(self.image_dir).with_suffix(".png"))
                                                 for p in images]
        unlabelled = [str(img.relative_to(self.image_dir)) for img, label in self.samples if not label.is_file()]
        if unlabelled:
            raise ValueError(
                f"{len(unlabelled)} images in {self.image_dir} have no label PNG of the same name in {self.label_dir}: "
                f"{listing(unlabelled)}. Add the labels or remove those images"
            )
        self.skipped: List[Tuple[str, str]] = []  # (file, reason) of pairs whose image or label header is unreadable
        if check_sizes:
            image_sizes = image_headers([img for img, _ in self.samples])
            label_sizes = image_headers([label for _, label in self.samples])
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
                    f"{listing(mismatched)}. Labels must have their image's size; resize them with nearest-neighbour "
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
        image = load_or_unreadable(image_path, load_image_tensor)
        label = self._check_label(*load_or_unreadable(label_path, _decode_label), label_path)
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
        images[i, :, : image.shape[-2], : image.shape[-1]] = plain_tensor(image)
        labels[i, : label.shape[-2], : label.shape[-1]] = plain_tensor(label)
    return images, labels
