"""Runs as model folders (``crossformer export RUN --format hf -o DIR``), and model folders for evaluation and prediction.

:func:`export_run` writes a run's weights (its EMA weights where it kept them, else the plain ones, from
``best.pth``) as a model folder (:mod:`crossformer_vision.models.hub`): ``config.json``, ``model.safetensors`` and a
``README.md`` model card (what the model is, the data with class names and counts, the recipe, the metrics of
``summary.json``, the papers' citation, the license).

* Classifiers get timm's ``config.json``: ``timm.create_model("local-dir:DIR")`` builds them with their head and
  label names; ``crossformer eval|predict -k DIR`` use the same folder. The recipe travels along, so ``crossformer
  eval DIR`` evaluates on the run's own test data.
* Detectors and segmenters get their task's ``config.json`` (the recipe, ``build_config``, class names, the test
  protocol); there is no timm entry point for them: ``crossformer detect|segment predict -k DIR`` and
  :func:`~crossformer_vision.train.inference.load_dense_model` read them.

:func:`model_folder_of`, :func:`classifier_from_folder` and :func:`dense_from_folder` are the readers the
inference loaders use (JSON and safetensors only).
"""
import inspect
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from torch import nn

from ..data.classification import DIGITS_CLASSES, digits_split
from ..data.images import IMAGE_EXTENSIONS
from ..models import MODELS, CrossFormer
from ..models.hub import (CONFIG_NAME, classifier_config, imagenet_labels, load_model_folder, model_card, per_channel,
                          read_config, read_folder_weights, write_model_folder)
from ..models.official import CheckpointError, load_checkpoint_file, load_state_dict_checked
from ..tools.flops import count_params
from ..utils.files import json_ready
from .checkpoint import inference_path, read_run_checkpoint
from .config import CLASSIFICATION_DEFAULTS, SCHEMAS, apply_overrides, plain, upgrade_config, validate_recipe
from .tasks import TASKS
from .tasks.classification import CHECKPOINT_FORMAT as CLASSIFICATION_FORMAT
from .tasks.classification import build_classifier, warmup_epochs
from .tasks.dense import CHECKPOINT_FORMAT as DENSE_FORMAT
from .tasks.dense import build_dense_model

__all__ = ["classifier_from_folder", "dense_from_folder", "export_run", "model_folder_of"]

_COMMANDS = {"classification": "crossformer eval|predict", "detection": "crossformer detect eval|predict",
             "segmentation": "crossformer segment eval|predict"}
_MAX_SUMMARY_BYTES = 8 << 20


# ---------------------------------------------------------------------------------------------- run -> folder
def _weights(state: Mapping[str, Any], ema: Optional[bool], path: Path) -> Tuple[Mapping[str, Any], str]:
    has_ema = state.get("model_ema") is not None
    if ema and not has_ema:
        raise ValueError(f"{path} has no EMA weights (the run did not use train.ema); leave out --ema")
    if has_ema and ema is not False:
        return state["model_ema"], "ema"
    return state["model"], "model"


def _summary(run_dir: Path) -> Dict[str, Any]:
    path = run_dir / "summary.json"
    try:
        if path.is_file() and path.stat().st_size <= _MAX_SUMMARY_BYTES:
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        pass
    return {}


