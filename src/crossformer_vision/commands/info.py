"""``crossformer info``: the registered models with parameters and GFLOPs, or one model's configuration."""
import argparse
import json

from .. import PAPER, VARIANTS, count_macs, count_params, create_model


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
        for name in VARIANTS:
            model = create_model(name)
            print(f"{name:22s} {count_params(model):>12,d} {count_macs(model, size) / 1e9:8.2f}  "
                  f"{PAPER[name]['top1']:>10.1f}%")
        return 0
    model = create_model(args.name)
    cfg = {k: v for k, v in model.pretrained_cfg.items() if v is not None}
    info = {
        "name": args.name,
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in VARIANTS[args.name.split(".")[0]].items()},
        "params": count_params(model),
        "gflops": round(count_macs(model, size) / 1e9, 3),
        "input_size": list(size),
        "feature_info": model.feature_info,
        "pretrained_cfg": cfg,
        "paper": PAPER[args.name.split(".")[0]],
    }
    print(json.dumps(info, indent=2, default=str))
    return 0
