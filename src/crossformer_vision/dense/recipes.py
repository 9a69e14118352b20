"""Detection and segmentation recipes as data: defaults, ``configs/dense/*.yaml``, overrides, validation.

A dense recipe has the sections of :data:`DENSE_DEFAULTS`. ``model`` is free-form: it is
:func:`crossformer_vision.dense.build_model`'s argument (``arch``, ``backbone``, ``num_classes`` and the
builder's keyword arguments). The other sections have fixed fields, checked like the classification
recipes' (:mod:`crossformer_vision.recipes`, whose YAML loading and override parsing this module reuses)::

    cfg = resolve_dense_config("detection", "retinanet_crossformer_small_coco_1x",
                               ["data.root=/data/coco", "train.batch_size=8", "model.kwargs.min_size=640"])

Overrides are ``section.field=value`` (values parsed as YAML); inside free-form mappings any depth works
(``model.backbone_kwargs.drop_path_rate=0.1``, ``data.synthetic.num_train=50``).
"""
import copy
import difflib
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from ..recipes import _SCIENTIFIC, _split_override, _suggest, _type_ok, load_recipe, merge

__all__ = ["DEMO_RECIPES", "DENSE_DEFAULTS", "RESUME_OVERRIDABLE", "apply_dense_overrides", "resolve_dense_config",
           "validate_dense_config"]

Config = Dict[str, Any]

#: The recipe each command uses when none is given (the synthetic-shapes demos).
DEMO_RECIPES = {"detection": "detection_demo", "segmentation": "segmentation_demo"}

#: Every field of a dense recipe with its default. ``model``, ``paper``, ``data.train``/``data.val`` and
#: ``data.synthetic`` are free-form mappings.
DENSE_DEFAULTS: Config = {
    "task": None,  # "detection" or "segmentation"
    "model": {},  # dense.build_model's argument: arch, backbone, num_classes (null: from the data), builder options
    "pretrained": None,  # backbone weights: official ImageNet checkpoint (crossformer-s.pth) or ours
    "weights": None,  # complete-model weights to start from: official mmdet/mmseg file or one of our runs' .pth
    "data": {
        "format": "synthetic",  # "synthetic" (built-in shapes), "coco", "ade20k", "folder" (images/ + labels/)
        "root": None,  # dataset folder (synthetic: where it is generated; null: a cache folder)
        "train_split": None,  # null: train2017/train (coco), training (ade20k), train (folder, synthetic)
        "val_split": None,  # null: val2017/val, validation, val
        "train": None,  # explicit {images, annotations} (coco) or {images, labels} (folder); null: from root
        "val": None,
        "masks": False,  # instance masks (Mask R-CNN)
        "hflip": 0.5,
        "reduce_zero_label": False,  # label 0 is "unlabelled" (ADE20K)
        "ignore_index": 255,
        "crop_size": [512, 512],  # segmentation training crops (height, width)
        "short_side_range": [256, 1024],  # segmentation training rescale
        "photometric": True,  # segmentation colour jitter
        "test_short_side": None,  # segmentation evaluation: resize the short side to this (null: as is)
        "test_max_long_side": None,
        "check_labels": True,  # read every label PNG before training (class ids out of range fail early)
        "skip_missing_images": False,  # coco: drop images whose file is missing instead of failing
        "synthetic": {"num_train": 200, "num_val": 50, "image_size": [128, 192], "max_objects": 4,
                      "colour_by_class": True, "seed": 0},
        "workers": 2,
    },
    "loss": {"aux_weight": 0.4},  # segmentation: weight of the auxiliary head's loss
    "optim": {
        "opt": "adamw",  # any timm optimizer name
        "lr": 1e-4,  # as given (not scaled with the batch, as in mmdet/mmseg)
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "no_weight_decay": [],  # parameter-name substrings without weight decay (mmcv custom_keys decay_mult 0)
        "clip_grad": None,
    },
    "sched": {
        "name": "step",  # "step" (milestones), "poly" or "constant"
        "milestones": [],  # step: epochs (train.epochs) or iterations (train.iterations) where lr x gamma
        "gamma": 0.1,
        "power": 1.0,  # poly
        "min_lr": 0.0,  # poly
        "per_iteration": True,
        "warmup": None,  # null or "linear"
        "warmup_iters": 0,
        "warmup_ratio": 0.001,  # warmup starts at lr x warmup_ratio
    },
    "train": {
        "epochs": None,  # training length in epochs (detection recipes) ...
        "iterations": None,  # ... or in iterations (segmentation recipes); exactly one is set
        "batch_size": 2,  # global: all processes
        "seed": 0,
        "device": "auto",
        "threads": None,  # CPU threads per process; null: the cores / local processes
        "amp": "none",  # "none", "fp16", "bf16" (CUDA)
        "sync_bn": True,  # SyncBatchNorm under DDP on CUDA
    },
    "eval": {
        "metrics": [],  # informational: bbox, segm, mIoU
        "interval": None,  # iterations between evaluations with train.iterations (null: 10 evaluations)
        "batch_size": None,  # per process; null: 2 (detection) / 1 (segmentation: full images)
        "best_metric": None,  # column of metrics.csv that makes best.pth (higher is better); null: box AP / mIoU
    },
    "log": {"output": "runs", "name": None, "progress": True, "tensorboard": "auto"},
    "paper": {},  # the paper's numbers for this recipe (informational)
}

