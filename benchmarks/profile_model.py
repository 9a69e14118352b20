"""Where a model's time goes: ``torch.profiler`` by op, then grouped into categories.

    python benchmarks/profile_model.py crossformer_small -b 16
    python benchmarks/profile_model.py swin_tiny_patch4_window7_224 --train --device cuda
    python benchmarks/profile_model.py crossformer_small -b 32 --compile

Categories (share of self time): linear (addmm/mm/linear and oneDNN's _linear_pointwise, which includes
the GELU and residual adds fused into it), conv, copies (copy_/clone/contiguous/cat/to),
layernorm, gelu, attention (scaled_dot_product_* and bmm), softmax, add, fused (torch.compile's generated
kernels), other.
"""
import argparse
import contextlib
import json
import sys
from typing import Dict, List, Optional

import torch

from crossformer_vision.tools.bench import bench_optimizer, build_model

CATEGORIES = ("linear", "conv", "copies", "layernorm", "gelu", "attention", "softmax", "add", "fused", "other")
_EXACT = {
    "addmm": "linear", "mm": "linear", "linear": "linear", "matmul": "linear", "_addmm_activation": "linear",
    "_linear_pointwise": "linear", "onednn_linear": "linear",
    "bmm": "attention", "baddbmm": "attention",
    "copy_": "copies", "clone": "copies", "contiguous": "copies", "cat": "copies", "_to_copy": "copies", "to": "copies",
    "add": "add", "add_": "add",
}


def category(op: str) -> str:
    """The category of a profiler op name (``aten::addmm`` -> ``linear``)."""
    name = op.split("::")[-1]
    if name in _EXACT:
        return _EXACT[name]
    if "cpp_fused" in name or name.startswith("triton_") or "CompiledFxGraph" in name:
        return "fused"  # torch.compile's generated kernels (and the compiled graph's own code between them)
    for key, cat in (("attention", "attention"), ("conv", "conv"), ("layer_norm", "layernorm"),
                     ("gelu", "gelu"), ("softmax", "softmax")):
        if key in name:
            return cat
    return "other"


def straightforward(model: torch.nn.Module) -> None:
    """Turn off our speed paths (cache-sized pieces, explicit attention on the CPU, oneDNN linear layers, the
    stem's kernels in blocks): the "before" profile."""
    from crossformer_vision import optimize

    optimize(model, onednn=False, cpu_pieces=0, sdpa_on_cpu=True, conv_blocks=False)


def profile(name: str, batch_size: int, img_size: int, device: str, train: bool, iters: int, warmup: int,
            baseline: bool = False, compile: bool = False):
    model = build_model(name, img_size).to(device).train(train)
    if baseline:
        straightforward(model)
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # name each generated CPU kernel in the profile
        model = torch.compile(model)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    optimizer = bench_optimizer(model) if train else None  # fused AdamW where this torch has it, as the bench

    def step() -> None:
        if train:
            loss = model(x).logsumexp(-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                model(x)

    for _ in range(warmup):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(iters):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
    return prof


def by_category(prof, device: str) -> Dict[str, float]:
    """Self time (microseconds; device time on CUDA) per category."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.key_averages():
        t = event.self_device_time_total if device == "cuda" else event.self_cpu_time_total
        totals[category(event.key)] += t
    return totals


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="crossformer_small")
    parser.add_argument("--batch-size", "-b", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--train", action="store_true", help="profile a training step instead of inference")
    parser.add_argument("--iters", type=int, default=5, help="profiled iterations (default 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--row-limit", type=int, default=25, help="ops in the per-op table (default 25)")
    parser.add_argument("--json", help="write the category totals as JSON")
    parser.add_argument("--straightforward", action="store_true",
                        help="our models without their speed paths (whole tensors, SDPA on the CPU): the 'before'")
    parser.add_argument("--compile", action="store_true",
                        help="profile the torch.compile'd model (compiled during warm-up); its generated kernels are 'fused'")
    parser.add_argument("--reuse-memory", action="store_true",
                        help="the process keeps freed memory for reuse, as `crossformer train` does on the CPU")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reuse_memory:
        from crossformer_vision.runtime.cpu import reuse_freed_memory

        reuse_freed_memory()
    prof = profile(args.model, args.batch_size, args.img_size, args.device, args.train, args.iters, args.warmup,
                   args.straightforward, args.compile)
    sort = "self_device_time_total" if args.device == "cuda" else "self_cpu_time_total"
    with contextlib.suppress(BrokenPipeError):
        print(prof.key_averages().table(sort_by=sort, row_limit=args.row_limit))
        totals = by_category(prof, args.device)
        whole = sum(totals.values()) or 1.0
        print(f"{args.model}{' (torch.compile)' if args.compile else ''}, batch {args.batch_size}, "
              f"{args.img_size}x{args.img_size}, "
              f"{'training' if args.train else 'inference'}, {args.device}, {torch.get_num_threads()} threads, "
              f"{args.iters} iterations" + (", freed memory reused" if args.reuse_memory else ""))
        print("| category | self time (ms / iteration) | share |\n|---|---:|---:|")
        for cat in sorted(CATEGORIES, key=lambda c: -totals[c]):
            print(f"| {cat} | {totals[cat] / 1e3 / args.iters:.2f} | {100 * totals[cat] / whole:.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "batch_size": args.batch_size, "img_size": args.img_size,
                       "train": args.train, "device": args.device, "reuse_memory": args.reuse_memory,
                       "self_us": totals,
                       "share": {c: totals[c] / whole for c in CATEGORIES}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
