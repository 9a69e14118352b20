"""The one training loop of every task (``crossformer train``, ``detect train``, ``segment train``).

:class:`Trainer` runs a :class:`~crossformer_vision.train.tasks.Task` for its recipe. Everything is checked and
built in ``__init__``, before a run folder exists; :meth:`Trainer.run` trains in rounds (an epoch, or
``eval.interval`` optimizer steps), evaluates after each, and writes the run folder. What every task gets:

* processes: one, or DDP under ``torchrun`` (NCCL on GPUs, gloo on CPU); metrics reduced over all ranks;
* a step-exact sample stream (:class:`~crossformer_vision.data.samplers.StepSampler`): a run resumed from its
  ``last.pth`` reads exactly the samples an uninterrupted run reads;
* gradient accumulation (``train.accum_steps``), mixed precision on CUDA (``train.amp``: fp16 with a gradient
  scaler, bf16), gradient clipping (``optim.clip_grad``), an EMA of the weights evaluated beside them
  (``train.ema``), ``torch.compile`` (``train.compile``);
* atomic ``last.pth`` / ``best.pth`` (best by ``eval.best_metric``, in either direction), ``metrics.csv``,
  ``curves.png``, TensorBoard, ``summary.json``; ``--resume`` continues exactly, with changed augmentation or
  data-loader settings if asked;
* a NaN/inf loss stops before the bad step is applied; a data error, a full disk or SIGTERM stops with one
  line and the last good checkpoint kept.
"""
import contextlib
import itertools
import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..data.samplers import StepSampler
from ..data.samples import DataError, data_batches
from ..utils.distributed import (DistInfo, MetricSums, all_gather_object, all_reduce_sum, available_cores,
                                 cleanup_distributed, configure_threads, init_distributed, is_main_process)
from ..utils.files import atomic_save, atomic_write_text, describe_os_error, json_ready, remove_stale_temp_files
from ..utils.optim import load_optimizer_state
from ..models.official import load_state_dict_checked
from ..runtime.cpu import reuse_freed_memory
from .checkpoint import (RunDirGuard, capture_rng_state, create_run_dir, read_run_checkpoint, resume_path, resume_rng,
                         seed_everything, stopped_note, write_config)
from .config import plain, resolve_recipe, resume_changes
from .report import Progress, TensorBoardLogger, plot_history, write_csv
from .tasks import TASKS, Task

__all__ = ["NonFiniteLossError", "Trainer", "amp_dtype", "train"]

#: Version of the checkpoints this loop writes (1: the two trainers before the loop was one).
CHECKPOINT_VERSION = 2


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped without writing the bad weights."""


def amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``train.amp`` on ``device`` (None: float32; mixed precision is for CUDA)."""
    if amp == "none" or device.type != "cuda":
        return None
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("train.amp=bf16 but this GPU has no bfloat16 support; use train.amp=fp16")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32  # DataLoader gives each worker base_seed + worker_id
    np.random.seed(seed)
    random.seed(seed)


def _print(*args: Any) -> None:
    if is_main_process():
        print(*args, flush=True)


def _s(count: float) -> str:
    return "" if count == 1 else "s"


