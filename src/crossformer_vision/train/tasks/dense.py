"""Detection (COCO box/mask AP) and semantic segmentation (mIoU) with CrossFormer backbones.

Models come from :mod:`crossformer_vision.dense` (torchvision RetinaNet / Faster / Mask R-CNN, smp UPerNet and
Semantic FPN); recipes from ``configs/dense/`` (:data:`~crossformer_vision.train.config.DETECTION_DEFAULTS`).
Data are COCO folders, ADE20K or image/label folders, or the built-in SYNTHETIC shapes (no ``--data``).
"""
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ... import dense
from ...data.detection import CocoInstances, collate_detection, detection_transforms
from ...data.samples import data_batches
from ...data.segmentation import SegmentationFolder, collate_segmentation, segmentation_transforms
from ...data.synthetic import prepare_synthetic
from ...metrics.coco import COCO_METRICS, CocoEvaluator
from ...metrics.semantic import SegmentationEvaluator
from ...utils.distributed import all_reduce_sum, broadcast_object, is_main_process
from ...tools.flops import count_params
from ..config import plain
from ..optim import create_optimizer
from .base import Task

__all__ = ["CHECKPOINT_FORMAT", "DenseTask", "DetectionTask", "SegmentationTask", "build_dense_model"]

#: ``format`` entry of detection and segmentation checkpoints.
CHECKPOINT_FORMAT = "crossformer-vision/dense"


def build_dense_model(cfg: Mapping[str, Any], num_classes: int, init: bool = True) -> nn.Module:
    """The recipe's model (``model`` section, ``num_classes`` filled in); with ``init``, the ``pretrained``
    backbone and ``weights`` files are loaded."""
    config = dict(cfg["model"], num_classes=num_classes)
    extra = dict(backbone_weights=cfg["pretrained"], weights=cfg["weights"]) if init else {}
    try:
        return dense.build_model(config, **{k: v for k, v in extra.items() if v is not None})
    except TypeError as err:
        raise ValueError(f"model section {dict(cfg['model'])} does not fit {cfg['model'].get('arch')}: {err}") from None


def test_protocol(data: Mapping[str, Any]) -> Dict[str, Any]:
    """:meth:`~crossformer_vision.dense.Segmenter.predict`'s test-time arguments from a recipe's ``data`` section."""
    return dict(short_side=data["test_short_side"], max_long_side=data["test_max_long_side"],
                scales=tuple(data["test_scales"]), flip=data["test_flip"], mode=data["test_mode"],
                window=data["test_window"], stride=data["test_stride"])


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


