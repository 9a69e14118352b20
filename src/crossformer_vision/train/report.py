"""What a run shows and writes as it goes: a progress bar or line per round, metrics.csv, curves.png, TensorBoard.

Only rank 0 prints and writes (:func:`~crossformer_vision.utils.distributed.is_main_process`); files are written
atomically.
"""
import csv
import io
import math
import shutil
import sys
import time
from typing import Any, List, Mapping, Optional, Sequence, Union

from ..utils.distributed import is_main_process
from ..utils.files import PathLike, atomic_write_bytes, atomic_write_text

__all__ = ["Progress", "TensorBoardLogger", "plot_history", "write_csv"]


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
