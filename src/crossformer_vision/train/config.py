"""Recipes as data, one mechanism for every task: defaults, YAML recipes, ``section.field=value`` overrides, checks.

A recipe is a nested dict. Each task has one defaults table (:data:`CLASSIFICATION_DEFAULTS`,
:data:`DETECTION_DEFAULTS`, :data:`SEGMENTATION_DEFAULTS`); a YAML file under ``configs/`` (classification) or
``configs/dense/`` names only what differs from it. :func:`resolve_recipe` merges a recipe over the task's
defaults, applies overrides (values parsed as YAML) and checks every field, so a typo fails before anything
runs::

    cfg = resolve_recipe("classification", "crossformer_small", ["data.path=/data/imagenet", "train.epochs=30"])
    cfg = resolve_recipe("detection", "retinanet_crossformer_small_coco_1x", ["data.root=/data/coco"])

The sections the training loop reads are the same in every task: ``train`` (length, batch, accumulation,
precision, compile, EMA, seed, device), ``eval`` (interval, batch, the metric that makes ``best.pth``) and
``log``. The rest is the task's: ``model``, ``data``, ``aug``/``loss``, ``optim``, ``sched``. Free-form
sections (a dense ``model``: the builder's arguments) take any nested key (``model.kwargs.min_size=640``).
"""
import copy
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..models import MODELS

__all__ = [
    "CLASSIFICATION_DEFAULTS",
    "DETECTION_DEFAULTS",
    "SCHEMAS",
    "SEGMENTATION_DEFAULTS",
    "Schema",
    "apply_overrides",
    "find_recipe",
    "list_recipes",
    "load_recipe",
    "merge",
    "plain",
    "resolve_recipe",
    "resume_changes",
    "split_override",
    "upgrade_config",
    "validate_recipe",
]

Config = Dict[str, Any]

#: Loop fields every task's ``train``, ``eval`` and ``log`` sections have (the task's defaults may differ).
_LOOP_TRAIN = {
    "epochs": None,  # length in epochs ...
    "iterations": None,  # ... or in optimizer steps (detection/segmentation recipes); exactly one is set
    "batch_size": 64,  # global: all processes and accumulation steps of one optimizer step
    "accum_steps": 1,
    "amp": "none",  # mixed precision on CUDA: "fp16", "bf16" or "none" (CPU runs in float32)
    "compile": False,  # torch.compile the model
    "ema": False,  # keep an exponential moving average of the weights, evaluated beside them
    "ema_decay": 0.9998,
    "seed": 0,
    "device": "auto",  # "auto", "cpu", "cuda"
    "threads": None,  # CPU threads per process; None: the cores available / local processes
    "reuse_memory": True,  # CPU: the process keeps freed memory for reuse (faster steps, resident size stays at peak)
}
_LOOP_EVAL = {
    "interval": None,  # with train.iterations: optimizer steps between evaluations (None: 10 evaluations)
    "batch_size": None,  # per process; None: the task's
    "best_metric": None,  # metrics.csv column that makes best.pth; None: the task's headline metric
}
_LOG = {
    "output": "runs",  # runs are written to output/name
    "name": None,  # None: <model>-<data>-<date-time>
    "progress": True,  # progress bar per round on a terminal (a line per round is always printed)
    "tensorboard": "auto",  # "auto": when tensorboard is installed; true; false
}
_LOOP_CHOICES = {
    "train.amp": ("none", "fp16", "bf16"),
    "train.device": ("auto", "cpu", "cuda"),
    "log.tensorboard": ("auto", True, False),
}
_LOOP_POSITIVE = ("train.epochs", "train.iterations", "train.batch_size", "train.accum_steps", "eval.interval",
                  "eval.batch_size")


def _loop(train: Mapping[str, Any] = (), evaluation: Mapping[str, Any] = ()) -> Config:
    return {"train": {**_LOOP_TRAIN, **dict(train)}, "eval": {**_LOOP_EVAL, **dict(evaluation)}, "log": dict(_LOG)}


