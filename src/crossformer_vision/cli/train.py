"""``crossformer train``: train a classifier from a recipe; with no arguments, the built-in digits demo."""
import argparse
import sys
from typing import Any, Dict

from .common import add_training_options, overrides_from_args

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

# flag -> recipe field (the loop's flags are in cli.common)
_FLAGS = {"model": "model.name", "pretrained": "model.pretrained", "img_size": "data.img_size"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a classifier (no arguments: the digits demo)",
        description="Train a CrossFormer classifier from a recipe and write a run folder (config.yaml, metrics.csv, "
        "curves.png, last.pth, best.pth, summary.json).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", help="recipe name in configs/ or a YAML file (default: digits, or folder with --data)")
    parser.add_argument("--data", metavar="PATH", help="ImageFolder dataset: PATH/train and PATH/val with one folder per class")
    parser.add_argument("--model", help="registered model (crossformer info lists them, crossformer_micro included)")
    parser.add_argument("--pretrained", metavar="FILE", help="start from these weights (official checkpoint or one of ours)")
    parser.add_argument("--img-size", type=int, help="training and evaluation resolution")
    add_training_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..train import NonFiniteLossError, train

    items: Dict[str, Any] = {}
    if args.data is not None:
        items.update({"data.dataset": "folder", "data.path": args.data})
    if args.model is not None:
        items["model.arch"] = None
    overrides = overrides_from_args(args, _FLAGS, items)
    if args.resume is not None:
        if args.config is not None:
            raise ValueError("--resume continues a run with its own recipe; leave out --config")
        config = None
    else:
        config = args.config or ("folder" if args.data is not None else "digits")
    try:
        train("classification", config, overrides, resume=args.resume)
    except NonFiniteLossError as err:
        print(f"crossformer train: {err}", file=sys.stderr)
        return 1
    return 0