def _constructor_defaults() -> Dict[str, Any]:
    return {name: p.default for name, p in inspect.signature(CrossFormer).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _model_args(cfg: Mapping[str, Any], num_classes: int) -> Tuple[str, Dict[str, Any]]:
    """The registered name timm builds through and every constructor argument of the run's architecture.

    ``model_args`` name every argument the registered variant sets (its own value, or the constructor's default
    when the run's architecture leaves it out), so ``{**MODELS[name], **model_args}`` is exactly the run's model.
    """
    m = cfg["model"]
    name = m["name"] if m["name"] in MODELS else "crossformer_small"
    arch = m["arch"] if m["arch"] is not None else MODELS[m["name"]]
    defaults = _constructor_defaults()
    merged = {**{k: defaults[k] for k in MODELS[name] if k in defaults}, **dict(arch)}
    args = {k: json_ready(v) for k, v in merged.items() if "drop" not in k}
    unknown = [k for k in args if k not in defaults]
    if unknown:
        raise ValueError(f"the run's model.arch has arguments CrossFormer does not take: {unknown}")
    args.update(num_classes=int(num_classes), in_chans=int(cfg["data"]["in_chans"]))
    return name, args


def _count_folder(root: Path, classes: Sequence[str]) -> Dict[str, int]:
    counts = {}
    suffixes = tuple(e.lower() for e in IMAGE_EXTENSIONS)
    for name in classes:
        folder = root / name
        counts[name] = sum(1 for p in folder.rglob("*") if p.suffix.lower() in suffixes) if folder.is_dir() else 0
    return counts


def _class_counts(cfg: Mapping[str, Any], classes: Sequence[str]) -> Dict[str, Dict[str, int]]:
    """Images per class of each split of the run's data, where the data are at hand (else empty)."""
    d = cfg["data"]
    out: Dict[str, Dict[str, int]] = {}
    try:
        if d["dataset"] == "digits" and list(classes) == DIGITS_CLASSES:
            from sklearn.datasets import load_digits

            target = load_digits().target
            for split, index in digits_split().items():
                counts = {c: 0 for c in classes}
                for t in target[index]:
                    counts[classes[int(t)]] += 1
                out[split] = counts
        elif d["path"] is not None:
            for split in (d["train_split"], d["val_split"], d["test_split"]):
                if (Path(d["path"]) / split).is_dir():
                    out[split] = _count_folder(Path(d["path"]) / split, classes)
    except Exception:  # counts are informative only: missing data, no scikit-learn...
        return {}
    return out


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(rows: Sequence[Tuple[str, Any]]) -> str:
    rows = [(k, v) for k, v in rows if v is not None]
    if not rows:
        return ""
    return "| metric | value |\n|---|---:|\n" + "\n".join(f"| {k} | {_number(v)} |" for k, v in rows)


def _metrics_table(summary: Mapping[str, Any], which: str) -> str:
    """The numbers of ``summary.json``: test results (classification), then the best and the last evaluation."""
    rows: List[Tuple[str, Any]] = []
    for key in ("test_top1", "test_top5", "test_loss", "test_images"):
        if key in summary:
            rows.append((key, summary[key]))
    for part in ("best", "last"):
        for key, value in (summary.get(part) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append((f"{part} evaluation: {key}", value))
    for key in ("best_metric", "epochs", "iterations", "train_time_s", "device", "processes"):
        if key in summary:
            rows.append((key, summary[key]))
    if not rows:
        return "The run folder has no summary.json (an unfinished run?)."
    note = ("\n\n`test_*` and the columns without `_ema` were measured with the plain weights, the `_ema` columns "
            "with the EMA weights this folder holds." if which == "ema" else "")
    return _table(rows) + note


def _recipe_lines(cfg: Mapping[str, Any], task: str) -> str:
    t, o, s = cfg["train"], cfg["optim"], cfg["sched"]
    length = (f"{t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}" if t["epochs"] is not None
              else f"{t['iterations']} iterations")
    lines = [f"- {length}, global batch {t['batch_size']} (accumulation {t['accum_steps']}), seed {t['seed']}, "
             f"mixed precision {t['amp']}" + (" (on CUDA)" if t["amp"] != "none" else "")
             + (", EMA of the weights (decay " + str(t["ema_decay"]) + ")" if t["ema"] else ""),
             f"- Optimizer {o['opt']}, lr {o['lr']:g}" + (f" at batch {o['lr_base_batch']} (scaled linearly)"
                                                          if "lr_base_batch" in o else "")
             + f", weight decay {o['weight_decay']:g}"
             + (f", gradient clipping {o['clip_grad']:g}" if o.get("clip_grad") else ""),
             f"- Schedule {s['name']}" + (f", warm-up {_warmup(cfg)}" if "warmup_epochs" in s else
                                          f", warm-up {s['warmup_iters']} steps" if s.get("warmup") else "")]
    if task == "classification":
        a, d = cfg["aug"], cfg["data"]
        lines.append(f"- Input {d['img_size']}x{d['img_size']}, {d['in_chans']} channels, random resized crop scale "
                     f"{a['scale']}, flip {a['hflip']}, colour jitter {a['color_jitter']}, auto-augment "
                     f"{a['auto_augment']}, random erasing {a['reprob']}, mixup {a['mixup']}, cutmix {a['cutmix']}, "
                     f"label smoothing {a['smoothing']}")
    else:
        d = cfg["data"]
        if task == "segmentation":
            lines.append(f"- Training crops {d['crop_size']}, short side in {d['short_side_range']}, flip {d['hflip']}")
    lines.append("- The complete recipe is `crossformer_vision.recipe` in config.json (`crossformer train --config` "
                 "takes it as YAML)")
    return "\n".join(lines)


def _warmup(cfg: Mapping[str, Any]) -> str:
    """The warm-up the run had (a short run's is capped: :func:`~.tasks.classification.warmup_epochs`)."""
    if cfg["train"]["epochs"] is None:
        return f"{cfg['sched']['warmup_epochs']:g} epochs"
    epochs, note = warmup_epochs(cfg)
    return f"{epochs:g} epochs" + (f", {note}" if note else "")


def _data_lines(dataset: str, classes: Sequence[str], counts: Mapping[str, Mapping[str, int]]) -> str:
    shown = ", ".join(f"`{c}`" for c in list(classes)[:50]) + (f" ... ({len(classes)} in all)" if len(classes) > 50 else "")
    lines = [f"- Dataset: {dataset}", f"- Classes ({len(classes)}): {shown}"]
    if counts:
        lines.append("- Images: " + ", ".join(f"{split} {sum(c.values())}" for split, c in counts.items()))
        if len(classes) <= 50:
            splits = list(counts)
            lines.append("\n| class | " + " | ".join(splits) + " |\n|---|" + "---:|" * len(splits))
            lines += [f"| {c} | " + " | ".join(str(counts[s].get(c, 0)) for s in splits) + " |" for c in classes]
    return "\n".join(lines)


def _imagenet_descriptions(classes: Sequence[str]) -> Optional[Dict[str, str]]:
    names, descriptions = imagenet_labels()
    return descriptions if list(classes) == names else None


def export_run(run: Union[str, Path], output: Union[str, Path], ema: Optional[bool] = None, overwrite: bool = False,
               license: str = "mit") -> Dict[str, Any]:
    """Write a run as a model folder (``config.json``, ``model.safetensors``, ``README.md``).

    Args:
        run: A run folder (its ``best.pth``, else ``last.pth``) or one of its checkpoint files.
        output: The folder to write (created; it must be empty unless ``overwrite``).
        ema: None: the EMA weights where the run kept them, else the plain ones; True: EMA (an error without);
            False: the plain weights.
        overwrite: Replace the model files of a non-empty ``output``.
        license: The model card's license field.

    Returns:
        ``{"folder", "task", "model", "weights" ("ema" or "model"), "checkpoint", "num_classes", "round"}``.

    Raises:
        FileNotFoundError: no such run or file.
        ValueError, CheckpointError: not a checkpoint of our runs (official files: :func:`~crossformer_vision.models.
            hub.convert_checkpoint`), unusable ``output``.
    """
    path = inference_path(run)
    raw = load_checkpoint_file(path)
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt == CLASSIFICATION_FORMAT:
        task = "classification"
    elif fmt == DENSE_FORMAT and isinstance(raw.get("config"), Mapping) and raw["config"].get("task") in TASKS:
        task = raw["config"]["task"]
    else:
        raise CheckpointError(f"{path} is not a checkpoint of a crossformer-vision run; official checkpoints become "
                              f"model folders with `crossformer convert FILE -o DIR`")
    state = read_run_checkpoint(path, TASKS[task], need_state=False, state=raw)
    weights, which = _weights(state, ema, path)
    summary = _summary(path.parent)
    cfg = upgrade_config(state["config"], task)
    common = dict(path=path, state=state, cfg=cfg, weights=weights, which=which, summary=summary, output=Path(output),
                  overwrite=overwrite, license=license)
    return _export_classifier(**common) if task == "classification" else _export_dense(task, **common)


def _run_info(path: Path, state: Mapping[str, Any], which: str, cfg: Mapping[str, Any], summary: Mapping[str, Any],
              task: str) -> Dict[str, Any]:
    return {"task": task, "source": "run",
            "run": {"folder": path.parent.name, "checkpoint": path.name, "weights": which, "round": state.get("round"),
                    "best": json_ready(state.get("best"))},
            "recipe": json_ready(plain(cfg)), "summary": json_ready(summary)}


def _export_classifier(path: Path, state: Mapping[str, Any], cfg: Dict[str, Any], weights: Mapping[str, Any], which: str,
                       summary: Mapping[str, Any], output: Path, overwrite: bool, license: str) -> Dict[str, Any]:
    classes = [str(c) for c in state["classes"]]
    model = build_classifier(cfg, len(classes))
    try:
        load_state_dict_checked(model, weights, strict=True)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    name, model_args = _model_args(cfg, len(classes))
    import torch

    with torch.device("meta"):  # what timm will build from the folder: the same tensors, or the export is wrong
        rebuilt = CrossFormer(**{**MODELS[name], **model_args})
    if {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} != {k: tuple(v.shape) for k, v in model.state_dict().items()}:
        raise ValueError(f"{path}: the run's architecture cannot be written as model_args of {name}; export it with "
                         f"`crossformer export --format onnx` instead")
    d = cfg["data"]
    from timm.models import get_pretrained_cfg

    registry = get_pretrained_cfg(name)
    side = int(d["img_size"])
    stride = min(model_args.get("patch_size", (4,))) * 2 ** (len(model_args.get("depths", (0, 0, 0, 0))) - 1)
    pretrained_cfg = {**({k: v for k, v in registry.to_dict().items() if k in ("first_conv", "paper_ids", "license")}
                         if registry is not None else {}),
                      "tag": _tag(cfg), "input_size": [d["in_chans"], side, side], "fixed_input_size": False,
                      "interpolation": d["interpolation"], "crop_pct": d["crop_pct"], "crop_mode": "center",
                      "mean": list(d["mean"]), "std": list(d["std"]), "pool_size": [max(1, side // stride)] * 2,
                      "classifier": "head.fc", "license": license}
    info = _run_info(path, state, which, cfg, summary, "classification")
    config = classifier_config(name, model_args, pretrained_cfg, model.num_features, classes,
                               _imagenet_descriptions(classes), info)
    counts = _class_counts(cfg, classes)
    card = _classifier_card(cfg, classes, counts, summary, state, which, output.name, count_params(model), license, path)
    write_model_folder(output, model.state_dict(), config, card, overwrite=overwrite)
    return {"folder": str(output), "task": "classification", "model": cfg["model"]["name"], "weights": which,
            "checkpoint": str(path), "num_classes": len(classes), "round": state.get("round")}


def _tag(cfg: Mapping[str, Any]) -> str:
    d = cfg["data"]
    name = "digits" if d["dataset"] == "digits" else Path(str(d["path"] or "data")).name
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "data"


def _weights_line(state: Mapping[str, Any], which: str, path: Path) -> str:
    rounds = state.get("round")
    what = "the exponential moving average (EMA) of the weights" if which == "ema" else "the trained weights"
    return f"- Weights: {what}, from `{path.parent.name}/{path.name}` (after round {rounds})"


def _classifier_card(cfg: Mapping[str, Any], classes: Sequence[str], counts: Mapping[str, Mapping[str, int]],
                     summary: Mapping[str, Any], state: Mapping[str, Any], which: str, folder: str, params: int,
                     license: str, path: Path) -> str:
    m, d = cfg["model"], cfg["data"]
    dataset = "scikit-learn's handwritten digits (8x8 scans)" if d["dataset"] == "digits" else f"`{d['path']}`"
    plus = str(m["name"]).startswith("crossformerpp") or bool((m["arch"] or {}).get("use_acl"))
    paper = "CrossFormer++ (TPAMI 2023)" if plus else "CrossFormer (ICLR 2022)"
    details = "\n".join([
        f"- Architecture: `{m['name']}`, a {paper} image classifier, {params / 1e6:.2f}M parameters, "
        f"{len(classes)} classes",
        f"- Input: {d['in_chans']} x {d['img_size']} x {d['img_size']} (any size of at least 32 x 32 works), "
        f"{d['interpolation']} resize, centre crop {d['crop_pct']}, mean {list(d['mean'])}, std {list(d['std'])}",
        _weights_line(state, which, path),
    ])
    usage = (f"```python\nimport timm\nimport crossformer_vision  # registers CrossFormer with timm\n\n"
             f"model = timm.create_model(\"local-dir:{folder}\").eval()\n"
             f"print(model.pretrained_cfg[\"label_names\"])\n"
             f"data_config = timm.data.resolve_data_config(model=model)\n"
             f"transform = timm.data.create_transform(**data_config)\n```\n\n"
             f"From the command line: `crossformer predict IMAGE -k {folder}`, `crossformer eval {folder}` (the run's "
             f"own test data)." )
    return model_card(
        {"license": license, "library_name": "timm", "pipeline_tag": "image-classification",
         "tags": ["image-classification", "timm", "crossformer", "crossformer-vision"], "datasets": [_tag(cfg)],
         "metrics": ["accuracy"]},
        f"{m['name']} trained on {_tag(cfg)}",
        f"A {paper} image classifier trained with crossformer-vision. The folder loads in timm as it is "
        f"(`timm.create_model(\"local-dir:{folder}\")` after `import crossformer_vision`).",
        [("Model details", details), ("Data", _data_lines(dataset, classes, counts)),
         ("Training recipe", _recipe_lines(cfg, "classification")), ("Results (summary.json)", _metrics_table(summary, which)),
         ("Usage", usage), ("License", f"{license} (the card's `license` field).")])


def _export_dense(task: str, path: Path, state: Mapping[str, Any], cfg: Dict[str, Any], weights: Mapping[str, Any],
                  which: str, summary: Mapping[str, Any], output: Path, overwrite: bool, license: str) -> Dict[str, Any]:
    from .inference import describe_protocol  # (inference reads these folders: imported here, not at the top)

    build = dict(state["build_config"])
    num_classes = int(build["num_classes"])
    model = build_dense_model(cfg, num_classes, init=False)
    try:
        load_state_dict_checked(model, weights, strict=True)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    class_names = [str(c) for c in state["classes"]]
    m = cfg["model"]
    info = _run_info(path, state, which, cfg, summary, task)
    config: Dict[str, Any] = {
        # not a timm architecture: timm.create_model("local-dir:...") says "Unknown model (crossformer_vision/...)"
        "architecture": f"crossformer_vision/{m['arch']}",
        "task": task, "backbone": m["backbone"], "num_classes": num_classes, "class_names": class_names,
        "build_config": json_ready(plain(build)),
    }
    if task == "segmentation":
        config["test_protocol"] = describe_protocol(cfg["data"])
    config["crossformer_vision"] = {"format": "crossformer-vision/model-folder", "version": 1, **info}
    command = "detect" if task == "detection" else "segment"
    details = "\n".join([f"- Architecture: {m['arch']} with a `{m['backbone']}` backbone, {count_params(model) / 1e6:.2f}M "
                         f"parameters, {num_classes} classes", _weights_line(state, which, path)]
                        + ([f"- Test protocol: {config['test_protocol']}"] if task == "segmentation" else []))
    usage = (f"```bash\ncrossformer {command} predict IMAGES -k {output.name} -o drawings/\n"
             f"crossformer {command} eval {output.name} --data DATASET\n```\n\n"
             f"```python\nfrom crossformer_vision.train import load_dense_model\n\n"
             f"model, meta = load_dense_model({task!r}, {output.name!r})\n```\n\n"
             "There is no timm entry point for detectors and segmenters: timm loads the classifier and backbone folders.")
    card = model_card(
        {"license": license, "library_name": "crossformer-vision",
         "pipeline_tag": "object-detection" if task == "detection" else "image-segmentation",
         "tags": [task, "crossformer", "crossformer-vision"], "datasets": [_dense_dataset(cfg)]},
        f"{m['arch']} + {m['backbone']} trained on {_dense_dataset(cfg)}",
        f"A {task} model with a CrossFormer backbone, trained with crossformer-vision.",
        [("Model details", details), ("Data", _data_lines(_dense_dataset(cfg), class_names, {})),
         ("Training recipe", _recipe_lines(cfg, task)), ("Results (summary.json)", _metrics_table(summary, which)),
         ("Usage", usage), ("License", f"{license} (the card's `license` field).")])
    write_model_folder(output, model.state_dict(), config, card, overwrite=overwrite)
    return {"folder": str(output), "task": task, "model": f"{m['arch']} + {m['backbone']}", "weights": which,
            "checkpoint": str(path), "num_classes": num_classes, "round": state.get("round")}


def _dense_dataset(cfg: Mapping[str, Any]) -> str:
    d = cfg["data"]
    return "synthetic shapes" if d["format"] == "synthetic" else Path(str(d["root"] or "data")).name


# ---------------------------------------------------------------------------------------------- folder -> model
def _our_config(config: Mapping[str, Any]) -> bool:
    info = config.get("crossformer_vision")
    return config.get("architecture") in MODELS or (isinstance(info, Mapping) and "task" in info)


def model_folder_of(checkpoint: Union[str, Path]) -> Tuple[Optional[Path], Optional[Path]]:
    """``(folder, explicit weights file or None)`` when ``checkpoint`` is a model folder (a folder with
    ``config.json``) or a weights file named inside one; ``(None, None)`` otherwise (run folders, checkpoint files)."""
    path = Path(checkpoint)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return path, None
    if path.is_file() and path.name != CONFIG_NAME and (path.parent / CONFIG_NAME).is_file():
        try:
            if _our_config(read_config(path.parent)):
                return path.parent, path
        except CheckpointError:
            pass
    return None, None


def _folder_task(folder: Path, config: Mapping[str, Any]) -> str:
    info = config.get("crossformer_vision")
    if isinstance(info, Mapping) and info.get("task") in ("detection", "segmentation", "classification", "backbone"):
        return info["task"]
    return "classification" if config.get("architecture") in MODELS else "unknown"


def classifier_from_folder(folder: Path, weights: Optional[Path] = None, model_name: Optional[str] = None,
                           use_ema: bool = False) -> Tuple[nn.Module, Dict[str, Any]]:
    """:func:`~crossformer_vision.train.inference.load_classifier` for a model folder (ours or timm's save_for_hf)."""
    config = read_config(folder)
    task = _folder_task(folder, config)
    if task in ("detection", "segmentation"):
        raise ValueError(f"{folder} holds a {task} model: use `{_COMMANDS[task]}`")
    architecture = config.get("architecture")
    if architecture not in MODELS:
        raise CheckpointError(f"{folder} holds a {str(architecture)[:60]!r} model, not a CrossFormer; its config.json "
                              f"names the architecture")
    if model_name is not None and model_name != architecture:
        raise CheckpointError(f"{folder} holds a {architecture} model, not {model_name}; leave out --model")
    if use_ema:
        raise ValueError(f"{folder} is a model folder with one set of weights (an export chooses EMA or not); leave out --ema")
    if not config.get("num_classes"):
        raise CheckpointError(f"{folder} holds a backbone without classifier head: it cannot classify (load it with "
                              f"timm.create_model('local-dir:...', features_only=True) for features)")
    model = load_model_folder(folder, weights=weights).eval()
    pc = model.pretrained_cfg
    info = config.get("crossformer_vision") if isinstance(config.get("crossformer_vision"), Mapping) else {}
    recipe = info.get("recipe") if isinstance(info.get("recipe"), Mapping) else None
    cfg = upgrade_config(recipe, "classification") if recipe else json.loads(json.dumps(CLASSIFICATION_DEFAULTS))
    cfg["model"]["name"] = architecture
    size = pc.get("input_size") or (3, 224, 224)
    channels = int(getattr(model, "in_chans", size[0]))
    cfg["data"].update(img_size=int(size[-1]), in_chans=channels, crop_pct=pc.get("crop_pct") or 1.0,
                       interpolation=pc.get("interpolation") or "bicubic",
                       mean=per_channel(pc.get("mean") or (0.5,), channels), std=per_channel(pc.get("std") or (0.5,), channels))
    n = int(model.num_classes)
    classes = [str(c) for c in (pc.get("label_names") or [])] or [str(i) for i in range(n)]
    if len(classes) != n:
        raise CheckpointError(f"{folder}: config.json has {len(classes)} label names for {n} classes")
    descriptions = pc.get("label_descriptions") or {}
    labels = [str(descriptions.get(c, c)) for c in classes]
    return model, {"classes": classes, "labels": labels, "cfg": cfg, "source": "folder", "path": str(weights or folder),
                   "has_data": recipe is not None}


def dense_from_folder(task: str, folder: Path, weights: Optional[Path] = None,
                      overrides: Sequence[str] = ()) -> Tuple[nn.Module, Dict[str, Any]]:
    """:func:`~crossformer_vision.train.inference.load_dense_model` for a model folder written by :func:`export_run`."""
    config = read_config(folder)
    found = _folder_task(folder, config)
    if found != task:
        what = {"classification": "a classifier", "backbone": "a backbone"}.get(found, f"a {found} model")
        use = f"use `{_COMMANDS[found]}`" if found in _COMMANDS else "write it with `crossformer export RUN --format hf`"
        raise ValueError(f"{folder} holds {what}, not a {task} model: {use}")
    info = config["crossformer_vision"]
    recipe = info.get("recipe")
    if not isinstance(recipe, Mapping):
        raise CheckpointError(f"{folder}/config.json has no recipe (crossformer_vision.recipe): write the folder again")
    cfg = upgrade_config(recipe, task)
    if overrides:
        schema = SCHEMAS[task]
        cfg = validate_recipe(apply_overrides(cfg, [o for o in overrides if not o.startswith("model.")], schema), schema)
    num_classes = int(config.get("num_classes") or 0)
    model = build_dense_model(cfg, num_classes, init=False)
    state = read_folder_weights(folder, model, strict=True, weights=weights)
    try:
        load_state_dict_checked(model, state, strict=True)
    except CheckpointError as err:
        raise CheckpointError(f"{folder}: {err}") from None
    model.eval()
    names = [str(c) for c in config.get("class_names") or []]
    return model, {"cfg": cfg, "class_names": names or [str(i) for i in range(num_classes)], "source": "folder",
                   "path": str(weights or folder)}