#: Classification: every field with its default, the papers' ImageNet recipe for CrossFormer-S.
CLASSIFICATION_DEFAULTS: Config = {
    "model": {
        "name": "crossformer_small",  # registered model (crossformer info), or a label for model.arch
        "arch": None,  # CrossFormer keyword arguments for an unregistered configuration
        "pretrained": None,  # weights to start from: official checkpoint or one of ours (.pth/.safetensors)
        "drop_path_rate": None,  # None: the variant's own
        "drop_rate": 0.0,  # dropout before the classifier
        "grad_checkpointing": False,
    },
    "data": {
        "dataset": "folder",  # "folder" (ImageFolder layout under data.path) or "digits" (scikit-learn)
        "path": None,
        "train_split": "train",
        "val_split": "val",
        "test_split": "test",  # evaluated with the best checkpoint at the end, when it exists
        "img_size": 224,
        "in_chans": 3,
        "crop_pct": 0.875,  # evaluation: resize to img_size / crop_pct, centre crop img_size
        "interpolation": "bicubic",
        "mean": list(IMAGENET_DEFAULT_MEAN),
        "std": list(IMAGENET_DEFAULT_STD),
        "workers": 4,
        "verify": "header",  # "header": open every image's header at start, "full": decode all, "none"
    },
    "aug": {
        "scale": [0.08, 1.0],
        "ratio": [0.75, 1.3333333],
        "hflip": 0.5,
        "vflip": 0.0,
        "color_jitter": 0.4,
        "auto_augment": "rand-m9-mstd0.5-inc1",  # timm string; null for none
        "reprob": 0.25,
        "remode": "pixel",
        "recount": 1,
        "mixup": 0.8,
        "cutmix": 1.0,
        "cutmix_minmax": None,
        "mixup_prob": 1.0,
        "mixup_switch_prob": 0.5,
        "mixup_mode": "batch",
        "smoothing": 0.1,
    },
    "optim": {
        "opt": "adamw",  # any timm.optim.create_optimizer_v2 name
        "lr": 5e-4,  # at a global batch of lr_base_batch; scaled linearly with train.batch_size
        "warmup_lr": 5e-7,  # scaled the same way
        "min_lr": 5e-6,  # scaled the same way
        "lr_base_batch": 512,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "momentum": 0.9,  # SGD-like optimizers only
        "weight_decay": 0.05,  # none on norms, biases and position tables
        "layer_decay": None,  # layer-wise lr decay (fine-tuning)
        "clip_grad": 5.0,  # max gradient norm; null for none
    },
    "sched": {
        "name": "cosine",  # any timm.scheduler.create_scheduler_v2 name
        "warmup_epochs": 20,
        "warmup_prefix": False,  # False: warmup is part of train.epochs (official)
        "max_warmup_fraction": 0.1,  # a short run warms up for at most this share of its length; null: as given
        "cooldown_epochs": 0,
        "per_iteration": True,  # update the lr after every optimizer step
    },
    **_loop(dict(epochs=300, batch_size=1024, amp="fp16"), dict(best_metric="val_top1")),
}

