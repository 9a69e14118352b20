"""``crossformer eval``: top-1/top-5 accuracy and loss of a run or checkpoint on a dataset."""
import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="top-1/top-5 and loss of a run or checkpoint on a dataset",
        description="Evaluate with the model's own preprocessing (resize, then centre crop by crop_pct). CHECKPOINT is "
        "a run folder (its best.pth), one of our .pth files, a model folder (config.json + model.safetensors: "
        "crossformer export --format hf, crossformer convert, timm's save_for_hf), or an official checkpoint "
        "(with --model).",
        epilog="examples:\n  crossformer eval runs/crossformer_micro-digits-20250101-120000          # its test split\n"
        "  crossformer eval runs/my-run --data ~/flowers --split val\n"
        "  crossformer eval crossformer-s.pth --model crossformer_small --data /data/imagenet/val\n"
        "  crossformer eval my-model/                   # a model folder of a run: the run's own test split",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="run folder, model folder or checkpoint file")
    parser.add_argument("--data", help="'digits', a folder of class folders, or a folder with test/ or val/ "
                        "(default: the run's own test split, else its validation split)")
    parser.add_argument("--split", help="subfolder of --data (or digits split: train, val, test)")
    parser.add_argument("--model", help="architecture of an official checkpoint (crossformer info lists them)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--img-size", type=int, help="evaluate at this resolution instead of the model's")
    parser.add_argument("--crop-pct", type=float, help="centre-crop fraction instead of the model's")
    parser.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..train.inference import evaluate_classifier

    result = evaluate_classifier(args.checkpoint, data=args.data, split=args.split, model_name=args.model,
                      batch_size=args.batch_size, workers=args.workers, device=args.device, use_ema=args.ema,
                      img_size=args.img_size, crop_pct=args.crop_pct)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['model']} on {result['data']} ({result['images']} images): top-1 {result['top1']:.2f}%  "
              f"top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}")
        if result["skipped"]:
            print(f"  {result['skipped']} unreadable images were skipped")
    return 0
