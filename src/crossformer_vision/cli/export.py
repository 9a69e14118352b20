"""``crossformer export``: one ONNX or ``torch.export`` file for every batch size, height and width.

An output that cannot be written (an existing folder, a file where a folder should be, a read-only folder, a
full disk) ends the command with one line naming the path, the problem and the fix (exit status 2), checked
before the export where possible; no partial or temporary file is left behind.
"""
import argparse
from pathlib import Path
from typing import Tuple

_EPILOG = """\
examples:
  crossformer export crossformer_small                               # random weights -> crossformer_small.onnx
  crossformer export crossformer_small --checkpoint crossformer-s.pth --output cf-s.onnx   # official weights
  crossformer export --checkpoint runs/crossformer_micro-digits-20250101-120000          # one of our runs
  crossformer export crossformer_tiny --format pt2 --max-size 1024   # torch.export program (torch.export.load)
  crossformer export crossformer_small --int8                        # also crossformer_small.int8.onnx
  crossformer export --checkpoint runs/<digits run> --fixed-size 32  # one size only (below the dynamic minimum)
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
    parser.add_argument("--fixed-size", type=_size, metavar="S|HxW",
                        help="export for this one height and width (any batch) instead of a size range")
    parser.add_argument("--int8", action="store_true",
                        help="also write an int8 copy (onnxruntime dynamic quantization of the linear layers) "
                        "beside the ONNX file, as NAME.int8.onnx")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.set_defaults(handler=run)


def _size(text: str) -> Tuple[int, int]:
    height, _, width = text.lower().partition("x")
    try:
        return int(height), int(width or height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 224 or 192x256, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..models import create_model
    from ..tools.export import check_writable, export_onnx, export_program, quantize_onnx, save_program, size_range

    if args.checkpoint:
        from ..train.inference import load_classifier

        model, meta = load_classifier(args.checkpoint, model_name=args.name)
        name = args.name or meta["cfg"]["model"]["name"]
    elif args.name:
        kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
        model, name = create_model(args.name, **kwargs), args.name
    else:
        raise ValueError("give a model NAME (crossformer info lists them) or --checkpoint RUN_OR_FILE")
    model.eval()
    if args.int8 and args.format != "onnx":
        raise ValueError("--int8 quantizes an ONNX file: use it with --format onnx")
    output = Path(args.output or f"{name}.{args.format}")
    # a folder in the way, a file where a folder should be, a read-only folder: say so before the slow export
    check_writable(output)
    int8_output = output.with_suffix(".int8.onnx") if args.int8 else None
    if int8_output is not None:
        check_writable(int8_output)
    if args.fixed_size is not None:
        height, width = args.fixed_size
        sizes = f"height {height}, width {width}"
    else:
        low, high = size_range(model, args.min_size, args.max_size)
        sizes = f"height, width in [{low}, {high}]"
    if args.format == "onnx":
        if args.fixed_size is not None:
            export_onnx(model, output, opset=args.opset, verify=not args.no_verify, fixed_size=args.fixed_size)
        else:
            export_onnx(model, output, low, high, opset=args.opset, verify=not args.no_verify)
    elif args.fixed_size is not None:
        save_program(export_program(model, fixed_size=args.fixed_size), output)
    else:
        save_program(export_program(model, low, high), output)
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB): {name}, input images (batch, "
          f"{model.in_chans}, height, width) with {sizes}")
    if int8_output is not None:
        quantized = quantize_onnx(output, int8_output)
        print(f"wrote {quantized} ({quantized.stat().st_size / 2**20:.1f} MiB): int8 linear layers (onnxruntime "
              f"dynamic quantization); check its accuracy on your data (benchmarks/onnx_int8.py)")
    return 0