#: Detection: every field with its default (a free-form ``model``: :func:`crossformer_vision.dense.build_model`'s
#: arguments; learning rates as given, not scaled with the batch, as in mmdetection).
DETECTION_DEFAULTS: Config = {
    "task": "detection",
    "model": {},  # dense.build_model's argument: arch, backbone, num_classes (null: from the data), builder options
    "pretrained": None,  # backbone weights: official ImageNet checkpoint (crossformer-s.pth) or ours
    "weights": None,  # complete-model weights to start from: official mmdet/mmseg file or one of our runs' .pth
    "data": {
        "format": "synthetic",  # "synthetic" (built-in shapes), "coco"; segmentation: also "ade20k", "folder"
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
        "test_scales": [1.0],  # segmentation evaluation at these factors of that size (MS test: 0.5 ... 1.75)
        "test_flip": False,  # ... and on the mirrored images too (probabilities averaged, as mmseg's aug test)
        "test_mode": "whole",  # "whole" image, or "slide": windows of test_window every test_stride pixels
        "test_window": None,  # [height, width] of the sliding windows (the training crop, e.g. [512, 512])
        "test_stride": None,  # [height, width] between windows (null: two thirds of the window)
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
    **_loop(dict(batch_size=2, sync_bn=True), dict(metrics=[])),  # sync_bn: SyncBatchNorm under DDP on CUDA
    "paper": {},  # the paper's numbers for this recipe (informational)
}

#: Segmentation: the same fields as detection (one table for the dense tasks, ``task`` tells them apart).
SEGMENTATION_DEFAULTS: Config = {**copy.deepcopy(DETECTION_DEFAULTS), "task": "segmentation"}


@dataclass(frozen=True)
class Schema:
    """What one task's recipes may hold and how they are checked.

    Attributes:
        defaults: Every field with its default.
        subdir: Folder of ``configs/`` with the task's recipes (``""``: ``configs/`` itself).
        demo: The recipe used when none is given.
        choices: ``"section.field"`` -> allowed values.
        positive: Fields that must be positive integers (when not null).
        float_or_none: Fields whose default is null but take a float (``1e-3`` strings are read as floats).
        free_form: Sections that take any nested keys (a dense ``model``: builder arguments).
        free_fields: Fields that are free-form mappings.
        resume_overridable: Fields ``--resume`` accepts new values for (``section.*``: the whole section).
        legacy: Values that reproduce the behaviour of saved recipes from before a field existed.
        aliases: Former field names -> current ones (accepted in recipes and overrides, and in saved runs).
        check: The task's own checks of a merged recipe (raise ``ValueError``).
    """

    defaults: Config
    subdir: str
    demo: str
    choices: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    positive: Sequence[str] = ()
    float_or_none: Sequence[str] = ()
    free_form: Sequence[str] = ()
    free_fields: Sequence[str] = ()
    resume_overridable: Sequence[str] = ()
    legacy: Mapping[str, Any] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    check: Optional[Callable[[Config], None]] = None

    def keys(self) -> List[str]:
        """Every ``section.field`` (and top-level scalar / free-form section name), for suggestions."""
        out = []
        for section, fields in self.defaults.items():
            if isinstance(fields, dict) and section not in self.free_form:
                out += [f"{section}.{f}" for f in fields]
            else:
                out.append(section)
        return out


_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


# ---------------------------------------------------------------------------------------------- files
def _config_dirs(subdir: str = "") -> List[Path]:
    dirs = []
    if os.environ.get("CROSSFORMER_CONFIGS"):
        dirs.append(Path(os.environ["CROSSFORMER_CONFIGS"]) / subdir)
    dirs.append(Path(__file__).resolve().parents[3] / "configs" / subdir)  # source checkout / editable install
    dirs.append(Path.cwd() / "configs" / subdir)
    return dirs


def list_recipes(subdir: str = "") -> List[str]:
    """Names of the recipes found in ``configs/`` (``$CROSSFORMER_CONFIGS`` first), or in ``configs/<subdir>/``."""
    names = set()
    for folder in _config_dirs(subdir):
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def find_recipe(name_or_path: Union[str, "os.PathLike[str]"], subdir: str = "") -> Path:
    """Path of a recipe given as a YAML file or a name from :func:`list_recipes` (of ``configs/<subdir>/``).

    Raises:
        FileNotFoundError: neither a file nor a known recipe name (close names are suggested).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    for folder in _config_dirs(subdir):
        candidate = folder / f"{path.name}.yaml"
        if path.suffix == "" and candidate.is_file():
            return candidate
    known = list_recipes(subdir)
    close = difflib.get_close_matches(str(name_or_path), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise FileNotFoundError(
        f"recipe {str(name_or_path)!r} not found{hint} Give a YAML file or one of: {', '.join(known) or '(none found)'}"
    )


def load_recipe(name_or_path: Union[str, "os.PathLike[str]"], subdir: str = "") -> Config:
    """Read a recipe YAML (only the fields it sets); ``subdir`` as :func:`find_recipe`."""
    path = find_recipe(name_or_path, subdir)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ValueError(f"recipe {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a mapping of sections (model:, data:, ...), got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------- merging
def plain(obj: Any) -> Any:
    """``obj`` with tuples as lists, recursively: what YAML and JSON write (a recipe, a build config)."""
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def merge(base: Mapping[str, Any], update: Mapping[str, Any], replace: Sequence[str] = ("arch",)) -> Config:
    """Recursive dict merge: ``update``'s values win; nested dicts merge except under the keys in ``replace``."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in replace:
            out[key] = merge(out[key], value, replace)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def split_override(item: str) -> Tuple[str, Any]:
    """``"section.field=value"`` -> ``("section.field", value parsed as YAML)``.

    Raises:
        ValueError: not of that form.
    """
    key, sep, text = item.partition("=")
    if not sep or not key or "." not in key:
        raise ValueError(f"override {item!r} must look like section.field=value, e.g. optim.lr=1e-3 or train.epochs=10")
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _known(schema: Schema, parts: Sequence[str]) -> bool:
    defaults, section = schema.defaults, parts[0]
    if section not in defaults:
        return False
    if not isinstance(defaults[section], dict):
        return len(parts) == 1
    if section in schema.free_form:
        return len(parts) > 1
    return len(parts) >= 2 and parts[1] in defaults[section] and (
        len(parts) == 2 or f"{section}.{parts[1]}" in schema.free_fields)


def apply_overrides(cfg: Config, overrides: Union[Sequence[str], Mapping[str, Any]], schema: Schema) -> Config:
    """Set fields from ``["section.field=value", ...]`` or ``{"section.field": value}`` (any depth in free-form
    sections and fields); former field names are accepted (:attr:`Schema.aliases`).

    Raises:
        ValueError: a malformed item or an unknown key (with close matches).
    """
    cfg = copy.deepcopy(cfg)
    items = overrides.items() if isinstance(overrides, Mapping) else [split_override(o) for o in overrides]
    for key, value in items:
        key = schema.aliases.get(key, key)
        parts = key.split(".")
        if not _known(schema, parts):
            raise ValueError(f"unknown config key {key!r}{_suggest(key, schema.keys())} (keys are section.field; see "
                             f"docs/training.md, docs/dense.md)")
        node = cfg
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return cfg


def _renamed(data: Mapping[str, Any], schema: Schema) -> Config:
    """``data`` with former field names (:attr:`Schema.aliases`) moved to the current ones."""
    out = copy.deepcopy(dict(data))
    for old, new in schema.aliases.items():
        (old_section, old_field), (new_section, new_field) = old.split(".", 1), new.split(".", 1)
        section = out.get(old_section)
        if isinstance(section, dict) and old_field in section:
            out.setdefault(new_section, {})[new_field] = section.pop(old_field)
    return out


# ---------------------------------------------------------------------------------------------- checking
def _type_ok(default: Any, value: Any) -> bool:
    if value is None or default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def validate_recipe(cfg: Config, schema: Schema) -> Config:
    """Check every field's presence, type and range, then the task's own rules; return ``cfg``.

    Raises:
        ValueError: the first problem found, naming the field, what was expected and how to fix it.
    """
    defaults = schema.defaults
    for section, fields in cfg.items():
        if section not in defaults:
            raise ValueError(f"unknown config section {section!r}{_suggest(section, list(defaults))}; "
                             f"sections are {', '.join(defaults)}")
        default = defaults[section]
        if not isinstance(default, dict) or section in schema.free_form:
            if isinstance(default, dict) and not isinstance(fields, Mapping):
                raise ValueError(f"config section {section!r} must be a mapping, got {fields!r}")
            continue
        if not isinstance(fields, Mapping):
            raise ValueError(f"config section {section!r} must be a mapping, got {fields!r}")
        for name, value in fields.items():
            key = f"{section}.{name}"
            if name not in default:
                raise ValueError(f"unknown config key {key!r}{_suggest(key, schema.keys())}")
            if isinstance(value, str) and (isinstance(default[name], float) or key in schema.float_or_none) \
                    and _SCIENTIFIC.match(value):
                value = fields[name] = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
            if key in schema.free_fields:
                if value is not None and not isinstance(value, Mapping):
                    raise ValueError(f"config {key} must be a mapping, got {value!r}")
            elif key not in schema.choices and not _type_ok(default[name], value):
                raise ValueError(f"config {key} must be {type(default[name]).__name__} like {default[name]!r}, "
                                 f"got {value!r}")
    for key, choices in schema.choices.items():
        section, _, name = key.partition(".")
        value = cfg[section][name] if name else cfg[section]
        if value not in choices:
            raise ValueError(f"config {key} must be one of {list(choices)}, got {value!r}")
    for key in schema.positive:
        section, name = key.split(".")
        value = cfg[section][name]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"config {key} must be positive (an integer), got {value!r}")
    train = cfg["train"]
    if train["batch_size"] % train["accum_steps"]:
        raise ValueError(f"train.batch_size ({train['batch_size']}) must be a multiple of train.accum_steps "
                         f"({train['accum_steps']})")
    if schema.check is not None:
        schema.check(cfg)
    return cfg


