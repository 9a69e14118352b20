"""Image classification: training, evaluation and prediction (the Python API of ``crossformer train|eval|predict``).

>>> from crossformer_vision.trainer import train, evaluate, predict
>>> summary = train()                                    # the digits demo; returns the final summary
>>> summary = train("crossformer_small", ["data.path=/data/imagenet", "train.epochs=30"])
>>> evaluate("runs/crossformer_micro-digits-...")        # top-1/top-5/loss on its test split
>>> predict("runs/...", ["img.png"], topk=3)

A run folder holds ``config.yaml`` (the resolved recipe), ``metrics.csv`` (one row per epoch), ``last.pth``
(everything needed to resume: model, optimizer, scheduler, gradient scaler, EMA, RNG states of every process,
epoch, history), ``best.pth`` (weights of the epoch with the best ``train.best_metric``), ``curves.png`` and
``summary.json``. Checkpoints hold tensors and plain data only: ``torch.load(path, weights_only=True)`` reads
them, and so do :func:`crossformer_vision.load_checkpoint_file` and timm's ``pretrained_cfg_overlay=dict(file=...)``.
"""
import contextlib
import copy
import itertools
import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import engine
from .engine import describe_os_error
from .data import (DIGITS_CLASSES, DataError, build_dataset, build_transform, collate_skipped, data_batches, find_images,
                   load_image)
from .model import CrossFormer
from .recipes import (DEFAULTS, RESUME_OVERRIDABLE, apply_overrides, resolve_config, resume_overridable,
                      upgrade_config, validate_config)
from .variants import MODELS, create_model
from .weights import CheckpointError, convert_official_state_dict, load_checkpoint_file, load_state_dict_checked, unwrap_state_dict

__all__ = [
    "CHECKPOINT_FORMAT",
    "NonFiniteLossError",
    "build_criterion",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "evaluate_model",
    "load_for_inference",
    "predict",
    "train",
]

#: ``format`` entry of this package's training checkpoints.
CHECKPOINT_FORMAT = "crossformer-vision/classification"
_PANELS = {"loss": ["train_loss", "val_loss", "val_loss_ema"], "accuracy (%)": ["val_top1", "val_top5", "val_top1_ema"]}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped without writing the bad weights."""


# ---------------------------------------------------------------------------------------------- model
def build_model(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The recipe's model with ``num_classes`` outputs (``model`` and ``data.in_chans`` fields).

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


def _record_architecture(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``cfg`` with ``model.arch`` written out for a registered model, so that a run's checkpoints rebuild their
    model from what they hold, whatever later versions register under that name."""
    if cfg["model"]["arch"] is None:
        cfg = copy.deepcopy(cfg)
        cfg["model"]["arch"] = _plain(MODELS[cfg["model"]["name"]])
    return cfg


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively (YAML- and JSON-friendly)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, device: torch.device,
                   amp_dtype: Optional[torch.dtype] = None) -> Dict[str, float]:
    """Cross-entropy, top-1 and top-5 accuracy of ``model`` over ``loader``, summed over all ranks.

    Args:
        model: Classifier returning logits ``(B, num_classes)``.
        loader: Yields ``(images (B, C, H, W), targets (B,), skipped)``; with several processes each rank gets
            its own shard (:class:`~crossformer_vision.engine.ShardSampler`).
        device: Where ``model`` lives.
        amp_dtype: Autocast dtype on CUDA, or None.

    Returns:
        ``{"loss", "top1", "top5" (percent), "images", "skipped"}``; top-5 is over all classes when fewer than 5.
    """
    was_training = model.training
    model.eval()
    sums = engine.MetricSums(device)
    autocast = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None and device.type == "cuda" else contextlib.nullcontext()
    for images, targets, skipped in data_batches(loader):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast:
            logits = model(images)
        logits = logits.float()
        n = images.shape[0]
        # counts of correct images, not float32 percentages per batch: exact, whatever the batches and ranks
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets[:, None])
        sums.add("loss", F.cross_entropy(logits, targets), count=n)
        sums.add("top1", hits[:, :1].any(dim=1).sum(), mean=False)
        sums.add("top5", hits.any(dim=1).sum(), mean=False)
        sums.add("skipped", float(skipped), mean=False)
    model.train(was_training)
    out = sums.reduce()
    if not out:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "images": 0, "skipped": 0}
    images = int(out["loss_count"])
    return {"loss": out["loss"], "top1": 100.0 * out["top1"] / images, "top5": 100.0 * out["top5"] / images,
            "images": images, "skipped": int(out["skipped"])}


