"""The project's one transform factory (data.build_transform): every augmentation op at every magnitude, on every
image mode and size a user's folder brings, for every shipped recipe; the Pillow compatibility fix; pixel scaling."""
import copy
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from timm.data import auto_augment as timm_aa

from crossformer_vision.data import (
    DataError,
    ImageFolderDataset,
    Transform,
    TransformError,
    augment_ops,
    apply_transform,
    build_transform,
    posterize,
    to_mode,
)
from crossformer_vision.train.config import list_recipes, resolve_recipe
from train_helpers import photo

MODES = ("RGB", "L", "RGBA", "P", "I;16", "CMYK")
SIZES = ((1, 1), (7, 5), (32, 32), (300, 200))


def _all_op_names():
    """Every op timm's RandAugment (all its lists) and AutoAugment (all its policies) can select."""
    names = set(timm_aa._RAND_TRANSFORMS) | set(timm_aa._RAND_INCREASING_TRANSFORMS) | set(timm_aa._RAND_3A)
    names |= set(timm_aa._RAND_WEIGHTED_0) | set(timm_aa._RAND_WEIGHTED_3A)
    for policy in ("v0", "v0r", "original", "originalr", "3a"):
        for sub_policy in timm_aa.auto_augment_policy(policy, dict(timm_aa._HPARAMS_DEFAULT)):
            names.update(op.name for op in sub_policy)
    return sorted(names)


