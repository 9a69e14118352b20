"""Training recipes as data: defaults, YAML recipes, command-line overrides, validation.

A recipe is a nested dict with six sections (``model``, ``data``, ``aug``, ``optim``, ``sched``, ``train``,
``log``; see :data:`DEFAULTS` for every field). A YAML file under ``configs/`` names only what differs from
the defaults; :func:`resolve_config` merges it over them, applies ``KEY=VALUE`` overrides
(``optim.lr=1e-3``) and checks every field, so a typo fails before anything runs::

    cfg = resolve_config("crossformer_small", ["data.path=/data/imagenet", "train.batch_size=256"])

``model.name`` is any registered model (the published variants and ``crossformer_micro``); ``model.arch``
builds any other configuration (:class:`~crossformer_vision.CrossFormer` keyword arguments).
"""
import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import yaml
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .variants import MODELS, SMALL_VARIANTS

__all__ = [
    "DEFAULTS",
    "NAMED_CONFIGS",
    "RESUME_OVERRIDABLE",
    "apply_overrides",
    "find_recipe",
    "list_recipes",
    "load_recipe",
    "merge",
    "model_names",
    "resolve_config",
    "resume_overridable",
    "upgrade_config",
    "validate_config",
]

Config = Dict[str, Any]

#: Former name of :data:`crossformer_vision.variants.SMALL_VARIANTS` (registered models now), kept for one release.
NAMED_CONFIGS = SMALL_VARIANTS

#: Every recipe field with its default: the papers' ImageNet recipe for CrossFormer-S.
DEFAULTS: Config = {
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
    "train": {
        "epochs": 300,
        "batch_size": 1024,  # global: all processes and accumulation steps of one optimizer step
        "accum_steps": 1,
        "amp": "fp16",  # mixed precision on CUDA: "fp16", "bf16" or "none" (CPU runs in float32)
        "compile": False,  # torch.compile the model
        "ema": False,
        "ema_decay": 0.9998,
        "seed": 0,
        "device": "auto",  # "auto", "cpu", "cuda"
        "threads": None,  # CPU threads per process; None: the cores available / local processes
        "eval_batch_size": None,  # per process; None: the training micro-batch
        "best_metric": "val_top1",  # what makes best.pth: highest val_top1 or lowest val_loss
    },
    "log": {
        "output": "runs",  # runs are written to output/name
        "name": None,  # None: <model>-<dataset>-<date-time>
        "progress": True,  # progress bar per epoch on a terminal (a line per epoch is always printed)
        "tensorboard": "auto",  # "auto": when tensorboard is installed; true; false
    },
}

#: Fields ``--resume`` accepts new values for: where the data lives and how it is read, the augmentation
#: (a run that stopped on a bad augmentation can finish with another), the seed, and how the run is shown.
#: The model, optimizer, schedule and batch cannot change: that would be a different run.
RESUME_OVERRIDABLE = ("data.path", "data.workers", "data.verify", "aug.*", "train.seed", "train.device",
                      "train.threads", "train.eval_batch_size", "log.progress", "log.tensorboard")

#: Values that reproduce the behaviour of run folders written before a field existed (see :func:`upgrade_config`).
_LEGACY_VALUES = {"sched.max_warmup_fraction": None}


def resume_overridable(key: str, allowed: Sequence[str] = RESUME_OVERRIDABLE) -> bool:
    """Whether ``--resume`` may change the field ``key`` (``section.*`` entries allow a whole section)."""
    return key in allowed or f"{key.split('.')[0]}.*" in allowed


def upgrade_config(saved: Mapping[str, Any]) -> Config:
    """A run's saved recipe with the fields added since it was written (their old behaviour, or the default)."""
    cfg = copy.deepcopy(dict(saved))
    for section, fields in DEFAULTS.items():
        target = cfg.setdefault(section, {})
        for field, default in fields.items():
            if field not in target:
                target[field] = copy.deepcopy(_LEGACY_VALUES.get(f"{section}.{field}", default))
    return cfg

