"""A small SYNTHETIC dataset of shapes on textured backgrounds, with exact ground truth.

Generated images show circles, squares, triangles and crosses (random size, rotation and colour, possibly
occluding each other) on procedurally textured backgrounds. Because every pixel is drawn here, the
ground truth is exact: an instance's mask is its visible pixels, its box the tight box of that mask, its
area the mask's pixel count, and the semantic label map the class of the visible shape at each pixel
(0 = background). Nothing in it is a real photograph; it exists to run the detection and segmentation
pipelines end to end on a laptop CPU in minutes and to test them against known answers.

Layout written under ``root`` (COCO for detection / instances, folders of label PNGs for semantics)::

    images/{train,val}/00000.png             RGB images
    annotations/instances_{train,val}.json   COCO instances: boxes, RLE masks, areas, categories 1..4
    labels/{train,val}/00000.png             semantic labels (mode L): 0 background, 1..4 the shapes
    dataset_info.json, README.md             generator parameters; the "synthetic" notice

The same ``seed`` and parameters always give the same files.
"""
import colorsys
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..utils.distributed import broadcast_object, is_main_process
from ..utils.files import PathLike

__all__ = ["SHAPES", "SyntheticDataset", "class_hue", "make_synthetic_dataset", "prepare_synthetic", "render_sample",
           "synthetic_root"]

#: Object classes, in label order (detection labels 1..4; semantic labels 1..4 with 0 = background).
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "cross")

_SPLITS = ("train", "val")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticDataset:
    """Paths and classes of a generated dataset (returned by :func:`make_synthetic_dataset`)."""

    root: Path
    class_names: Tuple[str, ...] = SHAPES

    @property
    def num_classes(self) -> int:
        """Object classes for detectors (background not counted)."""
        return len(self.class_names)

    @property
    def num_semantic_classes(self) -> int:
        """Classes of the semantic labels: background plus the shapes."""
        return len(self.class_names) + 1

    @property
    def semantic_class_names(self) -> Tuple[str, ...]:
        return ("background",) + tuple(self.class_names)

    def image_dir(self, split: str) -> Path:
        return self.root / "images" / _check_split(split)

    def ann_file(self, split: str) -> Path:
        return self.root / "annotations" / f"instances_{_check_split(split)}.json"

    def label_dir(self, split: str) -> Path:
        return self.root / "labels" / _check_split(split)

    def coco(self, split: str, **kwargs: Any) -> Any:
        """:class:`~crossformer_vision.dense.datasets.CocoInstances` of ``split`` (``masks=True`` for Mask R-CNN)."""
        from .detection import CocoInstances

        return CocoInstances(self.image_dir(split), self.ann_file(split), **kwargs)

    def semantic(self, split: str, **kwargs: Any) -> Any:
        """:class:`~crossformer_vision.dense.datasets.SegmentationFolder` of ``split`` (5 classes, background 0)."""
        from .segmentation import SegmentationFolder

        kwargs.setdefault("class_names", self.semantic_class_names)
        return SegmentationFolder(self.image_dir(split), self.label_dir(split), self.num_semantic_classes, **kwargs)


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    return split


# ---------------------------------------------------------------------------------------------- rendering
def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float map in [0, 1]: smooth noise, stripes or a checkerboard, chosen at random."""
    kind = rng.integers(3)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    if kind == 0:
        cells = rng.random((int(rng.integers(3, 9)), int(rng.integers(3, 9))))
        img = Image.fromarray((cells * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
        return np.asarray(img, dtype=np.float64) / 255.0
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 24)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    if kind == 1:
        return 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float64)


def _shape_mask(kind: int, cx: float, cy: float, size: float, angle: float, height: int, width: int) -> np.ndarray:
    """Boolean mask of a shape of radius ``size`` (pixel centres inside the shape)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    name = SHAPES[kind]
    if name == "circle":
        return u**2 + v**2 <= size**2
    if name == "square":
        half = size / np.sqrt(2)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if name == "triangle":  # equilateral, circumradius ``size``: three half-planes at distance size / 2
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            theta = 2 * np.pi * k / 3 + np.pi / 2
            inside &= u * np.cos(theta) + v * np.sin(theta) <= size / 2
        return inside
    arm = size / 3  # cross: two bars of half-width size / 3
    return ((np.abs(u) <= size) & (np.abs(v) <= arm)) | ((np.abs(u) <= arm) & (np.abs(v) <= size))


