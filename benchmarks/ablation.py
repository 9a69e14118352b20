"""The paper's attention ablation (CrossFormer Table 5a) on the built-in digits: LSDA vs PVT-like vs Swin-like attention.

    python benchmarks/ablation.py                          # the paper's four rows, 3 seeds, the digits recipe
    python benchmarks/ablation.py --epochs 10 --seeds 2    # shorter
    python benchmarks/ablation.py --rows all               # also PVT-like and Swin-like without CEL
    python benchmarks/ablation.py --data /data/my-folder   # an ImageFolder dataset (the folder recipe) instead
    python benchmarks/ablation.py --json out.json

Every row trains the same small CrossFormer (``ABLATION_ARCH``: CrossFormer-S's layout, depths 2-2-2-2 at 32
channels) with one recipe (``configs/digits.yaml``, images upscaled to ``--img-size`` 64) and differs only in
``attn_type`` (``"lsda"``, ``"pvt"``, ``"swin"``) and ``embed_layer`` (``"cel"`` or ``"conv"``, a single
stride-sized kernel). At 64x64 the stages see 16x16, 8x8, 4x4 and 2x2 maps; group sizes 4-4-2-2 and intervals 4-2-2-1
mirror CrossFormer-S at 224x224 (56-28-14-7 maps, G = 7, I = 8-4-2-1): every LDA group spans its whole map, every
PVT key map has G x G tokens, the last stage is one group, and Swin's shift (G // 2) acts in stages 1-3.

Printed per row: parameters and GMACs of this model at the input size and of CrossFormer-S at 224x224 (1000 classes),
test top-1 of the best-validation checkpoint as mean +- sample standard deviation over the seeds, training images/s
(the training loop's, mean over the seeds), and from the package's benchmark (``crossformer bench``'s measurement,
a fresh process per row, batch ``--batch-size``): inference images/s and the peak memory of training steps (CUDA:
max allocated; CPU: growth of the process's peak RSS, weights, gradients and AdamW state included).
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: The model every row trains (CrossFormer constructor arguments; attn_type and embed_layer are added per row).
ABLATION_ARCH: Dict[str, Any] = dict(
    patch_size=[4, 8, 16, 32], embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], group_size=[4, 4, 2, 2],
    crs_interval=[4, 2, 2, 1], merge_size=[[2, 4], [2, 4], [2, 4]], drop_path_rate=0.1,
)

#: (attn_type, embed_layer, the paper's CrossFormer-S ImageNet top-1 for that row, if it has one).
ROWS: List[Tuple[str, str, Optional[float]]] = [
    ("pvt", "cel", 81.3), ("swin", "cel", 81.9), ("lsda", "cel", 82.5), ("lsda", "conv", 81.5),
    ("pvt", "conv", None), ("swin", "conv", None),
]
NAMES = {"lsda": "LSDA", "pvt": "PVT-like", "swin": "Swin-like", "cel": "CEL", "conv": "conv (no CEL)"}


def _arch(attn_type: str, embed_layer: str) -> Dict[str, Any]:
    return {**ABLATION_ARCH, "attn_type": attn_type, "embed_layer": embed_layer}


def measure(attn_type: str, embed_layer: str, args: argparse.Namespace, in_chans: int) -> Dict[str, Any]:
    """One row's size and speed: parameters and GMACs of the trained model and of CrossFormer-S at 224x224 (1000
    classes), and inference/training images/s and peak training memory at ``--batch-size`` from the package's
    benchmark (:func:`crossformer_vision.tools.bench.measure_in_child`: a fresh process, 3-channel inputs)."""
    from crossformer_vision.models import VARIANTS, CrossFormer
    from crossformer_vision.tools.bench import BenchOptions, measure_in_child
    from crossformer_vision.tools.flops import count_macs, count_params

    arch = _arch(attn_type, embed_layer)
    model = CrossFormer(**arch, num_classes=10, in_chans=in_chans)
    small = CrossFormer(**VARIANTS["crossformer_small"], attn_type=attn_type, embed_layer=embed_layer)
    out: Dict[str, Any] = dict(params=count_params(model), gmacs=count_macs(model, (in_chans, args.img_size, args.img_size)) / 1e9,
                               s_params=count_params(small), s_gmacs=count_macs(small, (3, 224, 224)) / 1e9)
    # the ablation model is crossformer_small with ABLATION_ARCH's sizes (create_model merges the arguments)
    opts = BenchOptions(batch_size=args.batch_size, img_size=args.img_size, threads=args.threads, device=args.device,
                        num_classes=10, latency=False, replay=False, model_kwargs=arch)
    bench = measure_in_child("crossformer_small", opts)
    if "error" in bench:
        raise RuntimeError(f"measuring {attn_type}/{embed_layer} failed: {bench['error']}")
    out.update(infer_images_per_s=bench["infer_img_s"]["median"], bench_train_images_per_s=bench["train_img_s"]["median"],
               peak_train_mib=bench["mem_train_mib"], memory_kind=bench["mem_kind"])
    return out


def train_row(attn_type: str, embed_layer: str, seed: int, args: argparse.Namespace, output: Path) -> Dict[str, Any]:
    """One training run with the recipe; returns its summary."""
    from crossformer_vision.train import train

    name = f"{attn_type}-{embed_layer}-seed{seed}"
    overrides: Dict[str, Any] = {
        "model.name": f"ablation-{attn_type}-{embed_layer}", "model.arch": _arch(attn_type, embed_layer),
        "data.img_size": args.img_size, "train.seed": seed, "train.threads": args.threads, "train.device": args.device,
        "log.output": str(output), "log.name": name, "log.progress": False, "log.tensorboard": False,
    }
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.data is not None:
        overrides["data.path"] = args.data
    log = output / f"{name}.log"
    with open(log, "w") as f, contextlib.redirect_stdout(f):
        return train("classification", "folder" if args.data else "digits", overrides)


def table(results: Sequence[Dict[str, Any]], seeds: int) -> List[str]:
    lines = [
        "| attention | embedding | params | GMACs | CrossFormer-S params / GMACs (224) | test top-1 (mean +- std, "
        f"{seeds} seed{'s' if seeds != 1 else ''}) | train img/s | infer img/s | peak memory (MiB) | paper top-1 (S, ImageNet) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        accs = r["test_top1"]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        paper = f"{r['paper_top1']:.1f}%" if r["paper_top1"] is not None else "-"
        lines.append(
            f"| {NAMES[r['attn_type']]} | {NAMES[r['embed_layer']]} | {r['params'] / 1e6:.3f}M | {r['gmacs']:.4f} | "
            f"{r['s_params'] / 1e6:.4f}M / {r['s_gmacs']:.3f} | {statistics.mean(accs):.2f} +- {spread:.2f} | "
            f"{statistics.mean(r['train_images_per_s']):.0f} | {r['infer_images_per_s']:.0f} | "
            f"{r['peak_train_mib']:.0f} | {paper} |")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the recipe's, 30 for the digits)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per row, seeds 0..N-1 (default 3)")
    parser.add_argument("--rows", choices=("paper", "all"), default="paper",
                        help="paper: the four rows of Table 5a; all: also PVT-like and Swin-like without CEL")
    parser.add_argument("--data", help="an ImageFolder dataset (folder recipe) instead of the digits")
    parser.add_argument("--img-size", type=int, default=64, help="input size (default 64: digits upscaled)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch of the speed and memory measurements")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1, the digits recipe's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--output", help="folder for the runs (default: a temporary folder, removed)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1) or args.img_size < 32:
        parser.error("--seeds and --epochs must be positive and --img-size at least 32")
    import torch

    from crossformer_vision.tools.bench import cpu_facts, describe_cpu

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)
    rows = ROWS[:4] if args.rows == "paper" else ROWS
    in_chans = 3 if args.data else 1
    temp = None if args.output else tempfile.TemporaryDirectory(prefix="crossformer-ablation-")
    output = Path(args.output or temp.name)
    output.mkdir(parents=True, exist_ok=True)
    machine = f"{describe_cpu(cpu_facts())}, {os.cpu_count()} cores; torch {torch.__version__}; {args.threads} thread(s) per run"
    print(f"machine: {machine}; runs in {output}")
    results = []
    start = time.time()
    try:
        for attn_type, embed_layer, paper in rows:
            row: Dict[str, Any] = dict(attn_type=attn_type, embed_layer=embed_layer, paper_top1=paper,
                                       test_top1=[], train_images_per_s=[], seeds=list(range(args.seeds)))
            row.update(measure(attn_type, embed_layer, args, in_chans))
            for seed in range(args.seeds):
                summary = train_row(attn_type, embed_layer, seed, args, output)
                row["test_top1"].append(summary.get("test_top1", summary["best"].get("val_top1")))
                row["train_images_per_s"].append(summary["images_per_s"])
                row["epochs"] = summary.get("epochs")
                print(f"  {NAMES[attn_type]:9s} {NAMES[embed_layer]:13s} seed {seed}: test top-1 "
                      f"{row['test_top1'][-1]:.2f}%, {summary['images_per_s']:.0f} img/s ({time.time() - start:.0f}s)",
                      flush=True)
            results.append(row)
    finally:
        if temp is not None:
            temp.cleanup()
    dataset = args.data or "digits"
    print(f"\n{dataset}, {results[0]['epochs']} epochs, {args.img_size}x{args.img_size}, seeds "
          f"0..{args.seeds - 1}; test top-1 of the best-validation checkpoint")
    print("\n".join(table(results, args.seeds)))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=machine, torch=torch.__version__, args=vars(args),
                                                   arch=ABLATION_ARCH, results=results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
