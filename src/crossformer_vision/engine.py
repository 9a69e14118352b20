"""Task-independent training machinery: processes, devices, files that survive crashes, RNG, metrics, logs.

Used by the classification trainer (:mod:`crossformer_vision.trainer`) and meant for any other task
(detection, segmentation): nothing here knows about labels or heads.

* Processes: :func:`init_distributed` reads ``torchrun``'s environment (NCCL on GPUs, gloo on CPU);
  :func:`is_main_process`, :func:`barrier`, :func:`broadcast_object`, :func:`all_gather_object`,
  :func:`all_reduce_sum`; :class:`MetricSums` averages metrics over all ranks exactly.
* Files: :func:`atomic_save` / :func:`atomic_write_text` write a temporary file in the target's folder,
  flush and fsync it, then ``os.replace`` it (a reader sees the old file or the new one, never half of one);
  only rank 0 should call them. :func:`load_state_file` reads them back safely (no code runs).
  :func:`create_run_dir` and :class:`RunDirGuard` make sure a failed start leaves no run folder behind.
* Reproducibility: :func:`seed_everything`, :func:`capture_rng_state` / :func:`restore_rng_state` (tensors and
  plain numbers only, so checkpoints holding them load with ``weights_only=True``).
* Logs: :class:`Progress` (rank 0: tqdm on a terminal, a line per epoch in logs), :func:`write_csv`, :func:`plot_history`, :class:`TensorBoardLogger`.
"""
import csv
import errno
import io
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

__all__ = [
    "DistInfo",
    "MetricSums",
    "Progress",
    "RunDirGuard",
    "ShardSampler",
    "TensorBoardLogger",
    "all_gather_object",
    "all_reduce_sum",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "available_cores",
    "barrier",
    "broadcast_object",
    "capture_rng_state",
    "check_state",
    "cleanup_distributed",
    "configure_threads",
    "create_run_dir",
    "describe_os_error",
    "remove_stale_temp_files",
    "stopped_note",
    "write_config",
    "init_distributed",
    "is_main_process",
    "load_state_file",
    "plot_history",
    "resolve_device",
    "restore_rng_state",
    "seed_everything",
    "unwrap_model",
    "write_csv",
]

PathLike = Union[str, "os.PathLike[str]"]


# ---------------------------------------------------------------------------------------------- processes
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


class ShardSampler(Sampler):
    """Indices ``rank, rank + world_size, ...`` of ``0..length-1``: every sample exactly once over all ranks.

    For evaluation (``DistributedSampler`` pads with repeated samples, which biases metrics).
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


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


# ---------------------------------------------------------------------------------------------- files
def describe_os_error(err: OSError) -> str:
    """One line for a file-system error: what failed on which path, and what to do."""
    where = f" {err.filename}" if err.filename else ""
    what = err.strerror or type(err).__name__
    hints = {
        errno.ENOSPC: "free some disk space (files written before are intact), then run again (or --resume a run)",
        errno.EACCES: "choose a folder you can write to (e.g. --output)",
        errno.EPERM: "choose a folder you can write to (e.g. --output)",
        errno.EROFS: "the file system is read-only: choose another folder (e.g. --output)",
        errno.EISDIR: "give a file name, not a folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a file of that name is in the way",
    }
    hint = hints.get(err.errno or -1)
    return f"{what}:{where}" + (f"; {hint}" if hint else "")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, writer: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` through ``writer(file)`` into a temporary file beside it, fsync, then rename over ``path``.

    A crash at any moment leaves either the previous ``path`` or the complete new one (and possibly a
    ``.tmp`` file, which is never read).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def load_state_file(path: PathLike, fmt: Optional[str] = None, keys: Sequence[str] = ()) -> Dict[str, Any]:
    """Read a file written by :func:`atomic_save` safely (:func:`crossformer_vision.weights.load_checkpoint_file`:
    tensors and plain data only, no code runs), optionally checking what it is.

    Args:
        fmt: The ``format`` entry the file must have (e.g. ``"crossformer-vision/classification"``).
        keys: Entries the file must have.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable (truncated, corrupt, not a checkpoint, unsafe), another format, or entries missing;
            one line naming the file.
    """
    from .weights import load_checkpoint_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return check_state(load_checkpoint_file(path), path, fmt, keys)


def check_state(state: Any, path: PathLike, fmt: Optional[str] = None, keys: Sequence[str] = ()) -> Dict[str, Any]:
    """``state`` (read from ``path``) if it has the ``format`` entry ``fmt`` and every entry of ``keys``; else
    ValueError naming the file."""
    if fmt is not None and (not isinstance(state, dict) or state.get("format") != fmt):
        raise ValueError(f"{path} is not a crossformer training checkpoint of this kind (no '{fmt}' format entry)")
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"{path} is a crossformer checkpoint without {', '.join(missing)}: it is damaged, or was "
                         f"written by an incompatible version; use another checkpoint of the run (last.pth, best.pth)")
    return state


_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")  # temporary files of atomic_write_bytes: .<name>.tmp-<pid>


def remove_stale_temp_files(folder: PathLike) -> List[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in ``folder``.

    Only files of :func:`atomic_write_bytes` whose process no longer runs are removed; returns them.
    """
    removed = []
    for path in Path(folder).iterdir():
        match = _TEMP_NAME.match(path.name)
        if match is None or not path.is_file() or _process_alive(int(match.group(1))):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:  # another process removed it, or no permission: nothing to do
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def write_config(path: PathLike, cfg: Mapping[str, Any], resumes: Sequence[Mapping[str, Any]] = ()) -> None:
    """Write a run's resolved recipe as YAML, atomically, with a comment per ``--resume`` that changed fields."""
    import yaml

    lines = [f"# resumed at epoch {r['epoch'] + 1} with changes: {'; '.join(r['changes'])}\n" for r in resumes]
    atomic_write_text(path, "".join(lines) + yaml.safe_dump(dict(cfg), sort_keys=False))