def _eval_loader(dataset: Dataset, batch_size: int, workers: int, info: engine.DistInfo) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=engine.ShardSampler(len(dataset), info.rank, info.world_size),
                      num_workers=workers, pin_memory=info.device.type == "cuda", collate_fn=collate_skipped)


# ---------------------------------------------------------------------------------------------- training
def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32  # DataLoader gives each worker base_seed + worker_id
    np.random.seed(seed)
    random.seed(seed)


def _amp_dtype(cfg: Mapping[str, Any], device: torch.device) -> Optional[torch.dtype]:
    amp = cfg["train"]["amp"]
    if amp == "none" or device.type != "cuda":
        return None
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("train.amp=bf16 but this GPU has no bfloat16 support; use train.amp=fp16")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _s(count: float) -> str:
    return "" if count == 1 else "s"


def _print(*args: Any) -> None:
    if engine.is_main_process():
        print(*args, flush=True)


def _resume_checkpoint_path(resume: Union[str, Path]) -> Path:
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pth"
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume in {path.parent}: it has no last.pth (is it a run folder?)")
    elif not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such run folder or checkpoint")
    return path


#: Entries of every classification checkpoint, and those only ``last.pth`` (resumable) has.
_WEIGHT_KEYS = ("config", "classes", "model", "epoch", "best")
_STATE_KEYS = ("optimizer", "scheduler", "scaler", "num_updates", "history", "rng")


