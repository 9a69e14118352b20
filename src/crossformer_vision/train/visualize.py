"""Draw detections, instance masks and semantic label maps on images, and save them as PNG.

Built on ``torchvision.utils.draw_bounding_boxes`` / ``draw_segmentation_masks``.
"""
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..utils.files import PathLike

__all__ = ["draw_detections", "draw_segmentation", "palette", "save_png", "side_by_side"]


def palette(num_colours: int, seed: int = 0) -> np.ndarray:
    """``(num_colours, 3)`` uint8 distinct-looking colours (golden-ratio hues), the same for the same seed."""
    import colorsys

    hues = (seed * 0.1 + np.arange(num_colours) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.75 if i % 2 else 0.95, 0.95 if i % 3 else 0.8) for i, h in enumerate(hues)]
    return (np.array(rgb).reshape(-1, 3) * 255).round().astype(np.uint8)


def _to_uint8(image: Tensor) -> Tensor:
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected one image (3, H, W) or (1, H, W), got {list(image.shape)}")
    image = image.detach().cpu()
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image.as_subclass(Tensor)


def draw_detections(
    image: Tensor,
    prediction: Mapping[str, Tensor],
    class_names: Optional[Sequence[str]] = None,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    alpha: float = 0.45,
) -> Image.Image:
    """Boxes (with ``name score`` captions) and instance masks over an image.

    Args:
        image: ``(3, H, W)`` float in [0, 1] or uint8.
        prediction: torchvision detector output (``boxes``, ``labels``, optional ``scores`` and ``masks``
            ``(N, 1, H, W)`` probabilities or ``(N, H, W)`` booleans), or a dataset target (no scores).
        class_names: Name of label ``i`` is ``class_names[i - 1]`` (labels start at 1; 0 is background and
            is not drawn).
        score_threshold: Detections scoring below this are not drawn.
        mask_threshold: Probability above which a mask pixel is drawn.
        alpha: Mask opacity.

    Returns:
        A PIL image (save with :func:`save_png`).
    """
    canvas = _to_uint8(image)
    labels = prediction["labels"].detach().cpu().reshape(-1)
    scores = prediction.get("scores")
    scores = scores.detach().cpu().reshape(-1) if scores is not None else torch.ones(len(labels))
    keep = (scores >= score_threshold) & (labels > 0)
    labels, scores = labels[keep], scores[keep]
    boxes = prediction["boxes"].detach().cpu().reshape(-1, 4)[keep].float()
    colours = palette(int(labels.max()) + 1 if len(labels) else 1)
    colour_list = [tuple(int(c) for c in colours[int(label)]) for label in labels]
    if "masks" in prediction and len(labels):
        masks = prediction["masks"].detach().cpu()
        masks = masks[:, 0] if masks.dim() == 4 else masks
        masks = masks[keep]
        binary = masks > mask_threshold if masks.is_floating_point() else masks.bool()
        canvas = draw_segmentation_masks(canvas, binary, alpha=alpha, colors=colour_list)
    if len(labels):
        names = [class_names[int(label) - 1] if class_names is not None and int(label) <= len(class_names)
                 else str(int(label)) for label in labels]
        captions = [f"{n} {s:.2f}" if "scores" in prediction else n for n, s in zip(names, scores.tolist())]
        canvas = draw_bounding_boxes(canvas, boxes, labels=captions, colors=colour_list, width=2)
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


def draw_segmentation(
    image: Tensor,
    label_map: Tensor,
    num_classes: int,
    ignore_index: int = 255,
    alpha: float = 0.5,
    background: Optional[int] = None,
) -> Image.Image:
    """A semantic label map blended over an image (``ignore_index`` pixels and ``background`` left bare).

    Args:
        image: ``(3, H, W)`` float in [0, 1] or uint8.
        label_map: ``(H, W)`` integer class indices (e.g. ``Segmenter.predict(...)[0]`` or a dataset label).
        num_classes: Classes; colours are fixed per class index.
        ignore_index: Value drawn as the bare image.
        alpha: Opacity of the colours.
        background: Optional class also drawn as the bare image (e.g. 0 for the synthetic dataset).
    """
    canvas = _to_uint8(image)
    label_map = label_map.detach().cpu().long()
    if label_map.shape != canvas.shape[1:]:
        raise ValueError(f"label map {list(label_map.shape)} does not match the image {list(canvas.shape[1:])}")
    drawn = label_map != ignore_index
    classes = [c for c in range(num_classes) if c != background and bool(((label_map == c) & drawn).any())]
    if not classes:
        return Image.fromarray(canvas.permute(1, 2, 0).numpy())
    colours = palette(num_classes)
    masks = torch.stack([label_map == c for c in classes])
    canvas = draw_segmentation_masks(canvas, masks, alpha=alpha, colors=[tuple(int(v) for v in colours[c]) for c in classes])
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


def save_png(image: Image.Image, path: PathLike) -> Path:
    """Save a drawing as PNG (creating parent folders); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"expected a .png path, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def side_by_side(*images: Image.Image, gap: int = 4) -> Image.Image:
    """Images next to each other (e.g. ground truth | prediction), top-aligned on a white canvas."""
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(i.height for i in images)), (255, 255, 255))
    x = 0
    for img in images:
        canvas.paste(img, (x, 0))
        x += img.width + gap
    return canvas
