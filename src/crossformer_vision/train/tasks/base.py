"""What the training loop asks of a task: data, model, loss, evaluation, the headline metric, what predict draws.

The loop (:class:`~crossformer_vision.train.loop.Trainer`) owns everything that is the same for every task:
processes, the step-exact sample stream, accumulation, mixed precision, gradient clipping, EMA,
``torch.compile``, DDP, checkpoints, resume, the non-finite-loss stop, progress and logs. A :class:`Task`
answers the rest. Batches travel through the loop opaquely: the task's ``collate`` makes them, its
:meth:`~Task.loss` consumes them.
"""
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ...data.samplers import ShardSampler
from ...data.samples import CollateSkipped, SkipUnreadable
from ...utils.distributed import DistInfo

__all__ = ["Task", "move_to"]


def move_to(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (nested lists, tuples, dicts) on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: move_to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(move_to(v, device) for v in value)
    return value


class Task:
    """One kind of training (classification, detection, segmentation), for one resolved recipe ``cfg``.

    Subclasses set the class attributes and implement the methods that raise ``NotImplementedError``.

    Attributes:
        name: ``"classification"``, ``"detection"`` or ``"segmentation"`` (the recipe schema's name).
        command: The command that trains it (``train``, ``detect train``, ``segment train``).
        checkpoint_format: The ``format`` entry of its checkpoints.
        checkpoint_keys: Entries every checkpoint of the task has (the names of the first checkpoint version).
        default_best: The metric (a ``metrics.csv`` column) that makes ``best.pth`` unless the recipe names one.
        panels: Panels of ``curves.png``: title -> columns.
        find_unused_parameters: DDP must look for parameters without gradients (detectors' unused heads).
        aligned_epochs: With ``train.epochs``, every epoch reads the first ``steps x batch`` samples of its own
            permutation, dropping the rest (``DistributedSampler`` + ``drop_last``, as classification always did);
            otherwise the sample stream runs through the permutations back to back, so no sample is dropped
            (the dense tasks, as they always did). See :class:`~crossformer_vision.data.samplers.StepSampler`.
    """

    name = ""
    command = ""
    checkpoint_format = ""
    checkpoint_keys: Tuple[str, ...] = ()  # entries every checkpoint of the task has (the first version's names)
    default_best = ""
    panels: Dict[str, List[str]] = {}
    find_unused_parameters = False
    aligned_epochs = False

    def __init__(self, cfg: Dict[str, Any]) -> None:
        self.cfg = cfg

    @classmethod
    def complete_config(cls, cfg: Dict[str, Any]) -> Dict[str, Any]:
        """A new run's resolved recipe as its checkpoints should record it (classification writes out the
        architecture of a registered model)."""
        return cfg

    # ------------------------------------------------------------------------------------------ data
    def datasets(self) -> Tuple[Dataset, Dataset, Optional[Dataset]]:
        """``(train, validation, test or None)``; raise ``ValueError``/``FileNotFoundError`` for bad data."""
        raise NotImplementedError

    def class_names(self, train_set: Dataset) -> List[str]:
        raise NotImplementedError

    def training_set(self, dataset: Dataset) -> Dataset:
        """What the training loader reads: items ``(sample, skipped)``, an unreadable file replaced and counted."""
        return SkipUnreadable(dataset, replace=True)

    def collate(self, items: Sequence[Any]) -> Any:
        """A list of samples -> one batch (the task's own layout)."""
        raise NotImplementedError

    def training_collate(self) -> Callable[[Sequence[Any]], Tuple[Any, int]]:
        """Items of :meth:`training_set` -> ``(batch, skipped)``."""
        return CollateSkipped(self.collate)

    def eval_loader(self, dataset: Dataset, batch_size: int, workers: int, info: DistInfo) -> DataLoader:
        """Batches ``(batch or None, skipped)`` of ``dataset``, every image once over all ranks (unreadable ones left
        out, never replaced: an image must not be evaluated twice)."""
        return DataLoader(SkipUnreadable(dataset, replace=False), batch_size=batch_size, num_workers=workers,
                          sampler=ShardSampler(len(dataset), info.rank, info.world_size),
                          collate_fn=CollateSkipped(self.collate), pin_memory=info.device.type == "cuda")

    def default_eval_batch(self, micro_batch: int) -> int:
        """Images per evaluation forward pass when ``eval.batch_size`` is null."""
        return micro_batch

    def check_micro_batch(self, micro_batch: int) -> None:
        """Raise ``ValueError`` if the per-process batch does not suit the task (mixup needs an even one)."""

    # ------------------------------------------------------------------------------------------ model
    def new_model(self, num_classes: int, init: bool) -> nn.Module:
        """The recipe's model; with ``init``, its starting weights (``pretrained``...) are loaded."""
        raise NotImplementedError

    def describe_model(self, model: nn.Module) -> str:
        """How the run's first line names the model, e.g. ``crossformer_micro (1.69M params, 32x32x1)``."""
        raise NotImplementedError

    def describe_data(self) -> str:
        """How the run's first line names the data."""
        raise NotImplementedError

    def dataset_name(self) -> str:
        """The data in ``summary.json`` (a path, ``digits``, ``synthetic``)."""
        raise NotImplementedError

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def scheduler(self, optimizer: torch.optim.Optimizer, total_updates: int, updates_per_epoch: int) -> Tuple[Any, str]:
        """``(timm scheduler stepped with step_update(num_updates) after each update, one-line description)``."""
        raise NotImplementedError

    def extra_epochs(self) -> int:
        """Epochs the schedule adds to ``train.epochs`` (timm's warm-up prefix and cooldown)."""
        return 0

    def clip_grad(self) -> Optional[float]:
        return self.cfg["optim"]["clip_grad"]

    # ------------------------------------------------------------------------------------------ training
    def prepare(self, batch: Any, device: torch.device) -> Any:
        """The batch on ``device``, ready for :meth:`loss` (classification mixes images here)."""
        return move_to(batch, device)

    def batch_images(self, batch: Any) -> int:
        """Number of images in a batch."""
        return len(batch[0])

    def loss(self, model: nn.Module, batch: Any) -> Dict[str, torch.Tensor]:
        """``{"loss": total, other parts...}`` of ``model`` on a prepared batch."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 amp_dtype: Optional[torch.dtype]) -> Dict[str, Any]:
        """Metrics of ``model`` over ``loader`` (batches of :meth:`eval_loader`) on every rank together; the floats
        become ``metrics.csv`` columns."""
        raise NotImplementedError

    def metric_names(self) -> List[str]:
        """The columns :meth:`evaluate` writes (``eval.best_metric`` must be one of them or their ``_ema`` form)."""
        raise NotImplementedError

    @staticmethod
    def higher_is_better(metric: str) -> bool:
        """Whether larger values of ``metric`` are better (losses are not)."""
        return "loss" not in metric

    def headline(self, row: Mapping[str, Any]) -> str:
        """The metrics the end-of-round line shows, e.g. ``val_loss=0.41, val_top1=90.00%``."""
        raise NotImplementedError

    def best_text(self, row: Mapping[str, Any], metric: str, higher: bool) -> str:
        """Why ``best.pth`` is the round of ``row``: ``highest bbox_AP 0.491; box AP=49.1, ...``."""
        return f"{'highest' if higher else 'lowest'} {metric} {row[metric]:.4g}; {self.headline(row)}"

    # ------------------------------------------------------------------------------------------ records
    def checkpoint_fields(self, model: nn.Module, classes: List[str], rounds: int) -> Dict[str, Any]:
        """Entries this task's checkpoints add to the loop's (class names, how to rebuild the model)."""
        return {}

    def run_name(self) -> str:
        """``<model>-<data>`` part of the default run folder name."""
        raise NotImplementedError

    def finish(self, trainer: Any) -> Dict[str, Any]:
        """Summary fields of a finished run beyond the loop's (classification evaluates its test split here)."""
        return {}

    def finish_lines(self, summary: Mapping[str, Any], rounds: int) -> List[str]:
        """Lines printed under the run's ``done`` line."""
        return []

    @staticmethod
    def improves(value: float, best: Optional[float], higher: bool) -> bool:
        """Better or as good (a tie goes to the later evaluation, which trained longer); NaN never improves."""
        if not math.isfinite(value):
            return best is None
        if best is None or not math.isfinite(best):
            return True
        return value >= best if higher else value <= best