def _colour(
    rng: np.random.Generator, avoid: Sequence[np.ndarray], hue: Optional[float] = None, min_distance: float = 0.35
) -> np.ndarray:
    """A random colour (near ``hue``, +-0.03, if given) at least ``min_distance`` from each of ``avoid``, or
    the farthest of 100 tries."""
    best, best_distance = None, -1.0
    for _ in range(100):
        if hue is None:
            colour = rng.random(3)
        else:
            h = (hue + rng.uniform(-0.03, 0.03)) % 1.0
            colour = np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)))
        distance = min(float(np.linalg.norm(colour - a)) for a in avoid)
        if distance >= min_distance:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def class_hue(kind: int) -> float:
    """Base hue (0-1) of shape class ``kind`` (0..3) when ``colour_by_class`` is on."""
    return kind / len(SHAPES)


def render_sample(
    rng: np.random.Generator,
    height: int,
    width: int,
    max_objects: int = 4,
    size_range: Tuple[float, float] = (0.08, 0.22),
    min_visible: float = 0.5,
    colour_by_class: bool = False,
) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray]], np.ndarray]:
    """Draw one image.

    Args:
        rng: Random generator (the only source of randomness).
        height, width: Image size in pixels.
        max_objects: Shapes per image are 1..max_objects.
        size_range: Shape radius as a fraction of the image's short side.
        min_visible: A shape is redrawn elsewhere if occlusion leaves less than this fraction of it visible.
        colour_by_class: Give each class its own hue (:func:`class_hue`, +-0.03) instead of any colour, so
            colour is a cue besides shape (an easier task, for quick demos).

    Returns:
        ``(image, instances, semantic)``: uint8 ``(H, W, 3)``; a list of ``(class index 0..3, visible mask
        (H, W) bool)``; uint8 ``(H, W)`` labels (0 background, 1..4 shapes).
    """
    background_a, background_b = rng.random(3), rng.random(3)
    texture = _texture(rng, height, width)[..., None]
    image = background_a * (1 - texture) + background_b * texture
    kinds: List[int] = []
    full: List[np.ndarray] = []
    visible: List[np.ndarray] = []
    short = min(height, width)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            kind = int(rng.integers(len(SHAPES)))
            size = rng.uniform(*size_range) * short
            cx, cy = rng.uniform(size, width - size), rng.uniform(size, height - size)
            mask = _shape_mask(kind, cx, cy, size, rng.uniform(0, 2 * np.pi), height, width)
            # the new shape is drawn on top: every earlier one must stay visible enough
            if mask.sum() >= 16 and all((v & ~mask).sum() >= min_visible * f.sum() for v, f in zip(visible, full)):
                visible = [v & ~mask for v in visible]
                kinds.append(kind)
                full.append(mask)
                visible.append(mask.copy())
                colour = _colour(rng, [background_a, background_b], class_hue(kind) if colour_by_class else None)
                shade = 0.85 + 0.15 * _texture(rng, height, width)[..., None]
                image = np.where(mask[..., None], colour * shade, image)
                break
    semantic = np.zeros((height, width), np.uint8)
    for kind, mask in zip(kinds, visible):
        semantic[mask] = kind + 1
    instances = list(zip(kinds, visible))
    noise = rng.normal(0.0, 0.02, image.shape)
    image = np.clip((image + noise) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image, instances, semantic


# ---------------------------------------------------------------------------------------------- writing
def _annotation(ann_id: int, image_id: int, kind: int, mask: np.ndarray) -> Dict[str, Any]:
    from pycocotools import mask as mask_utils

    rows, cols = np.nonzero(mask)
    x0, y0, x1, y1 = int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"id": ann_id, "image_id": image_id, "category_id": kind + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": int(mask.sum()), "segmentation": rle, "iscrowd": 0}


def make_synthetic_dataset(
    root: PathLike,
    *,
    num_train: int = 200,
    num_val: int = 50,
    image_size: Union[int, Tuple[int, int]] = (128, 192),
    max_objects: int = 4,
    colour_by_class: bool = False,
    seed: int = 0,
    overwrite: bool = False,
) -> SyntheticDataset:
    """Generate the synthetic shapes dataset under ``root`` (or reuse an identical one already there).

    Args:
        root: Output folder.
        num_train, num_val: Images per split.
        image_size: Side length, or ``(min, max)``: each image's height and width are drawn from that range.
        max_objects: Shapes per image are 1..max_objects.
        colour_by_class: Each class gets its own hue, so colour as well as shape tells the classes apart (an
            easier task that small models learn in minutes on a CPU); by default colours are random and only
            the shape does.
        seed: Everything is a function of the seed and the other arguments.
        overwrite: Regenerate even if ``root`` holds a dataset made with other parameters.

    Returns:
        :class:`SyntheticDataset` with the paths and class names.

    Raises:
        ValueError: bad arguments, or ``root`` holds other files / another dataset and ``overwrite`` is False.
    """
    low, high = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if not 32 <= low <= high:
        raise ValueError(f"image_size must be at least 32 (the backbones' stride), got {image_size!r}")
    if num_train < 1 or num_val < 1 or max_objects < 1:
        raise ValueError("num_train, num_val and max_objects must be at least 1")
    root = Path(root)
    params = dict(format_version=_FORMAT_VERSION, num_train=num_train, num_val=num_val, image_size=[low, high],
                  max_objects=max_objects, colour_by_class=colour_by_class, seed=seed, classes=list(SHAPES))
    info_path = root / "dataset_info.json"
    dataset = SyntheticDataset(root)
    if info_path.is_file() and not overwrite:
        with open(info_path) as f:
            existing = json.load(f).get("parameters")
        if existing == params:
            return dataset
        raise ValueError(
            f"{root} holds a synthetic dataset made with {existing}; pass overwrite=True or choose another root"
        )
    if root.is_dir() and any(root.iterdir()) and not info_path.is_file() and not overwrite:
        raise ValueError(f"{root} is not empty and holds no synthetic dataset; choose an empty or new folder")
    for split_index, (split, count) in enumerate(zip(_SPLITS, (num_train, num_val))):
        dataset.image_dir(split).mkdir(parents=True, exist_ok=True)
        dataset.label_dir(split).mkdir(parents=True, exist_ok=True)
        dataset.ann_file(split).parent.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng([seed, split_index, index])
            height, width = (int(v) for v in rng.integers(low, high + 1, size=2))
            image, instances, semantic = render_sample(rng, height, width, max_objects, colour_by_class=colour_by_class)
            name = f"{index:05d}.png"
            Image.fromarray(image).save(dataset.image_dir(split) / name)
            Image.fromarray(semantic, mode="L").save(dataset.label_dir(split) / name)
            image_id = index + 1
            images.append({"id": image_id, "file_name": name, "height": height, "width": width})
            for kind, mask in instances:
                annotations.append(_annotation(len(annotations) + 1, image_id, kind, mask))
        coco = {
            "info": {"description": "SYNTHETIC shapes on textured backgrounds (crossformer_vision.dense.synthetic); "
                                    "not real images", "version": str(_FORMAT_VERSION), "seed": seed},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)],
        }
        with open(dataset.ann_file(split), "w") as f:
            json.dump(coco, f)
    with open(root / "README.md", "w") as f:
        f.write(
            "# SYNTHETIC dataset\n\nGenerated by `crossformer_vision.dense.synthetic.make_synthetic_dataset` with the "
            f"parameters in dataset_info.json. Shapes ({', '.join(SHAPES)}) drawn on procedural textures: not real "
            "images. Boxes, instance masks and semantic labels are exact (computed from the drawn pixels).\n"
        )
    with open(info_path, "w") as f:
        json.dump({"synthetic": True, "parameters": params}, f, indent=1)
    return dataset


