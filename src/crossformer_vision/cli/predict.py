"""``crossformer predict``: top-k classes with probabilities for image files or folders."""
import argparse
import json

from .common import report_skipped


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="top-k classes of images with probabilities",
        description="Classify image files (folders are searched recursively). Class names come from the run's "
        "checkpoint, or ImageNet's for 1000-class official checkpoints.",
        epilog="examples:\n  crossformer predict cat.jpg dog.png --checkpoint runs/my-run\n"
        "  crossformer predict photos/ --checkpoint crossformer-s.pth --model crossformer_small --topk 3 --json\n"
        "  crossformer predict cat.jpg -k my-model/     # a model folder (crossformer export --format hf / convert)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument("-k", "--checkpoint", required=True, help="run folder, model folder (config.json + "
                        "model.safetensors) or checkpoint file")
    parser.add_argument("--model", help="architecture of an official checkpoint")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    parser.add_argument("--json", action="store_true", help="print the predictions as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..train.inference import predict_classes as predict

    result = predict(args.checkpoint, args.images, topk=args.topk, model_name=args.model, device=args.device,
                     batch_size=args.batch_size, use_ema=args.ema)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for item in result["predictions"]:
            print(item["file"])
            for top in item["top"]:
                label = top["label"] if top["label"] == top["class"] else f"{top['label']} ({top['class']})"
                print(f"  {100 * top['probability']:6.2f}%  {label}")
    report_skipped("predict", result["skipped"])
    return 0