class DenseTask(Task):
    """What detection and segmentation share: recipes of ``configs/dense/``, the synthetic data, the schedules."""

    checkpoint_format = CHECKPOINT_FORMAT
    checkpoint_keys = ("config", "build_config", "class_names", "model", "round", "best")

    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__(cfg)
        d = cfg["data"]
        self.synthetic = prepare_synthetic(d["synthetic"], d["root"]) if d["format"] == "synthetic" else None

    def dataset(self, split: str, train: bool = False) -> Dataset:
        raise NotImplementedError

    def datasets(self) -> Tuple[Dataset, Dataset, Optional[Dataset]]:
        train_set, val_set = self.dataset("train", train=True), self.dataset("val")
        num_classes = self.cfg["model"].get("num_classes") or train_set.num_classes
        for ds in (train_set, val_set):
            self.check(ds, num_classes)
        self.cfg["model"]["num_classes"] = num_classes
        return train_set, val_set, None

    def check(self, dataset: Dataset, num_classes: int) -> None:
        """Raise ``ValueError`` if a model with ``num_classes`` classes does not fit ``dataset``."""
        raise NotImplementedError

    def class_names(self, train_set: Dataset) -> List[str]:
        return list(train_set.class_names)

    def new_model(self, num_classes: int, init: bool) -> nn.Module:
        model = build_dense_model(self.cfg, num_classes, init=init)
        return model

    def describe_model(self, model: nn.Module) -> str:
        m = self.cfg["model"]
        return f"{m['arch']} + {m['backbone']} ({count_params(model) / 1e6:.2f}M params)"

    def describe_data(self) -> str:
        if self.synthetic is not None:
            return f"SYNTHETIC shapes ({self.synthetic.root})"
        return str(self.cfg["data"]["root"] or self.cfg["data"]["train"])

    def dataset_name(self) -> str:
        d = self.cfg["data"]
        return "synthetic" if self.synthetic is not None else str(d["root"] or d["train"])

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        o = self.cfg["optim"]
        return create_optimizer(model, o, o["lr"], no_decay_names=o["no_weight_decay"])

    def scheduler(self, optimizer: torch.optim.Optimizer, total_updates: int, updates_per_epoch: int) -> Tuple[Any, str]:
        """timm's multi-step or poly schedule, in optimizer steps.

        ``step``: lr x ``gamma`` at each milestone (epochs with ``train.epochs``, iterations with ``train.iterations``);
        ``poly``: ``(lr - min_lr) (1 - t / T)^power + min_lr``; both after an optional linear warmup from
        ``lr x warmup_ratio`` over ``warmup_iters`` steps.
        """
        from timm.scheduler import MultiStepLRScheduler, PolyLRScheduler

        s, lr = self.cfg["sched"], self.cfg["optim"]["lr"]
        warmup = dict(warmup_t=s["warmup_iters"], warmup_lr_init=lr * s["warmup_ratio"]) if s["warmup"] else {}
        text = f"{s['name']}" + (f", linear warm-up {s['warmup_iters']} steps from {lr * s['warmup_ratio']:.3g}"
                                 if s["warmup"] else "") + f", peak lr {lr:.3g}"
        if s["name"] == "poly":
            scheduler = PolyLRScheduler(optimizer, t_initial=total_updates, power=s["power"], lr_min=s["min_lr"],
                                        t_in_epochs=False, **warmup)
            return scheduler, text + f", poly {s['power']:g} down to {s['min_lr']:.3g}"
        unit = updates_per_epoch if self.cfg["train"]["epochs"] is not None else 1
        milestones = [int(m) * unit for m in s["milestones"]] if s["name"] == "step" else []
        scheduler = MultiStepLRScheduler(optimizer, decay_t=milestones or [total_updates + 1], decay_rate=s["gamma"],
                                         warmup_prefix=False, t_in_epochs=False, **warmup)
        return scheduler, text + (f", x{s['gamma']:g} at steps {milestones}" if milestones else "")

    def batch_images(self, batch: Any) -> int:
        return len(batch[0])

    def default_eval_batch(self, micro_batch: int) -> int:
        return 2 if self.name == "detection" else 1

    def checkpoint_fields(self, model: nn.Module, classes: List[str], rounds: int) -> Dict[str, Any]:
        return {"build_config": plain(model.build_config), "class_names": list(classes)}

    def run_name(self) -> str:
        d, m = self.cfg["data"], self.cfg["model"]
        data = "shapes" if d["format"] == "synthetic" else Path(d["root"] or "data").resolve().name
        return f"{m['arch']}-{m['backbone']}-{data}"

    def finish(self, trainer: Any) -> Dict[str, Any]:
        m = self.cfg["model"]
        return {"model": m["arch"], "backbone": m["backbone"]}