def stopped_note(run_dir: Path, guard: "RunDirGuard", finished: int, unit: str) -> str:
    """The end of the message of a run that stopped on an error: what the run folder keeps and how to go on."""
    if guard.armed:
        return f"; no {unit} had finished, so no run folder was kept"
    return (f"; the run folder keeps its last good checkpoint {run_dir / 'last.pth'} ({unit} {finished}): fix the "
            f"problem, then continue with --resume {run_dir}")


def create_run_dir(output: PathLike, name: str) -> Path:
    """Create ``output/name`` on rank 0 (``name-2``, ``name-3``... if taken) and return it on every rank.

    Raises:
        ValueError: on every rank, when the folder cannot be created (``output`` is a file, read-only, full...).
    """
    path, error = None, None
    if is_main_process():
        root = Path(output)
        try:
            if root.exists() and not root.is_dir():
                raise ValueError(f"the output folder {root} (log.output, --output) is a file, not a folder; give a "
                                 f"folder for run folders")
            root.mkdir(parents=True, exist_ok=True)
            for i in range(1, 10000):
                candidate = root / (name if i == 1 else f"{name}-{i}")
                try:
                    candidate.mkdir()
                except FileExistsError:
                    continue
                path = str(candidate)
                break
            if path is None:
                raise ValueError(f"could not create a run folder named {name} in {root}: all names are taken")
        except ValueError as err:
            error = str(err)
        except OSError as err:
            error = (f"cannot create a run folder in {root} ({err.strerror or err}: {err.filename}); choose a folder "
                     f"you can write to with --output (log.output)")
    path, error = broadcast_object((path, error))
    if error:
        raise ValueError(error)
    return Path(path)


