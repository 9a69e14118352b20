"""Linear layers through torch's BLAS (``F.linear``) and through oneDNN, at a model's own shapes.

    python benchmarks/linear_backends.py                      # crossformer_small, batch 32, 224x224, 2 threads
    python benchmarks/linear_backends.py --model crossformer_tiny -b 8 --threads 1 --json linear.json

Records every linear layer one inference forward applies (its ``M x K -> N`` product; the piece size of the
eval-mode blocks is the one inference uses), then times each distinct shape both ways on fresh tensors and
prints GFLOP/s per shape and the total over the whole forward. This is the measurement behind
:mod:`crossformer_vision.runtime.onednn`: on CPUs where the two differ, the model's linear time follows the faster.
"""
import argparse
import collections
import dataclasses
import json
import sys
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from crossformer_vision import optimize
from crossformer_vision.runtime import onednn
from crossformer_vision.tools.bench import build_model, summarize, time_calls


def linear_shapes(model: nn.Module, x: torch.Tensor) -> Dict[Tuple[int, int, int], int]:
    """``{(M, K, N): calls}`` of every ``nn.Linear`` applied in one inference forward (oneDNN off)."""
    counts: Dict[Tuple[int, int, int], int] = collections.Counter()

    def hook(module: nn.Module, inputs, output) -> None:
        rows = inputs[0].numel() // module.in_features
        counts[(rows, module.in_features, module.out_features)] += 1

    options = getattr(model, "runtime", None)  # ours: the fused paths do not call the modules
    if options is not None:
        optimize(model, **dict(dataclasses.asdict(options), onednn=False))
    hooks = []
    try:
        with torch.inference_mode():
            model(x)  # steady state: the position-bias MLPs ran once and their tables are cached
            hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear)]
            model(x)
    finally:
        if options is not None:
            optimize(model, **dataclasses.asdict(options))
        for h in hooks:
            h.remove()
    return dict(counts)


def time_shape(m: int, k: int, n: int, warmup: int, reps: int) -> Dict[str, float]:
    """Median seconds of one ``(m, k) x (k, n)`` product with bias, both ways."""
    x, layer = torch.randn(m, k), nn.Linear(k, n)
    with torch.inference_mode():
        blas = summarize(time_calls(lambda: F.linear(x, layer.weight, layer.bias), warmup, reps, min_rep_time=0.05))
        row = {"blas_s": blas["median"]}
        if onednn.available():
            row["onednn_s"] = summarize(time_calls(lambda: onednn.linear(x, layer), warmup, reps, min_rep_time=0.05))["median"]
    return row


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="crossformer_small")
    parser.add_argument("--batch-size", "-b", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build_model(args.model, args.img_size).eval()
    shapes = linear_shapes(model, torch.randn(args.batch_size, 3, args.img_size, args.img_size))
    shapes[(2048, 2048, 2048)] = shapes.get((2048, 2048, 2048), 0)  # the roofline's square product, for scale
    rows = []
    for (m, k, n), calls in sorted(shapes.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"linear_backends: {m}x{k} -> {n}", file=sys.stderr, flush=True)
        row = {"m": m, "k": k, "n": n, "calls": calls, **time_shape(m, k, n, args.warmup, args.reps)}
        flops = 2.0 * m * k * n
        row["blas_gflops"] = flops / row["blas_s"] / 1e9
        if "onednn_s" in row:
            row["onednn_gflops"] = flops / row["onednn_s"] / 1e9
        rows.append(row)
    print(f"{args.model}, batch {args.batch_size}, {args.img_size}x{args.img_size}, {args.threads} threads, "
          f"torch {torch.__version__}; oneDNN kernels {'available' if onednn.available() else 'not available'}")
    print("| M x K -> N | calls per forward | F.linear GFLOP/s | oneDNN GFLOP/s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        fast = f"{r['onednn_gflops']:.0f}" if "onednn_gflops" in r else "-"
        print(f"| {r['m']}x{r['k']} -> {r['n']} | {r['calls']} | {r['blas_gflops']:.0f} | {fast} |")
    model_rows = [r for r in rows if r["calls"]]
    blas_total = sum(r["calls"] * r["blas_s"] for r in model_rows)
    line = f"all linear layers of one forward: F.linear {1e3 * blas_total:.0f} ms"
    if all("onednn_s" in r for r in model_rows):
        line += f", oneDNN {1e3 * sum(r['calls'] * r['onednn_s'] for r in model_rows):.0f} ms"
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