class DetectionTask(DenseTask):
    """Detection and instance segmentation on COCO-format data: box (and mask) AP."""

    name = "detection"
    command = "detect train"
    default_best = "bbox_AP"
    panels = {"loss": ["train_loss"], "COCO AP (box, mask)": ["bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"]}
    find_unused_parameters = True

    def collate(self, items: Sequence[Any]) -> Any:
        return collate_detection(items)

    def dataset(self, split: str, train: bool = False) -> Dataset:
        d = self.cfg["data"]
        transforms = detection_transforms(train=True, flip_prob=d["hflip"]) if train and d["hflip"] > 0 else None
        if self.synthetic is not None:
            images, ann = self.synthetic.image_dir(split), self.synthetic.ann_file(split)
        else:
            images, ann = self._coco_paths(split)
        if not ann.is_file():
            raise FileNotFoundError(f"annotation file not found: {ann}")
        if not images.is_dir():
            raise FileNotFoundError(f"image folder not found: {images}")
        return CocoInstances(images, ann, masks=d["masks"], transforms=transforms, skip_missing_images=d["skip_missing_images"])

    def _coco_paths(self, split: str) -> Tuple[Path, Path]:
        """(image folder, annotation json) of a COCO split: ``data.train``/``data.val`` or found under ``data.root``."""
        given, root = _given_or_root(self.cfg, split, "annotations")
        if given:
            return given
        names = [self.cfg["data"][f"{split}_split"]] if self.cfg["data"][f"{split}_split"] else [f"{split}2017", split]
        for name in names:
            ann = root / "annotations" / f"instances_{name}.json"
            if ann.is_file():
                for images in (root / name, root / "images" / name):
                    if images.is_dir():
                        return images, ann
                raise FileNotFoundError(f"{root} has {ann.relative_to(root)} but no image folder {name}/ or images/{name}/")
        raise FileNotFoundError(f"{root} has no COCO {split} split: expected annotations/instances_{names[0]}.json and "
                                f"{names[0]}/ (or images/{names[0]}/); set data.{split}_split or data.{split}")

    def check(self, dataset: Dataset, num_classes: int) -> None:
        dataset.check_num_classes(num_classes)

    def loss(self, model: nn.Module, batch: Any) -> Dict[str, torch.Tensor]:
        images, targets = batch
        parts = dict(model(list(images), list(targets)))
        parts["loss"] = sum(parts.values())
        return parts

    def metric_names(self) -> List[str]:
        kinds = ("bbox", "segm") if self.cfg["data"]["masks"] else ("bbox",)
        return [f"{kind}_{name}" for kind in kinds for name in COCO_METRICS]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 amp_dtype: Optional[torch.dtype]) -> Dict[str, Any]:
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
        if is_main_process():
            result = evaluator.compute()
            out = {f"{iou}_{name}": value for iou, values in result.items() for name, value in values.items()}
            out["summary"] = evaluator.summary
            out["images"] = len(evaluator.image_ids)
        return broadcast_object(out)

    @staticmethod
    @torch.no_grad()
    def draw_prediction(model: nn.Module, image: torch.Tensor, meta: Mapping[str, Any],
                        score_threshold: float) -> Tuple[Dict[str, Any], Any]:
        """What ``predict`` reports and draws for one image ``(3, H, W)`` in [0, 1]: ``detections`` (``label``,
        ``class``, ``score``, ``box`` XYXY pixels) above ``score_threshold``, and the boxes (and masks) drawn."""
        from ..visualize import draw_detections

        names = meta["class_names"]
        pred = {k: v.cpu() for k, v in model([image])[0].items()}
        keep = (pred["scores"] >= score_threshold) & (pred["labels"] > 0)
        found = [{"label": int(label), "class": names[int(label) - 1] if int(label) <= len(names) else str(int(label)),
                  "score": round(float(score), 4), "box": [round(float(v), 1) for v in box]}
                 for label, score, box in zip(pred["labels"][keep], pred["scores"][keep], pred["boxes"][keep])]
        return {"detections": found}, draw_detections(image.cpu(), pred, names, score_threshold=score_threshold)

    def headline(self, row: Mapping[str, Any]) -> str:
        text = f"box AP={100 * row['bbox_AP']:.1f}, AP50={100 * row['bbox_AP50']:.1f}"
        if "segm_AP" in row:
            text += f", mask AP={100 * row['segm_AP']:.1f}"
        return text


