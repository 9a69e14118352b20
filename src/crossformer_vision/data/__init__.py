"""Data for every task: image files, the one transform factory, datasets, samplers.

* :mod:`.images`: which files are images; :func:`load_image` / :func:`to_mode` read any of them properly.
* :mod:`.augment`: :func:`build_transform`, timm's augmentation made safe for any image and Pillow.
* :mod:`.samples`: unreadable files skipped and counted, other failures as one :class:`DataError` line.
* :mod:`.classification` (digits, ImageFolder), :mod:`.detection` (COCO), :mod:`.segmentation` (label folders,
  ADE20K), :mod:`.synthetic` (the built-in shapes), :mod:`.samplers` (the step-exact training stream).
"""
from .augment import Transform, TransformError, ToMode, augment_ops, build_transform, posterize
from .classification import (DIGITS_CLASSES, DIGITS_SPLIT, DigitsDataset, ImageFolderDataset, build_dataset,
                             collate_skipped, digits_split)
from .images import IMAGE_EXTENSIONS, find_images, load_image, load_image_tensor, to_mode
from .samples import (MAX_CONSECUTIVE_UNREADABLE, CollateSkipped, DataError, SkipUnreadable, UnreadableError,
                      apply_transform, data_batches, loader_error, read_sample)

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_SPLIT",
    "IMAGE_EXTENSIONS",
    "MAX_CONSECUTIVE_UNREADABLE",
    "CollateSkipped",
    "DataError",
    "DigitsDataset",
    "ImageFolderDataset",
    "SkipUnreadable",
    "ToMode",
    "Transform",
    "TransformError",
    "UnreadableError",
    "apply_transform",
    "augment_ops",
    "build_dataset",
    "build_transform",
    "collate_skipped",
    "data_batches",
    "digits_split",
    "find_images",
    "load_image",
    "load_image_tensor",
    "loader_error",
    "posterize",
    "read_sample",
    "to_mode",
]
