"""Image classification: ImageFolder trees or the built-in digits, cross-entropy (with mixup/cutmix and label
smoothing), top-1/top-5 accuracy, the papers' AdamW + cosine recipe.

The papers' ImageNet recipe and the demo are in ``configs/`` (:data:`~crossformer_vision.train.config.
CLASSIFICATION_DEFAULTS` lists every field).
"""
import contextlib
import copy
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...data.classification import build_dataset, collate_skipped
from ...data.samplers import ShardSampler
from ...data.samples import data_batches
from ...models import MODELS, CrossFormer, create_model
from ...metrics.classification import topk_hits
from ...utils.distributed import DistInfo, MetricSums
from ...tools.flops import count_params
from ..config import plain
from ..optim import create_optimizer
from .base import Task

__all__ = ["CHECKPOINT_FORMAT", "ClassificationTask", "build_classifier", "build_criterion", "build_optimizer",
           "build_scheduler", "classification_loader", "evaluate_model", "lr_scale", "warmup_epochs"]

#: ``format`` entry of classification checkpoints.
CHECKPOINT_FORMAT = "crossformer-vision/classification"


def record_architecture(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``cfg`` with ``model.arch`` written out for a registered model, so that a run's checkpoints rebuild their
    model from what they hold, whatever later versions register under that name."""
    if cfg["model"]["arch"] is None:
        cfg = copy.deepcopy(cfg)
        cfg["model"]["arch"] = plain(MODELS[cfg["model"]["name"]])
    return cfg


def build_classifier(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The recipe's classifier with ``num_classes`` outputs (``model`` and ``data.in_chans`` fields).

    Registered models (:func:`crossformer_vision.list_models`) come from timm; ``model.arch`` builds
    :class:`~crossformer_vision.CrossFormer` from its keyword arguments. Either way ``pretrained_cfg`` holds the
    recipe's preprocessing (input size, crop, interpolation, mean, std) and class count.

    Raises:
        ValueError: unknown name, or ``model.arch`` with arguments CrossFormer does not take.
    """
    m, d = cfg["model"], cfg["data"]
    kwargs: Dict[str, Any] = dict(num_classes=num_classes, in_chans=d["in_chans"], drop_rate=m["drop_rate"])
    if m["drop_path_rate"] is not None:
        kwargs["drop_path_rate"] = m["drop_path_rate"]
    if m["arch"] is None:
        model = create_model(m["name"], **kwargs)
    else:
        try:
            model = CrossFormer(**{**m["arch"], **kwargs})
        except TypeError as err:
            raise ValueError(f"model.arch of {m['name']!r} is not a CrossFormer configuration: {err}") from None
    model.pretrained_cfg = {**(getattr(model, "pretrained_cfg", None) or {}),
                            "input_size": (d["in_chans"], d["img_size"], d["img_size"]), "crop_pct": d["crop_pct"],
                            "interpolation": d["interpolation"], "mean": tuple(d["mean"]), "std": tuple(d["std"]),
                            "num_classes": num_classes, "classifier": "head.fc"}
    model.default_cfg = model.pretrained_cfg  # timm's older name for the same dict
    return model


def lr_scale(cfg: Mapping[str, Any]) -> float:
    """Linear learning-rate scaling: global batch (``train.batch_size``) / ``optim.lr_base_batch``."""
    return cfg["train"]["batch_size"] / cfg["optim"]["lr_base_batch"]


def build_optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer at the scaled learning rate (:func:`lr_scale`); weight decay skips 1-D parameters
    (norms, biases) and ``model.no_weight_decay()`` (position tables)."""
    return create_optimizer(model, cfg["optim"], cfg["optim"]["lr"] * lr_scale(cfg))


def warmup_epochs(cfg: Mapping[str, Any]) -> Tuple[float, str]:
    """The warm-up this run gets, in epochs, and a note when it differs from the recipe's ``sched.warmup_epochs``.

    A run shorter than the recipe expects (``--epochs 1``, ``2``, ``5`` with a 3-epoch warm-up) would spend
    most or all of its steps warming up and then, because the cosine counts the warm-up inside its cycle,
    drop far below the peak at once. So the warm-up is capped at ``sched.max_warmup_fraction`` of the run
    (10% by default; the papers' 20 of 300 epochs and the shipped recipes stay as they are).
    """
    s, epochs = cfg["sched"], cfg["train"]["epochs"]
    asked = float(s["warmup_epochs"])
    fraction = s.get("max_warmup_fraction")
    if fraction is None or s["warmup_prefix"] or asked <= fraction * epochs:
        return asked, ""
    capped = fraction * epochs
    return capped, (f"the recipe's {s['warmup_epochs']:g}-epoch warm-up capped at {100 * fraction:g}% of this "
                    f"{epochs}-epoch run (sched.max_warmup_fraction)")


def build_scheduler(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, updates_per_epoch: int) -> Tuple[Any, int]:
    """timm's scheduler for the recipe's ``sched`` section (warmup and minimum lr scaled like the lr).

    The warm-up is :func:`warmup_epochs` (capped for short runs); it is linear from ``optim.warmup_lr`` to the
    peak, then the cosine (or other timm schedule) runs down to ``optim.min_lr`` at the end of the run.

    Returns:
        ``(scheduler, epochs)``: call ``scheduler.step_update(num_updates)`` after every optimizer step and
        ``scheduler.step(epoch + 1)`` after every epoch; ``epochs`` includes a warmup prefix and cooldown.
    """
    from timm.scheduler import create_scheduler_v2

    o, s = cfg["optim"], cfg["sched"]
    scale = lr_scale(cfg)
    warmup, _ = warmup_epochs(cfg)
    try:
        return create_scheduler_v2(
            optimizer, sched=s["name"], num_epochs=cfg["train"]["epochs"], warmup_epochs=warmup,
            warmup_lr=o["warmup_lr"] * scale, min_lr=o["min_lr"] * scale, warmup_prefix=s["warmup_prefix"],
            cooldown_epochs=s["cooldown_epochs"], step_on_epochs=not s["per_iteration"],
            updates_per_epoch=updates_per_epoch)
    except (AssertionError, KeyError, ValueError) as err:
        raise ValueError(f"sched.name={s['name']!r} could not be built by timm: {err}") from None


def build_criterion(aug: Mapping[str, Any], mixup: bool) -> nn.Module:
    """Training loss: soft-target CE with mixup/cutmix (which smooth labels themselves), else label smoothing."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup:
        return SoftTargetCrossEntropy()
    if aug["smoothing"] > 0:
        return LabelSmoothingCrossEntropy(smoothing=aug["smoothing"])
    return nn.CrossEntropyLoss()


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, device: torch.device,
                   amp_dtype: Optional[torch.dtype] = None) -> Dict[str, float]:
    """Cross-entropy, top-1 and top-5 accuracy of ``model`` over ``loader``, summed over all ranks.

    Args:
        model: Classifier returning logits ``(B, num_classes)``.
        loader: Yields ``(images (B, C, H, W), targets (B,), skipped)`` (:func:`collate_skipped`); with several
            processes each rank gets its own shard (:class:`~crossformer_vision.data.samplers.ShardSampler`).
        device: Where ``model`` lives.
        amp_dtype: Autocast dtype on CUDA, or None.

    Returns:
        ``{"loss", "top1", "top5" (percent), "images", "skipped"}``; top-5 is over all classes when fewer than 5.
    """
    was_training = model.training
    model.eval()
    sums = MetricSums(device)
    autocast = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None and device.type == "cuda" else contextlib.nullcontext()
    for images, targets, skipped in data_batches(loader):
        sums.add("skipped", float(skipped), mean=False)
        if not len(images):
            continue
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast:
            logits = model(images)
        logits = logits.float()
        n = images.shape[0]
        hits = topk_hits(logits, targets)
        sums.add("loss", F.cross_entropy(logits, targets), count=n)
        sums.add("top1", hits[:, 0].sum(), mean=False)
        sums.add("top5", hits[:, -1].sum(), mean=False)
    model.train(was_training)
    out = sums.reduce()
    if not out.get("loss_count"):
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "images": 0,
                "skipped": int(out.get("skipped", 0))}
    images = int(out["loss_count"])
    return {"loss": out["loss"], "top1": 100.0 * out["top1"] / images, "top5": 100.0 * out["top5"] / images,
            "images": images, "skipped": int(out["skipped"])}


