"""How batch-1 inference (and training) time and peak memory grow with the input size.

    python benchmarks/scaling.py                                   # 224 .. 1024, three models, every core
    python benchmarks/scaling.py --sizes 224 512 --json scaling.json --plot scaling.png --threads 8
    python benchmarks/scaling.py --train --models crossformer_small swin_tiny_patch4_window7_224   # + training steps

Models: crossformer_small (any input size), Swin-T rebuilt for each size (timm ``img_size``), and ViT-S/16
with ``dynamic_img_size=True``. Every (model, size) runs in a fresh process, so each memory figure is that
one forward's peak (CUDA ``max_memory_allocated``; CPU peak-RSS growth over the bare process). With ``--train``
each row also times one training step (forward, cross-entropy, backward, fused AdamW) at the same size and records
its peak memory. "linear" means time per pixel stays flat: the table's last columns give time / pixels relative to
the smallest size.
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from crossformer_vision.tools.bench import BenchOptions, machine_info, measure_in_child

#: model -> constructor arguments for any input size
MODELS: Dict[str, Dict[str, Any]] = {
    "crossformer_small": {},
    "swin_tiny_patch4_window7_224": {},  # img_size=S, set by the benchmark's model builder
    "vit_small_patch16_224": {"dynamic_img_size": True},
}


def run(models: List[str], sizes: List[int], opts: BenchOptions) -> Dict[str, Any]:
    rows = []
    for name in models:
        for size in sizes:
            print(f"scaling: {name} at {size}x{size}", file=sys.stderr, flush=True)
            o = dataclasses.replace(opts, img_size=size, model_kwargs=MODELS.get(name, {}))
            row = measure_in_child(name, o)
            rows.append({"model": name, "size": size, "pixels": size * size, "error": row.get("error"),
                         "time_ms": row["infer_s"]["median"] * 1e3 if "infer_s" in row else None,
                         "time_ms_stats": {k: v * 1e3 if k != "n" else v for k, v in row.get("infer_s", {}).items()},
                         "memory_mib": row.get("mem_infer_mib"), "gmacs": row.get("gmacs"),
                         "train_ms": row["train_s"]["median"] * 1e3 if "train_s" in row else None,
                         "train_memory_mib": row.get("mem_train_mib")})
    return {"machine": machine_info(opts), "options": dataclasses.asdict(opts), "rows": rows}


def per_pixel_growth(result: Dict[str, Any], key: str) -> Dict[tuple, float]:
    """(model, size) -> (time / pixels) / (the same at the model's smallest size): 1.0 everywhere is linear."""
    growth = {}
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        rows = sorted((r for r in result["rows"] if r["model"] == name and r.get(key)), key=lambda r: r["pixels"])
        if rows:
            base = rows[0][key] / rows[0]["pixels"]
            growth.update({(name, r["size"]): (r[key] / r["pixels"]) / base for r in rows})
    return growth


def table(result: Dict[str, Any]) -> str:
    train = any(r.get("train_ms") for r in result["rows"])
    head = "| model | size | GMACs | time (ms) [min-max] | peak memory (MiB) | time/pixel vs smallest |"
    if train:
        head += " train step (ms) | train peak memory (MiB) | train time/pixel vs smallest |"
    lines = [head, "|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if train else "")]
    infer_growth, train_growth = per_pixel_growth(result, "time_ms"), per_pixel_growth(result, "train_ms")
    for r in result["rows"]:
        if r["error"]:
            lines.append(f"| {r['model']} | {r['size']} | error: {r['error']} | | | |" + (" | | |" if train else ""))
            continue
        t = r["time_ms_stats"]
        line = (f"| {r['model']} | {r['size']} | {r['gmacs']:.2f} | {t['median']:.1f} [{t['min']:.1f}-{t['max']:.1f}] "
                f"| {r['memory_mib']:.0f} | {infer_growth[(r['model'], r['size'])]:.2f} |")
        if train:
            key = (r["model"], r["size"])
            line += (f" {r['train_ms']:.0f} | {r['train_memory_mib']:.0f} | {train_growth[key]:.2f} |"
                     if key in train_growth else " | | |")
        lines.append(line)
    return "\n".join(lines)


def plot(result: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["model"] == name and not r["error"]]
        for ax, key in ((ax_t, "time_ms"), (ax_m, "memory_mib")):
            points = [(r["pixels"], r[key]) for r in rows if r[key] and r[key] > 0]  # log axes
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=name)
    for ax, label in ((ax_t, "batch-1 inference time (ms)"), (ax_m, "peak memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pixels (height x width)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(f"{m['device_name']}, {m['threads']} threads, torch {m['torch']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="default: " + ", ".join(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 384, 512, 768, 1024])
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", default="scaling.json", help="output JSON (default scaling.json)")
    parser.add_argument("--plot", default="scaling.png", help="output PNG (default scaling.png)")
    parser.add_argument("--train", action="store_true", help="also time one training step per size (batch 1)")
    args = parser.parse_args(argv)
    opts = BenchOptions(batch_size=1, threads=args.threads, device=args.device, warmup=args.warmup, reps=args.reps,
                        train=args.train, latency=False, replay=False).resolved()
    result = run(args.models, args.sizes, opts)
    print(table(result))
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.plot)
    return 1 if any(r["error"] for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
