"""``crossformer detect`` and ``crossformer segment``: train / eval / predict, built here for both tasks.

The two commands differ only in their task; :func:`register_task` adds one of them with its three
subcommands. Training is the one loop of :mod:`crossformer_vision.train` (the same options as
``crossformer train``), evaluation and prediction :mod:`crossformer_vision.train.inference`.
"""
import argparse
import json
import math
import sys
from typing import Any, Dict, List

from .common import add_training_options, overrides_from_args, report_skipped

_WORDS = {
    "detection": dict(command="detect", noun="detector", demo="detection_demo", paper="retinanet_crossformer_small_coco_1x",
                      labels="annotations", labels_help="COCO instances json of --images",
                      data_help="COCO folder: annotations/instances_<split>.json and <split>/ (or images/<split>/)",
                      metric="COCO box AP (and mask AP for Mask R-CNN)"),
    "segmentation": dict(command="segment", noun="segmenter", demo="segmentation_demo",
                         paper="upernet_crossformer_small_ade20k_160k", labels="labels",
                         labels_help="folder of label PNGs (class index per pixel) for --images",
                         data_help="ADE20K (ADEChallengeData2016) or a folder with images/<split>/ and labels/<split>/",
                         metric="mIoU, per-class IoU and pixel accuracy"),
}

# flag -> recipe field (the loop's flags are in cli.common)
_FLAGS = {"backbone": "model.backbone", "num_classes": "model.num_classes", "pretrained": "pretrained", "weights": "weights"}


def register(subparsers: argparse._SubParsersAction) -> None:
    register_task(subparsers, "detection")
    register_task(subparsers, "segmentation")


def _action(sub: argparse._SubParsersAction, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def register_task(subparsers: argparse._SubParsersAction, task: str) -> None:
    """Add ``crossformer detect`` or ``crossformer segment`` (``task``) with train, eval and predict."""
    w = _WORDS[task]
    parser = subparsers.add_parser(
        w["command"], help=f"{task}: train, evaluate or run a CrossFormer {w['noun']} (no data: synthetic shapes demo)",
        description=f"{task.capitalize()} with CrossFormer backbones: train, eval ({w['metric']}), predict (PNG drawings).")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = w["command"]

    tr = _action(sub, "train", f"train a {w['noun']} (no arguments: the synthetic shapes demo)",
                 f"Train a {w['noun']} from a recipe (configs/dense/) and write a run folder (config.yaml, "
                 "metrics.csv, curves.png, last.pth, best.pth, summary.json).",
                 f"examples:\n  crossformer {c} train                         # demo on SYNTHETIC shapes "
                        f"(configs/dense/{w['demo']}.yaml)\n"
                        f"  crossformer {c} train --config {w['paper']} --data /data/...   # the paper's recipe\n"
                        f"  crossformer {c} train train.batch_size=8 optim.lr=2e-4 model.backbone_kwargs.drop_path_rate=0.1\n"
                        f"  crossformer {c} train --resume runs/<run>\n"
                        f"  torchrun --nproc_per_node 8 -m crossformer_vision.cli {c} train --config {w['paper']} --data ...\n\n"
                        "Any recipe field can be set as section.field=value (see docs/dense.md).")
    tr.add_argument("-c", "--config", help=f"recipe name in configs/dense/ or a YAML file (default: {w['demo']})")
    tr.add_argument("--data", metavar="PATH", help=w["data_help"])
    tr.add_argument("--backbone", help="CrossFormer variant (crossformer_small, crossformer_base, ...)")
    tr.add_argument("--num-classes", type=int, help="classes (default: from the data)")
    tr.add_argument("--pretrained", metavar="FILE", help="backbone weights (official ImageNet checkpoint or ours)")
    tr.add_argument("--weights", metavar="FILE", help="complete-model weights to start from (official mmdet/mmseg or ours)")
    add_training_options(tr, unit="evaluation")
    tr.set_defaults(handler=lambda args: _train(args, task))

    ev = _action(sub, "eval", f"{w['metric']} of a run or checkpoint",
                 f"Evaluate: {w['metric']}. CHECKPOINT is a run folder (its best.pth), one of our .pth "
                 "files, or an official mmdet/mmseg file (with --config and the recipe overrides that match it).",
                 f"examples:\n  crossformer {c} eval runs/<run>                  # its own validation split\n"
                        f"  crossformer {c} eval runs/<run> --data synthetic\n"
                        f"  crossformer {c} eval official.pth --config {w['paper']} model.lda_mode=fixed_interval --data /data/...")
    ev.add_argument("checkpoint", help="run folder, model folder (crossformer export --format hf) or checkpoint file")
    ev.add_argument("overrides", nargs="*", metavar="section.field=value", help="recipe overrides (with --config)")
    ev.add_argument("--data", help=f"'synthetic', or {w['data_help']} (default: the run's validation split)")
    ev.add_argument("--split", help="split name inside --data (default val2017/val, validation)")
    ev.add_argument("--images", metavar="DIR", help="image folder (with --" + w["labels"] + ")")
    ev.add_argument("--" + w["labels"], dest="labels", metavar="PATH", help=w["labels_help"])
    ev.add_argument("-c", "--config", help="recipe that builds the model of an official checkpoint")
    ev.add_argument("--batch-size", type=int, help="images per forward pass")
    ev.add_argument("--workers", type=int, default=0, help="data loading processes")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    if task == "segmentation":
        ev.add_argument("--scales", type=float, nargs="+", metavar="S",
                        help="multi-scale test: factors of the test size, e.g. 0.5 0.75 1.0 1.25 1.5 1.75 (the papers' MS IoU)")
        ev.add_argument("--flip", action="store_true", default=None, help="also evaluate the mirrored images")
        ev.add_argument("--mode", choices=("whole", "slide"), help="whole images, or sliding windows (--window)")
        ev.add_argument("--window", type=int, nargs=2, metavar=("H", "W"), help="sliding window size (--mode slide)")
        ev.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="sliding window step (default 2/3 window)")
    ev.set_defaults(handler=lambda args: _eval(args, task))

    pr = _action(sub, "predict", "draw predictions on images and save them as PNG",
                 "Run the model on image files (folders are searched recursively) and write one PNG per image to "
                 "--output with " + ("boxes, classes, scores and masks" if task == "detection"
                                     else "the colour-coded class map") + " drawn on it.",
                 f"examples:\n  crossformer {c} predict photos/ -k runs/<run> --output drawn/ --json\n"
                 f"  crossformer {c} predict photos/ -k my-model/   # a model folder (crossformer export RUN --format hf)")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    pr.add_argument("-k", "--checkpoint", required=True, help="run folder, model folder (crossformer export --format "
                    "hf) or checkpoint file")
    pr.add_argument("-o", "--output", default="predictions", metavar="DIR", help="folder for the PNGs (default predictions)")
    pr.add_argument("--score-threshold", type=float, default=0.5, help="detections below this score are not drawn")
    pr.add_argument("-c", "--config", help="recipe that builds the model of an official checkpoint")
    pr.add_argument("--set", dest="overrides", action="append", default=[], metavar="section.field=value",
                    help="recipe override for --config (repeatable)")
    pr.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    pr.add_argument("--json", action="store_true", help="print the predictions as JSON")
    pr.set_defaults(handler=lambda args: _predict(args, task))


