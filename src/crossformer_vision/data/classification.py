"""Classification datasets: the built-in handwritten digits and ImageFolder trees that skip bad files.

Every dataset here yields ``(image, target, skipped)``: the transformed image, the class index, and 1 when the
sample's own file could not be read and the next readable one took its place (so each bad file is counted
once per epoch; see :func:`~crossformer_vision.data.samples.read_sample`).

The digits split (:func:`digits_split`) is fixed: scikit-learn's 1,797 scans, stratified by class with
``random_state=0``: 360 test images, then 180 validation images from the rest, 1,257 for training.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..utils.files import PathLike
from .augment import build_transform
from .images import IMAGE_EXTENSIONS, check_image, is_image_file, load_image, require_folder
from .samples import UnreadableError, apply_transform, read_sample

__all__ = ["DIGITS_CLASSES", "DIGITS_SPLIT", "DigitsDataset", "ImageFolderDataset", "build_dataset", "collate_skipped",
           "digits_split"]

#: Sizes of the fixed digits split (stratified, ``random_state``); the training split is the remaining 1,257.
DIGITS_SPLIT = {"test": 360, "val": 180, "random_state": 0}


#: Classes of the digits dataset, in target order.
DIGITS_CLASSES = [str(i) for i in range(10)]


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
        return apply_transform(self.transform, f"digits/{self.split}/{i}", image), self.targets[i], 0


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
        replace_unreadable: False (for evaluation, which must not see an image twice): an unreadable file's
            sample is ``(None, target, 1)``, which :func:`collate_skipped` leaves out.

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
        replace_unreadable: bool = True,
    ) -> None:
        root = Path(root)
        require_folder(root)
        found = _class_folders(root)
        if not found:
            loose = [p.name for p in root.iterdir() if is_image_file(p)]
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
            files = sorted(str(p) for p in (root / name).rglob("*") if is_image_file(p))
            candidates.extend((f, index[name]) for f in files)
        self.skipped: List[Tuple[str, str]] = []
        if verify != "none" and candidates:
            with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 4)) as pool:
                reasons = list(pool.map(lambda s: check_image(s[0], verify == "full"), candidates))
            self.skipped = [(s[0], r) for s, r in zip(candidates, reasons) if r is not None]
            candidates = [s for s, r in zip(candidates, reasons) if r is None]
        if not candidates:
            extra = f" ({len(self.skipped)} files could not be read, e.g. {self.skipped[0][0]})" if self.skipped else ""
            raise ValueError(f"no readable images in {root}{extra}: expected image files "
                             f"({', '.join(IMAGE_EXTENSIONS[:4])}...) inside its class folders")
        if classes is None:  # this folder defines the classes: each must have something to learn from
            empty = sorted(set(found) - {self.classes[t] for _, t in candidates})
            if empty:
                raise ValueError(f"class folder{'s' if len(empty) > 1 else ''} {', '.join(str(root / n) for n in empty[:5])}"
                                 f"{' ...' if len(empty) > 5 else ''} {'have' if len(empty) > 1 else 'has'} no readable "
                                 f"images: a class without training images cannot be learned; add images or remove "
                                 f"the folder")
        self.root = root
        self.samples = candidates
        self.targets = [t for _, t in candidates]
        self.transform = transform
        self.mode = "L" if in_chans == 1 else "RGB"
        self.replace_unreadable = replace_unreadable

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        """``(image, target, skipped)``: an unreadable file is replaced by the next readable one (or the image is
        None, see ``replace_unreadable``) and ``skipped`` is 1 (each bad file is counted once per epoch, by the
        sample it belongs to)."""
        sample, skipped = read_sample(self._load, i, len(self.samples), replace=self.replace_unreadable)
        if sample is None:
            return None, self.samples[i][1], skipped
        return sample[0], sample[1], skipped

    def _load(self, i: int) -> Tuple[Any, int]:
        path, target = self.samples[i]
        try:
            image = load_image(path, self.mode)
        except Exception as err:  # decoders raise OSError, ValueError, SyntaxError, struct.error...
            raise UnreadableError(path, err) from None
        return apply_transform(self.transform, path, image), target


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
    if root.is_file():
        raise FileNotFoundError(f"data.path {root} is a file, not a folder: give the folder with train/ and val/ "
                                f"(one subfolder per class in each)")
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
                              verify=data_cfg["verify"], replace_unreadable=is_training)


def collate_skipped(batch: Sequence[Sample]) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Collate ``(image, target, skipped)`` samples into ``(images (B, C, H, W), targets (B,), skipped total)``;
    samples without an image (unreadable, not replaced) are left out (``B`` may be 0)."""
    kept = [b for b in batch if b[0] is not None]
    images = torch.stack([b[0] for b in kept]) if kept else torch.empty(0)
    targets = torch.tensor([b[1] for b in kept], dtype=torch.long)
    return images, targets, int(sum(b[2] for b in batch))