_FREE_FORM = ("model", "paper")
_FREE_FIELDS = ("data.train", "data.val", "data.synthetic")

#: Fields ``--resume`` accepts new values for.
RESUME_OVERRIDABLE = ("data.root", "data.train", "data.val", "data.workers", "data.check_labels",
                      "data.skip_missing_images", "data.hflip", "data.photometric", "data.short_side_range",
                      "data.crop_size", "train.seed", "train.device", "train.threads", "eval.batch_size",
                      "log.progress", "log.tensorboard")

_CHOICES: Dict[str, Sequence[Any]] = {
    "task": ("detection", "segmentation"),
    "data.format": ("synthetic", "coco", "ade20k", "folder"),
    "sched.name": ("step", "poly", "constant"),
    "sched.warmup": (None, "linear"),
    "train.amp": ("none", "fp16", "bf16"),
    "train.device": ("auto", "cpu", "cuda"),
    "log.tensorboard": ("auto", True, False),
}
_POSITIVE = ("train.epochs", "train.iterations", "train.batch_size", "eval.interval", "eval.batch_size")
_FLOAT_OR_NONE = ("optim.clip_grad",)


def _all_keys() -> list:
    return [k for k, v in DENSE_DEFAULTS.items() if not isinstance(v, dict) or k in _FREE_FORM] + [
        f"{s}.{f}" for s, fields in DENSE_DEFAULTS.items() if isinstance(fields, dict) and s not in _FREE_FORM for f in fields]


def apply_dense_overrides(cfg: Config, overrides: Union[Sequence[str], Mapping[str, Any]]) -> Config:
    """Set fields from ``["section.field=value", ...]`` or ``{"section.field": value}``.

    Raises:
        ValueError: a malformed item or an unknown key (with close matches).
    """
    cfg = copy.deepcopy(cfg)
    items = overrides.items() if isinstance(overrides, Mapping) else [_split_override(o) for o in overrides]
    for key, value in items:
        parts = key.split(".")
        section = parts[0]
        known = section in DENSE_DEFAULTS and (
            len(parts) == 1 and not isinstance(DENSE_DEFAULTS[section], dict)
            or section in _FREE_FORM and len(parts) > 1
            or len(parts) >= 2 and isinstance(DENSE_DEFAULTS[section], dict) and parts[1] in DENSE_DEFAULTS[section]
            and (len(parts) == 2 or f"{section}.{parts[1]}" in _FREE_FIELDS))
        if not known:
            raise ValueError(f"unknown config key {key!r}{_suggest(key, _all_keys())} (keys are section.field, see "
                             "docs/dense.md; model.* takes any builder argument)")
        node = cfg
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return cfg


