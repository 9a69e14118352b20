"""Detection and segmentation: training, evaluation and prediction (``crossformer detect|segment``).

>>> from crossformer_vision.dense.trainer import train, evaluate, predict
>>> summary = train("detection")                    # the synthetic-shapes demo (configs/dense/detection_demo.yaml)
>>> summary = train("segmentation", "upernet_crossformer_small_ade20k_160k", ["data.root=/data/ADEChallengeData2016"])
>>> evaluate("detection", "runs/maskrcnn-...")       # COCO box (and mask) AP on the run's validation split
>>> predict("segmentation", "runs/upernet-...", ["street.jpg"], "predictions/")

The machinery is :mod:`crossformer_vision.engine`'s, as for classification: ``torchrun`` DDP (gloo on CPU),
rank 0 writes, metrics are reduced over ranks, files are written atomically, a failed start leaves no run
folder. A run folder holds ``config.yaml`` (the resolved recipe), ``metrics.csv`` (a row per evaluation),
``curves.png``, ``last.pth`` (model, optimizer, scheduler, scaler, RNG of every process, iteration, history:
``--resume`` continues exactly), ``best.pth`` (weights at the best ``eval.best_metric``) and ``summary.json``.

Training is counted in optimizer steps. Recipes give ``train.epochs`` (one evaluation per epoch of
``len(train) // batch_size`` steps; ``sched.milestones`` in epochs) or ``train.iterations`` (an evaluation
every ``eval.interval`` steps; milestones in iterations). Samples come from one endless stream of shuffled
passes over the data (a new permutation per pass), so stopping and resuming at any evaluation is exact.
"""
import contextlib
import itertools
import json
import math
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import engine
from ..data import CollateSkipped, DataError, SkipUnreadable, data_batches, find_images
from ..engine import describe_os_error
from ..trainer import NonFiniteLossError, _amp_dtype, _inference_path, _plain, _print, _resume_checkpoint_path
from ..recipes import resume_overridable
from ..weights import CheckpointError, load_checkpoint_file, load_state_dict_checked
from .recipes import RESUME_OVERRIDABLE, apply_dense_overrides, resolve_dense_config, validate_dense_config

__all__ = ["CHECKPOINT_FORMAT", "StepSampler", "evaluate", "json_safe", "load_for_inference", "predict", "prepare_synthetic",
           "train"]

#: ``format`` entry of this package's detection/segmentation training checkpoints.
CHECKPOINT_FORMAT = "crossformer-vision/dense"
_COMMAND = {"detection": "detect", "segmentation": "segment"}


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None, recursively (strict JSON; pycocotools' undefined APs are NaN)."""
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


# ---------------------------------------------------------------------------------------------- data
def synthetic_root(cfg: Mapping[str, Any]) -> Path:
    """Where the synthetic dataset of a recipe lives: ``data.root``, else a cache folder named by its parameters."""
    if cfg["data"]["root"]:
        return Path(cfg["data"]["root"])
    params = cfg["data"]["synthetic"]
    size = params["image_size"] if isinstance(params["image_size"], int) else "-".join(map(str, params["image_size"]))
    name = (f"shapes-n{params['num_train']}-{params['num_val']}-s{size}-o{params['max_objects']}"
            f"{'-colour' if params['colour_by_class'] else ''}-seed{params['seed']}")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "crossformer-vision" / name


def prepare_synthetic(cfg: Mapping[str, Any]) -> Any:
    """Generate (rank 0, into a temporary folder renamed when complete) or reuse the recipe's synthetic dataset."""
    from .synthetic import SyntheticDataset, make_synthetic_dataset

    root = synthetic_root(cfg)
    params = dict(cfg["data"]["synthetic"])
    if isinstance(params.get("image_size"), list):
        params["image_size"] = tuple(params["image_size"])
    error = None
    if engine.is_main_process():
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
    error = engine.broadcast_object(error)
    if error:
        raise ValueError(error)
    return SyntheticDataset(root)


def _given_or_root(cfg: Mapping[str, Any], split: str, second: str) -> Tuple[Optional[Tuple[Path, Path]], Path]:
    """``data.<split>``'s ``(images, <second>)`` paths when the recipe gives them, and ``data.root``."""
    data = cfg["data"]
    given = data[split]
    if given:
        if "images" not in given or second not in given:
            raise ValueError(f"data.{split} must give images: FOLDER and {second}: PATH, got {dict(given)}")
        return (Path(given["images"]), Path(given[second])), Path(".")
    root = Path(data["root"])
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    return None, root


def _coco_paths(cfg: Mapping[str, Any], split: str) -> Tuple[Path, Path]:
    """(image folder, annotation json) of a COCO split: ``data.train``/``data.val`` or found under ``data.root``."""
    given, root = _given_or_root(cfg, split, "annotations")
    if given:
        return given
    names = [cfg["data"][f"{split}_split"]] if cfg["data"][f"{split}_split"] else [f"{split}2017", split]
    for name in names:
        ann = root / "annotations" / f"instances_{name}.json"
        if ann.is_file():
            for images in (root / name, root / "images" / name):
                if images.is_dir():
                    return images, ann
            raise FileNotFoundError(f"{root} has {ann.relative_to(root)} but no image folder {name}/ or images/{name}/")
    raise FileNotFoundError(f"{root} has no COCO {split} split: expected annotations/instances_{names[0]}.json and "
                            f"{names[0]}/ (or images/{names[0]}/); set data.{split}_split or data.{split}")


def _segmentation_paths(cfg: Mapping[str, Any], split: str) -> Tuple[Path, Path]:
    """(image folder, label folder) of a segmentation split."""
    given, root = _given_or_root(cfg, split, "labels")
    if given:
        return given
    default = {"train": "training", "val": "validation"} if cfg["data"]["format"] == "ade20k" else {"train": "train", "val": "val"}
    name = cfg["data"][f"{split}_split"] or default[split]
    for labels in ("labels", "annotations"):
        if (root / "images" / name).is_dir() and (root / labels / name).is_dir():
            return root / "images" / name, root / labels / name
    raise FileNotFoundError(f"{root} has no {split} split: expected images/{name}/ and labels/{name}/ (or "
                            f"annotations/{name}/); set data.{split}_split or data.{split}")


class StepSampler(Sampler):
    """Sample indices for optimizer steps ``start_step, start_step + 1, ...``, endlessly.

    The global sample stream is shuffled passes over ``0..length-1`` (pass ``p`` is a permutation drawn from
    ``seed + p``); step ``s`` takes stream positions ``s * B .. (s + 1) * B - 1`` (``B = micro_batch *
    world_size``) and rank ``r`` the ``micro_batch`` of them starting at ``s * B + r * micro_batch``. The
    stream does not depend on where it is started, so resuming at any step gives the same samples.
    """

    def __init__(self, length: int, micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.length, self.micro_batch, self.rank, self.world_size, self.seed = length, micro_batch, rank, world_size, seed
        self.start_step = 0
        self._perms: Dict[int, List[int]] = {}

    def _perm(self, p: int) -> List[int]:
        if p not in self._perms:
            self._perms = {p: torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + p)).tolist()}
        return self._perms[p]

    def __iter__(self) -> Iterator[int]:
        global_batch = self.micro_batch * self.world_size
        for step in itertools.count(self.start_step):
            start = step * global_batch + self.rank * self.micro_batch
            for position in range(start, start + self.micro_batch):
                p, i = divmod(position, self.length)
                yield self._perm(p)[i]


