"""``crossformer export``: one ONNX or ``torch.export`` file for every batch size, height and width."""
import argparse
from pathlib import Path

_EPILOG = """\
examples:
  crossformer export crossformer_small                               # random weights -> crossformer_small.onnx
  crossformer export crossformer_small --checkpoint crossformer-s.pth --output cf-s.onnx   # official weights
  crossformer export --checkpoint runs/crossformer_micro-digits-20250101-120000          # one of our runs
  crossformer export crossformer_tiny --format pt2 --max-size 1024   # torch.export program (torch.export.load)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write an ONNX or torch.export file with dynamic batch, height and width",
        description="Export a model for deployment. The file accepts any batch and any height/width in "
        "[--min-size, --max-size]; the ONNX export is checked against PyTorch in onnxruntime at two sizes.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", help="model name (crossformer info); optional with a run's --checkpoint")
    parser.add_argument("--checkpoint", help="weights: a run folder, one of our .pth files, or an official checkpoint")
    parser.add_argument("--format", choices=("onnx", "pt2"), default="onnx", help="onnx (default) or pt2 (torch.export)")
    parser.add_argument("--output", "-o", help="output file (default: NAME.onnx / NAME.pt2)")
    parser.add_argument("--num-classes", type=int, help="classifier size when exporting without a checkpoint")
    parser.add_argument("--min-size", type=int, help="smallest height/width accepted (default: the model's smallest)")
    parser.add_argument("--max-size", type=int, default=2048, help="largest height/width accepted (default 2048)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .. import create_model
    from ..export import export_onnx, export_program, save_program, size_range

    if args.checkpoint:
        from ..trainer import load_for_inference

        model, meta = load_for_inference(args.checkpoint, model_name=args.name)
        name = args.name or meta["cfg"]["model"]["name"]
    elif args.name:
        kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
        model, name = create_model(args.name, **kwargs), args.name
    else:
        raise ValueError("give a model NAME (crossformer info lists them) or --checkpoint RUN_OR_FILE")
    model.eval()
    output = Path(args.output or f"{name}.{args.format}")
    low, high = size_range(model, args.min_size, args.max_size)
    if args.format == "onnx":
        export_onnx(model, output, low, high, opset=args.opset, verify=not args.no_verify)
    else:
        save_program(export_program(model, low, high), output)
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB): {name}, input images (batch, "
          f"{model.in_chans}, height, width) with height, width in [{low}, {high}]")
    return 0
