"""``crossformer convert``: an official checkpoint (any layout) -> a model folder that timm and the Hub load as it is."""
import argparse
import json

_EPILOG = """\
examples:
  crossformer convert crossformer-s.pth -o crossformer-s        # the variant is inferred from the tensor shapes
  crossformer convert crossformerpp-b.pth -o cfpp-b --model crossformerpp_base
  crossformer convert mask_rcnn_crossformer_s_fpn_1x_coco.pth -o cf-s-coco-backbone   # the backbone of an mmdet file

then: python -c 'import crossformer_vision, timm; m = timm.create_model("local-dir:crossformer-s")'
      crossformer predict cat.jpg -k crossformer-s
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn an official checkpoint into a model folder (config.json + model.safetensors + README.md)",
        description="Read an official CrossFormer / CrossFormer++ checkpoint of any layout (released classification "
        "files, the current code's, training states, mmdetection/mmsegmentation files: their backbone) without "
        "running code, and write a model folder that timm.create_model('local-dir:DIR') loads (after import "
        "crossformer_vision). Without --model the variant is inferred from the tensor shapes; 1000-class heads get "
        "ImageNet's class names, other heads keep their size.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="official checkpoint (.pth, .pt, .bin, .safetensors)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="model folder to write (created)")
    parser.add_argument("--model", help="the variant (crossformer info lists them); default: inferred from the shapes")
    parser.add_argument("--lda-mode", choices=("fixed_group", "fixed_interval"),
                        help="grouping rule recorded in the folder (default: fixed_interval for mmdet/mmseg files, "
                        "the released dense checkpoints' rule; else fixed_group)")
    parser.add_argument("--overwrite", action="store_true", help="replace the model files of a non-empty DIR")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..models.hub import convert_checkpoint

    result = convert_checkpoint(args.file, args.output, model_name=args.model, lda_mode=args.lda_mode,
                                overwrite=args.overwrite)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    how = "inferred from the tensor shapes; --model chooses another" if result["inferred"] else "as given"
    head = (f"{result['num_classes']} classes" + (" (ImageNet names)" if result["labels"] else "")
            if result["num_classes"] else "no classifier head (a backbone)")
    print(f"{args.file}: {result['layout']}")
    print(f"  model {result['model']} ({how}), {head}, {result['in_chans']} input channels, lda_mode={result['lda_mode']}")
    print(f"  wrote {result['folder']}/ (config.json, model.safetensors, README.md); load it with "
          f"timm.create_model(\"local-dir:{result['folder']}\") after import crossformer_vision")
    return 0
