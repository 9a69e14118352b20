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
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_SPLIT",
    "IMAGE_EXTENSIONS",
    "CollateSkipped",
    "DataError",
    "DigitsDataset",
    "ImageFolderDataset",
    "MAX_CONSECUTIVE_UNREADABLE",
    "SkipUnreadable",
    "ToMode",
    "Transform",
    "TransformError",
    "UnreadableError",
    "apply_transform",
    "build_dataset",
    "build_transform",
    "collate_skipped",
    "data_batches",
    "digits_split",
    "find_images",
    "loader_error",
    "load_image",
    "posterize",
    "read_sample",
    "to_mode",
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
        return apply_transform(self.transform, f"digits/{self.split}/{i}", image), self.targets[i], 0


#: Pillow modes that hold more than 8 bits per pixel; :func:`to_mode` scales them instead of clipping.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` converted to ``mode`` (``"RGB"`` or ``"L"``), whatever mode it was read in.

    Pillow's own ``convert`` clips wide pixels to 8 bits: a 16-bit scan would come out almost white and a
    float image almost black. Here 16-bit images (``I;16*``, and ``I`` within 0..65535) are divided by 257
    (65535 -> 255); float images (``F``) with values in [0, 1] are multiplied by 255, other float or 32-bit
    ranges are stretched from their minimum..maximum to 0..255. Palette images with transparency go through
    RGBA, so Pillow does not warn; alpha is dropped.

    Raises:
        ValueError: a mode Pillow cannot convert to ``mode`` (e.g. ``La``).
    """
    if image.mode == mode:
        return image
    if image.mode in _WIDE_MODES:
        pixels = np.asarray(image, dtype=np.float64)
        low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
        if image.mode != "F" and low >= 0 and high <= 65535:
            pixels = pixels / 257.0
        elif image.mode == "F" and low >= 0 and high <= 1:
            pixels = pixels * 255.0
        else:
            pixels = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
        return image if mode == "L" else image.convert(mode)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    try:
        return image.convert(mode)
    except ValueError as err:
        raise ValueError(f"cannot convert a {image.mode} image to {mode}: {err}") from None


def load_image(path: PathLike, mode: str = "RGB") -> Image.Image:
    """Decode an image file fully and convert it to ``mode`` with :func:`to_mode` (raises if it is broken)."""
    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
        return to_mode(image, mode)


def _check_image(path: str, full: bool) -> Optional[str]:
    """None if ``path`` opens as an image (header, or fully decoded with ``full``), else the reason."""
    try:
        if full:
            load_image(path)
        else:
            with Image.open(path) as image:
                image.size  # header parsed by open(); nothing decoded
        return None
    except Exception as err:  # decoders raise OSError, ValueError, SyntaxError, struct.error, IndexError...
        return f"{type(err).__name__}: {err}"


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_folders(root: Path) -> List[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_folder(root: Path, what: str = "dataset folder") -> None:
    """FileNotFoundError unless ``root`` is an existing folder (saying so when it is a file)."""
    if root.is_file():
        raise FileNotFoundError(f"{what} {root} is a file, not a folder: give the folder that holds one subfolder "
                                f"per class")
    if not root.is_dir():
        raise FileNotFoundError(f"{what} not found: {root}")


# ---------------------------------------------------------------------------------------------- errors
class DataError(ValueError):
    """A sample that cannot be produced: the message names the file, the step that failed and what to do.

    Raised in DataLoader worker processes too: PyTorch re-raises it in the main process with the worker's
    traceback as its message; the constructor keeps only the original one-line message.
    """

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "Original Traceback" in message:
            last = message.rstrip().splitlines()[-1]  # "crossformer_vision.data.DataError: <message>"
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


def loader_error(err: BaseException) -> Optional[DataError]:
    """A :class:`DataError` for an exception that a DataLoader worker raised, else None.

    Errors of our datasets already are :class:`DataError`; anything else from a worker (a custom collate,
    a sampler, memory) becomes one line with the worker's last message and how to see the whole traceback.
    """
    if isinstance(err, DataError):
        return err
    text = str(err)
    if not (text.startswith("Caught ") and "in DataLoader worker process" in text):
        return None
    last = text.rstrip().splitlines()[-1].strip()
    return DataError(f"a data loading worker failed: {last[:300]}; run with data.workers=0 (and CROSSFORMER_DEBUG=1) "
                     f"to see where")


def data_batches(loader: Iterable[Any]) -> Iterator[Any]:
    """The batches of ``loader``; an error raised in one of its worker processes becomes one :class:`DataError`."""
    try:
        yield from loader
    except Exception as err:
        data_error = loader_error(err)
        if data_error is None:
            raise
        raise data_error from None


# ---------------------------------------------------------------------------------------------- transforms
#: Recipe fields that control each kind of transform step (named in errors).
_STEP_FIELDS = {
    "ToMode": "data.in_chans",
    "RandomResizedCrop": "aug.scale, aug.ratio or data.interpolation",
    "RandomHorizontalFlip": "aug.hflip",
    "RandomVerticalFlip": "aug.vflip",
    "ColorJitter": "aug.color_jitter (0 turns it off)",
    "RandAugment": "aug.auto_augment (null turns it off)",
    "AutoAugment": "aug.auto_augment (null turns it off)",
    "AugMixAugment": "aug.auto_augment (null turns it off)",
    "Resize": "data.img_size, data.crop_pct or data.interpolation",
    "CenterCrop": "data.img_size or data.crop_pct",
    "Normalize": "data.mean and data.std (one value per channel, data.in_chans)",
    "RandomErasing": "aug.reprob (0 turns it off)",
}


class TransformError(ValueError):
    """A step of a :class:`Transform` failed; ``step`` names it, the message says which recipe field sets it."""

    def __init__(self, step: str, error: BaseException) -> None:
        kind = next((k for k in _STEP_FIELDS if step.startswith(k)), None)
        hint = f"; this step is set by {_STEP_FIELDS[kind]}" if kind else ""
        detail = " ".join(str(error).split())[:300]
        super().__init__(f"step {step} failed ({type(error).__name__}: {detail}){hint}")
        self.step = step


class ToMode:
    """Transform step: any PIL image to ``mode`` (``"RGB"`` or ``"L"``) with :func:`to_mode`."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return to_mode(image, self.mode) if isinstance(image, Image.Image) else image

    def __repr__(self) -> str:
        return f"ToMode({self.mode!r})"