def synthetic_root(params: Mapping[str, Any], root: Optional[PathLike] = None) -> Path:
    """Where a synthetic dataset lives: ``root``, else a cache folder named by its parameters
    (``$XDG_CACHE_HOME/crossformer-vision/shapes-...``)."""
    if root:
        return Path(root)
    size = params["image_size"] if isinstance(params["image_size"], int) else "-".join(map(str, params["image_size"]))
    name = (f"shapes-n{params['num_train']}-{params['num_val']}-s{size}-o{params['max_objects']}"
            f"{'-colour' if params['colour_by_class'] else ''}-seed{params['seed']}")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "crossformer-vision" / name


def prepare_synthetic(params: Mapping[str, Any], root: Optional[PathLike] = None) -> SyntheticDataset:
    """Generate (rank 0, into a temporary folder renamed when complete) or reuse a synthetic dataset.

    Args:
        params: :func:`make_synthetic_dataset`'s arguments (a recipe's ``data.synthetic``).
        root: Where it goes (None: :func:`synthetic_root`'s cache folder).

    Raises:
        ValueError: on every rank, for bad parameters or a folder that holds something else.
    """
    root = synthetic_root(params, root)
    params = dict(params)
    if isinstance(params.get("image_size"), list):
        params["image_size"] = tuple(params["image_size"])
    error = None
    if is_main_process():
        try:
            if (root / "dataset_info.json").is_file() or (root.is_dir() and any(root.iterdir())):
                make_synthetic_dataset(root, **params)  # reuses it, or refuses a folder holding something else
            else:
                tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    make_synthetic_dataset(tmp, **params)
                    root.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, root) if not root.exists() else shutil.rmtree(tmp)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        except (TypeError, ValueError) as err:
            error = f"data.synthetic: {err}"
    error = broadcast_object(error)
    if error:
        raise ValueError(error)
    return SyntheticDataset(root)
