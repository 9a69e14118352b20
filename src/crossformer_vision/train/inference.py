"""Evaluation and prediction with a trained model, for every task (``crossformer eval|predict``, ``detect|segment
eval|predict``).

* Classification: :func:`load_classifier`, :func:`evaluate_classifier` (top-1/top-5/loss with the model's own
  preprocessing), :func:`predict_classes` (top-k with probabilities).
* Detection and segmentation: :func:`load_dense_model`, :func:`evaluate_dense` (COCO AP, mIoU),
  :func:`predict_dense` (PNG drawings; what is drawn is the task's, see :meth:`DetectionTask.draw_prediction`).

Each takes one of our run folders or checkpoints, a model folder (``config.json`` + ``model.safetensors``: written by
``crossformer export --format hf``, ``crossformer convert`` or timm's ``save_for_hf``; see :mod:`.hub`), or an official
checkpoint (then the architecture must be named: ``model_name`` for classifiers, a recipe for detectors and segmenters).
"""
import itertools
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from ..data.augment import build_transform
from ..data.classification import DIGITS_CLASSES, DigitsDataset, ImageFolderDataset
from ..data.images import find_images, load_image, load_image_tensor, require_folder
from ..utils.distributed import cleanup_distributed, init_distributed, is_main_process, resolve_device
from ..utils.files import atomic_write_bytes
from ..models import create_model
from ..models.official import (CheckpointError, convert_official_state_dict, load_checkpoint_file,
                               load_state_dict_checked, unwrap_state_dict)
from .checkpoint import inference_path, read_run_checkpoint
from .hub import classifier_from_folder, dense_from_folder, model_folder_of
from .config import CLASSIFICATION_DEFAULTS, apply_overrides, SCHEMAS, resolve_recipe, upgrade_config, validate_recipe
from .tasks import TASKS
from .tasks.classification import CHECKPOINT_FORMAT as CLASSIFICATION_FORMAT
from .tasks.classification import ClassificationTask, build_classifier, classification_loader, evaluate_model
from .tasks.dense import CHECKPOINT_FORMAT as DENSE_FORMAT
from .tasks.dense import build_dense_model

__all__ = ["evaluate_classifier", "evaluate_dense", "load_classifier", "load_dense_model", "predict_classes",
           "predict_dense"]


# ---------------------------------------------------------------------------------------------- classification
def _imagenet_names(classes: Sequence[str]) -> Optional[List[str]]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    if list(classes) != info.label_names()[: len(classes)] or len(classes) != info.num_classes():
        return None
    return info.label_descriptions()


def load_classifier(checkpoint: Union[str, Path], model_name: Optional[str] = None,
                       use_ema: bool = False) -> Tuple[nn.Module, Dict[str, Any]]:
    """A model ready for ``eval()`` from one of our runs/checkpoints or an official checkpoint.

    Args:
        checkpoint: Run folder (its ``best.pth``), our ``.pth``, a model folder (or a weights file named inside one,
            e.g. its ``pytorch_model.bin``), or an official/other ``.pth``/``.safetensors``.
        model_name: Architecture for checkpoints that do not record it (official ones); must match ours if given.
        use_ema: Use the EMA weights of a run trained with ``train.ema``.

    Returns:
        ``(model, meta)``; ``meta`` has ``classes`` (names), ``labels`` (display names), ``cfg`` (the recipe:
        ``data`` holds the preprocessing), ``source`` (``"run"``, ``"folder"`` or ``"official"``) and ``path``.

    Raises:
        CheckpointError: unreadable, unsafe, or for a different architecture than ``model_name``.
        ValueError: an official checkpoint without ``model_name``; EMA weights asked for but absent.
    """
    folder, weights = model_folder_of(checkpoint)
    if folder is not None:  # JSON and safetensors only (a pickle only when named explicitly)
        return classifier_from_folder(folder, weights, model_name, use_ema)
    path = inference_path(checkpoint)
    raw = load_checkpoint_file(path)
    if isinstance(raw, dict) and raw.get("format") == CLASSIFICATION_FORMAT:
        raw = read_run_checkpoint(path, ClassificationTask, need_state=False, state=raw)
        cfg = upgrade_config(raw["config"], "classification")
        if model_name is not None and model_name != cfg["model"]["name"]:
            raise CheckpointError(f"{path} is a {cfg['model']['name']} run, not {model_name}; leave out --model")
        classes = list(raw["classes"])
        model = build_classifier(cfg, len(classes))
        weights = raw["model"]
        if use_ema:
            if raw.get("model_ema") is None:
                raise ValueError(f"{path} has no EMA weights (the run did not use train.ema); leave out --ema")
            weights = raw["model_ema"]
        try:
            load_state_dict_checked(model, weights, strict=True)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
        source = "run"
    else:
        if model_name is None:
            raise ValueError(f"{path} does not record its architecture (an official checkpoint?): add --model NAME, "
                             f"e.g. --model crossformer_small")
        state_dict = convert_official_state_dict(unwrap_state_dict(raw))
        head = state_dict.get("head.fc.weight")
        if head is None:
            raise CheckpointError(f"{path} has no classifier head (a detection/segmentation backbone?); it cannot classify")
        model = create_model(model_name, num_classes=head.shape[0])
        try:
            load_state_dict_checked(model, convert_official_state_dict(state_dict, model), strict=True)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
        pc = model.pretrained_cfg
        cfg = json.loads(json.dumps(CLASSIFICATION_DEFAULTS))
        cfg["model"]["name"] = model_name
        cfg["data"].update(img_size=int(pc["input_size"][-1]), in_chans=int(pc["input_size"][0]), crop_pct=pc["crop_pct"],
                           interpolation=pc["interpolation"], mean=list(pc["mean"]), std=list(pc["std"]))
        from timm.data import ImageNetInfo

        classes = ImageNetInfo().label_names() if head.shape[0] == 1000 else [str(i) for i in range(head.shape[0])]
        source = "official"
    model.eval()
    labels = _imagenet_names(classes) or list(classes)
    return model, {"classes": classes, "labels": labels, "cfg": cfg, "source": source, "path": str(path)}