def validate_dense_config(cfg: Config) -> Config:
    """Check every field's presence, type and range (see :data:`DENSE_DEFAULTS`); return ``cfg``.

    Raises:
        ValueError: the first problem found, naming the field, what was expected and how to fix it.
    """
    for section, value in cfg.items():
        if section not in DENSE_DEFAULTS:
            raise ValueError(f"unknown config section {section!r}{_suggest(section, list(DENSE_DEFAULTS))}; "
                             f"sections are {', '.join(DENSE_DEFAULTS)}")
        default = DENSE_DEFAULTS[section]
        if not isinstance(default, dict):
            continue
        if not isinstance(value, Mapping):
            raise ValueError(f"config section {section!r} must be a mapping, got {value!r}")
        if section in _FREE_FORM:
            continue
        for field, v in value.items():
            key = f"{section}.{field}"
            if field not in default:
                raise ValueError(f"unknown config key {key!r}{_suggest(key, _all_keys())}")
            if isinstance(v, str) and (isinstance(default[field], float) or key in _FLOAT_OR_NONE) and _SCIENTIFIC.match(v):
                v = value[field] = float(v)  # YAML 1.1 reads 1e-3 (no dot) as a string
            if key in _FREE_FIELDS:
                if v is not None and not isinstance(v, Mapping):
                    raise ValueError(f"config {key} must be a mapping, got {v!r}")
            elif key not in _CHOICES and not _type_ok(default[field], v):
                raise ValueError(f"config {key} must be {type(default[field]).__name__} like {default[field]!r}, got {v!r}")
    for key, choices in _CHOICES.items():
        section, _, field = key.partition(".")
        value = cfg[section][field] if field else cfg[section]
        if value not in choices:
            raise ValueError(f"config {key} must be one of {list(choices)}, got {value!r}")
    for key in _POSITIVE:
        section, field = key.split(".")
        value = cfg[section][field]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"config {key} must be a positive integer, got {value!r}")
    train = cfg["train"]
    if (train["epochs"] is None) == (train["iterations"] is None):
        raise ValueError("set exactly one of train.epochs and train.iterations (the other null), got "
                         f"epochs={train['epochs']!r}, iterations={train['iterations']!r}")
    model = cfg["model"]
    from . import ARCHITECTURES, TASKS

    if model.get("arch") not in ARCHITECTURES:
        close = difflib.get_close_matches(str(model.get("arch")), list(ARCHITECTURES), n=2, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"config model.arch must be one of {sorted(ARCHITECTURES)}, got {model.get('arch')!r}{hint}")
    if cfg["task"] is not None and TASKS[model["arch"]] != cfg["task"]:
        other = "segment" if cfg["task"] == "detection" else "detect"
        raise ValueError(f"model.arch={model['arch']} is a {TASKS[model['arch']]} model, but this recipe is for "
                         f"{cfg['task']}; use `crossformer {other} train` or a {cfg['task']} recipe")
    data = cfg["data"]
    valid_formats = ("synthetic", "coco") if TASKS[model["arch"]] == "detection" else ("synthetic", "ade20k", "folder")
    if data["format"] not in valid_formats:
        raise ValueError(f"data.format={data['format']!r} does not fit a {TASKS[model['arch']]} model; use one of "
                         f"{list(valid_formats)}")
    if data["format"] != "synthetic" and not data["root"] and not (data["train"] and data["val"]):
        raise ValueError(f"data.format={data['format']} needs a dataset: give --data FOLDER (or data.root=..., or "
                         f"data.train / data.val paths)")
    if data["masks"] and model["arch"] != "maskrcnn":
        raise ValueError(f"data.masks=true needs model.arch=maskrcnn, got {model['arch']}")
    for key in ("crop_size", "short_side_range"):
        if len(data[key]) != 2:
            raise ValueError(f"config data.{key} must be two numbers, got {data[key]!r}")
    sched = cfg["sched"]
    if sched["warmup"] == "linear" and not 0 < sched["warmup_ratio"] <= 1:
        raise ValueError(f"config sched.warmup_ratio must be in (0, 1], got {sched['warmup_ratio']!r}")
    return cfg


def resolve_dense_config(
    task: str,
    recipe: Optional[Union[str, "os.PathLike[str]", Mapping[str, Any]]] = None,
    overrides: Union[Sequence[str], Mapping[str, Any]] = (),
) -> Config:
    """Defaults, then a recipe (name in ``configs/dense/``, YAML path or dict), then overrides; validated.

    Args:
        task: ``"detection"`` or ``"segmentation"``: the command's task (a recipe for the other is refused).
        recipe: Recipe; None: the task's demo (:data:`DEMO_RECIPES`).
        overrides: ``["optim.lr=1e-3", ...]`` or ``{"optim.lr": 1e-3}``.
    """
    if recipe is None:
        recipe = DEMO_RECIPES[task]
    data = dict(recipe) if isinstance(recipe, Mapping) else load_recipe(recipe, subdir="dense")
    unknown = [s for s in data if s not in DENSE_DEFAULTS]
    if unknown:
        raise ValueError(f"unknown config section {unknown[0]!r}{_suggest(unknown[0], list(DENSE_DEFAULTS))}; "
                         f"sections are {', '.join(DENSE_DEFAULTS)} (is this a classification recipe?)")
    if data.get("task") not in (None, task):
        other = "segment" if task == "detection" else "detect"
        raise ValueError(f"recipe {recipe} is a {data['task']} recipe; use `crossformer {other} train` for it")
    cfg = merge(DENSE_DEFAULTS, data)
    for key in ("model", "paper"):  # free-form: the recipe's own, not merged into an empty default
        cfg[key] = copy.deepcopy(dict(data.get(key) or {}))
    cfg["task"] = task
    cfg = apply_dense_overrides(cfg, overrides)
    return validate_dense_config(cfg)
