"""``crossformer bench``: throughput, latency, memory, roofline and matmul replay of our models and timm's."""
import argparse

_EPILOG = """\
examples:
  crossformer bench                                   # our eight variants against Swin, PVT v2, Twins, ConvNeXt
  crossformer bench crossformer_small swin_tiny_patch4_window7_224 --batch-size 32 --threads 8
  crossformer bench crossformer_tiny --device cuda --amp bf16 --compile --json bench.json --plot bench.png
  crossformer bench crossformer_micro --img-size 32 --no-train --reps 5      # a quick look
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..tools.bench import add_arguments

    parser = subparsers.add_parser(
        "bench",
        help="benchmark throughput, latency and memory against a matmul roofline",
        description="Time inference and training throughput, batch-1 latency and peak memory (a fresh process "
        "per model) of our models and any timm model, next to the peak of a large matrix multiply (the "
        "roofline) and a replay of the model's matrix multiplies alone (the overhead factor). Prints a "
        "markdown table; --json and --plot write the rows and a throughput-vs-GFLOPs chart.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..tools.bench import run_from_args

    return run_from_args(args)