class Transform:
    """The steps of one transform, applied in order; a failing step raises :class:`TransformError` naming it.

    Built by :func:`build_transform`; ``steps`` is the list (``ToMode``, then timm's steps).
    """

    def __init__(self, steps: Sequence[Callable]) -> None:
        self.steps = list(steps)

    def __call__(self, image: Any) -> Any:
        for step in self.steps:
            try:
                image = step(image)
            except Exception as err:
                raise TransformError(_step_name(step), err) from err
        return image

    def __repr__(self) -> str:
        return "Transform(\n" + "".join(f"    {step}\n" for step in self.steps) + ")"


def _step_name(step: Any) -> str:
    name = type(step).__name__
    if name == "RandomResizedCropAndInterpolation":
        return "RandomResizedCrop"
    return name


def posterize(image: Image.Image, bits: int, **_: Any) -> Image.Image:
    """Keep the ``bits`` most significant bits of every channel; 0 bits gives a black image.

    timm's RandAugment asks for 0 bits at the top of its increasing-severity schedule (``inc1``: magnitude 10,
    reached by about 2% of ``mstd0.5`` draws), as the TensorFlow original does. Pillow up to 12.3 returned a
    black image for that; Pillow 13.0 raises ``ValueError: bits must be between or equal to 1 and 8``.
    This keeps the black image on every Pillow.
    """
    if bits >= 8:
        return image
    if bits <= 0:
        return Image.new(image.mode, image.size)  # every band 0, as ImageOps.posterize(image, 0) gave on L and RGB
    return ImageOps.posterize(image, bits)


def _augment_ops(step: Any) -> List[Any]:
    """The timm ``AugmentOp`` objects of a RandAugment / AutoAugment / AugMix step (empty for other steps)."""
    ops = list(getattr(step, "ops", None) or [])
    for sub_policy in getattr(step, "policy", None) or []:
        ops.extend(sub_policy)
    return [op for op in ops if hasattr(op, "aug_fn") and hasattr(op, "name")]


def _fix_augment_ops(step: Any) -> None:
    """Make this transform's own augmentation ops work on every supported Pillow (timm itself is not patched)."""
    for op in _augment_ops(step):
        if op.name.startswith("Posterize"):
            op.aug_fn = posterize


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
        _check_folder(root)
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

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        """``(image, target, skipped)``: an unreadable file is replaced by the next readable one and
        ``skipped`` is 1 (each bad file is counted once per epoch, by the sample it belongs to)."""
        (image, target), skipped = read_sample(self._load, i, len(self.samples), replace=True)
        return image, target, skipped

    def _load(self, i: int) -> Tuple[Any, int]:
        path, target = self.samples[i]
        try:
            image = load_image(path, self.mode)
        except Exception as err:  # decoders raise OSError, ValueError, SyntaxError, struct.error...
            raise UnreadableError(path, err) from None
        return apply_transform(self.transform, path, image), target


class UnreadableError(ValueError):
    """The file of a sample cannot be decoded (damaged, truncated, vanished); :func:`read_sample` skips it."""

    def __init__(self, path: Any, error: BaseException) -> None:
        detail = " ".join(str(error).split())[:200]
        super().__init__(f"{path}: {type(error).__name__}: {detail}")
        self.path = path


#: Consecutive unreadable samples after which :func:`read_sample` gives up (the data has gone, not one file).
MAX_CONSECUTIVE_UNREADABLE = 100


