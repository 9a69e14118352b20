"""Processes: ``torchrun``'s process group, which rank does what, collectives, CPU threads.

The lowest layer of the package (it imports nothing of it): metrics, data loading and the training loop all
use it. Alone (no ``torchrun``), every collective is a no-op that returns its input.

* :func:`init_distributed` reads ``torchrun``'s environment (NCCL on GPUs, gloo on CPU) into a
  :class:`DistInfo`; :func:`cleanup_distributed` leaves the group.
* :func:`is_main_process`, :func:`barrier`, :func:`broadcast_object`, :func:`all_gather_object`,
  :func:`all_reduce_sum`; :class:`MetricSums` averages metrics over every sample of every rank exactly.
* :func:`configure_threads`, :func:`available_cores`, :func:`unwrap_model`.
"""
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "MetricSums",
    "all_gather_object",
    "all_reduce_sum",
    "available_cores",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "configure_threads",
    "init_distributed",
    "is_main_process",
    "resolve_device",
    "unwrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` -> a device (GPU ``local_rank`` for CUDA)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}: expected 'auto', 'cpu' or 'cuda'")


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group ``torchrun`` set up (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), or run alone.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; with CUDA each process uses GPU
            ``LOCAL_RANK``.
        timeout_s: Collective timeout in seconds.

    Returns:
        :class:`DistInfo`. A process group (NCCL on CUDA, gloo on CPU) exists iff ``world_size > 1``; call
        :func:`cleanup_distributed` at the end.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    target = resolve_device(device, local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        from datetime import timedelta

        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s),
                                device_id=target if target.type == "cuda" else None)
    return DistInfo(rank, world_size, local_rank, local_world_size, target)


def cleanup_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed): the one process that prints and writes files."""
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op alone)."""
    if _active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects; no-op alone)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` alone)."""
    if not _active():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks (a new tensor; ``tensor`` itself when alone)."""
    if not _active():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class MetricSums:
    """Sums of weighted values per name, averaged over every sample of every rank.

    >>> sums = MetricSums(device)
    >>> sums.add("loss", loss.detach(), count=batch_size)   # loss is the batch mean
    >>> sums.add("correct", n_correct, count=batch_size, mean=False)
    >>> sums.reduce()      # {"loss": mean over all samples, "correct": total, "loss_count": N, ...}

    Values stay on ``device`` until :meth:`reduce` (no synchronisation per step).
    """

    def __init__(self, device: Union[str, torch.device] = "cpu") -> None:
        self.device = torch.device(device)
        self._sums: Dict[str, torch.Tensor] = {}
        self._counts: Dict[str, float] = {}
        self._means: Dict[str, bool] = {}

    def add(self, name: str, value: Union[float, torch.Tensor], count: float = 1.0, mean: bool = True) -> None:
        """Add ``value`` (a mean over ``count`` samples if ``mean``, else a total) under ``name``."""
        value = torch.as_tensor(value, dtype=torch.float64, device=self.device).detach()
        weighted = value * count if mean else value
        self._sums[name] = self._sums.get(name, torch.zeros((), dtype=torch.float64, device=self.device)) + weighted
        self._counts[name] = self._counts.get(name, 0.0) + count
        self._means[name] = mean

    def reduce(self) -> Dict[str, float]:
        """Means (or totals) over all ranks, plus ``<name>_count``: a collective call, every rank must make it."""
        names = sorted(self._sums)
        if not names:
            return {}
        packed = torch.stack([torch.stack([self._sums[n], torch.tensor(self._counts[n], dtype=torch.float64,
                                                                       device=self.device)]) for n in names])
        packed = all_reduce_sum(packed).cpu()
        out: Dict[str, float] = {}
        for name, (total, count) in zip(names, packed.tolist()):
            out[name] = total / count if self._means[name] and count > 0 else total
            out[f"{name}_count"] = count
        return out


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``DistributedDataParallel`` and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure_threads(threads: Optional[int], local_world_size: int = 1) -> int:
    """Set torch's CPU threads: ``threads``, or the cores this process may use divided among local processes.

    Returns:
        The number of threads set.
    """
    if threads is None:
        threads = max(1, available_cores() // max(1, local_world_size))
    torch.set_num_threads(int(threads))
    return int(threads)