def _read_training_checkpoint(path: Path, need_state: bool, state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A classification checkpoint of ours from ``path`` (or ``state``, already read from it), checked: a ``last.pth``
    when ``need_state`` (resumable), else any of the run's files."""
    if state is None:
        state = engine.load_state_file(path)
    engine.check_state(state, path, CHECKPOINT_FORMAT, _WEIGHT_KEYS)
    if need_state:
        if "optimizer" not in state:
            raise ValueError(f"{path} holds weights only (a best.pth?); resume from the run's last.pth")
        engine.check_state(state, path, keys=_STATE_KEYS)
    return state


class _Trainer:
    """One classification run: everything is checked and built in ``__init__``, before the run folder exists."""

    def __init__(self, cfg: Dict[str, Any], info: engine.DistInfo, checkpoint: Optional[Dict[str, Any]],
                 checkpoint_path: Optional[Path], changes: Sequence[str] = ()) -> None:
        from timm.data import Mixup

        self.cfg, self.info, self.device = cfg, info, info.device
        self.changes = list(changes)  # fields a --resume changed, "key: old -> new"
        t = cfg["train"]
        if cfg["log"]["tensorboard"] is True and not engine.TensorBoardLogger.available():
            raise ValueError("log.tensorboard=true but tensorboard is not installed: pip install tensorboard, "
                             "or set log.tensorboard=auto")
        self.threads = engine.configure_threads(t["threads"], info.local_world_size)
        engine.seed_everything(t["seed"] + info.rank)

        # ---- data
        self.train_set = build_dataset(cfg, "train", is_training=True)
        self.classes = list(self.train_set.classes)
        self.val_set = build_dataset(cfg, "val", classes=self.classes)
        self.test_set = None
        if cfg["data"]["dataset"] == "digits" or (Path(cfg["data"]["path"]) / cfg["data"]["test_split"]).is_dir():
            self.test_set = build_dataset(cfg, "test", classes=self.classes)
        world, accum = info.world_size, t["accum_steps"]
        if t["batch_size"] % (world * accum):
            raise ValueError(f"train.batch_size ({t['batch_size']}) must be divisible by processes ({world}) x "
                             f"train.accum_steps ({accum}); it is the global batch of one optimizer step")
        self.micro_batch = t["batch_size"] // (world * accum)
        aug = cfg["aug"]
        mixup_on = aug["mixup"] > 0 or aug["cutmix"] > 0 or aug["cutmix_minmax"] is not None
        if mixup_on and self.micro_batch % 2:
            raise ValueError(f"mixup/cutmix need an even batch per process, got {self.micro_batch}; change "
                             f"train.batch_size or set aug.mixup=0 aug.cutmix=0")
        self.sampler = DistributedSampler(self.train_set, num_replicas=world, rank=info.rank, shuffle=True,
                                          seed=t["seed"], drop_last=False)
        workers = min(cfg["data"]["workers"], engine.available_cores())  # more processes than cores only add overhead
        self.train_loader = DataLoader(self.train_set, batch_size=self.micro_batch, sampler=self.sampler,
                                       num_workers=workers, pin_memory=self.device.type == "cuda", drop_last=True,
                                       collate_fn=collate_skipped, worker_init_fn=_seed_worker)
        self.updates_per_epoch = len(self.train_loader) // accum
        if self.updates_per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train_set)} images, fewer than one global batch "
                             f"(train.batch_size={t['batch_size']}); lower train.batch_size")
        eval_batch = t["eval_batch_size"] or self.micro_batch
        self.val_loader = _eval_loader(self.val_set, eval_batch, workers, info)
        self.test_loader = _eval_loader(self.test_set, eval_batch, workers, info) if self.test_set is not None else None

        # ---- model, optimisation
        self.model = build_model(cfg, len(self.classes))
        if cfg["model"]["pretrained"] and checkpoint is None:
            self.model.load_pretrained(cfg["model"]["pretrained"])  # official or ours; CheckpointError if it does not fit
        if cfg["model"]["grad_checkpointing"]:
            self.model.set_grad_checkpointing(True)
        self.model.to(self.device)
        self.amp_dtype = _amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.ema = None
        if t["ema"]:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=t["ema_decay"])
        self.optimizer = build_optimizer(cfg, self.model)
        self.lr = self._lr()
        self.scheduler, self.epochs = build_scheduler(cfg, self.optimizer, self.updates_per_epoch)
        if mixup_on:
            self.mixup = Mixup(mixup_alpha=aug["mixup"], cutmix_alpha=aug["cutmix"], cutmix_minmax=aug["cutmix_minmax"],
                               prob=aug["mixup_prob"], switch_prob=aug["mixup_switch_prob"], mode=aug["mixup_mode"],
                               label_smoothing=aug["smoothing"], num_classes=len(self.classes))
        else:
            self.mixup = None
        self.criterion = build_criterion(aug, mixup_on)
        self.train_model: nn.Module = self.model
        if info.distributed:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        if t["compile"]:
            self.train_model = torch.compile(self.train_model)

        # ---- state
        self.start_epoch, self.num_updates = 0, 0
        self.history: List[Dict[str, Any]] = []
        self.resumes: List[Dict[str, Any]] = []  # every --resume that changed fields: {"epoch", "changes"}
        self.saved = 0  # epochs in the run folder's last.pth
        self.best: Dict[str, Any] = {"epoch": None, "metric": t["best_metric"], "value": None}
        self.best_weights: Optional[Dict[str, torch.Tensor]] = None
        self.checkpoint = checkpoint
        if checkpoint is not None:
            self._load_state(checkpoint, checkpoint_path)

    # -------------------------------------------------------------------------------------- state
    def _load_state(self, checkpoint: Dict[str, Any], path: Optional[Path]) -> None:
        try:
            load_state_dict_checked(self.model, checkpoint["model"], strict=True)
            if self.ema is not None:
                load_state_dict_checked(self.ema.module, checkpoint["model_ema"], strict=True)
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.scaler.load_state_dict(checkpoint["scaler"])
        except (KeyError, ValueError, RuntimeError) as err:
            raise ValueError(f"cannot resume from {path}: {err}") from None
        self.start_epoch, self.num_updates = checkpoint["epoch"], checkpoint["num_updates"]
        self.saved = self.start_epoch
        self.history, self.best = list(checkpoint["history"]), dict(checkpoint["best"])
        self.resumes = list(checkpoint.get("resumes", []))
        if self.changes:
            self.resumes.append({"epoch": self.start_epoch, "changes": self.changes})
        reseed = self.cfg["train"]["seed"] + 1000 * self.start_epoch
        if any(c.startswith("train.seed:") for c in self.changes):
            engine.seed_everything(reseed + self.info.rank)  # a new seed: new random streams from here on
        else:
            note = engine.resume_rng(checkpoint["rng"], self.info, reseed)
            if note:
                _print(note)

    def _state(self, full: bool, epoch: int) -> Dict[str, Any]:
        state: Dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "config": self.cfg,
            "classes": self.classes,
            "epoch": epoch,
            "num_updates": self.num_updates,
            "metrics": self.history[-1] if self.history else {},
            "best": self.best,
            "model": self.model.state_dict(),
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
        }
        if full:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(), history=self.history, world_size=self.info.world_size,
                         resumes=self.resumes)
        return state

    # -------------------------------------------------------------------------------------- one epoch
    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        t = self.cfg["train"]
        accum = t["accum_steps"]
        self.train_model.train()
        self.sampler.set_epoch(epoch)
        steps = self.updates_per_epoch * accum
        sums = engine.MetricSums(self.device)
        autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        clip = self.cfg["optim"]["clip_grad"]
        self.progress = engine.Progress(steps, f"epoch {epoch + 1}/{self.epochs}", self.cfg["log"]["progress"])
        start, seen = time.perf_counter(), 0
        self.optimizer.zero_grad(set_to_none=True)
        for step, (images, targets, skipped) in enumerate(itertools.islice(data_batches(self.train_loader), steps)):
            images, targets = images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
            if self.mixup is not None:
                images, targets = self.mixup(images, targets)
            update = (step + 1) % accum == 0
            no_sync = self.info.distributed and not update
            with (self.train_model.no_sync() if no_sync and hasattr(self.train_model, "no_sync") else contextlib.nullcontext()):
                with autocast:
                    loss = self.criterion(self.train_model(images), targets)
                self._check_finite(loss, epoch, step)
                self.scaler.scale(loss / accum).backward()
            if update:
                if clip:
                    from timm.utils import dispatch_clip_grad

                    self.scaler.unscale_(self.optimizer)
                    dispatch_clip_grad(self.model.parameters(), clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.num_updates += 1
                self.scheduler.step_update(num_updates=self.num_updates)
                if self.ema is not None:
                    self.ema.update(self.model, step=self.num_updates)
            n = images.shape[0]
            seen += n
            sums.add("loss", self._last_loss, count=n)
            sums.add("skipped", float(skipped), mean=False)
            elapsed = time.perf_counter() - start
            self.progress.update(1, f"loss={self._last_loss:.4f}, lr={self._lr():.2e}, "
                                    f"img/s={seen * self.info.world_size / max(elapsed, 1e-9):.0f}")
        self.scheduler.step(epoch + 1)
        elapsed = time.perf_counter() - start
        out = sums.reduce()
        return {"train_loss": out["loss"], "images_per_s": out["loss_count"] / elapsed, "epoch_time_s": elapsed,
                "skipped": int(out["skipped"])}

    def _lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        value = loss.detach().float()
        bad = engine.all_reduce_sum((~torch.isfinite(value)).float())
        self._last_loss = value.item()
        if bad.item() > 0:
            where = "non-finite" if not math.isfinite(self._last_loss) else "non-finite in another process"
            raise NonFiniteLossError(
                f"training stopped: the loss became {where} at epoch {epoch + 1}, step {step + 1} (lr {self._lr():.3g})")

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
                if self.history:
                    engine.write_csv(run_dir / "metrics.csv", self.history)
            self._print_header(created)
            plotted = time.perf_counter()
            try:
                for epoch in range(self.start_epoch, self.epochs):
                    row: Dict[str, Any] = {"epoch": epoch + 1}
                    row.update(self.train_one_epoch(epoch))
                    row.update({f"val_{k}": v for k, v in self._validate(self.model).items()})
                    if self.ema is not None:
                        row.update({f"val_{k}_ema": v for k, v in self._validate(self.ema.module).items()})
                    row["lr"] = self._lr()
                    row["elapsed_s"] = prior_time + time.perf_counter() - wall
                    self.history.append(row)
                    improved = self._improves(row)
                    if improved:
                        self.best.update(epoch=epoch + 1, value=row[self.best["metric"]], val_top1=row["val_top1"],
                                         val_loss=row["val_loss"])
                        self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                    self._save(epoch + 1, improved)
                    guard.keep()
                    self.progress.close(
                        f"loss={row['train_loss']:.4f}, lr={row['lr']:.2e}, img/s={row['images_per_s']:.0f}, "
                        f"val_loss={row['val_loss']:.4f}, val_top1={row['val_top1']:.2f}%{' (best)' if improved else ''}")
                    if is_main:
                        engine.write_csv(run_dir / "metrics.csv", self.history)
                        if epoch + 1 == self.epochs or time.perf_counter() - plotted > 30:  # the plot is slow-ish
                            engine.plot_history(run_dir / "curves.png", self.history, _PANELS, title=run_dir.name)
                            plotted = time.perf_counter()
                        tb.log({k: v for k, v in row.items() if k != "epoch"}, epoch + 1)
                    if row["skipped"]:
                        _print(f"  {row['skipped']} unreadable images were skipped in this epoch")
            except NonFiniteLossError as err:
                if not guard.armed and is_main:
                    engine.plot_history(run_dir / "curves.png", self.history, _PANELS, title=run_dir.name)
                    self._write_summary({"status": "stopped: non-finite loss", "message": str(err)})
                where = (f"; the last good checkpoint is {run_dir / 'last.pth'} (epoch {len(self.history)})"
                         if not guard.armed else "; no epoch had finished, so no run folder was kept")
                raise NonFiniteLossError(f"{err}{where}. Lower optim.lr, keep optim.clip_grad, or use train.amp=bf16, "
                                         f"then start again or --resume") from None
            except DataError as err:
                raise DataError(f"{err}{engine.stopped_note(run_dir, guard, self.saved, 'epoch')}") from None
            except OSError as err:  # a full disk or a folder gone read-only while writing checkpoints or logs
                raise ValueError(f"the run stopped: {describe_os_error(err)}"
                                 f"{engine.stopped_note(run_dir, guard, self.saved, 'epoch')}") from None
            finally:
                tb.close()
        return self._finish(prior_time + time.perf_counter() - wall)

    def _improves(self, row: Mapping[str, Any]) -> bool:
        """Better or as good: a tie goes to the later epoch, which has trained longer at a lower learning rate."""
        value, best = row[self.best["metric"]], self.best["value"]
        if best is None:
            return True
        return value <= best if self.best["metric"].endswith("loss") else value >= best

    def _validate(self, model: nn.Module) -> Dict[str, float]:
        out = evaluate_model(model, self.val_loader, self.device, self.amp_dtype)
        return {"loss": out["loss"], "top1": out["top1"], "top5": out["top5"]}

    def _save(self, epoch: int, improved: bool) -> None:
        rng = engine.all_gather_object(engine.capture_rng_state())  # collective: every rank
        if not self.info.is_main:
            return
        state = self._state(full=True, epoch=epoch)
        state["rng"] = rng
        engine.atomic_save(state, self.run_dir / "last.pth")
        if improved:
            engine.atomic_save(self._state(full=False, epoch=epoch), self.run_dir / "best.pth")
        self.saved = epoch

    def _print_header(self, created: bool) -> None:
        from .flops import count_params

        c = self.cfg
        verb = "training" if created else f"resuming at epoch {self.start_epoch + 1} of"
        data = "digits (scikit-learn)" if c["data"]["dataset"] == "digits" else c["data"]["path"]
        _print(f"{verb} {c['model']['name']} ({count_params(self.model) / 1e6:.2f}M params, "
               f"{c['data']['img_size']}x{c['data']['img_size']}x{c['data']['in_chans']}) on {data}: "
               f"{len(self.train_set)} train / {len(self.val_set)} val"
               f"{f' / {len(self.test_set)} test' if self.test_set is not None else ''} images, {len(self.classes)} classes")
        for name, ds in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
            if ds is not None and ds.skipped:
                path, reason = ds.skipped[0]
                _print(f"  skipped {len(ds.skipped)} unreadable {name} files (e.g. {path}: {reason})")
        amp = c["train"]["amp"]
        if amp != "none" and self.device.type != "cuda":
            amp = f"none ({amp} needs CUDA)"
        device = str(self.device)
        if self.device.type == "cpu":
            device += f" ({self.threads} thread{'s' if self.threads > 1 else ''})"
        processes = f"{self.info.world_size} process{'es' if self.info.world_size > 1 else ''}"
        extras = (", EMA" if self.ema is not None else "") + (", compiled" if c["train"]["compile"] else "")
        _print(f"  {self.epochs} epoch{_s(self.epochs)} x {self.updates_per_epoch} step{_s(self.updates_per_epoch)}, global batch {c['train']['batch_size']} "
               f"({processes} x {self.micro_batch} x {c['train']['accum_steps']} accumulation), "
               f"{c['optim']['opt']} lr {self.lr:.3g}, {device}, amp {amp}{extras}")
        _print(f"  schedule: {self._schedule_text()}")
        for change in self.changes:
            _print(f"  changed on resume: {change} (recorded in config.yaml)")
        _print(f"  run folder: {self.run_dir}")

    def _schedule_text(self) -> str:
        c, scale = self.cfg, lr_scale(self.cfg)
        warmup, note = warmup_epochs(c)
        steps = math.ceil(warmup * self.updates_per_epoch) if c["sched"]["per_iteration"] else None
        text = f"{c['sched']['name']}"
        if warmup > 0:
            text += (f", warm-up {warmup:g} epoch{'s' if warmup != 1 else ''}"
                     f"{f' ({steps} step{_s(steps)})' if steps is not None else ''} from {c['optim']['warmup_lr'] * scale:.3g}")
        text += f", peak lr {self.lr:.3g}, down to {c['optim']['min_lr'] * scale:.3g}"
        return text + (f"; {note}" if note else "")

    def _finish(self, elapsed: float) -> Dict[str, Any]:
        last_test = None
        if self.test_loader is not None and self.best["epoch"] != len(self.history):
            last_test = evaluate_model(self.model, self.test_loader, self.device, self.amp_dtype)
        if self.best_weights is None:  # resumed after the last epoch that improved: best.pth has them
            self.best_weights = _read_training_checkpoint(self.run_dir / "best.pth", need_state=False)["model"]
        load_state_dict_checked(self.model, self.best_weights, strict=True)
        summary: Dict[str, Any] = {
            "status": "finished",
            "run_dir": str(self.run_dir),
            "model": self.cfg["model"]["name"],
            "dataset": self.cfg["data"]["dataset"] if self.cfg["data"]["dataset"] == "digits" else self.cfg["data"]["path"],
            "epochs": self.epochs,
            "best_epoch": self.best["epoch"],
            "best_metric": self.best["metric"],
            "best_val_top1": self.best["val_top1"],
            "best_val_loss": self.best["val_loss"],
            "train_time_s": round(elapsed, 1),
            "images_per_s": round(sum(r["images_per_s"] for r in self.history) / len(self.history), 1),
            "processes": self.info.world_size,
            "device": str(self.device),
        }
        if self.test_loader is not None:
            test = evaluate_model(self.model, self.test_loader, self.device, self.amp_dtype)
            summary.update(test_top1=test["top1"], test_top5=test["top5"], test_loss=test["loss"], test_images=test["images"])
            last_test = last_test or test
            summary.update(last_test_top1=last_test["top1"], last_test_top5=last_test["top5"], last_test_loss=last_test["loss"])
        if self.info.is_main:
            self._write_summary(summary)
            if self.best["metric"] == "val_loss":
                why = f"lowest val loss {summary['best_val_loss']:.4f}, val top-1 {summary['best_val_top1']:.2f}%"
            else:
                why = f"highest val top-1 {summary['best_val_top1']:.2f}%"
            _print(f"done in {elapsed:.1f}s; best.pth is epoch {summary['best_epoch']} ({why})")
            if "test_top1" in summary:
                _print(f"  test ({summary['test_images']} images): top-1 {summary['test_top1']:.2f}%, top-5 "
                       f"{summary['test_top5']:.2f}%, loss {summary['test_loss']:.4f}; last.pth (epoch {len(self.history)}): "
                       f"top-1 {summary['last_test_top1']:.2f}%, top-5 {summary['last_test_top5']:.2f}%, "
                       f"loss {summary['last_test_loss']:.4f}")
            _print(f"  wrote {self.run_dir}/: config.yaml metrics.csv curves.png last.pth best.pth summary.json")
        return summary

    def _write_summary(self, summary: Dict[str, Any]) -> None:
        engine.atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def lr_scale(cfg: Mapping[str, Any]) -> float:
    """Linear learning-rate scaling: global batch (``train.batch_size``) / ``optim.lr_base_batch``."""
    return cfg["train"]["batch_size"] / cfg["optim"]["lr_base_batch"]


def build_optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """timm's optimizer for the recipe's ``optim`` section at the scaled learning rate.

    Weight decay skips 1-D parameters (norms, biases) and ``model.no_weight_decay()`` (position tables).

    Raises:
        ValueError: an optimizer name timm does not know.
    """
    from timm.optim import create_optimizer_v2, list_optimizers

    o = cfg["optim"]
    if o["opt"].lower().split("_")[-1] not in list_optimizers():
        raise ValueError(f"unknown optimizer optim.opt={o['opt']!r}; timm has e.g. adamw, sgd, lamb, lion")
    return create_optimizer_v2(model, opt=o["opt"], lr=o["lr"] * lr_scale(cfg), weight_decay=o["weight_decay"],
                               momentum=o["momentum"], betas=tuple(o["betas"]), eps=o["eps"], layer_decay=o["layer_decay"])


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


def _resume_config(saved: Mapping[str, Any], overrides: Union[Sequence[str], Mapping[str, Any]]
                   ) -> Tuple[Dict[str, Any], List[str]]:
    """The saved recipe with the ``--resume`` overrides applied, and one note per changed field."""
    saved = upgrade_config(saved)
    changed = apply_overrides(saved, overrides)
    different = [f"{s}.{k}" for s in changed for k in changed[s] if changed[s][k] != saved[s][k]]
    refused = [k for k in different if not resume_overridable(k)]
    if refused:
        raise ValueError(f"--resume continues a run with its own recipe; {', '.join(refused)} cannot change "
                         f"(only {', '.join(RESUME_OVERRIDABLE)} can). Start a new run with model.pretrained=RUN/last.pth instead")
    notes = [f"{k}: {_show(saved, k)} -> {_show(changed, k)}" for k in different]
    return validate_config(changed), notes


def _show(cfg: Mapping[str, Any], key: str) -> str:
    section, field = key.split(".", 1)
    return yaml.safe_dump(cfg[section][field], default_flow_style=True).strip().removesuffix("...").strip()


def _run_name(cfg: Mapping[str, Any]) -> str:
    if cfg["log"]["name"]:
        return str(cfg["log"]["name"])
    data = "digits" if cfg["data"]["dataset"] == "digits" else Path(cfg["data"]["path"]).resolve().name
    return f"{cfg['model']['name']}-{data}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(config: Union[str, Path, Mapping[str, Any], None] = "digits",
          overrides: Union[Sequence[str], Mapping[str, Any]] = (),
          resume: Union[str, Path, None] = None) -> Dict[str, Any]:
    """Train a classifier; under ``torchrun`` every process calls this (DistributedDataParallel).

    Args:
        config: Recipe name (``"digits"``: the built-in demo; ``"crossformer_small"``...), YAML path or dict.
        overrides: ``["train.epochs=10", ...]`` or ``{"train.epochs": 10}``.
        resume: A run folder (or its ``last.pth``) to continue; ``config`` is then ignored and only the
            fields in :data:`~crossformer_vision.recipes.RESUME_OVERRIDABLE` may be overridden.

    Returns:
        The summary also written to ``summary.json``: best epoch, validation and test accuracy, time.

    Raises:
        ValueError, FileNotFoundError: bad recipe, data, model or checkpoint (raised before a run folder is made).
        NonFiniteLossError: the loss became NaN/inf; the last good checkpoint stays in the run folder.
    """
    checkpoint, checkpoint_path = None, None
    if resume is not None:
        checkpoint_path = _resume_checkpoint_path(resume)
        checkpoint = _read_training_checkpoint(checkpoint_path, need_state=True)
        cfg, changes = _resume_config(checkpoint["config"], overrides)
    else:
        cfg, changes = _record_architecture(resolve_config(config, overrides)), []
    owns_group = not (dist.is_available() and dist.is_initialized())
    threads = torch.get_num_threads()
    info = engine.init_distributed(cfg["train"]["device"])
    try:
        trainer = _Trainer(cfg, info, checkpoint, checkpoint_path, changes)
        if checkpoint_path is not None:
            return trainer.run(checkpoint_path.parent, created=False)
        return trainer.run(engine.create_run_dir(cfg["log"]["output"], _run_name(cfg)), created=True)
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            engine.cleanup_distributed()