def _eval_dataset(meta: Mapping[str, Any], data: Optional[str], split: Optional[str]) -> Tuple[Dataset, str]:
    cfg = json.loads(json.dumps(meta["cfg"]))
    transform = build_transform(cfg["data"], is_training=False)
    if data == "digits" or (data is None and cfg["data"]["dataset"] == "digits"):
        if list(meta["classes"]) != DIGITS_CLASSES:
            raise ValueError(f"the digits dataset has classes {DIGITS_CLASSES}; this model's are {meta['classes'][:10]}: "
                             f"give --data FOLDER with its own classes")
        split = split or "test"
        return DigitsDataset(split, transform, in_chans=cfg["data"]["in_chans"]), f"digits/{split}"
    if data is None:
        if meta["source"] != "run" and not meta.get("has_data"):  # model folders of our runs carry their recipe
            raise ValueError("give --data FOLDER to evaluate an official checkpoint (e.g. ImageNet's val/ folder)")
        data = cfg["data"]["path"]
        split = split or (cfg["data"]["test_split"] if (Path(data) / cfg["data"]["test_split"]).is_dir()
                          else cfg["data"]["val_split"])
    root = Path(data)
    require_folder(root)
    if split is not None:
        folder = root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{root} has no {split}/ folder; give --split with one of its subfolders or "
                                    f"--data pointing at the class folders")
    else:  # the first of test/, val/ that exists, else the folder itself holds the classes
        folder = next((root / s for s in ("test", "val") if (root / s).is_dir()), root)
    dataset = ImageFolderDataset(folder, transform, classes=meta["classes"], in_chans=cfg["data"]["in_chans"],
                                 verify=cfg["data"]["verify"], replace_unreadable=False)
    return dataset, str(folder)


def evaluate_classifier(checkpoint: Union[str, Path], data: Optional[str] = None, split: Optional[str] = None,
             model_name: Optional[str] = None, batch_size: int = 64, workers: int = 2, device: str = "auto",
             use_ema: bool = False, img_size: Optional[int] = None, crop_pct: Optional[float] = None) -> Dict[str, Any]:
    """Top-1/top-5 accuracy and loss of a checkpoint, with the model's own preprocessing.

    Args:
        checkpoint: Run folder, our checkpoint, or an official one (then ``model_name`` is needed).
        data: ``"digits"``, a folder with class subfolders, or a folder with ``test/``/``val/`` splits;
            None: the run's own test split (or validation split).
        split: Subfolder of ``data`` (or digits split) to use.
        model_name: Architecture of an official checkpoint.
        batch_size: Images per forward pass (per process).
        workers: DataLoader worker processes.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        use_ema: Evaluate the EMA weights.
        img_size: Evaluate at another resolution than the model's (resize, centre crop by ``crop_pct``).
        crop_pct: Override the model's centre-crop fraction.

    Returns:
        ``{"top1", "top5", "loss", "images", "skipped", "data", "checkpoint", "model"}``.
    """
    model, meta = load_classifier(checkpoint, model_name, use_ema)
    if img_size is not None:
        meta["cfg"]["data"]["img_size"] = int(img_size)
    if crop_pct is not None:
        meta["cfg"]["data"]["crop_pct"] = float(crop_pct)
    dataset, where = _eval_dataset(meta, data, split)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(device)
    try:
        model.to(info.device)
        loader = classification_loader(dataset, batch_size, workers, info)
        out = evaluate_model(model, loader, info.device)
    finally:
        if owns_group:
            cleanup_distributed()
    skipped = len(getattr(dataset, "skipped", [])) + out["skipped"]
    return {"top1": out["top1"], "top5": out["top5"], "loss": out["loss"], "images": out["images"], "skipped": skipped,
            "data": where, "checkpoint": meta["path"], "model": meta["cfg"]["model"]["name"]}


