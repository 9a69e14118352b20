"""What the three training commands (``train``, ``detect train``, ``segment train``) share: their options.

Every loop feature has the same flag in each (``--epochs``/``--iterations``, ``--batch-size``, ``--accum-steps``,
``--amp``, ``--ema``, ``--compile``, ``--resume``...); :func:`add_training_options` adds them and
:func:`overrides_from_args` turns them into the recipe's ``section.field=value`` overrides, followed by the
ones given explicitly.
"""
import argparse
import sys
from typing import Any, Dict, List, Mapping, Sequence

import yaml

__all__ = ["add_training_options", "overrides_from_args", "report_skipped"]

#: flag -> recipe field, the same for every task
_LOOP_FLAGS = {
    "epochs": "train.epochs", "iterations": "train.iterations", "batch_size": "train.batch_size",
    "accum_steps": "train.accum_steps", "lr": "optim.lr", "amp": "train.amp", "device": "train.device",
    "threads": "train.threads", "seed": "train.seed", "workers": "data.workers", "output": "log.output",
    "name": "log.name",
}


def add_training_options(parser: argparse.ArgumentParser, unit: str = "epoch") -> None:
    """The options every training command has (the task adds its own: ``--model``, ``--backbone``...)."""
    parser.add_argument("overrides", nargs="*", metavar="section.field=value", help="set any recipe field")
    parser.add_argument("--epochs", type=int, help="training length in epochs")
    parser.add_argument("--iterations", type=int, help="training length in optimizer steps (instead of epochs)")
    parser.add_argument("--batch-size", type=int, help="global batch per optimizer step (all processes, all accumulation steps)")
    parser.add_argument("--accum-steps", type=int, help="gradient accumulation steps per optimizer step")
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--workers", type=int, help="data loading processes per training process")
    parser.add_argument("--amp", choices=("none", "fp16", "bf16"), help="mixed precision on CUDA")
    parser.add_argument("--ema", action="store_true", default=None, help="keep an exponential moving average of the weights")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="CPU threads per process (default: cores / local processes)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--output", metavar="DIR", help="parent folder of run folders (default runs)")
    parser.add_argument("--name", help="run folder name (default <model>-<data>-<date-time>)")
    parser.add_argument("--no-progress", action="store_true", help=f"no progress bars (one line per {unit} only)")
    parser.add_argument("--resume", metavar="RUN", help="continue a run folder (or its last.pth) where it stopped")


def overrides_from_args(args: argparse.Namespace, task_flags: Mapping[str, str], items: Dict[str, Any]) -> List[str]:
    """The overrides the flags stand for: ``items`` (set by the command), then the loop's and the task's flags
    (``task_flags``: flag -> field), then the explicit ``section.field=value`` arguments."""
    items = dict(items)
    for flag, key in {**_LOOP_FLAGS, **task_flags}.items():
        value = getattr(args, flag, None)
        if value is not None:
            items[key] = value
    if args.epochs is not None:
        items["train.iterations"] = None
    if args.iterations is not None:
        items["train.epochs"] = None
    if args.ema:
        items["train.ema"] = True
    if args.compile:
        items["train.compile"] = True
    if args.no_progress:
        items["log.progress"] = False
    flags = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in items.items()]
    return flags + list(args.overrides)


def report_skipped(command: str, skipped: Sequence[Mapping[str, str]]) -> None:
    """One stderr line for the unreadable files a ``predict`` passed over (``{"file", "error"}`` items)."""
    if skipped:
        first = skipped[0]
        print(f"crossformer {command}: skipped {len(skipped)} unreadable images (e.g. {first['file']}: "
              f"{first['error']})", file=sys.stderr)