def _check_classification(cfg: Config) -> None:
    model, data, train, sched = cfg["model"], cfg["data"], cfg["train"], cfg["sched"]
    if model["arch"] is not None and not isinstance(model["arch"], Mapping):
        raise ValueError(f"config model.arch must be a mapping of CrossFormer arguments, got {model['arch']!r}")
    if model["arch"] is None and model["name"] not in MODELS:
        close = difflib.get_close_matches(str(model["name"]), list(MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {model['name']!r}{hint} Available: {', '.join(MODELS)} (or give model.arch)")
    if data["dataset"] == "folder" and not data["path"]:
        raise ValueError("no dataset: give --data PATH (a folder with train/ and val/, one subfolder per class) "
                         "or use the built-in digits recipe (crossformer train with no --config)")
    for key in ("mean", "std"):
        if len(data[key]) != data["in_chans"]:
            raise ValueError(f"config data.{key} needs {data['in_chans']} values (data.in_chans), got {data[key]!r}")
    if not 0.0 < data["crop_pct"] <= 1.0:
        raise ValueError(f"config data.crop_pct must be in (0, 1], got {data['crop_pct']!r}")
    if train["epochs"] is None or train["iterations"] is not None:
        raise ValueError("classification recipes count in epochs: set train.epochs (and leave train.iterations null)")
    if cfg["eval"]["best_metric"] not in (None, "val_top1", "val_loss", "val_top1_ema", "val_loss_ema"):
        raise ValueError(f"config eval.best_metric must be val_top1 or val_loss (or their _ema columns), got "
                         f"{cfg['eval']['best_metric']!r}")
    if sched["warmup_epochs"] < 0:
        raise ValueError(f"config sched.warmup_epochs must be >= 0, got {sched['warmup_epochs']!r}")
    fraction = sched["max_warmup_fraction"]
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"config sched.max_warmup_fraction must be in [0, 1] or null, got {fraction!r}")
    if sched["warmup_epochs"] > train["epochs"] and not sched["warmup_prefix"] and fraction is None:
        raise ValueError(f"sched.warmup_epochs ({sched['warmup_epochs']}) is longer than train.epochs "
                         f"({train['epochs']}) and sched.max_warmup_fraction is null; lower the warm-up or set "
                         f"sched.max_warmup_fraction=0.1")


def _check_dense(cfg: Config) -> None:
    from ..dense import ARCHITECTURES, TASKS

    train, model, data = cfg["train"], cfg["model"], cfg["data"]
    if (train["epochs"] is None) == (train["iterations"] is None):
        raise ValueError("set exactly one of train.epochs and train.iterations (the other null), got "
                         f"epochs={train['epochs']!r}, iterations={train['iterations']!r}")
    if model.get("arch") not in ARCHITECTURES:
        close = difflib.get_close_matches(str(model.get("arch")), list(ARCHITECTURES), n=2, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"config model.arch must be one of {sorted(ARCHITECTURES)}, got {model.get('arch')!r}{hint}")
    if TASKS[model["arch"]] != cfg["task"]:
        other = "segment" if cfg["task"] == "detection" else "detect"
        raise ValueError(f"model.arch={model['arch']} is a {TASKS[model['arch']]} model, but this recipe is for "
                         f"{cfg['task']}; use `crossformer {other} train` or a {cfg['task']} recipe")
    valid_formats = ("synthetic", "coco") if cfg["task"] == "detection" else ("synthetic", "ade20k", "folder")
    if data["format"] not in valid_formats:
        raise ValueError(f"data.format={data['format']!r} does not fit a {cfg['task']} model; use one of "
                         f"{list(valid_formats)}")
    if data["format"] != "synthetic" and not data["root"] and not (data["train"] and data["val"]):
        raise ValueError(f"data.format={data['format']} needs a dataset: give --data FOLDER (or data.root=..., or "
                         f"data.train / data.val paths)")
    if data["masks"] and model["arch"] != "maskrcnn":
        raise ValueError(f"data.masks=true needs model.arch=maskrcnn, got {model['arch']}")
    for key in ("crop_size", "short_side_range"):
        if len(data[key]) != 2:
            raise ValueError(f"config data.{key} must be two numbers, got {data[key]!r}")
    for key in ("test_window", "test_stride"):
        if data[key] is not None and (len(data[key]) != 2 or min(data[key]) < 1):
            raise ValueError(f"config data.{key} must be [height, width] of at least 1 pixel, got {data[key]!r}")
    if data["test_mode"] == "slide" and data["test_window"] is None:
        raise ValueError("data.test_mode=slide needs data.test_window=[height, width] (e.g. the training crop)")
    if not data["test_scales"] or any(not (isinstance(v, (int, float)) and v > 0) for v in data["test_scales"]):
        raise ValueError(f"config data.test_scales must be positive numbers, got {data['test_scales']!r}")
    sched = cfg["sched"]
    if sched["warmup"] == "linear" and not 0 < sched["warmup_ratio"] <= 1:
        raise ValueError(f"config sched.warmup_ratio must be in (0, 1], got {sched['warmup_ratio']!r}")


_CLASSIFICATION = Schema(
    defaults=CLASSIFICATION_DEFAULTS,
    subdir="",
    demo="digits",
    choices={
        **_LOOP_CHOICES,
        "data.dataset": ("folder", "digits"),
        "data.verify": ("header", "full", "none"),
        "data.interpolation": ("bilinear", "bicubic", "nearest", "random"),
        "data.in_chans": (1, 3),
        "aug.remode": ("pixel", "rand", "const"),
        "aug.mixup_mode": ("batch", "pair", "elem"),
    },
    positive=(*_LOOP_POSITIVE, "data.img_size", "optim.lr_base_batch"),
    float_or_none=("model.drop_path_rate", "optim.layer_decay", "optim.clip_grad", "sched.max_warmup_fraction"),
    # where the data lives and how it is read, the augmentation (a run stopped by a bad augmentation can
    # finish with another), the seed, how the run is shown: not the model, optimizer, schedule or batch
    resume_overridable=("data.path", "data.workers", "data.verify", "aug.*", "train.seed", "train.device",
                        "train.threads", "train.reuse_memory", "eval.batch_size", "log.progress", "log.tensorboard"),
    legacy={"sched.max_warmup_fraction": None},
    aliases={"train.eval_batch_size": "eval.batch_size", "train.best_metric": "eval.best_metric"},
    check=_check_classification,
)
_DENSE_COMMON = dict(
    subdir="dense",
    choices={
        **_LOOP_CHOICES,
        "task": ("detection", "segmentation"),
        "data.format": ("synthetic", "coco", "ade20k", "folder"),
        "data.test_mode": ("whole", "slide"),
        "sched.name": ("step", "poly", "constant"),
        "sched.warmup": (None, "linear"),
    },
    positive=_LOOP_POSITIVE,
    float_or_none=("optim.clip_grad",),
    free_form=("model", "paper"),
    free_fields=("data.train", "data.val", "data.synthetic"),
    resume_overridable=("data.root", "data.train", "data.val", "data.workers", "data.check_labels",
                        "data.skip_missing_images", "data.hflip", "data.photometric", "data.short_side_range",
                        "data.crop_size", "data.test_scales", "data.test_flip", "data.test_mode", "data.test_window",
                        "data.test_stride", "train.seed", "train.device", "train.threads", "train.reuse_memory",
                        "eval.batch_size", "log.progress", "log.tensorboard"),
    check=_check_dense,
)

#: The schema of each task's recipes.
SCHEMAS: Dict[str, Schema] = {
    "classification": _CLASSIFICATION,
    "detection": Schema(defaults=DETECTION_DEFAULTS, demo="detection_demo", **_DENSE_COMMON),
    "segmentation": Schema(defaults=SEGMENTATION_DEFAULTS, demo="segmentation_demo", **_DENSE_COMMON),
}


def _schema(task: str) -> Schema:
    if task not in SCHEMAS:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(SCHEMAS)}")
    return SCHEMAS[task]