class Trainer:
    """One run of ``task`` (its ``cfg`` is the resolved recipe) on the processes of ``info``.

    Args:
        task: The task, built from the resolved recipe.
        info: This process's place (:func:`~crossformer_vision.utils.distributed.init_distributed`).
        checkpoint: A ``last.pth`` to continue (read and checked by
            :func:`~crossformer_vision.train.checkpoint.read_run_checkpoint`), or None.
        changes: ``"key: old -> new"`` for each recipe field a ``--resume`` changed.

    Raises:
        ValueError, FileNotFoundError: bad recipe, data, model or checkpoint (before any run folder exists).
    """

    def __init__(self, task: Task, info: DistInfo, checkpoint: Optional[Dict[str, Any]] = None,
                 changes: Sequence[str] = ()) -> None:
        self.task, self.cfg, self.info, self.device = task, task.cfg, info, info.device
        cfg, t = task.cfg, task.cfg["train"]
        self.changes = list(changes)
        if cfg["log"]["tensorboard"] is True and not TensorBoardLogger.available():
            raise ValueError("log.tensorboard=true but tensorboard is not installed: pip install tensorboard, "
                             "or set log.tensorboard=auto")
        self.threads = configure_threads(t["threads"], info.local_world_size)
        # CPU steps allocate and free gigabytes: keep freed memory instead of page-faulting it in every step
        self.memory_reused = self.device.type == "cpu" and t["reuse_memory"] and reuse_freed_memory()
        seed_everything(t["seed"] + info.rank)

        # ---- data
        self.train_set, self.val_set, self.test_set = task.datasets()
        self.classes = task.class_names(self.train_set)
        world, accum = info.world_size, t["accum_steps"]
        if t["batch_size"] % (world * accum):
            raise ValueError(f"train.batch_size ({t['batch_size']}) must be divisible by processes ({world}) x "
                             f"train.accum_steps ({accum}); it is the global batch of one optimizer step")
        self.micro_batch = t["batch_size"] // (world * accum)
        task.check_micro_batch(self.micro_batch)
        self.updates_per_epoch = len(self.train_set) // t["batch_size"]
        if self.updates_per_epoch == 0:
            raise ValueError(f"the training split has {len(self.train_set)} images, fewer than one global batch "
                             f"(train.batch_size={t['batch_size']}); lower train.batch_size")
        self.unit = "epoch" if t["epochs"] is not None else "round"
        workers = min(cfg["data"]["workers"], available_cores())  # more processes than cores only add overhead
        aligned = t["epochs"] is not None and task.aligned_epochs
        self.sampler = StepSampler(len(self.train_set), self.micro_batch, info.rank, world, t["seed"],
                                   self.updates_per_epoch * accum if aligned else None)
        self.train_loader = DataLoader(task.training_set(self.train_set), batch_size=self.micro_batch,
                                       sampler=self.sampler, num_workers=workers, collate_fn=task.training_collate(),
                                       pin_memory=self.device.type == "cuda", worker_init_fn=_seed_worker)
        eval_batch = cfg["eval"]["batch_size"] or task.default_eval_batch(self.micro_batch)
        self.val_loader = task.eval_loader(self.val_set, eval_batch, workers, info)
        self.test_loader = task.eval_loader(self.test_set, eval_batch, workers, info) if self.test_set is not None else None

        # ---- model, optimisation
        self.model = task.new_model(len(self.classes), init=checkpoint is None)
        self.model.class_names = self.classes
        if info.distributed and self.device.type == "cuda" and t.get("sync_bn"):
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        self.amp_dtype = amp_dtype(t["amp"], self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.ema = None
        if t["ema"]:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=t["ema_decay"])
        self.optimizer = task.optimizer(self.model)
        self.lr = self._lr()
        if t["epochs"] is not None:
            self.total_updates, self.round_updates = t["epochs"] * self.updates_per_epoch, self.updates_per_epoch
        else:
            self.total_updates = t["iterations"]
            self.round_updates = min(cfg["eval"]["interval"] or max(1, math.ceil(t["iterations"] / 10)), t["iterations"])
        self.scheduler, self.schedule_text = task.scheduler(self.optimizer, self.total_updates, self.updates_per_epoch)
        extra = task.extra_epochs() if t["epochs"] is not None else 0  # a timm warm-up prefix or cooldown
        self.total_updates += extra * self.updates_per_epoch
        self.rounds = math.ceil(self.total_updates / self.round_updates)
        self.train_model: nn.Module = self.model
        if info.distributed:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=task.find_unused_parameters)
        if t["compile"]:
            self.train_model = torch.compile(self.train_model)

        # ---- state
        self.best_metric = cfg["eval"]["best_metric"] or task.default_best
        known = task.metric_names() + ([f"{m}_ema" for m in task.metric_names()] if self.ema is not None else [])
        if self.best_metric not in known:
            raise ValueError(f"eval.best_metric={self.best_metric!r} is not a {task.name} metric; use one of "
                             f"{', '.join(known)}")
        self.higher = task.higher_is_better(self.best_metric)
        self.start_round, self.num_updates, self.saved = 0, 0, 0
        self.history: List[Dict[str, Any]] = []
        self.best: Dict[str, Any] = {"round": None, "metric": self.best_metric, "value": None}
        self.best_weights: Optional[Dict[str, torch.Tensor]] = None
        self.resumes: List[Dict[str, Any]] = []  # every --resume that changed fields: {"epoch", "changes"}
        self.checkpoint = checkpoint
        if checkpoint is not None:
            self._load_state(checkpoint)

    # -------------------------------------------------------------------------------------- state
    def _load_state(self, checkpoint: Dict[str, Any]) -> None:
        try:
            load_state_dict_checked(self.model, checkpoint["model"], strict=True)
            if self.ema is not None:
                load_state_dict_checked(self.ema.module, checkpoint["model_ema"], strict=True)
            load_optimizer_state(self.optimizer, checkpoint["optimizer"])
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
            seed_everything(reseed + self.info.rank)  # a new seed: new random streams from here on
        else:
            note = resume_rng(checkpoint["rng"], self.info, reseed)
            if note:
                _print(note)

    def _state(self, full: bool) -> Dict[str, Any]:
        rounds = len(self.history)
        state: Dict[str, Any] = {
            "format": self.task.checkpoint_format,
            "version": CHECKPOINT_VERSION,
            "task": self.task.name,
            "config": self.cfg,
            "classes": self.classes,
            "round": rounds,
            "num_updates": self.num_updates,
            "metrics": self.history[-1] if self.history else {},
            "best": self.best,
            "model": self.model.state_dict(),
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            **self.task.checkpoint_fields(self.model, self.classes, rounds),
        }
        if full:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(), history=self.history, world_size=self.info.world_size,
                         resumes=self.resumes)
        return state

    def _lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)

    def load_best_weights(self) -> None:
        """Put the weights of ``best.pth`` into the model (from memory, or from the file after a resume)."""
        if self.best_weights is None:
            self.best_weights = read_run_checkpoint(self.run_dir / "best.pth", self.task, need_state=False)["model"]
        load_state_dict_checked(self.model, self.best_weights, strict=True)

    # -------------------------------------------------------------------------------------- one round
    def train_round(self, index: int) -> Dict[str, Any]:
        """Train ``round_updates`` optimizer steps (fewer at the end); the round's row of metrics.csv (train part)."""
        accum = self.cfg["train"]["accum_steps"]
        updates = min(self.round_updates, self.total_updates - self.num_updates)
        steps = updates * accum
        self.progress = Progress(steps, f"{self.unit} {index + 1}/{self.rounds}", self.cfg["log"]["progress"])
        self.train_model.train()
        self.sampler.start_step = self.num_updates * accum
        sums = MetricSums(self.device)
        autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        clip = self.task.clip_grad()
        start, seen = time.perf_counter(), 0
        self.optimizer.zero_grad(set_to_none=True)
        for step, (batch, skipped) in enumerate(itertools.islice(data_batches(self.train_loader), steps)):
            n = self.task.batch_images(batch)
            batch = self.task.prepare(batch, self.device)
            update = (step + 1) % accum == 0
            no_sync = self.info.distributed and not update and hasattr(self.train_model, "no_sync")
            with self.train_model.no_sync() if no_sync else contextlib.nullcontext():
                with autocast:
                    parts = self.task.loss(self.train_model, batch)
                loss = parts["loss"]
                self._check_finite(loss, index, step)
                self.scaler.scale(loss / accum).backward()
            if update:
                if clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.num_updates += 1
                self.scheduler.step_update(num_updates=self.num_updates)
                if self.ema is not None:
                    self.ema.update(self.model, step=self.num_updates)
            seen += n
            for name, value in parts.items():
                sums.add(f"train_{name}", value.detach().float(), count=n)
            sums.add("skipped", float(skipped), mean=False)
            elapsed = time.perf_counter() - start
            self.progress.update(1, f"loss={self._last_loss:.4f}, lr={self._lr():.2e}, "
                                    f"img/s={seen * self.info.world_size / max(elapsed, 1e-9):.1f}")
        self.scheduler.step(index + 1)  # per-epoch schedules (per-iteration ones ignore it)
        elapsed = time.perf_counter() - start
        out = sums.reduce()
        row = {k: v for k, v in out.items() if not k.endswith("_count")}
        row["skipped"] = int(row["skipped"])
        row["images_per_s"] = out["train_loss_count"] / elapsed
        row[f"{self.unit}_time_s"] = elapsed
        return row

    def _check_finite(self, loss: torch.Tensor, index: int, step: int) -> None:
        value = loss.detach().float()
        bad = all_reduce_sum((~torch.isfinite(value)).float())
        self._last_loss = value.item()
        if bad.item() > 0:
            where = "non-finite" if not math.isfinite(self._last_loss) else "non-finite in another process"
            raise NonFiniteLossError(
                f"training stopped: the loss became {where} at {self.unit} {index + 1}, step {step + 1} "
                f"(iteration {self.num_updates + 1}, lr {self._lr():.3g})")

    def validate(self, model: nn.Module) -> Dict[str, float]:
        """The task's metrics of ``model`` on the validation split (the floats: metrics.csv columns)."""
        metrics = self.task.evaluate(model, self.val_loader, self.device, self.amp_dtype)
        return {k: v for k, v in metrics.items() if isinstance(v, float)}

    # -------------------------------------------------------------------------------------- the run
    def run(self, run_dir: Path, created: bool) -> Dict[str, Any]:
        """Train from the current round to the end, writing ``run_dir``; the summary (also ``summary.json``).

        Raises:
            NonFiniteLossError: the loss became NaN/inf (the last good checkpoint stays).
            DataError, ValueError: a data error or a file-system error stopped the run (one line, checkpoint kept).
        """
        self.run_dir = run_dir
        wall = time.perf_counter()
        prior_time = float(self.history[-1]["elapsed_s"]) if self.history else 0.0
        is_main = self.info.is_main
        with RunDirGuard(run_dir, created) as guard:
            tb = TensorBoardLogger(run_dir / "tensorboard", self.cfg["log"]["tensorboard"])
            if self.checkpoint is not None:
                guard.keep()
            if is_main:
                remove_stale_temp_files(run_dir)
                write_config(run_dir / "config.yaml", plain(self.cfg), self.resumes)
                if self.history:
                    write_csv(run_dir / "metrics.csv", self.history)
            self._print_header(created)
            plotted = time.perf_counter()
            try:
                for index in range(self.start_round, self.rounds):
                    row: Dict[str, Any] = {self.unit: index + 1}
                    row.update(self.train_round(index))
                    row.update(self.validate(self.model))
                    if self.ema is not None:
                        row.update({f"{k}_ema": v for k, v in self.validate(self.ema.module).items()})
                    row.update(iteration=self.num_updates, lr=self._lr(),
                               elapsed_s=prior_time + time.perf_counter() - wall)
                    self.history.append(row)
                    improved = self.task.improves(row[self.best_metric], self.best["value"], self.higher)
                    if improved:
                        self.best.update(round=index + 1, value=row[self.best_metric], iteration=self.num_updates)
                        if self.test_loader is not None:  # the test split is evaluated with them at the end
                            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                    self._save(improved)
                    guard.keep()
                    self.progress.close(f"loss={row['train_loss']:.4f}, lr={row['lr']:.2e}, "
                                        f"img/s={row['images_per_s']:.1f}, {self.task.headline(row)}"
                                        f"{' (best)' if improved else ''}")
                    if is_main:
                        write_csv(run_dir / "metrics.csv", self.history)
                        if index + 1 == self.rounds or time.perf_counter() - plotted > 30:  # the plot is slow-ish
                            plot_history(run_dir / "curves.png", self.history, self.task.panels, title=run_dir.name,
                                         x=self.unit)
                            plotted = time.perf_counter()
                        tb.log({k: v for k, v in row.items() if k != self.unit}, self.num_updates)
                    if row["skipped"]:
                        _print(f"  unreadable images skipped in this {self.unit}: {row['skipped']}")
            except NonFiniteLossError as err:
                if not guard.armed and is_main:
                    plot_history(run_dir / "curves.png", self.history, self.task.panels, title=run_dir.name, x=self.unit)
                    self._write_summary({"status": "stopped: non-finite loss", "message": str(err)})
                where = (f"; the last good checkpoint is {run_dir / 'last.pth'} ({self.unit} {self.saved})"
                         if not guard.armed else f"; no {self.unit} had finished, so no run folder was kept")
                raise NonFiniteLossError(f"{err}{where}. Lower optim.lr, keep optim.clip_grad, or use train.amp=bf16, "
                                         f"then start again or --resume") from None
            except DataError as err:
                raise DataError(f"{err}{stopped_note(run_dir, guard, self.saved, self.unit)}") from None
            except OSError as err:  # a full disk or a folder gone read-only while writing checkpoints or logs
                raise ValueError(f"the run stopped: {describe_os_error(err)}"
                                 f"{stopped_note(run_dir, guard, self.saved, self.unit)}") from None
            finally:
                tb.close()
        return self._finish(prior_time + time.perf_counter() - wall)

    def _save(self, improved: bool) -> None:
        rng = all_gather_object(capture_rng_state())  # collective: every rank
        if not self.info.is_main:
            return
        state = self._state(full=True)
        state["rng"] = rng
        atomic_save(state, self.run_dir / "last.pth")
        if improved:
            atomic_save(self._state(full=False), self.run_dir / "best.pth")
        self.saved = len(self.history)

    def _print_header(self, created: bool) -> None:
        c, task = self.cfg, self.task
        verb = "training" if created else f"resuming at {self.unit} {self.start_round + 1} of"
        test = f" / {len(self.test_set)} test" if self.test_set is not None else ""
        _print(f"{verb} {task.describe_model(self.model)} on {task.describe_data()}: {len(self.train_set)} train / "
               f"{len(self.val_set)} val{test} images, {len(self.classes)} classes")
        for name, ds in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
            if ds is not None and getattr(ds, "skipped", None):
                path, reason = ds.skipped[0]
                _print(f"  skipped {len(ds.skipped)} unreadable {name} files (e.g. {path}: {reason})")
        t = c["train"]
        amp = t["amp"]
        if amp != "none" and self.device.type != "cuda":
            amp = f"none ({amp} needs CUDA)"
        device = str(self.device)
        if self.device.type == "cpu":
            device += f" ({self.threads} thread{_s(self.threads)}{', freed memory reused' if self.memory_reused else ''})"
        processes = f"{self.info.world_size} process{'es' if self.info.world_size > 1 else ''}"
        extras = (", EMA" if self.ema is not None else "") + (", compiled" if t["compile"] else "")
        if t["epochs"] is not None:
            epochs = self.rounds
            length = f"{epochs} epoch{_s(epochs)} x {self.updates_per_epoch} step{_s(self.updates_per_epoch)}"
        else:
            length = f"{self.total_updates} iterations, evaluated every {self.round_updates}"
        _print(f"  {length}, global batch {t['batch_size']} ({processes} x {self.micro_batch} x {t['accum_steps']} "
               f"accumulation), {c['optim']['opt']} lr {self.lr:.3g}, {device}, amp {amp}{extras}")
        _print(f"  schedule: {self.schedule_text}")
        for change in self.changes:
            _print(f"  changed on resume: {change} (recorded in config.yaml)")
        _print(f"  run folder: {self.run_dir}")

    def _finish(self, elapsed: float) -> Dict[str, Any]:
        last = self.history[-1]
        best_round = self.best["round"] or len(self.history)
        best_row = self.history[best_round - 1]
        skip = {self.unit, "iteration", "lr", "elapsed_s", "images_per_s", "skipped", f"{self.unit}_time_s"}
        metric_keys = [k for k in last if k not in skip and not k.startswith("train_")]
        summary: Dict[str, Any] = {
            "status": "finished",
            "task": self.task.name,
            "run_dir": str(self.run_dir),
            "model": self.cfg["model"].get("name"),
            "dataset": self.task.dataset_name(),
            **({"epochs": self.rounds} if self.unit == "epoch" else {}),
            "iterations": self.num_updates,
            "best_metric": self.best_metric,
            f"best_{self.unit}": best_round,
            "best": {k: best_row.get(k) for k in metric_keys},
            "last": {k: last.get(k) for k in metric_keys},
            "train_time_s": round(elapsed, 1),
            "images_per_s": round(sum(r["images_per_s"] for r in self.history) / len(self.history), 1),
            "processes": self.info.world_size,
            "device": str(self.device),
        }
        summary.update(self.task.finish(self))
        if self.info.is_main:
            self._write_summary(summary)
            _print(f"done in {elapsed:.1f}s; best.pth is {self.unit} {best_round} "
                   f"({self.task.best_text(best_row, self.best_metric, self.higher)})")
            for line in self.task.finish_lines(summary, len(self.history)):
                _print(line)
            _print(f"  wrote {self.run_dir}/: config.yaml metrics.csv curves.png last.pth best.pth summary.json")
        return summary

    def _write_summary(self, summary: Dict[str, Any]) -> None:
        atomic_write_text(self.run_dir / "summary.json", json.dumps(json_ready(summary), indent=2) + "\n")


