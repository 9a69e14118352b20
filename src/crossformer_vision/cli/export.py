"""``crossformer export``: one ONNX or ``torch.export`` file for every batch size, height and width, or (``--format hf``)
a run as a model folder that timm and the Hugging Face Hub load as it is (docs/hub.md).

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
  crossformer export runs/<run> --format hf -o my-model             # config.json + model.safetensors + README.md:
                                                                     # timm.create_model("local-dir:my-model")
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write an ONNX or torch.export file with dynamic batch, height and width, or a run as a model folder",
        description="Export a model for deployment. The file accepts any batch and any height/width in "
        "[--min-size, --max-size]; the ONNX export is checked against PyTorch in onnxruntime at two sizes. "
        "--format hf writes a run (classification, detection or segmentation) as a model folder: config.json, "
        "model.safetensors (the EMA weights where the run kept them, else its best) and a README.md model card.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", help="model name (crossformer info); optional with a run's --checkpoint; "
                        "with --format hf: the run folder or checkpoint (RUN)")
    parser.add_argument("--checkpoint", help="weights: a run folder, one of our .pth files, or an official checkpoint")
    parser.add_argument("--format", choices=("onnx", "pt2", "hf"), default="onnx",
                        help="onnx (default), pt2 (torch.export) or hf (a model folder for timm / the Hugging Face Hub)")
    parser.add_argument("--output", "-o", help="output file (default: NAME.onnx / NAME.pt2), or folder for --format hf "
                        "(default: <run folder name>-hf)")
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
    parser.add_argument("--no-ema", action="store_true", help="--format hf: the plain weights even where the run kept "
                        "an EMA of them")
    parser.add_argument("--overwrite", action="store_true", help="--format hf: replace the model files of a non-empty "
                        "output folder")
    parser.add_argument("--license", default="mit", help="--format hf: the model card's license field (default mit)")
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

    if args.format == "hf":
        return _export_folder(args)
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


def _export_folder(args: argparse.Namespace) -> int:
    from ..train.hub import export_run

    if args.name and args.checkpoint:
        raise ValueError("--format hf exports one run: give RUN or --checkpoint RUN, not both")
    source = args.checkpoint or args.name
    if not source:
        raise ValueError("give the run to export: crossformer export RUN --format hf -o DIR")
    if args.int8 or args.fixed_size is not None:
        raise ValueError("--int8 and --fixed-size are for ONNX / pt2 files; leave them out with --format hf")
    if not Path(source).exists():
        raise FileNotFoundError(f"{source}: no such run folder or checkpoint (with --format hf the argument is a run, "
                                f"not a model name; official checkpoints: crossformer convert FILE -o DIR)")
    run_dir = Path(source).resolve() if Path(source).is_dir() else Path(source).resolve().parent
    output = Path(args.output) if args.output else Path(f"{run_dir.name}-hf")
    result = export_run(source, output, ema=False if args.no_ema else None, overwrite=args.overwrite,
                        license=args.license)
    weights = "EMA weights" if result["weights"] == "ema" else "weights"
    print(f"wrote {output}/ (config.json, model.safetensors, README.md): {result['task']} model {result['model']}, "
          f"{result['num_classes']} classes, the {weights} of {result['checkpoint']}")
    if result["task"] == "classification":
        print(f"  load it with timm: import crossformer_vision, timm; timm.create_model(\"local-dir:{output}\")")
    else:
        command = "detect" if result["task"] == "detection" else "segment"
        print(f"  use it with: crossformer {command} predict IMAGES -k {output}")
    return 0