# ---------------------------------------------------------------------------------------------- entry points
def resolve_recipe(
    task: str,
    recipe: Optional[Union[str, "os.PathLike[str]", Mapping[str, Any]]] = None,
    overrides: Union[Sequence[str], Mapping[str, Any]] = (),
) -> Config:
    """The task's defaults, then a recipe (name in ``configs/`` or ``configs/dense/``, YAML path or dict), then
    overrides; checked.

    Args:
        task: ``"classification"``, ``"detection"`` or ``"segmentation"``.
        recipe: Recipe; None: the task's demo (``digits``, ``detection_demo``, ``segmentation_demo``).
        overrides: ``["optim.lr=1e-3", ...]`` or ``{"optim.lr": 1e-3}``.

    Returns:
        The full recipe: every field of the task's defaults table.
    """
    schema = _schema(task)
    if recipe is None:
        recipe = schema.demo
    data = dict(recipe) if isinstance(recipe, Mapping) else load_recipe(recipe, schema.subdir)
    data = _renamed(data, schema)
    unknown = [s for s in data if s not in schema.defaults]
    if unknown:
        what = " (is this a classification recipe?)" if schema.subdir else " (is this a detection/segmentation recipe?)"
        raise ValueError(f"unknown config section {unknown[0]!r}{_suggest(unknown[0], list(schema.defaults))}; "
                         f"sections are {', '.join(schema.defaults)}{what}")
    if "task" in schema.defaults and data.get("task") not in (None, task):
        other = "segment" if task == "detection" else "detect"
        raise ValueError(f"recipe {recipe} is a {data['task']} recipe; use `crossformer {other} train` for it")
    cfg = merge(schema.defaults, data)
    for key in schema.free_form:  # the recipe's own mapping, not merged into an empty default
        cfg[key] = copy.deepcopy(dict(data.get(key) or {}))
    if "task" in schema.defaults:
        cfg["task"] = task
    cfg = apply_overrides(cfg, overrides, schema)
    return validate_recipe(cfg, schema)


