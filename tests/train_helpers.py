"""Helpers of the training tests: a small synthetic ImageFolder dataset, fast recipes, running the CLI."""
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

CLASSES = ("bar", "dot", "frame")


def draw(cls: int, size: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 image of class ``cls``: a horizontal bar, a central dot or a frame, in noise."""
    h, w = size
    img = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
    colour = np.array([220, 200, 40]) if cls != 1 else np.array([40, 200, 220])
    if cls == 0:
        img[h // 2 - h // 8: h // 2 + h // 8, :] = colour
    elif cls == 1:
        img[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = colour
    else:
        b = max(2, h // 8)
        img[:b], img[-b:], img[:, :b], img[:, -b:] = colour, colour, colour, colour
    return img


def make_image_folder(root: Path, counts: Dict[str, int] = None, seed: int = 0, square: bool = False) -> Path:
    """``root/{split}/{class}/*.png`` with image sizes 32..48 pixels, some greyscale, palette or RGBA files.

    Args:
        counts: Images per class for each split (default ``{"train": 16, "val": 4}``).
        square: Square images only: a random resized crop with ``scale=ratio=(1, 1)`` then takes the whole image,
            so training is free of randomness (a nearly square image still gets a random 1-pixel shift).
    """
    counts = counts or {"train": 16, "val": 4}
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                size = (int(rng.integers(32, 49)), int(rng.integers(32, 49)))
                size = (size[0], size[0]) if square else size
                image = Image.fromarray(draw(c, size, rng))
                mode = ("RGB", "RGB", "L", "P", "RGBA")[i % 5]
                image = image.convert(mode) if mode != "RGB" else image
                image.save(folder / f"{split}_{i:03d}.png")
    return root


#: What cameras and scanners hand over: (mode, file extension). 16-bit and float files are saved as PNG/TIFF.
CAMERA_FORMATS = (("RGB", ".jpg"), ("RGB", ".png"), ("L", ".png"), ("P", ".gif"), ("RGBA", ".png"), ("I;16", ".png"),
                  ("I;16", ".tif"), ("F", ".tif"), ("CMYK", ".jpg"), ("RGB", ".webp"), ("L", ".bmp"), ("LA", ".png"))
#: Sizes (width, height): tiny, odd, small, camera-like non-square.
CAMERA_SIZES = ((1, 1), (7, 5), (32, 32), (300, 200), (45, 61), (120, 90))


def photo(cls: int, size: Sequence[int], mode: str, rng: np.random.Generator) -> Image.Image:
    """A photo-like image of class ``cls`` (:func:`draw` over a smooth gradient) in PIL ``mode`` at ``size`` (w, h).

    ``I;16`` images span 0..65535 (as a 16-bit scan does) and ``F`` images 0..1, so a reader that clips them
    to 8 bits gets a white or black picture.
    """
    w, h = size
    base = draw(cls, (max(h, 8), max(w, 8)), rng).astype(np.float64)
    ramp = np.linspace(0, 60, base.shape[1])[None, :, None]
    rgb = np.clip(base + ramp, 0, 255)[:h, :w]
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    if mode == "I;16":
        return Image.fromarray((rgb.mean(axis=2) * 257).astype(np.uint16))
    if mode == "F":
        return Image.fromarray((rgb.mean(axis=2) / 255).astype(np.float32), "F")
    if mode == "P":
        return image.quantize(16)
    return image.convert(mode)


def make_camera_folder(root: Path, counts: Dict[str, int], seed: int = 0) -> Path:
    """``root/{split}/{class}/*`` with :data:`CAMERA_FORMATS` in turn at :data:`CAMERA_SIZES` in turn (and random
    sizes up to 400 pixels): the mix a user's own folder brings. ``counts``: images per class per split."""
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                mode, ext = CAMERA_FORMATS[i % len(CAMERA_FORMATS)]
                size = CAMERA_SIZES[i % len(CAMERA_SIZES)] if i % 3 else tuple(int(v) for v in rng.integers(16, 400, 2))
                photo(c, size, mode, rng).save(folder / f"{split}_{i:04d}{ext}")
    return root


def fast_overrides(output: Path, **extra) -> List[str]:
    """Overrides for a quick CPU run: micro model at 32x32 RGB, augmentation reduced to the random resized crop."""
    items = {
        "model.name": "crossformer_micro", "model.drop_path_rate": 0.0, "data.img_size": 32, "data.in_chans": 3,
        "data.mean": [0.5, 0.5, 0.5], "data.std": [0.5, 0.5, 0.5], "data.crop_pct": 1.0, "data.workers": 0,
        "aug.scale": [1.0, 1.0], "aug.ratio": [1.0, 1.0], "aug.hflip": 0.0, "aug.color_jitter": 0.0,
        "aug.auto_augment": None, "aug.reprob": 0.0, "aug.mixup": 0.0, "aug.cutmix": 0.0, "aug.smoothing": 0.0,
        "optim.lr": 2e-3, "optim.lr_base_batch": 16, "optim.warmup_lr": 1e-5, "optim.min_lr": 1e-5,
        "sched.warmup_epochs": 1, "train.epochs": 2, "train.batch_size": 16, "train.amp": "none", "train.threads": 1,
        "log.progress": False, "log.output": str(output),
    }
    items.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={_yaml(v)}" for k, v in items.items()]


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def run_cli(args: Sequence[str], cwd: Path = None, timeout: float = 300, env: Dict[str, str] = None
            ) -> subprocess.CompletedProcess:
    """Run ``python -m crossformer_vision.cli ARGS`` and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("CROSSFORMER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "crossformer_vision.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)