# ---------------------------------------------------------------------------------------------- inference
def _inference_path(checkpoint: Union[str, Path]) -> Path:
    path = Path(checkpoint)
    if path.is_dir():
        for name in ("best.pth", "last.pth"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} is a folder without best.pth or last.pth; give a run folder or a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _imagenet_names(classes: Sequence[str]) -> Optional[List[str]]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    if list(classes) != info.label_names()[: len(classes)] or len(classes) != info.num_classes():
        return None
    return info.label_descriptions()


def load_for_inference(checkpoint: Union[str, Path], model_name: Optional[str] = None,
                       use_ema: bool = False) -> Tuple[nn.Module, Dict[str, Any]]:
    """A model ready for ``eval()`` from one of our runs/checkpoints or an official checkpoint.

    Args:
        checkpoint: Run folder (its ``best.pth``), our ``.pth``, or an official/other ``.pth``/``.safetensors``.
        model_name: Architecture for checkpoints that do not record it (official ones); must match ours if given.
        use_ema: Use the EMA weights of a run trained with ``train.ema``.

    Returns:
        ``(model, meta)``; ``meta`` has ``classes`` (names), ``labels`` (display names), ``cfg`` (the recipe:
        ``data`` holds the preprocessing), ``source`` (``"run"`` or ``"official"``) and ``path``.

    Raises:
        CheckpointError: unreadable, unsafe, or for a different architecture than ``model_name``.
        ValueError: an official checkpoint without ``model_name``; EMA weights asked for but absent.
    """
    path = _inference_path(checkpoint)
    raw = load_checkpoint_file(path)
    if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
        raw = _read_training_checkpoint(path, need_state=False, state=raw)
        cfg = upgrade_config(raw["config"])
        if model_name is not None and model_name != cfg["model"]["name"]:
            raise CheckpointError(f"{path} is a {cfg['model']['name']} run, not {model_name}; leave out --model")
        classes = list(raw["classes"])
        model = build_model(cfg, len(classes))
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
        cfg = json.loads(json.dumps(DEFAULTS))
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
    from .data import DigitsDataset, ImageFolderDataset

    if data == "digits" or (data is None and cfg["data"]["dataset"] == "digits"):
        if list(meta["classes"]) != DIGITS_CLASSES:
            raise ValueError(f"the digits dataset has classes {DIGITS_CLASSES}; this model's are {meta['classes'][:10]}: "
                             f"give --data FOLDER with its own classes")
        split = split or "test"
        return DigitsDataset(split, transform, in_chans=cfg["data"]["in_chans"]), f"digits/{split}"
    if data is None:
        if meta["source"] != "run":
            raise ValueError("give --data FOLDER to evaluate an official checkpoint (e.g. ImageNet's val/ folder)")
        data = cfg["data"]["path"]
        split = split or (cfg["data"]["test_split"] if (Path(data) / cfg["data"]["test_split"]).is_dir()
                          else cfg["data"]["val_split"])
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if split is not None:
        folder = root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{root} has no {split}/ folder; give --split with one of its subfolders or "
                                    f"--data pointing at the class folders")
    else:  # the first of test/, val/ that exists, else the folder itself holds the classes
        folder = next((root / s for s in ("test", "val") if (root / s).is_dir()), root)
    dataset = ImageFolderDataset(folder, transform, classes=meta["classes"], in_chans=cfg["data"]["in_chans"],
                                 verify=cfg["data"]["verify"])
    return dataset, str(folder)


def evaluate(checkpoint: Union[str, Path], data: Optional[str] = None, split: Optional[str] = None,
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
    model, meta = load_for_inference(checkpoint, model_name, use_ema)
    if img_size is not None:
        meta["cfg"]["data"]["img_size"] = int(img_size)
    if crop_pct is not None:
        meta["cfg"]["data"]["crop_pct"] = float(crop_pct)
    dataset, where = _eval_dataset(meta, data, split)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = engine.init_distributed(device)
    try:
        model.to(info.device)
        out = evaluate_model(model, _eval_loader(dataset, batch_size, workers, info), info.device)
    finally:
        if owns_group:
            engine.cleanup_distributed()
    skipped = len(getattr(dataset, "skipped", [])) + out["skipped"]
    return {"top1": out["top1"], "top5": out["top5"], "loss": out["loss"], "images": out["images"], "skipped": skipped,
            "data": where, "checkpoint": meta["path"], "model": meta["cfg"]["model"]["name"]}


@torch.no_grad()
def predict(checkpoint: Union[str, Path], images: Sequence[Union[str, Path]], topk: int = 5,
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
    model, meta = load_for_inference(checkpoint, model_name, use_ema)
    target = engine.resolve_device(device)
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