class _Task:
    """What differs between detection and segmentation: data, loss, evaluation, drawing."""

    name = ""
    default_best = ""
    panels: Dict[str, List[str]] = {}

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.synthetic = prepare_synthetic(cfg) if cfg["data"]["format"] == "synthetic" else None

    def eval_loader(self, dataset: Dataset, batch_size: int, workers: int, info: engine.DistInfo) -> DataLoader:
        """Batches ``(batch or None, skipped)``: an unreadable image is left out of the evaluation, never repeated."""
        return DataLoader(SkipUnreadable(dataset, replace=False), batch_size=batch_size, num_workers=workers,
                          sampler=engine.ShardSampler(len(dataset), info.rank, info.world_size),
                          collate_fn=CollateSkipped(self.collate))


class _Detection(_Task):
    name = "detection"
    default_best = "bbox_AP"
    panels = {"loss": ["train_loss"], "COCO AP (box, mask)": ["bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"]}

    @staticmethod
    def collate(batch: Sequence[Any]) -> Any:
        from .datasets import collate_detection

        return collate_detection(batch)

    def dataset(self, split: str, train: bool = False) -> Any:
        from .datasets import CocoInstances, detection_transforms

        d = self.cfg["data"]
        transforms = detection_transforms(train=True, flip_prob=d["hflip"]) if train and d["hflip"] > 0 else None
        if self.synthetic is not None:
            images, ann = self.synthetic.image_dir(split), self.synthetic.ann_file(split)
        else:
            images, ann = _coco_paths(self.cfg, split)
        if not ann.is_file():
            raise FileNotFoundError(f"annotation file not found: {ann}")
        if not images.is_dir():
            raise FileNotFoundError(f"image folder not found: {images}")
        return CocoInstances(images, ann, masks=d["masks"], transforms=transforms, skip_missing_images=d["skip_missing_images"])

    def num_classes(self, dataset: Any) -> int:
        return dataset.num_classes

    def metric_names(self) -> List[str]:
        from .metrics import COCO_METRICS

        kinds = ("bbox", "segm") if self.cfg["data"]["masks"] else ("bbox",)
        return [f"{kind}_{name}" for kind in kinds for name in COCO_METRICS]

    def check(self, dataset: Any, num_classes: int) -> None:
        dataset.check_num_classes(num_classes)

    def class_names(self, dataset: Any) -> List[str]:
        return list(dataset.class_names)

    def losses(self, model: nn.Module, batch: Any, device: torch.device) -> Dict[str, torch.Tensor]:
        images, targets = batch
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
        parts = model(images, targets)
        parts = {k: v for k, v in parts.items()}
        parts["loss"] = sum(parts.values())
        return parts

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device) -> Dict[str, Any]:
        from .metrics import CocoEvaluator

        was_training = model.training
        model.eval()
        evaluator = CocoEvaluator.from_dataset(loader.dataset.dataset)
        for batch, _ in data_batches(loader):
            if batch is None:  # every image of the batch was unreadable
                continue
            images, targets = batch
            outputs = model([image.to(device) for image in images])
            evaluator.update([t["image_id"] for t in targets], [{k: v.cpu() for k, v in o.items()} for o in outputs])
        model.train(was_training)
        evaluator.synchronize()
        out: Dict[str, Any] = {}
        if engine.is_main_process():
            result = evaluator.compute()
            out = {f"{iou}_{name}": value for iou, values in result.items() for name, value in values.items()}
            out["summary"] = evaluator.summary
            out["images"] = len(evaluator.image_ids)
        return engine.broadcast_object(out)