def train(task: str = "classification", config: Union[str, Path, Mapping[str, Any], None] = None,
          overrides: Union[Sequence[str], Mapping[str, Any]] = (), resume: Union[str, Path, None] = None) -> Dict[str, Any]:
    """Train a model of ``task``; under ``torchrun`` every process calls this (DistributedDataParallel).

    Args:
        task: ``"classification"``, ``"detection"`` or ``"segmentation"``.
        config: Recipe name (``configs/`` for classification, ``configs/dense/`` otherwise), YAML path or dict;
            None: the task's demo (the digits, or the synthetic shapes).
        overrides: ``["train.epochs=10", ...]`` or ``{"train.epochs": 10}``.
        resume: A run folder (or its ``last.pth``) to continue; ``config`` is then ignored and only the fields
            the task's schema lets ``--resume`` change may be overridden.

    Returns:
        The summary also written to ``summary.json``.

    Raises:
        ValueError, FileNotFoundError: bad recipe, data, model or checkpoint (raised before a run folder is made).
        NonFiniteLossError: the loss became NaN/inf; the last good checkpoint stays in the run folder.
    """
    task_class = TASKS[task] if task in TASKS else None
    if task_class is None:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
    checkpoint, checkpoint_path, changes = None, None, []
    if resume is not None:
        checkpoint_path = resume_path(resume)
        checkpoint = read_run_checkpoint(checkpoint_path, task_class, need_state=True)
        cfg, changes = resume_changes(checkpoint["config"], overrides, task)
    else:
        cfg = task_class.complete_config(resolve_recipe(task, config, overrides))
    owns_group = not (dist.is_available() and dist.is_initialized())
    threads = torch.get_num_threads()
    info = init_distributed(cfg["train"]["device"])
    try:
        trainer = Trainer(task_class(cfg), info, checkpoint, changes)
        if checkpoint_path is not None:
            return trainer.run(checkpoint_path.parent, created=False)
        name = cfg["log"]["name"] or f"{trainer.task.run_name()}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        return trainer.run(create_run_dir(cfg["log"]["output"], name), created=True)
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            cleanup_distributed()