@torch.no_grad()
def predict_classes(checkpoint: Union[str, Path], images: Sequence[Union[str, Path]], topk: int = 5,
            model_name: Optional[str] = None, device: str = "auto", batch_size: int = 32,
            use_ema: bool = False) -> Dict[str, Any]:
    """Top-k classes with probabilities for image files and folders (searched recursively).

    Returns:
        ``{"predictions": [{"file", "top": [{"class", "label", "index", "probability"}, ...]}, ...],
        "skipped": [{"file", "error"}, ...], "checkpoint", "model"}``: unreadable files are listed in
        ``skipped`` instead of stopping the run.

    Raises:
        ValueError: no readable image at all, or ``topk`` < 1.
    """
    if topk < 1:
        raise ValueError(f"--topk must be at least 1, got {topk}")
    model, meta = load_classifier(checkpoint, model_name, use_ema)
    target = resolve_device(device)
    model.to(target)
    transform = build_transform(meta["cfg"]["data"], is_training=False)
    mode = "L" if meta["cfg"]["data"]["in_chans"] == 1 else "RGB"
    files = find_images(images)
    k = min(topk, len(meta["classes"]))
    predictions, skipped = [], []
    for start in range(0, len(files), batch_size):
        batch, names = [], []
        for path in files[start:start + batch_size]:
            try:
                batch.append(transform(load_image(path, mode)))
                names.append(path)
            except Exception as err:  # decoders raise OSError, ValueError, SyntaxError, struct.error...
                skipped.append({"file": str(path), "error": f"{type(err).__name__}: {err}"})
        if not batch:
            continue
        probs = model(torch.stack(batch).to(target)).float().softmax(dim=-1).cpu()
        values, indices = probs.topk(k, dim=-1)
        for path, v, i in zip(names, values.tolist(), indices.tolist()):
            predictions.append({"file": str(path), "top": [
                {"class": meta["classes"][j], "label": meta["labels"][j], "index": j, "probability": p}
                for p, j in zip(v, i)]})
    if not predictions:
        raise ValueError(f"none of the {len(files)} image files could be read (e.g. {skipped[0]['file']}: "
                         f"{skipped[0]['error']})")
    return {"predictions": predictions, "skipped": skipped, "checkpoint": meta["path"], "model": meta["cfg"]["model"]["name"]}