class RunDirGuard:
    """Remove a run folder made by this process if the run fails before anything worth keeping is in it.

    >>> with RunDirGuard(run_dir, created=True) as guard:
    ...     ...            # train
    ...     guard.keep()   # after the first checkpoint: from now on the folder stays, whatever happens
    """

    def __init__(self, run_dir: Path, created: bool) -> None:
        self.run_dir = Path(run_dir)
        self.armed = created and is_main_process()

    def keep(self) -> None:
        self.armed = False

    def __enter__(self) -> "RunDirGuard":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self.armed:
            shutil.rmtree(self.run_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- randomness
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> Dict[str, Any]:
    """This process's global RNG states as tensors and plain numbers (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "algorithm": str(np_state[0]),
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng_state`: set every global generator back to the captured state."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["algorithm"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])



def resume_rng(states: Sequence[Mapping[str, Any]], info: "DistInfo", reseed: int) -> Optional[str]:
    """Restore this rank's generators from a checkpoint's per-rank ``states`` (see :func:`capture_rng_state`).

    When the run now has a different number of processes, seed ``reseed + rank`` instead and return a note
    to print (the data order, which comes from the sampler's seed, is unchanged).
    """
    if len(states) == info.world_size:
        restore_rng_state(states[info.rank])
        return None
    seed_everything(reseed + info.rank)
    return (f"note: the run had {len(states)} processes, now {info.world_size}: random streams restart "
            f"from the seed (the data order is unchanged)")

# ---------------------------------------------------------------------------------------------- logs
class Progress:
    """Progress of one epoch (or any loop) on rank 0: a tqdm bar on a terminal, else one plain line at the end.

    >>> progress = Progress(total=len(loader), desc="epoch 3/30")
    >>> for batch in loader:
    ...     progress.update(1, f"loss={loss:.4f}")
    >>> progress.close(f"loss={mean_loss:.4f}, val_top1={top1:.2f}")   # the bar's (or line's) final text

    Args:
        total: Number of steps.
        desc: Label in front of the bar.
        bar: Draw a bar on a terminal (False: only the final line). Ranks other than 0 print nothing.
        stream: Where to write (default: stdout).
    """

    def __init__(self, total: int, desc: str, bar: bool = True, stream: Optional[io.TextIOBase] = None) -> None:
        self.total, self.desc, self.count = total, desc, 0
        self.stream = stream or sys.stdout
        self.enabled = is_main_process()
        self.start = time.perf_counter()
        self.bar = None
        if self.enabled and bar and self.stream.isatty():
            from tqdm.auto import tqdm

            sized = min(shutil.get_terminal_size((0, 0))) > 0  # pseudo-terminals may report 0x0, which hides bars
            self.bar = tqdm(total=total, desc=desc, file=self.stream, dynamic_ncols=sized, ncols=None if sized else 120,
                            nrows=None if sized else 24, mininterval=0.5, leave=True)

    def update(self, n: int = 1, postfix: Optional[str] = None) -> None:
        """Advance by ``n`` steps; ``postfix`` replaces the text after the bar (drawn at the bar's own pace)."""
        self.count += n
        if self.bar is not None:
            if postfix is not None:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(n)

    def close(self, postfix: str = "") -> None:
        """Finish the bar with ``postfix``, or print ``desc: steps, seconds, postfix`` as one line."""
        if self.bar is not None:
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.close()
            self.bar = None
        elif self.enabled:
            seconds = time.perf_counter() - self.start
            print(f"{self.desc}: {self.count}/{self.total} steps in {seconds:.1f}s, {postfix}", file=self.stream, flush=True)
            self.enabled = False


def write_csv(path: PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` (dicts; columns in first-seen order) as CSV, atomically. Floats keep 6 significant digits."""
    columns: List[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def plot_history(path: PathLike, history: Sequence[Mapping[str, Any]], panels: Mapping[str, Sequence[str]],
                 title: str = "", x: str = "epoch") -> None:
    """Save a PNG with one panel per entry of ``panels`` (panel title -> history columns), atomically.

    Args:
        path: Output ``.png``.
        history: One dict per epoch.
        panels: e.g. ``{"loss": ["train_loss", "val_loss"], "accuracy (%)": ["val_top1", "val_top5"]}``;
            columns missing from ``history`` are left out.
        title: Figure title.
        x: Column for the horizontal axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.0 * len(panels), 3.8), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    xs = [row[x] for row in history]
    for ax, (name, columns) in zip(axes, panels.items()):
        for column in columns:
            ys = [row.get(column) for row in history]
            if any(isinstance(v, (int, float)) and math.isfinite(v) for v in ys):
                ax.plot(xs, [v if v is not None else float("nan") for v in ys], marker="o", markersize=3, label=column)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png"))


class TensorBoardLogger:
    """Scalars to TensorBoard under ``log_dir`` when ``tensorboard`` is installed (rank 0 only; else silent).

    Args:
        log_dir: Folder for event files.
        mode: ``"auto"`` (use it when importable), True (required: raise if missing) or False.
    """

    def __init__(self, log_dir: PathLike, mode: Union[str, bool] = "auto") -> None:
        self.writer = None
        if mode is True and not self.available():
            raise ValueError("log.tensorboard=true but tensorboard is not installed: pip install tensorboard, "
                             "or set log.tensorboard=auto")
        if mode is False or not is_main_process() or not self.available():
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    @staticmethod
    def available() -> bool:
        """Whether ``torch.utils.tensorboard`` (which needs the ``tensorboard`` package) imports."""
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def log(self, scalars: Mapping[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in scalars.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