class _Segmentation(_Task):
    name = "segmentation"
    default_best = "mIoU"
    panels = {"loss": ["train_loss"], "mIoU / accuracy": ["mIoU", "pixel_accuracy", "mean_accuracy"]}

    def collate(self, batch: Sequence[Any]) -> Any:
        from .datasets import collate_segmentation

        return collate_segmentation(batch, self.cfg["data"]["ignore_index"])

    def dataset(self, split: str, train: bool = False) -> Any:
        from .datasets import SegmentationFolder, segmentation_transforms

        d = self.cfg["data"]
        transforms = None
        if train:
            transforms = segmentation_transforms(tuple(d["crop_size"]), tuple(d["short_side_range"]), d["hflip"],
                                                 d["photometric"], d["ignore_index"])
        kwargs = dict(reduce_zero_label=d["reduce_zero_label"], ignore_index=d["ignore_index"], transforms=transforms)
        if self.synthetic is not None:
            return self.synthetic.semantic(split, **kwargs)
        images, labels = _segmentation_paths(self.cfg, split)
        num_classes = self.cfg["model"].get("num_classes")
        if d["format"] == "ade20k":
            num_classes = num_classes or 150
        if not num_classes:
            raise ValueError("data.format=folder needs the number of classes: set model.num_classes=N (--num-classes N)")
        return SegmentationFolder(images, labels, int(num_classes), **kwargs)

    def num_classes(self, dataset: Any) -> int:
        return dataset.num_classes

    def metric_names(self) -> List[str]:
        return ["mIoU", "pixel_accuracy", "mean_accuracy"]

    def check(self, dataset: Any, num_classes: int) -> None:
        if dataset.num_classes != num_classes:
            raise ValueError(f"the dataset has {dataset.num_classes} classes but the model predicts {num_classes}; "
                             f"set model.num_classes={dataset.num_classes}")
        if self.cfg["data"]["check_labels"]:
            for index in range(len(dataset)):
                dataset.load_label(index)  # ValueError naming the file and the class ids out of range

    def class_names(self, dataset: Any) -> List[str]:
        return list(dataset.class_names)

    def losses(self, model: nn.Module, batch: Any, device: torch.device) -> Dict[str, torch.Tensor]:
        from .segmentation import segmentation_loss

        images, labels = batch
        out = model(images.to(device, non_blocking=True))
        return segmentation_loss(out, labels.to(device, non_blocking=True), self.cfg["data"]["ignore_index"],
                                 self.cfg["loss"]["aux_weight"])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device) -> Dict[str, Any]:
        from .metrics import SegmentationEvaluator

        dataset = loader.dataset.dataset
        evaluator = SegmentationEvaluator(dataset.num_classes, dataset.ignore_index, dataset.class_names)
        d = self.cfg["data"]
        for batch, _ in data_batches(loader):
            if batch is None:
                continue
            images, labels = batch
            evaluator.update(model.predict(images.to(device), d["test_short_side"], d["test_max_long_side"]), labels)
        evaluator.confusion = engine.all_reduce_sum(evaluator.confusion)
        out = evaluator.compute()
        out["images"] = len(dataset)
        return out


_TASKS = {"detection": _Detection, "segmentation": _Segmentation}


def _task(cfg: Mapping[str, Any]) -> _Task:
    return _TASKS[cfg["task"]](cfg)


# ---------------------------------------------------------------------------------------------- model, optimisation
def build_model(cfg: Mapping[str, Any], num_classes: int, init: bool = True) -> nn.Module:
    """The recipe's model (``model`` section, ``num_classes`` filled in); with ``init``, the ``pretrained``
    backbone and ``weights`` files are loaded."""
    from . import build_model as build

    config = dict(cfg["model"], num_classes=num_classes)
    extra = dict(backbone_weights=cfg["pretrained"], weights=cfg["weights"]) if init else {}
    try:
        return build(config, **{k: v for k, v in extra.items() if v is not None})
    except TypeError as err:
        raise ValueError(f"model section {dict(cfg['model'])} does not fit {cfg['model'].get('arch')}: {err}") from None