class SegmentationTask(DenseTask):
    """Semantic segmentation on ADE20K, image/label folders or the synthetic shapes: mIoU."""

    name = "segmentation"
    command = "segment train"
    default_best = "mIoU"
    panels = {"loss": ["train_loss"], "mIoU / accuracy": ["mIoU", "pixel_accuracy", "mean_accuracy"]}

    def collate(self, items: Sequence[Any]) -> Any:
        return collate_segmentation(items, self.cfg["data"]["ignore_index"])

    def dataset(self, split: str, train: bool = False) -> Dataset:
        d = self.cfg["data"]
        transforms = None
        if train:
            transforms = segmentation_transforms(tuple(d["crop_size"]), tuple(d["short_side_range"]), d["hflip"],
                                                 d["photometric"], d["ignore_index"])
        kwargs = dict(reduce_zero_label=d["reduce_zero_label"], ignore_index=d["ignore_index"], transforms=transforms)
        if self.synthetic is not None:
            return self.synthetic.semantic(split, **kwargs)
        images, labels = self._paths(split)
        num_classes = self.cfg["model"].get("num_classes")
        if d["format"] == "ade20k":
            num_classes = num_classes or 150
        if not num_classes:
            raise ValueError("data.format=folder needs the number of classes: set model.num_classes=N (--num-classes N)")
        return SegmentationFolder(images, labels, int(num_classes), **kwargs)

    def _paths(self, split: str) -> Tuple[Path, Path]:
        """(image folder, label folder) of a segmentation split."""
        given, root = _given_or_root(self.cfg, split, "labels")
        if given:
            return given
        ade = self.cfg["data"]["format"] == "ade20k"
        default = {"train": "training", "val": "validation"} if ade else {"train": "train", "val": "val"}
        name = self.cfg["data"][f"{split}_split"] or default[split]
        for labels in ("labels", "annotations"):
            if (root / "images" / name).is_dir() and (root / labels / name).is_dir():
                return root / "images" / name, root / labels / name
        raise FileNotFoundError(f"{root} has no {split} split: expected images/{name}/ and labels/{name}/ (or "
                                f"annotations/{name}/); set data.{split}_split or data.{split}")

    def check(self, dataset: Dataset, num_classes: int) -> None:
        if dataset.num_classes != num_classes:
            raise ValueError(f"the dataset has {dataset.num_classes} classes but the model predicts {num_classes}; "
                             f"set model.num_classes={dataset.num_classes}")
        if self.cfg["data"]["check_labels"]:
            for index in range(len(dataset)):
                dataset.load_label(index)  # ValueError naming the file and the class ids out of range

    def loss(self, model: nn.Module, batch: Any) -> Dict[str, torch.Tensor]:
        from ...dense.segmentation import segmentation_loss

        images, labels = batch
        return segmentation_loss(model(images), labels, self.cfg["data"]["ignore_index"], self.cfg["loss"]["aux_weight"])

    def metric_names(self) -> List[str]:
        return ["mIoU", "pixel_accuracy", "mean_accuracy"]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 amp_dtype: Optional[torch.dtype]) -> Dict[str, Any]:
        dataset = loader.dataset.dataset
        evaluator = SegmentationEvaluator(dataset.num_classes, dataset.ignore_index, dataset.class_names)
        d = self.cfg["data"]
        was_training = model.training
        model.eval()
        for batch, _ in data_batches(loader):
            if batch is None:
                continue
            images, labels = batch
            evaluator.update(model.predict(images.to(device), **test_protocol(d)), labels)
        model.train(was_training)
        evaluator.confusion = all_reduce_sum(evaluator.confusion)
        out = evaluator.compute()
        out["images"] = len(dataset)
        return out

    @staticmethod
    @torch.no_grad()
    def draw_prediction(model: nn.Module, image: torch.Tensor, meta: Mapping[str, Any],
                        score_threshold: float) -> Tuple[Dict[str, Any], Any]:
        """What ``predict`` reports and draws for one image: ``classes`` (the share of pixels of each predicted
        class) and the colour-coded class map blended over the image (the synthetic data's background left bare)."""
        from ..visualize import draw_segmentation

        names, d = meta["class_names"], meta["cfg"]["data"]
        labels = model.predict(image[None], **test_protocol(d))[0].cpu()
        counts = torch.bincount(labels.flatten(), minlength=model.num_classes).tolist()
        total = labels.numel()
        found = {names[c] if c < len(names) else str(c): round(n / total, 4) for c, n in enumerate(counts) if n}
        background = 0 if d["format"] == "synthetic" else None
        return {"classes": found}, draw_segmentation(image.cpu(), labels, model.num_classes, background=background)

    def headline(self, row: Mapping[str, Any]) -> str:
        return f"mIoU={100 * row['mIoU']:.1f}, pixel acc={100 * row['pixel_accuracy']:.1f}"