OP_NAMES = _all_op_names()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second OpenMP thread only waits (and spins for long on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return {(mode, size): photo(1, size, mode, rng) for mode in MODES for size in SIZES}


#: The augmentation strings that reach every op above (checked below): the recipes' own first.
AUGMENT_STRINGS = ("rand-m9-mstd0.5-inc1", "rand-m9-mstd0.5", "original-mstd0.5", "v0", "3a", "rand-m9-t3aw")


def _augment_step(transform: Transform):
    steps = [s for s in transform.steps if type(s).__name__ in ("RandAugment", "AutoAugment", "AugMixAugment")]
    assert len(steps) == 1, transform
    return steps[0]


def _only(step, op):
    """Make the augmentation step apply ``op`` alone, every time."""
    if hasattr(step, "policy"):
        step.policy = [[op]]
    else:
        step.ops = [op]
        if hasattr(step, "num_layers"):
            step.num_layers = 1
            step.choice_weights = None


def _check(out, cfg):
    c, size = cfg["data"]["in_chans"], cfg["data"]["img_size"]
    assert isinstance(out, torch.Tensor) and out.shape == (c, size, size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def _transform_key(cfg):
    d, a = cfg["data"], cfg["aug"]
    return (d["img_size"], d["in_chans"], d["interpolation"], tuple(d["mean"]), tuple(d["std"]), d["crop_pct"],
            tuple(sorted((k, str(v)) for k, v in a.items())))


def _recipe(name):
    return resolve_recipe("classification", name, {"data.path": "unused"} if name != "digits" else {})


RECIPES = list_recipes()
_SWEPT = {}


def test_the_sweep_covers_every_recipe_and_op():
    assert {"digits", "folder", "crossformer_small", "crossformerpp_huge"} <= set(RECIPES) and len(RECIPES) >= 10
    cfg = _recipe("folder")
    reached = set()
    for text in AUGMENT_STRINGS:
        step = _augment_step(build_transform(cfg["data"], {**cfg["aug"], "auto_augment": text}, is_training=True))
        reached |= {op.name for op in augment_ops(step)}
    assert reached == set(OP_NAMES)
    assert {_recipe(r)["aug"]["auto_augment"] for r in RECIPES} <= {None, AUGMENT_STRINGS[0]}


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_op_at_every_magnitude_on_every_mode_and_size(recipe, images):
    """Exhaustive, not sampled: each op alone (probability 1, no noise) at magnitudes 0..10, then the recipe's own
    augmentation with its magnitude noise, on 6 modes x 4 sizes, through the factory's training and evaluation
    transforms. Recipes whose transforms are identical (same data and aug fields) share one sweep."""
    cfg = _recipe(recipe)
    evaluation = build_transform(cfg["data"], is_training=False)
    for image in images.values():
        _check(evaluation(image), cfg)
    key = _transform_key(cfg)
    if key in _SWEPT:
        return  # the very same transform as a recipe swept already
    done = set()
    for text in AUGMENT_STRINGS:
        training = build_transform(cfg["data"], {**cfg["aug"], "auto_augment": text}, is_training=True)
        step = _augment_step(training)
        # the factory's own steps in their order: those before the augmentation once per image, then each op, then
        # the rest (the same composition as training(image), without redoing the crop 264 times per image)
        at = training.steps.index(step)
        before, after = Transform(training.steps[:at]), Transform(training.steps[at + 1:])
        cropped = [before(image) for image in images.values()]
        for op in {op.name: op for op in augment_ops(step) if op.name not in done}.values():  # the factory's own
            done.add(op.name)  # (fixed) op objects; an op of the same name in a later string is the same function
            for magnitude in range(11):
                single = copy.copy(op)
                single.prob, single.magnitude, single.magnitude_std = 1.0, magnitude, 0
                for image in cropped:
                    _check(after(single(image)), cfg)
                _only(step, single)
                _check(training(images[("P", (7, 5))]), cfg)  # and once through the whole transform
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    own = build_transform(cfg["data"], cfg["aug"], is_training=True)  # as shipped (RandAugment only where it is on)
    noisy = build_transform(cfg["data"], {**cfg["aug"], "auto_augment": AUGMENT_STRINGS[0]}, is_training=True)
    for _ in range(20):  # 2 random ops per image, magnitude ~ N(9, 0.5) clipped to 10
        for image in images.values():
            _check(own(image), cfg)
            _check(noisy(image), cfg)
    assert done == set(OP_NAMES)
    _SWEPT[key] = recipe


def test_posterize_at_the_top_of_the_increasing_schedule_is_black():
    image = Image.fromarray(np.random.default_rng(0).integers(1, 255, (20, 30, 3), dtype=np.uint8))
    assert timm_aa._posterize_increasing_level_to_arg(10, {}) == (0,)  # inc1 at magnitude 10: keep 0 bits
    for mode in ("RGB", "L"):
        out = posterize(image.convert(mode), 0)
        assert out.mode == mode and out.size == (30, 20) and not np.asarray(out).any()
    assert np.array_equal(np.asarray(posterize(image, 4)), np.asarray(ImageOps.posterize(image, 4)))
    assert posterize(image, 8) is image
    op = timm_aa.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    try:
        timm_out = op(image)
    except ValueError as err:  # Pillow >= 13 refuses 0 bits: the failure the factory works around
        assert "bits must be between" in str(err)
    else:  # older Pillows returned the black image, which the fix keeps
        assert not np.asarray(timm_out).any()


def test_the_fix_is_local_to_our_transforms():
    cfg = _recipe("folder")
    before = dict(timm_aa.NAME_TO_OP)
    training = build_transform(cfg["data"], cfg["aug"], is_training=True)
    patched = [op for op in _augment_step(training).ops if op.name.startswith("Posterize")]
    assert patched and all(op.aug_fn is posterize for op in patched)
    assert timm_aa.NAME_TO_OP == before and timm_aa.NAME_TO_OP["PosterizeIncreasing"] is timm_aa.posterize
    fresh = timm_aa.rand_augment_transform("rand-m9-mstd0.5-inc1", {})
    assert all(op.aug_fn is timm_aa.posterize for op in fresh.ops if op.name.startswith("Posterize"))


def test_a_failing_step_is_named_with_the_recipe_field():
    cfg = _recipe("folder")
    training = build_transform(cfg["data"], cfg["aug"], is_training=True)

    def fail(self, image):
        raise RuntimeError("bad\nthing")

    training.steps.insert(3, type("ColorJitter", (), {"__call__": fail})())  # a step of that kind that fails
    with pytest.raises(TransformError, match=r"step ColorJitter failed \(RuntimeError: bad thing\); this step is set by "
                                             r"aug.color_jitter"):
        training(Image.new("RGB", (40, 40)))
    with pytest.raises(DataError, match=r"^cannot use image a/b.png: step ColorJitter failed"):
        apply_transform(training, "a/b.png", Image.new("RGB", (40, 40)))
    with pytest.raises(ValueError, match="aug.auto_augment='rand-m9-x3'"):
        build_transform(cfg["data"], {**cfg["aug"], "auto_augment": "rand-m9-x3"}, is_training=True)


def test_wide_pixels_are_scaled_not_clipped():
    ramp16 = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    out = np.asarray(to_mode(Image.fromarray(ramp16), "L"), dtype=np.int64)
    assert out.min() == 0 and out.max() == 255 and abs(out.mean() - 127.5) < 1  # convert("L") gives 99% white
    assert np.array_equal(out, np.rint(ramp16 / 257).astype(np.int64))
    unit = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    out = np.asarray(to_mode(Image.fromarray(unit, "F"), "RGB"), dtype=np.int64)
    assert out.shape == (16, 16, 3) and out.min() == 0 and out.max() == 255  # convert("RGB") gives black
    wide = (unit * 4000 - 1000).astype(np.float32)
    out = np.asarray(to_mode(Image.fromarray(wide, "F"), "L"), dtype=np.int64)
    assert out.min() == 0 and out.max() == 255  # any other float range: stretched to 0..255
    assert not np.asarray(to_mode(Image.fromarray(np.full((4, 4), 7, np.float32), "F"), "L")).any()
    palette = Image.new("RGB", (8, 8), (10, 200, 30)).convert("P")
    palette.info["transparency"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "palette images with transparency" warning: converted through RGBA
        assert to_mode(palette, "RGB").getpixel((0, 0)) == palette.convert("RGBA").getpixel((0, 0))[:3]
    assert to_mode(Image.new("RGB", (4, 4), (255, 0, 0)).convert("CMYK"), "RGB").getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(ValueError, match="cannot convert a La image to RGB"):  # a mode Pillow cannot convert
        to_mode(Image.new("La", (4, 4)), "RGB")


def test_16_bit_and_float_files_train_and_predict_with_their_real_brightness(tmp_path):
    from crossformer_vision.data import load_image

    rng = np.random.default_rng(0)
    reference = photo(0, (40, 30), "RGB", rng).convert("L")
    for mode, ext in (("I;16", ".png"), ("I;16", ".tif"), ("F", ".tif")):
        pixels = np.asarray(reference, dtype=np.float64)
        wide = Image.fromarray((pixels * 257).astype(np.uint16)) if mode == "I;16" else \
            Image.fromarray((pixels / 255).astype(np.float32), "F")
        wide.save(tmp_path / f"x{ext}")
        loaded = np.asarray(load_image(tmp_path / f"x{ext}", "L"), dtype=np.int64)
        assert np.abs(loaded - np.asarray(reference, dtype=np.int64)).max() <= 1, (mode, ext)
    (tmp_path / "data" / "a").mkdir(parents=True)
    reference.save(tmp_path / "data" / "a" / "eight.png")
    Image.fromarray((np.asarray(reference, dtype=np.float64) * 257).astype(np.uint16)).save(tmp_path / "data" / "a" / "wide.png")
    cfg = _recipe("folder")
    dataset = ImageFolderDataset(tmp_path / "data", build_transform(cfg["data"], is_training=False))
    eight, wide = (dataset[i][0] for i in range(2))
    assert torch.allclose(eight, wide, atol=0.02)  # the same picture, whatever its bit depth