def read_sample(load: Callable[[int], Any], index: int, length: int, replace: bool) -> Tuple[Any, int]:
    """``(load(index), 0)``, or when its file is unreadable (:class:`UnreadableError`) ``(load(next readable), 1)``
    with ``replace``, else ``(None, 1)``. The first failure of each sample is warned about once.

    Raises:
        DataError: :data:`MAX_CONSECUTIVE_UNREADABLE` samples in a row are unreadable.
    """
    for offset in range(min(length, MAX_CONSECUTIVE_UNREADABLE)):
        try:
            return load((index + offset) % length), int(offset > 0)
        except UnreadableError as err:
            if offset == 0:
                # one line (no source line of the DataLoader under it), every time: the epoch's count follows
                warnings.warn_explicit(f"skipping unreadable image {err}", UserWarning, "crossformer-vision", 0)
            if not replace:
                return None, 1
    raise DataError(f"{min(length, MAX_CONSECUTIVE_UNREADABLE)} samples in a row could not be read, from sample "
                    f"{index}: has the dataset moved or its disk gone? Check the data path and the files")


class SkipUnreadable(Dataset):
    """``dataset`` whose items are ``(sample, skipped)``: a sample whose file is unreadable is replaced by the
    next readable one (``replace=True``, for training) or is None (``replace=False``, for evaluation, which
    must not see an image twice); ``skipped`` is 1 then. Pair with :class:`CollateSkipped`."""

    def __init__(self, dataset: Dataset, replace: bool) -> None:
        self.dataset, self.replace = dataset, replace

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        return read_sample(self.dataset.__getitem__, index, len(self.dataset), self.replace)

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's attributes (num_classes, coco, ...)
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class CollateSkipped:
    """Collate ``(sample, skipped)`` items with ``collate`` into ``(batch or None, skipped total)``."""

    def __init__(self, collate: Callable[[List[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, items: Sequence[Tuple[Any, int]]) -> Tuple[Any, int]:
        samples = [sample for sample, _ in items if sample is not None]
        return (self.collate(samples) if samples else None), int(sum(skipped for _, skipped in items))


def apply_transform(transform: Optional[Callable], path: Any, *inputs: Any) -> Any:
    """``transform(*inputs)`` for the sample of file ``path``; a failure becomes a :class:`DataError` naming the file
    (and, for a :class:`Transform`, the step and its recipe field). No transform: ``inputs`` (one: itself)."""
    if transform is None:
        return inputs[0] if len(inputs) == 1 else inputs
    try:
        return transform(*inputs)
    except TransformError as err:
        raise DataError(f"cannot use image {path}: {err}") from None
    except Exception as err:
        detail = " ".join(str(err).split())[:300]
        raise DataError(f"cannot use image {path}: its transform failed ({type(err).__name__}: {detail})") from None


def build_transform(data_cfg: Mapping[str, Any], aug_cfg: Optional[Mapping[str, Any]] = None,
                    is_training: bool = False) -> Transform:
    """The project's one transform factory: timm's transform for the recipe, made safe for any input image.

    Training: random resized crop, flips, colour jitter, RandAugment/AutoAugment, random erasing (timm's
    ``create_transform``); evaluation: resize + centre crop by ``crop_pct``. Before timm's steps, every image
    is converted to the recipe's mode with :func:`to_mode` (16-bit, float, palette, CMYK... files work). The
    augmentation ops of this transform get :func:`posterize`, which works on every supported Pillow (timm
    itself is left untouched). A failing step raises :class:`TransformError` naming the step and the recipe
    field that sets it.

    Args:
        data_cfg: The recipe's ``data`` section (``img_size``, ``in_chans``, ``crop_pct``, ``interpolation``,
            ``mean``, ``std``).
        aug_cfg: The recipe's ``aug`` section; needed when ``is_training``.
        is_training: Random resized crop, flips, RandAugment, colour jitter, random erasing.

    Returns:
        A :class:`Transform`: PIL image (any mode) -> float tensor ``(in_chans, img_size, img_size)``.

    Raises:
        ValueError: an ``aug.auto_augment`` string timm does not understand, or other fields timm refuses.
    """
    from timm.data import create_transform

    size = int(data_cfg["img_size"])
    common = dict(
        input_size=(int(data_cfg["in_chans"]), size, size),
        interpolation=data_cfg["interpolation"],
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
    )
    if is_training and aug_cfg is None:
        raise ValueError("build_transform(is_training=True) needs the recipe's aug section")
    try:
        if not is_training:
            timm_transform = create_transform(is_training=False, crop_pct=data_cfg["crop_pct"], **common)
        else:
            timm_transform = create_transform(
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
    except (AssertionError, KeyError, ValueError, TypeError) as err:
        which = f"aug.auto_augment={aug_cfg['auto_augment']!r} or other aug fields" if is_training else "data fields"
        raise ValueError(f"timm could not build the {'training' if is_training else 'evaluation'} transform from "
                         f"{which} ({type(err).__name__}: {err}); see timm's create_transform "
                         f"(e.g. aug.auto_augment=rand-m9-mstd0.5-inc1, or null)") from None
    steps = [ToMode("L" if int(data_cfg["in_chans"]) == 1 else "RGB"), *getattr(timm_transform, "transforms", [timm_transform])]
    for step in steps:
        _fix_augment_ops(step)
    return Transform(steps)


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