# ---------------------------------------------------------------------------------------------- detection, segmentation
def load_dense_model(task: str, checkpoint: Union[str, Path], config: Union[str, Path, None] = None,
                       overrides: Sequence[str] = ()) -> Tuple[nn.Module, Dict[str, Any]]:
    """A model in ``eval()`` mode from one of our runs/checkpoints, or an official mmdet/mmseg file.

    Args:
        task: ``"detection"`` or ``"segmentation"``.
        checkpoint: Run folder (its ``best.pth``), one of our ``.pth`` files, a model folder of a run
            (``crossformer export RUN --format hf``), or an official file.
        config: For official files: the recipe whose ``model`` section builds the matching model (e.g.
            ``maskrcnn_crossformer_small_coco_1x`` with ``model.lda_mode=fixed_interval``).
        overrides: Recipe overrides for ``config``.

    Returns:
        ``(model, meta)``: ``meta`` has ``cfg`` (the recipe), ``class_names``, ``source`` and ``path``.

    Raises:
        CheckpointError: unreadable or corrupt file, or a file for another architecture/class count.
        ValueError: a run of the other task; an official file without ``config``.
    """
    from ..dense.mmcv_weights import load_dense_checkpoint

    folder, weights = model_folder_of(checkpoint)
    if folder is not None:  # JSON and safetensors only (a pickle only when named explicitly)
        if config is not None:
            raise ValueError(f"{folder} is a model folder, which records its recipe: leave out --config")
        return dense_from_folder(task, folder, weights, overrides)
    path = inference_path(checkpoint)
    raw = load_checkpoint_file(path)
    if isinstance(raw, dict) and raw.get("format") == DENSE_FORMAT:
        raw = read_run_checkpoint(path, TASKS[task], need_state=False, state=raw)
        cfg = upgrade_config(raw["config"], task)
        if overrides:
            schema = SCHEMAS[task]
            cfg = validate_recipe(apply_overrides(cfg, [o for o in overrides if not o.startswith("model.")], schema), schema)
        model = build_dense_model(cfg, raw["build_config"]["num_classes"], init=False)
        try:
            load_state_dict_checked(model, raw["model"], strict=True)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
        class_names, source = list(raw["class_names"]), "run"
    else:
        if config is None:
            raise ValueError(f"{path} does not record its architecture (an official mmdet/mmseg file?): add --config "
                             f"RECIPE, e.g. --config {'maskrcnn_crossformer_small_coco_1x' if task == 'detection' else 'upernet_crossformer_small_ade20k_160k'} "
                             "model.lda_mode=fixed_interval")
        cfg = resolve_recipe(task, config, overrides)
        num_classes = cfg["model"].get("num_classes")
        if not num_classes:
            raise ValueError("the recipe's model.num_classes is null: give model.num_classes=N")
        model = build_dense_model(cfg, num_classes, init=False)
        report = load_dense_checkpoint(model, path)  # CheckpointError if it is not this architecture / class count
        first = 1 if task == "detection" else 0
        class_names = report.class_names or [str(i) for i in range(first, num_classes + first)]
        source = "official" if report.source != "own" else "state_dict"
    model.eval()
    return model, {"cfg": cfg, "class_names": class_names, "source": source, "path": str(path)}


def _eval_cfg(cfg: Dict[str, Any], data: Optional[str], images: Optional[str], annotations: Optional[str],
              split: Optional[str]) -> Dict[str, Any]:
    cfg = json.loads(json.dumps(cfg))
    d = cfg["data"]
    if data == "synthetic":  # the recipe's own synthetic dataset, else the default one
        d.update(format="synthetic", root=d["root"] if d["format"] == "synthetic" else None, val=None)
    elif data is not None:
        if not Path(data).is_dir():
            raise FileNotFoundError(f"dataset folder not found: {data}")
        d.update(root=data, val=None)
        if d["format"] == "synthetic":
            d["format"] = "coco" if cfg["task"] == "detection" else ("ade20k" if (Path(data) / "images" / "validation").is_dir() else "folder")
    if images is not None or annotations is not None:
        if images is None or annotations is None:
            raise ValueError(f"give both --images and --{'annotations' if cfg['task'] == 'detection' else 'labels'}")
        key = "annotations" if cfg["task"] == "detection" else "labels"
        d.update(val={"images": images, key: annotations})
        if d["format"] == "synthetic":
            d["format"] = "coco" if cfg["task"] == "detection" else "folder"
    if split is not None:
        d["val_split"] = split
    return cfg


def evaluate_dense(task: str, checkpoint: Union[str, Path], data: Optional[str] = None, split: Optional[str] = None,
             images: Optional[str] = None, annotations: Optional[str] = None, config: Union[str, Path, None] = None,
             overrides: Sequence[str] = (), batch_size: Optional[int] = None, workers: int = 0,
             device: str = "auto") -> Dict[str, Any]:
    """COCO box/mask AP (detection) or mIoU, per-class IoU and pixel accuracy (segmentation) of a checkpoint.

    Args:
        task: ``"detection"`` or ``"segmentation"``.
        checkpoint: Run folder, our checkpoint, or an official mmdet/mmseg file (then ``config`` is needed).
        data: ``"synthetic"`` (the built-in shapes' val split), a dataset folder (COCO: ``annotations/`` +
            image folders; segmentation: ``images/`` + ``labels/`` or ADE20K), or None: the run's own val split.
        split: Split name inside ``data`` (``val2017``, ``validation``...).
        images, annotations: Explicit image folder and COCO json (detection) or label folder (segmentation).
        config, overrides: Recipe for official files (see :func:`load_for_inference`); overrides also apply
            to a run's data fields.
        batch_size: Images per forward pass (default 2 for detection, 1 for segmentation).
        workers: DataLoader worker processes.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.

    Returns:
        The metrics (detection: ``bbox_AP``, ``bbox_AP50``, ... and ``segm_*`` for masks; segmentation:
        ``mIoU``, ``per_class_iou``, ``pixel_accuracy``...), plus ``images``, ``data``, ``checkpoint``, ``model``.
    """
    model, meta = load_dense_model(task, checkpoint, config, overrides)
    cfg = _eval_cfg(meta["cfg"], data, images, annotations, split)
    if cfg["data"]["format"] != "synthetic" and not (cfg["data"]["root"] or cfg["data"]["val"]):
        raise ValueError("give --data (a dataset folder, or 'synthetic') to evaluate an official checkpoint")
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(device)
    try:
        t = TASKS[task](cfg)
        dataset = t.dataset("val")
        t.check(dataset, model.num_classes)
        model.to(info.device)
        loader = t.eval_loader(dataset, batch_size or (2 if task == "detection" else 1), workers, info)
        out = t.evaluate(model, loader, info.device, None)
    finally:
        if owns_group:
            cleanup_distributed()
    where = f"SYNTHETIC shapes, val ({t.synthetic.root})" if t.synthetic is not None else str(
        getattr(dataset, "ann_file", None) or dataset.image_dir)
    out.update(data=where, checkpoint=meta["path"], model=f"{cfg['model']['arch']} + {cfg['model']['backbone']}")
    if task == "segmentation":
        out["protocol"] = describe_protocol(cfg["data"])
    return out


