"""The project's one transform factory, :func:`build_transform`: timm's training augmentation (RandAugment,
random erasing...) or evaluation resize + crop, made to work on any image and every supported Pillow.

Compatibility fixes live here and only here, on the transforms this factory builds (timm is never patched):

* ``posterize`` with 0 bits (timm's RandAugment ``inc1`` at magnitude 10): Pillow 13.0 raises, older
  Pillows returned a black image; :func:`posterize` keeps the black image on all of them.
"""
from typing import Any, Callable, List, Mapping, Optional, Sequence

from PIL import Image, ImageOps

from .images import to_mode

__all__ = ["Transform", "TransformError", "ToMode", "augment_ops", "build_transform", "posterize"]


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


def augment_ops(step: Any) -> List[Any]:
    """The timm ``AugmentOp`` objects of a RandAugment / AutoAugment / AugMix step (empty for other steps)."""
    ops = list(getattr(step, "ops", None) or [])
    for sub_policy in getattr(step, "policy", None) or []:
        ops.extend(sub_policy)
    return [op for op in ops if hasattr(op, "aug_fn") and hasattr(op, "name")]


def _fix_augment_ops(step: Any) -> None:
    """Make this transform's own augmentation ops work on every supported Pillow (timm itself is not patched)."""
    for op in augment_ops(step):
        if op.name.startswith("Posterize"):
            op.aug_fn = posterize


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
