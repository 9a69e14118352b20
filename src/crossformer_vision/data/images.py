"""Image files: which files are images, reading any of them in the mode a model wants, checking folders.

:func:`to_mode` is the one conversion of the package: palette (with transparency), RGBA, CMYK, 16-bit and
float images become ``RGB`` or ``L`` with their brightness kept (16-bit / 257, float by its range), where
Pillow's own ``convert`` would clip them white or black. :func:`load_image` (PIL) and
:func:`load_image_tensor` (float tensor, for detection and segmentation) use it, in training and in prediction.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from ..utils.files import PathLike

__all__ = ["IMAGE_EXTENSIONS", "check_image", "find_images", "image_headers", "is_image_file", "load_image",
           "load_image_tensor", "require_folder", "to_mode"]


#: File extensions read as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


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


def load_image_tensor(path: PathLike) -> tv_tensors.Image:
    """An image file as a float ``(3, H, W)`` tensor in [0, 1], converted to RGB by
    :func:`crossformer_vision.data.to_mode` (grey, palette, CMYK, 16-bit and float images scaled properly)."""
    array = np.asarray(load_image(path, "RGB"), dtype=np.uint8)
    return tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0))


def check_image(path: str, full: bool) -> Optional[str]:
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


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def require_folder(root: Path, what: str = "dataset folder") -> None:
    """FileNotFoundError unless ``root`` is an existing folder (saying so when it is a file)."""
    if root.is_file():
        raise FileNotFoundError(f"{what} {root} is a file, not a folder: give the folder that holds one subfolder "
                                f"per class")
    if not root.is_dir():
        raise FileNotFoundError(f"{what} not found: {root}")


def image_headers(paths: Sequence[Path]) -> List[Any]:
    """``(width, height)`` from each file's header, or the reason it cannot be read (a str); threaded, nothing decoded."""
    def header(path: Path) -> Any:
        try:
            with Image.open(path) as img:
                return img.size
        except Exception as err:  # decoders raise many kinds of errors for damaged files
            return f"{type(err).__name__}: {err}"

    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 4)) as pool:
        return list(pool.map(header, paths))


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
            out.extend(sorted(p for p in path.rglob("*") if is_image_file(p)))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}")
    if not out:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS[:4])}...) in {', '.join(map(str, paths))}")
    return out