def describe_protocol(data: Mapping[str, Any]) -> str:
    """The segmentation test protocol of a recipe's ``data`` section in words (single or multi-scale, flip, windows)."""
    scales = [float(s) for s in data["test_scales"]]
    size = f"short side {data['test_short_side']}" if data["test_short_side"] else "own size"
    text = f"single scale ({size})" if scales == [1.0] else f"multi-scale x{', '.join(f'{s:g}' for s in scales)} ({size})"
    if data["test_flip"]:
        text += " + flip"
    if data["test_mode"] == "slide":
        window = data["test_window"]
        stride = data["test_stride"] or [max(1, 2 * w // 3) for w in window]
        text += f", sliding {window[0]}x{window[1]} windows every {stride[0]}x{stride[1]}"
    return text


@torch.no_grad()
def predict_dense(task: str, checkpoint: Union[str, Path], images: Sequence[Union[str, Path]], output: Union[str, Path],
            score_threshold: float = 0.5, config: Union[str, Path, None] = None, overrides: Sequence[str] = (),
            device: str = "auto") -> Dict[str, Any]:
    """Draw predictions on image files (folders are searched recursively) and save them as PNGs in ``output``.

    Detection: boxes with class and score (and instance masks for Mask R-CNN) above ``score_threshold``;
    segmentation: the colour-coded class map blended over the image.

    Returns:
        ``{"predictions": [{"file", "output", ...}], "skipped": [{"file", "error"}], "checkpoint", "model"}``:
        detection items list ``detections`` (``label``, ``class``, ``score``, ``box`` XYXY pixels); segmentation
        items ``classes`` (pixel fraction per predicted class). Unreadable files are skipped and listed.

    Raises:
        ValueError: no readable image at all, or a threshold outside [0, 1].
    """
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    files = find_images(images)
    model, meta = load_dense_model(task, checkpoint, config, overrides)
    target = resolve_device(device)
    model.to(target)
    out_dir = Path(output)
    predictions, skipped, used = [], [], set()
    for path in files:
        try:
            image = load_image_tensor(path).as_subclass(torch.Tensor)
        except Exception as err:  # decoders raise OSError, ValueError, SyntaxError, struct.error...
            skipped.append({"file": str(path), "error": f"{type(err).__name__}: {err}"})
            continue
        stem = path.stem
        for i in itertools.count(2):
            if stem not in used:
                break
            stem = f"{path.stem}-{i}"
        used.add(stem)
        item: Dict[str, Any] = {"file": str(path), "output": str(out_dir / f"{stem}.png")}
        found, drawing = TASKS[task].draw_prediction(model, image.to(target), meta, score_threshold)
        item.update(found)
        if is_main_process():
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out_dir / f"{stem}.png", lambda f, img=drawing: img.save(f, format="PNG"))
        predictions.append(item)
    if not predictions:
        raise ValueError(f"none of the {len(files)} image files could be read (e.g. {skipped[0]['file']}: "
                         f"{skipped[0]['error']})")
    cfg = meta["cfg"]
    return {"predictions": predictions, "skipped": skipped, "checkpoint": meta["path"],
            "model": f"{cfg['model']['arch']} + {cfg['model']['backbone']}"}