def _overrides(args: argparse.Namespace, task: str) -> List[str]:
    items: Dict[str, Any] = {}
    if args.data is not None:  # replaces the recipe's own data paths
        items.update({"data.root": args.data, "data.train": None, "data.val": None})
        if task == "detection":
            items["data.format"] = "coco"
        else:
            from pathlib import Path

            items["data.format"] = "ade20k" if (Path(args.data) / "images" / "training").is_dir() else "folder"
    return overrides_from_args(args, _FLAGS, items)


def _train(args: argparse.Namespace, task: str) -> int:
    from ..train import NonFiniteLossError, train

    if args.resume is not None and args.config is not None:
        raise ValueError("--resume continues a run with its own recipe; leave out --config")
    try:
        train(task, args.config, _overrides(args, task), resume=args.resume)
    except NonFiniteLossError as err:
        print(f"crossformer {_WORDS[task]['command']} train: {err}", file=sys.stderr)
        return 1
    return 0


def _pct(value: float) -> str:
    return "  n/a" if value is None or not math.isfinite(value) else f"{100 * value:5.1f}"


def _eval(args: argparse.Namespace, task: str) -> int:
    from ..train.inference import evaluate_dense
    from ..utils.files import json_ready

    labels = getattr(args, "labels", None)
    protocol = {"data.test_scales": getattr(args, "scales", None), "data.test_flip": getattr(args, "flip", None),
                "data.test_mode": getattr(args, "mode", None), "data.test_window": getattr(args, "window", None),
                "data.test_stride": getattr(args, "stride", None)}
    overrides = list(args.overrides) + [f"{k}={json.dumps(v)}" for k, v in protocol.items() if v is not None]
    result = evaluate_dense(task, args.checkpoint, data=args.data, split=args.split, images=args.images, annotations=labels,
                      config=args.config, overrides=overrides, batch_size=args.batch_size, workers=args.workers,
                      device=args.device)
    if args.json:
        print(json.dumps(json_ready(result), indent=2))
        return 0
    print(f"{result['model']} on {result['data']} ({result['images']} images)"
          + (f", {result['protocol']}" if "protocol" in result else ""))
    if task == "detection":
        names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        print(f"  {'':5s} " + " ".join(f"{n:>5s}" for n in names))
        for iou, label in (("bbox", "box"), ("segm", "mask")):
            if f"{iou}_AP" in result:
                print(f"  {label:5s} " + " ".join(_pct(result[f'{iou}_{n}']) for n in names))
    else:
        print(f"  mIoU {_pct(result['mIoU'])}  pixel accuracy {_pct(result['pixel_accuracy'])}  "
              f"mean accuracy {_pct(result['mean_accuracy'])}")
        for name, iou in result["per_class_iou"].items():
            print(f"    {name:20s} IoU {_pct(iou)}")
    return 0


def _predict(args: argparse.Namespace, task: str) -> int:
    from ..train.inference import predict_dense

    result = predict_dense(task, args.checkpoint, args.images, args.output, score_threshold=args.score_threshold,
                     config=args.config, overrides=args.overrides, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for item in result["predictions"]:
            if task == "detection":
                found = ", ".join(f"{d['class']} {d['score']:.2f}" for d in item["detections"]) or "nothing"
            else:
                found = ", ".join(f"{name} {100 * share:.1f}%" for name, share in item["classes"].items())
            print(f"{item['file']} -> {item['output']}: {found}")
    report_skipped(f"{_WORDS[task]['command']} predict", result["skipped"])
    return 0