def classification_loader(dataset: Dataset, batch_size: int, workers: int, info: DistInfo) -> DataLoader:
    """Evaluation batches ``(images, targets, skipped)`` of ``dataset``, every image once over all ranks."""
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), info.rank, info.world_size),
                      num_workers=workers, pin_memory=info.device.type == "cuda", collate_fn=collate_skipped)


def _collate_batches(items: Sequence[Any]) -> Tuple[Tuple[torch.Tensor, torch.Tensor], int]:
    images, targets, skipped = collate_skipped(items)
    return (images, targets), skipped


class ClassificationTask(Task):
    """Classification with a CrossFormer (or any ``model.arch``) and the papers' recipe."""

    name = "classification"
    command = "train"
    checkpoint_format = CHECKPOINT_FORMAT
    checkpoint_keys = ("config", "classes", "model", "epoch", "best")
    default_best = "val_top1"
    aligned_epochs = True
    panels = {"loss": ["train_loss", "val_loss", "val_loss_ema"], "accuracy (%)": ["val_top1", "val_top5", "val_top1_ema"]}

    @classmethod
    def complete_config(cls, cfg: Dict[str, Any]) -> Dict[str, Any]:
        return record_architecture(cfg)

    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__(cfg)
        self.scheduled_epochs = cfg["train"]["epochs"]
        aug = cfg["aug"]
        self.mixup_on = aug["mixup"] > 0 or aug["cutmix"] > 0 or aug["cutmix_minmax"] is not None
        self.mixup = None
        self.criterion = build_criterion(aug, self.mixup_on)

    # ------------------------------------------------------------------------------------------ data
    def datasets(self) -> Tuple[Dataset, Dataset, Optional[Dataset]]:
        train_set = build_dataset(self.cfg, "train", is_training=True)
        classes = list(train_set.classes)
        val_set = build_dataset(self.cfg, "val", classes=classes)
        d = self.cfg["data"]
        test_set = None
        if d["dataset"] == "digits" or (Path(d["path"]) / d["test_split"]).is_dir():
            test_set = build_dataset(self.cfg, "test", classes=classes)
        return train_set, val_set, test_set

    def class_names(self, train_set: Dataset) -> List[str]:
        return list(train_set.classes)

    def training_set(self, dataset: Dataset) -> Dataset:
        return dataset  # its samples already replace unreadable files and count them

    def collate(self, items: Sequence[Any]) -> Any:
        return collate_skipped(items)

    def training_collate(self) -> Any:
        return _collate_batches

    def eval_loader(self, dataset: Dataset, batch_size: int, workers: int, info: DistInfo) -> DataLoader:
        return classification_loader(dataset, batch_size, workers, info)

    def check_micro_batch(self, micro_batch: int) -> None:
        if self.mixup_on and micro_batch % 2:
            raise ValueError(f"mixup/cutmix need an even batch per process, got {micro_batch}; change "
                             f"train.batch_size or set aug.mixup=0 aug.cutmix=0")

    # ------------------------------------------------------------------------------------------ model
    def new_model(self, num_classes: int, init: bool) -> nn.Module:
        from timm.data import Mixup

        model = build_classifier(self.cfg, num_classes)
        if init and self.cfg["model"]["pretrained"]:
            model.load_pretrained(self.cfg["model"]["pretrained"])  # official or ours; CheckpointError if it does not fit
        if self.cfg["model"]["grad_checkpointing"]:
            model.set_grad_checkpointing(True)
        aug = self.cfg["aug"]
        if self.mixup_on:
            self.mixup = Mixup(mixup_alpha=aug["mixup"], cutmix_alpha=aug["cutmix"], cutmix_minmax=aug["cutmix_minmax"],
                               prob=aug["mixup_prob"], switch_prob=aug["mixup_switch_prob"], mode=aug["mixup_mode"],
                               label_smoothing=aug["smoothing"], num_classes=num_classes)
        return model

    def describe_model(self, model: nn.Module) -> str:
        d = self.cfg["data"]
        return (f"{self.cfg['model']['name']} ({count_params(model) / 1e6:.2f}M params, "
                f"{d['img_size']}x{d['img_size']}x{d['in_chans']})")

    def describe_data(self) -> str:
        d = self.cfg["data"]
        return "digits (scikit-learn)" if d["dataset"] == "digits" else str(d["path"])

    def dataset_name(self) -> str:
        d = self.cfg["data"]
        return "digits" if d["dataset"] == "digits" else str(d["path"])

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(self.cfg, model)

    def scheduler(self, optimizer: torch.optim.Optimizer, total_updates: int, updates_per_epoch: int) -> Tuple[Any, str]:
        c, scale = self.cfg, lr_scale(self.cfg)
        scheduler, self.scheduled_epochs = build_scheduler(c, optimizer, updates_per_epoch)
        warmup, note = warmup_epochs(c)
        peak = c["optim"]["lr"] * scale
        text = f"{c['sched']['name']}"
        if warmup > 0:
            steps = math.ceil(warmup * updates_per_epoch) if c["sched"]["per_iteration"] else None
            text += (f", warm-up {warmup:g} epoch{'s' if warmup != 1 else ''}"
                     f"{f' ({steps} step{_s(steps)})' if steps is not None else ''} from {c['optim']['warmup_lr'] * scale:.3g}")
        text += f", peak lr {peak:.3g}, down to {c['optim']['min_lr'] * scale:.3g}"
        return scheduler, text + (f"; {note}" if note else "")

    def extra_epochs(self) -> int:
        return int(self.scheduled_epochs) - int(self.cfg["train"]["epochs"])

    # ------------------------------------------------------------------------------------------ training
    def prepare(self, batch: Any, device: torch.device) -> Any:
        images, targets = batch
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        return images, targets

    def loss(self, model: nn.Module, batch: Any) -> Dict[str, torch.Tensor]:
        images, targets = batch
        return {"loss": self.criterion(model(images), targets)}

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 amp_dtype: Optional[torch.dtype]) -> Dict[str, Any]:
        out = evaluate_model(model, loader, device, amp_dtype)
        return {"val_loss": out["loss"], "val_top1": out["top1"], "val_top5": out["top5"]}

    def metric_names(self) -> List[str]:
        return ["val_loss", "val_top1", "val_top5"]

    def headline(self, row: Mapping[str, Any]) -> str:
        return f"val_loss={row['val_loss']:.4f}, val_top1={row['val_top1']:.2f}%"

    def best_text(self, row: Mapping[str, Any], metric: str, higher: bool) -> str:
        if metric.startswith("val_loss"):
            return f"lowest val loss {row[metric]:.4f}, val top-1 {row[metric.replace('loss', 'top1')]:.2f}%"
        return f"highest val top-1 {row[metric]:.2f}%"

    # ------------------------------------------------------------------------------------------ records
    def checkpoint_fields(self, model: nn.Module, classes: List[str], rounds: int) -> Dict[str, Any]:
        return {"epoch": rounds}  # the name these checkpoints have always used for the rounds done

    def run_name(self) -> str:
        d = self.cfg["data"]
        data = "digits" if d["dataset"] == "digits" else Path(d["path"]).resolve().name
        return f"{self.cfg['model']['name']}-{data}"

    def finish(self, trainer: Any) -> Dict[str, Any]:
        """The best epoch's (and the last epoch's) test accuracy; the best validation numbers."""
        best_row = trainer.history[trainer.best["round"] - 1]
        out: Dict[str, Any] = {"best_val_top1": best_row["val_top1"], "best_val_loss": best_row["val_loss"]}
        if trainer.test_loader is None:
            return out
        last = None
        if trainer.best["round"] != len(trainer.history):  # the model holds the last epoch's weights still
            last = evaluate_model(trainer.model, trainer.test_loader, trainer.device, trainer.amp_dtype)
        trainer.load_best_weights()
        test = evaluate_model(trainer.model, trainer.test_loader, trainer.device, trainer.amp_dtype)
        last = last or test
        out.update(test_top1=test["top1"], test_top5=test["top5"], test_loss=test["loss"], test_images=test["images"],
                   last_test_top1=last["top1"], last_test_top5=last["top5"], last_test_loss=last["loss"])
        return out

    def finish_lines(self, summary: Mapping[str, Any], rounds: int) -> List[str]:
        """Lines printed under the loop's ``done`` line."""
        if "test_top1" not in summary:
            return []
        return [f"  test ({summary['test_images']} images): top-1 {summary['test_top1']:.2f}%, top-5 "
                f"{summary['test_top5']:.2f}%, loss {summary['test_loss']:.4f}; last.pth (epoch {rounds}): "
                f"top-1 {summary['last_test_top1']:.2f}%, top-5 {summary['last_test_top5']:.2f}%, "
                f"loss {summary['last_test_loss']:.4f}"]


def _s(count: float) -> str:
    return "" if count == 1 else "s"