def upgrade_config(saved: Mapping[str, Any], task: str) -> Config:
    """A run's saved recipe with fields renamed or added since it was written (old behaviour, else the default)."""
    schema = _schema(task)
    cfg = _renamed(saved, schema)
    for section, fields in schema.defaults.items():
        if not isinstance(fields, dict) or section in schema.free_form:
            cfg.setdefault(section, copy.deepcopy(fields))
            continue
        target = cfg.setdefault(section, {})
        for name, default in fields.items():
            if name not in target:
                target[name] = copy.deepcopy(schema.legacy.get(f"{section}.{name}", default))
    return cfg


def _overridable(key: str, allowed: Sequence[str]) -> bool:
    return key in allowed or f"{key.split('.')[0]}.*" in allowed


def _show(cfg: Mapping[str, Any], key: str) -> str:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return yaml.safe_dump(node, default_flow_style=True).strip().removesuffix("...").strip()


def _differences(saved: Mapping[str, Any], changed: Mapping[str, Any], schema: Schema) -> List[str]:
    out = []
    for section, value in changed.items():
        if isinstance(value, dict) and section not in schema.free_form:
            out += [f"{section}.{k}" for k, v in value.items() if v != (saved.get(section) or {}).get(k)]
        elif value != saved.get(section):
            out.append(section)
    return out


def resume_changes(saved: Mapping[str, Any], overrides: Union[Sequence[str], Mapping[str, Any]], task: str
                   ) -> Tuple[Config, List[str]]:
    """A run's saved recipe (upgraded) with ``--resume`` overrides applied, and one ``"key: old -> new"`` note per
    changed field.

    Raises:
        ValueError: a field ``--resume`` cannot change (the model, optimizer, schedule, batch...).
    """
    schema = _schema(task)
    saved = upgrade_config(saved, task)
    changed = apply_overrides(saved, overrides, schema)
    different = _differences(saved, changed, schema)
    refused = [k for k in different if not _overridable(k, schema.resume_overridable)]
    if refused:
        start = "model.pretrained=RUN/last.pth" if task == "classification" else "weights=RUN/last.pth"
        raise ValueError(f"--resume continues a run with its own recipe; {', '.join(refused)} cannot change "
                         f"(only {', '.join(schema.resume_overridable)} can). Start a new run with {start} instead")
    notes = [f"{k}: {_show(saved, k)} -> {_show(changed, k)}" for k in different]
    return validate_recipe(changed, schema), notes
