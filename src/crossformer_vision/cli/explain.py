"""``crossformer explain``: what a CrossFormer's own parts do on one image, as PNGs and an HTML page.

The pictures are computed by :mod:`crossformer_vision.tools.explain` from the model's own code: SDA/LDA groups of
a pixel's token at every stage, each stage's position bias, where that token attends, and the cross-scale
embedding's kernels around the pixel.
"""
import argparse
import shlex
from typing import Optional, Tuple

from ..models import create_model
from ..models.crossformer import LDA_MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="draw groups, position biases, attention and cross-scale embedding on your image",
        description="Draw what CrossFormer's distinctive parts do on IMAGE at its own size: the SDA and LDA group "
        "of a pixel's token at every stage (padding and the small-map rule included), each stage's position bias "
        "per head, where that token attends (from a checkpoint), and the cross-scale embedding's kernels. Writes "
        "PNGs, explain.json and index.html into OUT. Weights: a run or checkpoint (-k), a weights file for --model "
        "(--pretrained), or random weights (--model alone; groups and position-bias shapes still hold).",
        epilog="examples:\n  crossformer explain photo.jpg -k runs/my-run -o explain-photo\n"
        "  crossformer explain photo.jpg --pretrained crossformer-s.pth --model crossformer_small -o out --at 120,80\n"
        "  crossformer explain photo.jpg --model crossformer_small --lda-mode fixed_interval -o out-random",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE", help="an image file")
    parser.add_argument("-k", "--checkpoint", metavar="RUN|FILE", help="run folder or checkpoint file (official files "
                        "need --model)")
    parser.add_argument("--pretrained", metavar="FILE", help="official or own weights for --model NAME (a detection "
                        "or segmentation backbone file works too)")
    parser.add_argument("--model", metavar="NAME", help="architecture (crossformer info lists them); alone: random weights")
    parser.add_argument("-o", "--output", metavar="OUT", required=True, help="folder for the pictures")
    parser.add_argument("--at", metavar="X,Y", help="the pixel to explain, in the image's own pixels (default: the centre)")
    parser.add_argument("--max-side", type=int, metavar="PIXELS", help="shrink the image so that its longer side is "
                        "at most this (default: its own size)")
    parser.add_argument("--lda-mode", choices=LDA_MODES, help="grouping rule of --model/--pretrained models "
                        "(default: the model's, fixed_group)")
    parser.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights (default 0)")
    parser.add_argument("--dpi", type=int, default=80, help="resolution of the PNGs (default 80)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.set_defaults(handler=run)


def parse_pixel(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"X,Y"`` -> ``(x, y)``; None for None."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        x, y = (int(p.strip()) for p in parts)
    except ValueError:
        raise ValueError(f"--at takes two whole pixel numbers X,Y (column, row), got {text!r}") from None
    if x < 0 or y < 0:
        raise ValueError(f"--at takes pixel numbers from 0, got {text!r}")
    return x, y


def read_image(path: str, in_chans: int):
    """The image file in the model's mode (``L`` for 1 channel, ``RGB`` for 3), as a PIL image."""
    from ..data.images import load_image

    if in_chans not in (1, 3):
        raise ValueError(f"explain draws models with 1 or 3 input channels, this one has {in_chans}")
    try:
        return load_image(path, "L" if in_chans == 1 else "RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"no such image file: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder; explain takes one image file") from None
    except Exception as err:  # decoders raise OSError, ValueError, SyntaxError...
        raise ValueError(f"cannot read {path} as an image ({type(err).__name__})") from None


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this explanation (for the page)."""
    words = ["crossformer", "explain", args.image]
    for flag, value in (("-k", args.checkpoint), ("--pretrained", args.pretrained), ("--model", args.model),
                        ("--lda-mode", args.lda_mode), ("--at", args.at), ("--max-side", args.max_side),
                        ("--seed", args.seed if args.seed else None), ("-o", args.output)):
        if value is not None:
            words += [flag, str(value)]
    if args.ema:
        words.append("--ema")
    return " ".join(shlex.quote(w) for w in words)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..tools.explain import explain_image, shrink_image
    from ..utils.distributed import resolve_device

    at = parse_pixel(args.at)
    if args.dpi < 20 or args.dpi > 600:
        raise ValueError(f"--dpi must be between 20 and 600, got {args.dpi}")
    if args.checkpoint is not None and args.pretrained is not None:
        raise ValueError("give either -k RUN|FILE or --pretrained FILE, not both")
    if args.checkpoint is not None and args.lda_mode is not None:
        raise ValueError("--lda-mode applies to --model/--pretrained models; a checkpoint keeps its own")
    mean = std = None
    if args.checkpoint is not None:
        from ..train.inference import load_classifier

        model, meta = load_classifier(args.checkpoint, args.model, use_ema=args.ema)
        mean, std = meta["cfg"]["data"]["mean"], meta["cfg"]["data"]["std"]
        name = meta["cfg"]["model"]["name"]
        weights = f"{meta['path']} ({meta['source']})"
    elif args.model is None:
        raise ValueError("name the model: -k RUN|FILE, --pretrained FILE --model NAME, or --model NAME (random weights)")
    else:
        if args.ema:
            raise ValueError("--ema needs a run (-k RUN)")
        kwargs = {} if args.lda_mode is None else {"lda_mode": args.lda_mode}
        torch.manual_seed(args.seed)
        if args.pretrained is not None:
            model = create_model(args.model, checkpoint_path=args.pretrained, num_classes=0, **kwargs)
            weights = args.pretrained
        else:
            model = create_model(args.model, **kwargs)
            weights = f"random (seed {args.seed})"
        name = args.model
    model = model.to(resolve_device(args.device)).eval()
    image, scale = shrink_image(read_image(args.image, int(getattr(model, "in_chans", 3))), args.max_side)
    if at is not None and scale != 1.0:
        at = (min(int(at[0] * scale), image.size[0] - 1), min(int(at[1] * scale), image.size[1] - 1))
    facts = [("model", f"{name}, lda_mode={getattr(model, 'lda_mode', '?')}, attn_type={getattr(model, 'attn_type', 'lsda')}"),
             ("weights", weights), ("image file", str(args.image) + ("" if scale == 1.0 else f" (scaled by {scale:.3f})")),
             ("command", command_line(args))]
    result = explain_image(model, image, args.output, at=at, mean=mean, std=std, facts=facts, dpi=args.dpi)
    print(f"explained pixel x={result['pixel'][0]}, y={result['pixel'][1]} of {args.image} "
          f"({result['size'][0]}x{result['size'][1]}): {len(result['files'])} files in {args.output}, open "
          f"{args.output}/index.html")
    return 0
