"""``crossformer train``: train a classifier from a recipe; with no arguments, the built-in digits demo."""
import argparse
import sys
from typing import Any, Dict, List

_EPILOG = """\
examples:
  crossformer train                                    # the digits demo (recipe configs/digits.yaml)
  crossformer train --data ~/flowers --epochs 20       # your ImageFolder (train/, val/): recipe configs/folder.yaml
  crossformer train --config crossformer_small --data /data/imagenet      # the paper's recipe
  crossformer train --data ~/flowers --model crossformer_tiny --img-size 224 optim.lr=1e-3 aug.mixup=0
  crossformer train --resume runs/crossformer_micro-digits-20250101-120000
  torchrun --nproc_per_node 8 -m crossformer_vision.cli train --config crossformer_base --data /data/imagenet

Any recipe field can be set as section.field=value (see docs/training.md).
"""

# flag -> recipe field
_FLAGS = {
    "model": "model.name",
    "pretrained": "model.pretrained",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "accum_steps": "train.accum_steps",
    "lr": "optim.lr",
    "img_size": "data.img_size",
    "workers": "data.workers",
    "amp": "train.amp",
    "device": "train.device",
    "threads": "train.threads",
    "seed": "train.seed",
    "output": "log.output",
    "name": "log.name",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a classifier (no arguments: the digits demo)",
        description="Train a CrossFormer classifier from a recipe and write a run folder (config.yaml, metrics.csv, "
        "curves.png, last.pth, best.pth, summary.json).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="section.field=value", help="set any recipe field")
    parser.add_argument("-c", "--config", help="recipe name in configs/ or a YAML file (default: digits, or folder with --data)")
    parser.add_argument("--data", metavar="PATH", help="ImageFolder dataset: PATH/train and PATH/val with one folder per class")
    parser.add_argument("--model", help="registered model (crossformer info) or crossformer_micro")
    parser.add_argument("--pretrained", metavar="FILE", help="start from these weights (official checkpoint or one of ours)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch per optimizer step (all processes)")
    parser.add_argument("--accum-steps", type=int, help="gradient accumulation steps")
    parser.add_argument("--lr", type=float, help="learning rate at a global batch of optim.lr_base_batch (scaled linearly)")
    parser.add_argument("--img-size", type=int, help="training and evaluation resolution")
    parser.add_argument("--workers", type=int, help="data loading processes per training process")
    parser.add_argument("--amp", choices=("none", "fp16", "bf16"), help="mixed precision on CUDA")
    parser.add_argument("--ema", action="store_true", default=None, help="keep an exponential moving average of the weights")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="CPU threads per process (default: cores / local processes)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--output", metavar="DIR", help="parent folder of run folders (default runs)")
    parser.add_argument("--name", help="run folder name (default <model>-<data>-<date-time>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch only)")
    parser.add_argument("--resume", metavar="RUN", help="continue a run folder (or its last.pth) where it stopped")
    parser.set_defaults(handler=run)


def overrides_from_args(args: argparse.Namespace) -> List[str]:
    """The ``section.field=value`` overrides the flags stand for, followed by the explicit ones."""
    items: Dict[str, Any] = {}
    if args.data is not None:
        items["data.dataset"] = "folder"
        items["data.path"] = args.data
    for flag, key in _FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            items[key] = value
    if args.model is not None:
        items["model.arch"] = None
    if args.ema:
        items["train.ema"] = True
    if args.compile:
        items["train.compile"] = True
    if args.no_progress:
        items["log.progress"] = False
    import yaml

    flags = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in items.items()]
    return flags + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    from ..trainer import NonFiniteLossError, train

    overrides = overrides_from_args(args)
    if args.resume is not None:
        if args.config is not None:
            raise ValueError("--resume continues a run with its own recipe; leave out --config")
        config = None
    else:
        config = args.config or ("folder" if args.data is not None else "digits")
    try:
        train(config, overrides, resume=args.resume)
    except NonFiniteLossError as err:
        print(f"crossformer train: {err}", file=sys.stderr)
        return 1
    return 0
