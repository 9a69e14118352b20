"""``crossformer info``: the registered models with parameters and GFLOPs, or one model's configuration."""
import argparse
import json

from ..models import MODELS, PAPER, create_model
from ..tools.flops import count_macs, count_params


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="list models with params and GFLOPs, or show one model's configuration",
        description="Without NAME: every registered model with parameters and GFLOPs (multiply-accumulates, "
        "224x224). With NAME: its configuration and pretrained config as JSON.",
    )
    parser.add_argument("name", nargs="?", help="a model name from the list")
    parser.add_argument("--img-size", type=int, default=224, help="input size for the GFLOPs count (default 224)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    size = (3, args.img_size, args.img_size)
    if args.name is None:
        print(f"{'model':22s} {'params':>12s} {'GFLOPs':>8s}  {'paper top-1':>11s}")
        for name in MODELS:
            model = create_model(name)
            top1 = f"{PAPER[name]['top1']:>10.1f}%" if name in PAPER else f"{'-':>11s}"
            print(f"{name:22s} {count_params(model):>12,d} {count_macs(model, size) / 1e9:8.2f}  {top1}")
        return 0
    model = create_model(args.name)
    base = args.name.split(".")[0]
    cfg = {k: v for k, v in model.pretrained_cfg.items() if v is not None}
    info = {
        "name": args.name,
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in MODELS[base].items()},
        "params": count_params(model),
        "gflops": round(count_macs(model, size) / 1e9, 3),
        "input_size": list(size),
        "feature_info": model.feature_info,
        "pretrained_cfg": cfg,
        "paper": PAPER.get(base),
    }
    print(json.dumps(info, indent=2, default=str))
    return 0