def build_optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """timm's optimizer with the recipe's lr; no weight decay on parameters named in ``optim.no_weight_decay``."""
    from timm.optim import create_optimizer_v2, list_optimizers

    o = cfg["optim"]
    if o["opt"].lower().split("_")[-1] not in list_optimizers():
        raise ValueError(f"unknown optimizer optim.opt={o['opt']!r}; timm has e.g. adamw, sgd, lamb, lion")
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(s in name for s in o["no_weight_decay"]) else decay).append(param)
    groups = [{"params": decay, "weight_decay": o["weight_decay"]}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    kwargs: Dict[str, Any] = dict(betas=tuple(o["betas"]), eps=o["eps"]) if "adam" in o["opt"].lower() else {}
    return create_optimizer_v2(groups, opt=o["opt"], lr=o["lr"], weight_decay=o["weight_decay"], momentum=o["momentum"],
                               **kwargs)


def build_scheduler(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int) -> Any:
    """timm's multi-step or poly schedule, in optimizer steps (call ``step_update(num_updates)`` after each).

    ``step``: lr x ``gamma`` at each milestone (epochs with ``train.epochs``, iterations with ``train.iterations``);
    ``poly``: ``(lr - min_lr) (1 - t / T)^power + min_lr``; both after an optional linear warmup from
    ``lr x warmup_ratio`` over ``warmup_iters`` steps.
    """
    from timm.scheduler import MultiStepLRScheduler, PolyLRScheduler

    s = cfg["sched"]
    warmup = dict(warmup_t=s["warmup_iters"], warmup_lr_init=cfg["optim"]["lr"] * s["warmup_ratio"]) if s["warmup"] else {}
    if s["name"] == "poly":
        return PolyLRScheduler(optimizer, t_initial=total_steps, power=s["power"], lr_min=s["min_lr"], t_in_epochs=False,
                               **warmup)
    unit = steps_per_epoch if cfg["train"]["epochs"] is not None else 1
    milestones = [int(m) * unit for m in s["milestones"]] if s["name"] == "step" else []
    return MultiStepLRScheduler(optimizer, decay_t=milestones or [total_steps + 1], decay_rate=s["gamma"],
                                warmup_prefix=False, t_in_epochs=False, **warmup)


# ---------------------------------------------------------------------------------------------- checkpoints
#: Entries of every detection/segmentation checkpoint, and those only ``last.pth`` (resumable) has.
_WEIGHT_KEYS = ("config", "build_config", "class_names", "model", "round", "best")
_STATE_KEYS = ("optimizer", "scheduler", "scaler", "num_updates", "history", "rng")


def _read_checkpoint(path: Path, task: str, need_state: bool, state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A dense checkpoint of ours for ``task`` from ``path`` (or ``state``, already read from it), checked."""
    if state is None:
        state = engine.load_state_file(path)
    engine.check_state(state, path, CHECKPOINT_FORMAT, _WEIGHT_KEYS)
    saved_task = state["config"].get("task") if isinstance(state["config"], Mapping) else None
    if saved_task != task:
        if saved_task not in _COMMAND:
            raise ValueError(f"{path} has no valid task in its config: it is damaged or from an incompatible version")
        raise ValueError(f"{path} is a {saved_task} run ({state['config']['model'].get('arch')}); "
                         f"use `crossformer {_COMMAND[saved_task]}` for it")
    if need_state:
        if "optimizer" not in state:
            raise ValueError(f"{path} holds weights only (a best.pth?); resume from the run's last.pth")
        engine.check_state(state, path, keys=_STATE_KEYS)
    return state


def _resume_config(saved: Mapping[str, Any], overrides: Union[Sequence[str], Mapping[str, Any]]
                   ) -> Tuple[Dict[str, Any], List[str]]:
    """The saved recipe with the ``--resume`` overrides applied, and one note per changed field."""
    changed = apply_dense_overrides(saved, overrides)
    different = []
    for section, value in changed.items():
        if isinstance(value, dict) and section not in ("model", "paper"):
            different += [f"{section}.{k}" for k, v in value.items() if v != saved[section].get(k)]
        elif value != saved.get(section):
            different.append(section)
    refused = [k for k in different if not resume_overridable(k, RESUME_OVERRIDABLE)]
    if refused:
        raise ValueError(f"--resume continues a run with its own recipe; {', '.join(refused)} cannot change (only "
                         f"{', '.join(RESUME_OVERRIDABLE)} can). Start a new run with weights=RUN/last.pth instead")
    notes = [f"{k}: {_show(saved, k)} -> {_show(changed, k)}" for k in different]
    return validate_dense_config(changed), notes


def _show(cfg: Mapping[str, Any], key: str) -> str:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return yaml.safe_dump(node, default_flow_style=True).strip().removesuffix("...").strip()


# ---------------------------------------------------------------------------------------------- training
class _Trainer:
    """One run: everything is checked and built in ``__init__``, before the run folder exists."""

    def __init__(self, cfg: Dict[str, Any], info: engine.DistInfo, checkpoint: Optional[Dict[str, Any]],
                 changes: Sequence[str] = ()) -> None:
        self.cfg, self.info, self.device = cfg, info, info.device
        self.changes = list(changes)  # fields a --resume changed, "key: old -> new"
        self.resumes: List[Dict[str, Any]] = []  # every --resume that changed fields: {"epoch", "changes"}
        self.saved = 0  # evaluations in the run folder's last.pth
        t = cfg["train"]
        if cfg["log"]["tensorboard"] is True and not engine.TensorBoardLogger.available():
            raise ValueError("log.tensorboard=true but tensorboard is not installed: pip install tensorboard, "
                             "or set log.tensorboard=auto")
        self.threads = engine.configure_threads(t["threads"], info.local_world_size)
        engine.seed_everything(t["seed"] + info.rank)
        self.task = _task(cfg)

        # ---- data
        self.train_set = self.task.dataset("train", train=True)
        self.val_set = self.task.dataset("val")
        num_classes = cfg["model"].get("num_classes") or self.task.num_classes(self.train_set)
        for ds in (self.train_set, self.val_set):
            self.task.check(ds, num_classes)
        self.class_names = self.task.class_names(self.train_set)
        cfg["model"]["num_classes"] = num_classes
        if t["batch_size"] % info.world_size:
            raise ValueError(f"train.batch_size ({t['batch_size']}) must be divisible by the number of processes "
                             f"({info.world_size}); it is the global batch of one optimizer step")
        self.micro_batch = t["batch_size"] // info.world_size
        self.steps_per_epoch = len(self.train_set) // t["batch_size"]
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train_set)} images, fewer than one batch "
                             f"(train.batch_size={t['batch_size']}); lower train.batch_size")
        if t["epochs"] is not None:
            self.total_steps, self.round_steps = t["epochs"] * self.steps_per_epoch, self.steps_per_epoch
        else:
            self.total_steps = t["iterations"]
            self.round_steps = min(cfg["eval"]["interval"] or max(1, math.ceil(t["iterations"] / 10)), t["iterations"])
        self.rounds = math.ceil(self.total_steps / self.round_steps)
        workers = min(cfg["data"]["workers"], engine.available_cores())
        self.sampler = StepSampler(len(self.train_set), self.micro_batch, info.rank, info.world_size, t["seed"])
        self.train_loader = DataLoader(SkipUnreadable(self.train_set, replace=True), batch_size=self.micro_batch,
                                       sampler=self.sampler, num_workers=workers,
                                       collate_fn=CollateSkipped(self.task.collate), pin_memory=self.device.type == "cuda")
        eval_batch = cfg["eval"]["batch_size"] or (2 if self.task.name == "detection" else 1)
        self.val_loader = self.task.eval_loader(self.val_set, eval_batch, workers, info)

        # ---- model, optimisation
        self.model = build_model(cfg, num_classes, init=checkpoint is None)
        self.model.class_names = self.class_names
        if info.distributed and self.device.type == "cuda" and t["sync_bn"]:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        self.amp_dtype = _amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.total_steps, self.steps_per_epoch)
        self.train_model: nn.Module = self.model
        if info.distributed:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=self.task.name == "detection")

        # ---- state
        self.start_round, self.num_updates = 0, 0
        self.history: List[Dict[str, Any]] = []
        self.best_metric = cfg["eval"]["best_metric"] or self.task.default_best
        if self.best_metric not in self.task.metric_names():
            raise ValueError(f"eval.best_metric={self.best_metric!r} is not a {self.task.name} metric; use one of "
                             f"{', '.join(self.task.metric_names())}")
        self.best: Dict[str, Any] = {"round": None, "metric": self.best_metric, "value": None}
        self.checkpoint = checkpoint
        if checkpoint is not None:
            self._load_state(checkpoint)

    def _load_state(self, checkpoint: Dict[str, Any]) -> None:
        try:
            load_state_dict_checked(self.model, checkpoint["model"], strict=True)
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.scaler.load_state_dict(checkpoint["scaler"])
        except (KeyError, ValueError, RuntimeError) as err:
            raise ValueError(f"cannot resume: {err}") from None
        self.start_round, self.num_updates = checkpoint["round"], checkpoint["num_updates"]
        self.saved = self.start_round
        self.history, self.best = list(checkpoint["history"]), dict(checkpoint["best"])
        self.resumes = list(checkpoint.get("resumes", []))
        if self.changes:
            self.resumes.append({"epoch": self.start_round, "changes": self.changes})
        reseed = self.cfg["train"]["seed"] + 1000 * self.start_round
        if any(c.startswith("train.seed:") for c in self.changes):
            engine.seed_everything(reseed + self.info.rank)
        else:
            note = engine.resume_rng(checkpoint["rng"], self.info, reseed)
            if note:
                _print(note)

    def _state(self, full: bool) -> Dict[str, Any]:
        state: Dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "config": self.cfg,
            "build_config": _plain(self.model.build_config),
            "class_names": self.class_names,
            "round": len(self.history),
            "num_updates": self.num_updates,
            "metrics": self.history[-1] if self.history else {},
            "best": self.best,
            "model": self.model.state_dict(),
        }
        if full:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(), history=self.history, world_size=self.info.world_size,
                         resumes=self.resumes)
        return state

    def _lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)

    # -------------------------------------------------------------------------------------- one round
    def train_round(self, index: int) -> Dict[str, float]:
        steps = min(self.round_steps, self.total_steps - self.num_updates)
        unit = "epoch" if self.cfg["train"]["epochs"] is not None else "round"
        self.progress = engine.Progress(steps, f"{unit} {index + 1}/{self.rounds}", self.cfg["log"]["progress"])
        self.train_model.train()
        self.sampler.start_step = self.num_updates
        sums = engine.MetricSums(self.device)
        autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        clip = self.cfg["optim"]["clip_grad"]
        start, seen = time.perf_counter(), 0
        for step, (batch, skipped) in enumerate(itertools.islice(data_batches(self.train_loader), steps)):
            with autocast:
                parts = self.task.losses(self.train_model, batch, self.device)
            loss = parts["loss"]
            self._check_finite(loss, step)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.num_updates += 1
            self.scheduler.step_update(num_updates=self.num_updates)
            n = len(batch[0])
            seen += n
            for name, value in parts.items():
                sums.add(f"train_{name}", value.detach().float(), count=n)
            sums.add("skipped", float(skipped), mean=False)
            elapsed = time.perf_counter() - start
            self.progress.update(1, f"loss={loss.item():.4f}, lr={self._lr():.2e}, "
                                    f"img/s={seen * self.info.world_size / max(elapsed, 1e-9):.1f}")
        elapsed = time.perf_counter() - start
        out = sums.reduce()
        row = {k: v for k, v in out.items() if not k.endswith("_count")}
        row["skipped"] = int(row["skipped"])
        row["images_per_s"] = out["train_loss_count"] / elapsed
        row["round_time_s"] = elapsed
        return row

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        value = loss.detach().float()
        bad = engine.all_reduce_sum((~torch.isfinite(value)).float())
        if bad.item() > 0:
            raise NonFiniteLossError(f"training stopped: the loss became non-finite at iteration {self.num_updates + 1} "
                                     f"(lr {self._lr():.3g})")

    # -------------------------------------------------------------------------------------- the run
    def run(self, run_dir: Path, created: bool) -> Dict[str, Any]:
        self.run_dir = run_dir
        wall = time.perf_counter()
        prior_time = float(self.history[-1]["elapsed_s"]) if self.history else 0.0
        is_main = self.info.is_main
        with engine.RunDirGuard(run_dir, created) as guard:
            tb = engine.TensorBoardLogger(run_dir / "tensorboard", self.cfg["log"]["tensorboard"])
            if self.checkpoint is not None:
                guard.keep()
            if is_main:
                engine.remove_stale_temp_files(run_dir)
                engine.write_config(run_dir / "config.yaml", _plain(self.cfg), self.resumes)
            self._print_header(created)
            try:
                for index in range(self.start_round, self.rounds):
                    row: Dict[str, Any] = {"epoch" if self.cfg["train"]["epochs"] is not None else "round": index + 1}
                    row.update(self.train_round(index))
                    metrics = self.task.evaluate(self.model, self.val_loader, self.device)
                    row.update({k: v for k, v in metrics.items() if isinstance(v, float)})
                    row.update(iteration=self.num_updates, lr=self._lr(),
                               elapsed_s=prior_time + time.perf_counter() - wall)
                    self.history.append(row)
                    improved = self._improves(row[self.best_metric])
                    if improved:
                        self.best.update(round=index + 1, value=row[self.best_metric], iteration=self.num_updates)
                    self._save(improved)
                    guard.keep()
                    self.progress.close(f"loss={row['train_loss']:.4f}, lr={row['lr']:.2e}, "
                                        f"{self._headline(row)}{' (best)' if improved else ''}")
                    if row["skipped"]:
                        _print(f"  {row['skipped']} unreadable images were skipped in this round")
                    if is_main:
                        engine.write_csv(run_dir / "metrics.csv", self.history)
                        engine.plot_history(run_dir / "curves.png", self.history, self.task.panels, title=run_dir.name,
                                            x=next(iter(row)))
                        tb.log({k: v for k, v in row.items() if k not in ("epoch", "round")}, self.num_updates)
            except NonFiniteLossError as err:
                where = (f"; the last good checkpoint is {run_dir / 'last.pth'}" if not guard.armed
                         else "; no evaluation had finished, so no run folder was kept")
                raise NonFiniteLossError(f"{err}{where}. Lower optim.lr or set optim.clip_grad, then start again or "
                                         f"--resume") from None
            except DataError as err:
                raise DataError(f"{err}{engine.stopped_note(run_dir, guard, self.saved, 'evaluation')}") from None
            except OSError as err:  # a full disk or a folder gone read-only while writing checkpoints or logs
                raise ValueError(f"the run stopped: {describe_os_error(err)}"
                                 f"{engine.stopped_note(run_dir, guard, self.saved, 'evaluation')}") from None
            finally:
                tb.close()
        return self._finish(prior_time + time.perf_counter() - wall)

    def _headline(self, row: Mapping[str, Any]) -> str:
        if self.task.name == "detection":
            text = f"box AP={100 * row['bbox_AP']:.1f}, AP50={100 * row['bbox_AP50']:.1f}"
            if "segm_AP" in row:
                text += f", mask AP={100 * row['segm_AP']:.1f}"
            return text
        return f"mIoU={100 * row['mIoU']:.1f}, pixel acc={100 * row['pixel_accuracy']:.1f}"

    def _improves(self, value: float) -> bool:
        """Better or as good (a tie goes to the later evaluation); nan never improves."""
        best = self.best["value"]
        if not math.isfinite(value):
            return best is None
        return best is None or not math.isfinite(best) or value >= best

    def _save(self, improved: bool) -> None:
        rng = engine.all_gather_object(engine.capture_rng_state())  # collective: every rank
        if not self.info.is_main:
            return
        state = self._state(full=True)
        state["rng"] = rng
        engine.atomic_save(state, self.run_dir / "last.pth")
        if improved:
            engine.atomic_save(self._state(full=False), self.run_dir / "best.pth")
        self.saved = len(self.history)

    def _print_header(self, created: bool) -> None:
        from ..flops import count_params

        c = self.cfg
        verb = "training" if created else f"resuming after {self.start_round} of"
        data = f"SYNTHETIC shapes ({self.task.synthetic.root})" if self.task.synthetic is not None else c["data"]["root"] or c["data"]["train"]
        m = c["model"]
        _print(f"{verb} {m['arch']} + {m['backbone']} ({count_params(self.model) / 1e6:.2f}M params) on {data}: "
               f"{len(self.train_set)} train / {len(self.val_set)} val images, {m['num_classes']} classes")
        device = str(self.device) + (f" ({self.threads} thread{'s' if self.threads > 1 else ''})" if self.device.type == "cpu" else "")
        length = (f"{c['train']['epochs']} epochs x {self.steps_per_epoch} iterations" if c["train"]["epochs"] is not None
                  else f"{self.total_steps} iterations, evaluated every {self.round_steps}")
        for name, ds in (("train", self.train_set), ("val", self.val_set)):
            if getattr(ds, "skipped", None):
                path, reason = ds.skipped[0]
                _print(f"  skipped {len(ds.skipped)} unreadable {name} files (e.g. {path}: {reason})")
        for change in self.changes:
            _print(f"  changed on resume: {change} (recorded in config.yaml)")
        _print(f"  {length}, batch {c['train']['batch_size']} ({self.info.world_size} process"
               f"{'es' if self.info.world_size > 1 else ''} x {self.micro_batch}), {c['optim']['opt']} lr "
               f"{c['optim']['lr']:.3g}, {c['sched']['name']} schedule, {device}")
        _print(f"  run folder: {self.run_dir}")

    def _finish(self, elapsed: float) -> Dict[str, Any]:
        last = self.history[-1]
        best_row = self.history[self.best["round"] - 1] if self.best["round"] else last
        metric_keys = [k for k in last if k not in ("epoch", "round", "iteration", "lr", "elapsed_s", "images_per_s", "skipped",
                                                     "round_time_s") and not k.startswith(("train_", "loss"))]
        summary: Dict[str, Any] = {
            "status": "finished",
            "task": self.task.name,
            "run_dir": str(self.run_dir),
            "model": self.cfg["model"]["arch"],
            "backbone": self.cfg["model"]["backbone"],
            "dataset": "synthetic" if self.task.synthetic is not None else (self.cfg["data"]["root"] or self.cfg["data"]["train"]),
            "iterations": self.num_updates,
            "best_metric": self.best_metric,
            "best_round": self.best["round"],
            "best": {k: best_row[k] for k in metric_keys},
            "last": {k: last[k] for k in metric_keys},
            "train_time_s": round(elapsed, 1),
            "processes": self.info.world_size,
            "device": str(self.device),
        }
        if self.info.is_main:
            engine.atomic_write_text(self.run_dir / "summary.json", json.dumps(json_safe(summary), indent=2) + "\n")
            _print(f"done in {elapsed:.1f}s; best.pth is evaluation {summary['best_round']} ({self._headline(best_row)})")
            _print(f"  wrote {self.run_dir}/: config.yaml metrics.csv curves.png last.pth best.pth summary.json")
        return summary


def _run_name(cfg: Mapping[str, Any]) -> str:
    if cfg["log"]["name"]:
        return str(cfg["log"]["name"])
    data = "shapes" if cfg["data"]["format"] == "synthetic" else Path(cfg["data"]["root"] or "data").resolve().name
    return f"{cfg['model']['arch']}-{cfg['model']['backbone']}-{data}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(task: str, config: Union[str, Path, Mapping[str, Any], None] = None,
          overrides: Union[Sequence[str], Mapping[str, Any]] = (), resume: Union[str, Path, None] = None) -> Dict[str, Any]:
    """Train a detector or segmenter; under ``torchrun`` every process calls this (DistributedDataParallel).

    Args:
        task: ``"detection"`` or ``"segmentation"``.
        config: Recipe name in ``configs/dense/``, YAML path or dict; None: the task's synthetic demo.
        overrides: ``["train.epochs=2", ...]`` or ``{"train.epochs": 2}``.
        resume: A run folder (or its ``last.pth``) to continue; ``config`` is then ignored and only the fields of
            :data:`~crossformer_vision.dense.recipes.RESUME_OVERRIDABLE` may be overridden.

    Returns:
        The summary written to ``summary.json``.

    Raises:
        ValueError, FileNotFoundError: bad recipe, data, model or checkpoint (before a run folder is made).
        NonFiniteLossError: the loss became NaN/inf; the last good checkpoint stays in the run folder.
    """
    checkpoint, checkpoint_path = None, None
    if resume is not None:
        checkpoint_path = _resume_checkpoint_path(resume)
        checkpoint = _read_checkpoint(checkpoint_path, task, need_state=True)
        cfg, changes = _resume_config(checkpoint["config"], overrides)
    else:
        cfg, changes = resolve_dense_config(task, config, overrides), []
    owns_group = not (dist.is_available() and dist.is_initialized())
    threads = torch.get_num_threads()
    info = engine.init_distributed(cfg["train"]["device"])
    try:
        trainer = _Trainer(cfg, info, checkpoint, changes)
        if checkpoint_path is not None:
            return trainer.run(checkpoint_path.parent, created=False)
        return trainer.run(engine.create_run_dir(cfg["log"]["output"], _run_name(cfg)), created=True)
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            engine.cleanup_distributed()


# ---------------------------------------------------------------------------------------------- inference
def load_for_inference(task: str, checkpoint: Union[str, Path], config: Union[str, Path, None] = None,
                       overrides: Sequence[str] = ()) -> Tuple[nn.Module, Dict[str, Any]]:
    """A model in ``eval()`` mode from one of our runs/checkpoints, or an official mmdet/mmseg file.

    Args:
        task: ``"detection"`` or ``"segmentation"``.
        checkpoint: Run folder (its ``best.pth``), one of our ``.pth`` files, or an official file.
        config: For official files: the recipe whose ``model`` section builds the matching model (e.g.
            ``maskrcnn_crossformer_small_coco_1x`` with ``model.lda_mode=fixed_interval``).
        overrides: Recipe overrides for ``config``.

    Returns:
        ``(model, meta)``: ``meta`` has ``cfg`` (the recipe), ``class_names``, ``source`` and ``path``.

    Raises:
        CheckpointError: unreadable or corrupt file, or a file for another architecture/class count.
        ValueError: a run of the other task; an official file without ``config``.
    """
    from .mmcv_weights import load_dense_checkpoint

    path = _inference_path(checkpoint)
    raw = load_checkpoint_file(path)
    if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
        raw = _read_checkpoint(path, task, need_state=False, state=raw)
        cfg = raw["config"]
        if overrides:
            cfg = validate_dense_config(apply_dense_overrides(cfg, [o for o in overrides if not o.startswith("model.")]))
        model = build_model(cfg, raw["build_config"]["num_classes"], init=False)
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
        cfg = resolve_dense_config(task, config, overrides)
        num_classes = cfg["model"].get("num_classes")
        if not num_classes:
            raise ValueError("the recipe's model.num_classes is null: give model.num_classes=N")
        model = build_model(cfg, num_classes, init=False)
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


def evaluate(task: str, checkpoint: Union[str, Path], data: Optional[str] = None, split: Optional[str] = None,
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
    model, meta = load_for_inference(task, checkpoint, config, overrides)
    cfg = _eval_cfg(meta["cfg"], data, images, annotations, split)
    if cfg["data"]["format"] != "synthetic" and not (cfg["data"]["root"] or cfg["data"]["val"]):
        raise ValueError("give --data (a dataset folder, or 'synthetic') to evaluate an official checkpoint")
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = engine.init_distributed(device)
    try:
        t = _task(cfg)
        dataset = t.dataset("val")
        t.check(dataset, model.num_classes)
        model.to(info.device)
        loader = t.eval_loader(dataset, batch_size or (2 if task == "detection" else 1), workers, info)
        out = t.evaluate(model, loader, info.device)
    finally:
        if owns_group:
            engine.cleanup_distributed()
    where = f"SYNTHETIC shapes, val ({t.synthetic.root})" if t.synthetic is not None else str(
        getattr(dataset, "ann_file", None) or dataset.image_dir)
    out.update(data=where, checkpoint=meta["path"], model=f"{cfg['model']['arch']} + {cfg['model']['backbone']}")
    return out


@torch.no_grad()
def predict(task: str, checkpoint: Union[str, Path], images: Sequence[Union[str, Path]], output: Union[str, Path],
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
    from .datasets import load_image
    from .visualize import draw_detections, draw_segmentation

    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    files = find_images(images)
    model, meta = load_for_inference(task, checkpoint, config, overrides)
    target = engine.resolve_device(device)
    model.to(target)
    out_dir = Path(output)
    names = meta["class_names"]
    d = meta["cfg"]["data"]
    predictions, skipped, used = [], [], set()
    for path in files:
        try:
            image = load_image(path).as_subclass(torch.Tensor)
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
        if task == "detection":
            pred = {k: v.cpu() for k, v in model([image.to(target)])[0].items()}
            keep = (pred["scores"] >= score_threshold) & (pred["labels"] > 0)
            item["detections"] = [
                {"label": int(label), "class": names[int(label) - 1] if int(label) <= len(names) else str(int(label)),
                 "score": round(float(score), 4), "box": [round(float(v), 1) for v in box]}
                for label, score, box in zip(pred["labels"][keep], pred["scores"][keep], pred["boxes"][keep])]
            drawing = draw_detections(image, pred, names, score_threshold=score_threshold)
        else:
            labels = model.predict(image[None].to(target), d["test_short_side"], d["test_max_long_side"])[0].cpu()
            counts = torch.bincount(labels.flatten(), minlength=model.num_classes).tolist()
            total = labels.numel()
            item["classes"] = {names[c] if c < len(names) else str(c): round(n / total, 4) for c, n in enumerate(counts) if n}
            background = 0 if d["format"] == "synthetic" else None
            drawing = draw_segmentation(image, labels, model.num_classes, background=background)
        if engine.is_main_process():
            out_dir.mkdir(parents=True, exist_ok=True)
            engine.atomic_write_bytes(out_dir / f"{stem}.png", lambda f, img=drawing: img.save(f, format="PNG"))
        predictions.append(item)
    if not predictions:
        raise ValueError(f"none of the {len(files)} image files could be read (e.g. {skipped[0]['file']}: "
                         f"{skipped[0]['error']})")
    cfg = meta["cfg"]
    return {"predictions": predictions, "skipped": skipped, "checkpoint": meta["path"],
            "model": f"{cfg['model']['arch']} + {cfg['model']['backbone']}"}
