"""Datasets and transforms: the built-in handwritten digits, ImageFolder trees that skip bad files, timm transforms.

Every dataset here yields ``(image, target, skipped)``: the transformed image, the class index, and how many
unreadable files were passed over to produce this sample (0 almost always; summed by the training loop so
a file that breaks mid-run is counted, never a crash).

The digits split (:func:`digits_split`) is fixed: scikit-learn's 1,797 scans, stratified by class with
``random_state=0``: 360 test images, then 180 validation images from the rest, 1,257 for training.
"""
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_SPLIT",
    "IMAGE_EXTENSIONS",
    "DigitsDataset",
    "ImageFolderDataset",
    "build_dataset",
    "build_transform",
    "collate_skipped",
    "digits_split",
    "find_images",
    "load_image",
]

#: Sizes of the fixed digits split (stratified, ``random_state``); the training split is the remaining 1,257.
DIGITS_SPLIT = {"test": 360, "val": 180, "random_state": 0}
#: Classes of the digits dataset, in target order.
DIGITS_CLASSES = [str(i) for i in range(10)]
#: File extensions read as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")

PathLike = Union[str, "os.PathLike[str]"]
Sample = Tuple[Any, int, int]


def digits_split() -> Dict[str, np.ndarray]:
    """Indices into ``sklearn.datasets.load_digits()`` of the ``train``, ``val`` and ``test`` splits.

    Returns:
        ``{"train": (1257,), "val": (180,), "test": (360,)}`` int arrays, sorted, disjoint, stratified.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    index = np.arange(len(target))
    seed = DIGITS_SPLIT["random_state"]
    rest, test = train_test_split(index, test_size=DIGITS_SPLIT["test"], stratify=target, random_state=seed)
    train, val = train_test_split(rest, test_size=DIGITS_SPLIT["val"], stratify=target[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


class DigitsDataset(Dataset):
    """One split of scikit-learn's handwritten digits as 8x8 greyscale (or RGB) PIL images.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (see :func:`digits_split`).
        transform: Applied to the 8x8 PIL image (pixel values 0..16 scaled to 0..255).
        in_chans: 1 for ``"L"`` images, 3 for ``"RGB"``.
    """

    classes = DIGITS_CLASSES

    def __init__(self, split: str, transform: Optional[Callable] = None, in_chans: int = 1) -> None:
        from sklearn.datasets import load_digits

        splits = digits_split()
        if split not in splits:
            raise ValueError(f"the digits dataset has splits {list(splits)}, not {split!r}")
        digits = load_digits()
        self.split = split
        self.index = splits[split]
        self.pixels = np.round(digits.images[self.index] * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
        self.targets = [int(t) for t in digits.target[self.index]]
        self.transform = transform
        self.mode = "L" if in_chans == 1 else "RGB"
        self.skipped: List[Tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> Sample:
        image = Image.fromarray(self.pixels[i], "L").convert(self.mode)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[i], 0


def load_image(path: PathLike, mode: str = "RGB") -> Image.Image:
    """Decode an image file fully and convert it to ``mode`` (raises ``OSError``/``ValueError`` if broken)."""
    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
        return image.convert(mode)


def _check_image(path: str, full: bool) -> Optional[str]:
    """None if ``path`` opens as an image (header, or fully decoded with ``full``), else the reason."""
    try:
        if full:
            load_image(path)
        else:
            with Image.open(path) as image:
                image.size  # header parsed by open(); nothing decoded
        return None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"{type(err).__name__}: {err}"


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_folders(root: Path) -> List[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolderDataset(Dataset):
    """Images under ``root/<class name>/**``; files that cannot be read are skipped and counted.

    Args:
        root: Folder with one subfolder per class (image sizes may differ between files).
        transform: Applied to each decoded PIL image.
        classes: Class names in index order (e.g. those of the training split); ``root`` may lack some but
            must not have others. None: ``root``'s subfolders, sorted.
        in_chans: 3 (``"RGB"``) or 1 (``"L"``).
        verify: ``"header"``: open every file's header now (fast: finds non-images and damaged headers);
            ``"full"``: decode every file now; ``"none"``. Files that fail later, while training, are
            replaced by the next readable file and counted in the sample's ``skipped``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no class subfolders, a class not in ``classes``, or no readable image at all.
    """

    def __init__(
        self,
        root: PathLike,
        transform: Optional[Callable] = None,
        classes: Optional[Sequence[str]] = None,
        in_chans: int = 3,
        verify: str = "header",
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root}")
        found = _class_folders(root)
        if not found:
            loose = [p.name for p in root.iterdir() if _is_image_file(p)]
            what = f"{len(loose)} images but no class subfolders" if loose else "no class subfolders"
            raise ValueError(f"{root} has {what}: expected one folder per class, e.g. {root}/cat/1.jpg, {root}/dog/2.jpg")
        self.classes = list(classes) if classes is not None else found
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = [name for name in found if name not in index]
        if unknown:
            raise ValueError(f"{root} has class folders the model does not know: {unknown[:5]} "
                             f"({len(unknown)}); known classes: {self.classes[:10]}{'...' if len(self.classes) > 10 else ''}")
        candidates: List[Tuple[str, int]] = []
        for name in found:
            files = sorted(str(p) for p in (root / name).rglob("*") if _is_image_file(p))
            candidates.extend((f, index[name]) for f in files)
        self.skipped: List[Tuple[str, str]] = []
        if verify != "none" and candidates:
            with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 4)) as pool:
                reasons = list(pool.map(lambda s: _check_image(s[0], verify == "full"), candidates))
            self.skipped = [(s[0], r) for s, r in zip(candidates, reasons) if r is not None]
            candidates = [s for s, r in zip(candidates, reasons) if r is None]
        if not candidates:
            extra = f" ({len(self.skipped)} files could not be read, e.g. {self.skipped[0][0]})" if self.skipped else ""
            raise ValueError(f"no readable images in {root}{extra}: expected image files "
                             f"({', '.join(IMAGE_EXTENSIONS[:4])}...) inside its class folders")
        self.root = root
        self.samples = candidates
        self.targets = [t for _, t in candidates]
        self.transform = transform
        self.mode = "L" if in_chans == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        for skipped in range(min(len(self.samples), 100)):
            path, target = self.samples[(i + skipped) % len(self.samples)]
            try:
                image = load_image(path, self.mode)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=2)
                continue
            if self.transform is not None:
                image = self.transform(image)
            return image, target, skipped
        raise RuntimeError(f"100 consecutive unreadable images in {self.root} from {self.samples[i][0]}; "
                           f"is the dataset still there?")


def build_transform(data_cfg: Mapping[str, Any], aug_cfg: Optional[Mapping[str, Any]] = None,
                    is_training: bool = False) -> Callable:
    """timm's transform for the recipe: training augmentation, or resize + centre crop by ``crop_pct``.

    Args:
        data_cfg: The recipe's ``data`` section (``img_size``, ``in_chans``, ``crop_pct``, ``interpolation``,
            ``mean``, ``std``).
        aug_cfg: The recipe's ``aug`` section; needed when ``is_training``.
        is_training: Random resized crop, flips, RandAugment, colour jitter, random erasing.

    Returns:
        A callable PIL image -> float tensor ``(in_chans, img_size, img_size)``.
    """
    from timm.data import create_transform

    size = int(data_cfg["img_size"])
    common = dict(
        input_size=(int(data_cfg["in_chans"]), size, size),
        interpolation=data_cfg["interpolation"],
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
    )
    if not is_training:
        return create_transform(is_training=False, crop_pct=data_cfg["crop_pct"], **common)
    if aug_cfg is None:
        raise ValueError("build_transform(is_training=True) needs the recipe's aug section")
    return create_transform(
        is_training=True,
        scale=tuple(aug_cfg["scale"]),
        ratio=tuple(aug_cfg["ratio"]),
        hflip=aug_cfg["hflip"],
        vflip=aug_cfg["vflip"],
        color_jitter=aug_cfg["color_jitter"] or None,
        auto_augment=aug_cfg["auto_augment"] or None,
        re_prob=aug_cfg["reprob"],
        re_mode=aug_cfg["remode"],
        re_count=aug_cfg["recount"],
        **common,
    )


def build_dataset(cfg: Mapping[str, Any], split: str, is_training: bool = False,
                  classes: Optional[Sequence[str]] = None) -> Dataset:
    """The recipe's dataset for ``split`` with its transform.

    Args:
        cfg: Full recipe (``data`` and ``aug`` sections).
        split: ``"train"``, ``"val"`` or ``"test"``: the digits split, or the subfolder named by
            ``data.<split>_split`` under ``data.path``.
        is_training: Use the training augmentation.
        classes: Class names to index by (folder datasets; default: the folder's own).

    Raises:
        FileNotFoundError: the split's folder does not exist.
        ValueError: see :class:`ImageFolderDataset`.
    """
    data_cfg = cfg["data"]
    transform = build_transform(data_cfg, cfg.get("aug"), is_training)
    if data_cfg["dataset"] == "digits":
        return DigitsDataset(split, transform, in_chans=data_cfg["in_chans"])
    root = Path(data_cfg["path"])
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root} (expected {root}/train and {root}/val with one "
                                f"subfolder per class)")
    folder = root / data_cfg[f"{split}_split"]
    if not folder.is_dir():
        present = _class_folders(root)
        hint = f"; it has {present[:5]}" if present else " and it is empty"
        raise FileNotFoundError(f"no {split} split: {folder} does not exist{hint}. Expected {root}/"
                                f"{data_cfg['train_split']} and {root}/{data_cfg['val_split']} with one subfolder per class")
    return ImageFolderDataset(folder, transform, classes=classes, in_chans=data_cfg["in_chans"],
                              verify=data_cfg["verify"])


def find_images(paths: Iterable[PathLike]) -> List[Path]:
    """Image files named by ``paths``: files as given, folders searched recursively (sorted).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: no image files at all.
    """
    out: List[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if _is_image_file(p)))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}")
    if not out:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS[:4])}...) in {', '.join(map(str, paths))}")
    return out


def collate_skipped(batch: Sequence[Sample]) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Collate ``(image, target, skipped)`` samples into ``(images (B, C, H, W), targets (B,), skipped total)``."""
    images = torch.stack([b[0] for b in batch])
    targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, targets, int(sum(b[2] for b in batch))