_CHOICES: Dict[str, Sequence[Any]] = {
    "data.dataset": ("folder", "digits"),
    "data.verify": ("header", "full", "none"),
    "data.interpolation": ("bilinear", "bicubic", "nearest", "random"),
    "data.in_chans": (1, 3),
    "aug.remode": ("pixel", "rand", "const"),
    "aug.mixup_mode": ("batch", "pair", "elem"),
    "train.amp": ("none", "fp16", "bf16"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.best_metric": ("val_top1", "val_loss"),
    "log.tensorboard": ("auto", True, False),
}
_FLOAT_OR_NONE = ("model.drop_path_rate", "optim.layer_decay", "optim.clip_grad", "sched.max_warmup_fraction")
_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
_POSITIVE = ("data.img_size", "train.epochs", "train.batch_size", "train.accum_steps", "optim.lr_base_batch")


def model_names() -> List[str]:
    """Names ``model.name`` accepts without ``model.arch``: every registered model."""
    return list(MODELS)


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> Config:
    """Recursive dict merge: ``update``'s values win; nested dicts merge, other values are replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "arch":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _config_dirs(subdir: str = "") -> List[Path]:
    dirs = []
    if os.environ.get("CROSSFORMER_CONFIGS"):
        dirs.append(Path(os.environ["CROSSFORMER_CONFIGS"]) / subdir)
    dirs.append(Path(__file__).resolve().parents[2] / "configs" / subdir)  # source checkout / editable install
    dirs.append(Path.cwd() / "configs" / subdir)
    return dirs


def list_recipes(subdir: str = "") -> List[str]:
    """Names of the recipes found in ``configs/`` (``$CROSSFORMER_CONFIGS`` first), or in ``configs/<subdir>/``."""
    names = set()
    for folder in _config_dirs(subdir):
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def find_recipe(name_or_path: Union[str, os.PathLike], subdir: str = "") -> Path:
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


def load_recipe(name_or_path: Union[str, os.PathLike], subdir: str = "") -> Config:
    """Read a recipe YAML (only the fields it sets; merge with :func:`resolve_config`); ``subdir`` as :func:`find_recipe`."""
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


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _all_keys(cfg: Mapping[str, Any]) -> List[str]:
    return [f"{section}.{key}" for section, fields in cfg.items() for key in fields]


def apply_overrides(cfg: Config, overrides: Union[Sequence[str], Mapping[str, Any]]) -> Config:
    """Set fields from ``["section.key=value", ...]`` (values parsed as YAML) or ``{"section.key": value}``.

    Raises:
        ValueError: a malformed item or an unknown key (with close matches).
    """
    cfg = copy.deepcopy(cfg)
    items = overrides.items() if isinstance(overrides, Mapping) else [_split_override(o) for o in overrides]
    for key, value in items:
        section, _, field = key.partition(".")
        if section not in DEFAULTS or field not in DEFAULTS[section]:
            raise ValueError(f"unknown config key {key!r}{_suggest(key, _all_keys(DEFAULTS))} "
                             f"(keys are section.field, see docs/training.md)")
        cfg.setdefault(section, {})[field] = value
    return cfg


def _split_override(item: str) -> tuple:
    key, sep, text = item.partition("=")
    if not sep or not key or "." not in key:
        raise ValueError(f"override {item!r} must look like section.field=value, e.g. optim.lr=1e-3 or train.epochs=10")
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


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


def validate_config(cfg: Config) -> Config:
    """Check every field's presence, type and range; return ``cfg`` with lists normalised.

    Raises:
        ValueError: the first problem found, naming the field, what was expected and how to fix it.
    """
    for section, fields in cfg.items():
        if section not in DEFAULTS:
            raise ValueError(f"unknown config section {section!r}{_suggest(section, list(DEFAULTS))}; "
                             f"sections are {', '.join(DEFAULTS)}")
        if not isinstance(fields, Mapping):
            raise ValueError(f"config section {section!r} must be a mapping, got {fields!r}")
        for field, value in fields.items():
            key = f"{section}.{field}"
            if field not in DEFAULTS[section]:
                raise ValueError(f"unknown config key {key!r}{_suggest(key, _all_keys(DEFAULTS))}")
            default = DEFAULTS[section][field]
            if isinstance(value, str) and (isinstance(default, float) or key in _FLOAT_OR_NONE) and _SCIENTIFIC.match(value):
                value = fields[field] = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
            if key in _CHOICES:
                if value not in _CHOICES[key]:
                    raise ValueError(f"config {key} must be one of {list(_CHOICES[key])}, got {value!r}")
            elif not _type_ok(default, value):
                raise ValueError(f"config {key} must be {type(default).__name__} like {default!r}, got {value!r}")
    for key in _POSITIVE:
        section, field = key.split(".")
        if cfg[section][field] is not None and cfg[section][field] <= 0:
            raise ValueError(f"config {key} must be positive, got {cfg[section][field]!r}")
    model = cfg["model"]
    if model["arch"] is not None and not isinstance(model["arch"], Mapping):
        raise ValueError(f"config model.arch must be a mapping of CrossFormer arguments, got {model['arch']!r}")
    if model["arch"] is None and model["name"] not in model_names():
        close = difflib.get_close_matches(str(model["name"]), model_names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {model['name']!r}{hint} Available: {', '.join(model_names())} "
                         f"(or give model.arch)")
    data = cfg["data"]
    if data["dataset"] == "folder" and not data["path"]:
        raise ValueError("no dataset: give --data PATH (a folder with train/ and val/, one subfolder per class) "
                         "or use the built-in digits recipe (crossformer train with no --config)")
    for key in ("mean", "std"):
        if len(data[key]) != data["in_chans"]:
            raise ValueError(f"config data.{key} needs {data['in_chans']} values (data.in_chans), got {data[key]!r}")
    if not 0.0 < data["crop_pct"] <= 1.0:
        raise ValueError(f"config data.crop_pct must be in (0, 1], got {data['crop_pct']!r}")
    train = cfg["train"]
    if train["batch_size"] % train["accum_steps"]:
        raise ValueError(f"train.batch_size ({train['batch_size']}) must be a multiple of train.accum_steps "
                         f"({train['accum_steps']})")
    sched = cfg["sched"]
    if sched["warmup_epochs"] < 0:
        raise ValueError(f"config sched.warmup_epochs must be >= 0, got {sched['warmup_epochs']!r}")
    fraction = sched["max_warmup_fraction"]
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"config sched.max_warmup_fraction must be in [0, 1] or null, got {fraction!r}")
    if sched["warmup_epochs"] > train["epochs"] and not sched["warmup_prefix"] and fraction is None:
        raise ValueError(f"sched.warmup_epochs ({sched['warmup_epochs']}) is longer than train.epochs "
                         f"({train['epochs']}) and sched.max_warmup_fraction is null; lower the warm-up or set "
                         f"sched.max_warmup_fraction=0.1")
    return cfg


def resolve_config(
    recipe: Optional[Union[str, os.PathLike, Mapping[str, Any]]] = "digits",
    overrides: Union[Sequence[str], Mapping[str, Any]] = (),
) -> Config:
    """Defaults, then a recipe (name, YAML path or dict), then overrides; validated.

    Args:
        recipe: Recipe name (``"digits"``, ``"crossformer_small"``...), a YAML path, a dict, or None for
            the defaults alone.
        overrides: ``["optim.lr=1e-3", ...]`` or ``{"optim.lr": 1e-3}``.

    Returns:
        The full config: every field of :data:`DEFAULTS`.
    """
    if recipe is None:
        data: Mapping[str, Any] = {}
    elif isinstance(recipe, Mapping):
        data = recipe
    else:
        data = load_recipe(recipe)
    unknown = [s for s in data if s not in DEFAULTS]
    if unknown:
        raise ValueError(f"unknown config section {unknown[0]!r}{_suggest(unknown[0], list(DEFAULTS))}; "
                         f"sections are {', '.join(DEFAULTS)}")
    cfg = merge(DEFAULTS, data)
    cfg = apply_overrides(cfg, overrides)
    return validate_config(cfg)
