"""Training peak memory with and without gradient checkpointing (``model.set_grad_checkpointing()``).

    python benchmarks/grad_checkpoint_memory.py                    # crossformer_small, batch 32, 224x224
    python benchmarks/grad_checkpoint_memory.py --device cuda --batch-size 64

Each setting trains a few steps (forward + backward + AdamW) in a fresh process, so each peak is its own
(CUDA ``max_memory_allocated``; CPU peak-RSS growth over the bare process).
"""
import argparse
import dataclasses
import json
import sys
from typing import List, Optional

from crossformer_vision.tools.bench import BenchOptions, machine_info, measure_in_child


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="crossformer_small")
    parser.add_argument("--batch-size", "-b", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", help="write both rows and the reduction as JSON")
    args = parser.parse_args(argv)
    opts = BenchOptions(batch_size=args.batch_size, img_size=args.img_size, threads=args.threads, device=args.device,
                        warmup=args.warmup, reps=args.reps, infer=False, latency=False, replay=False).resolved()
    rows = {}
    for checkpointing in (False, True):
        print(f"grad_checkpoint_memory: {args.model}, checkpointing {'on' if checkpointing else 'off'}",
              file=sys.stderr, flush=True)
        rows[checkpointing] = measure_in_child(args.model, dataclasses.replace(opts, grad_checkpointing=checkpointing))
        if "error" in rows[checkpointing]:
            print(f"grad_checkpoint_memory: error: {rows[checkpointing]['error']}", file=sys.stderr)
            return 1
    off, on = rows[False], rows[True]
    reduction = 1 - on["mem_train_mib"] / off["mem_train_mib"]
    print(f"{args.model}, batch {args.batch_size}, {args.img_size}x{args.img_size}, {opts.device}, "
          f"training peak memory ({off['mem_kind']}):")
    print("| gradient checkpointing | peak memory (MiB) | train img/s |\n|---|---:|---:|")
    for label, row in (("off", off), ("on", on)):
        print(f"| {label} | {row['mem_train_mib']:.0f} | {row['train_img_s']['median']:.1f} |")
    print(f"reduction: {100 * reduction:.1f}% ({off['mem_train_mib']:.0f} -> {on['mem_train_mib']:.0f} MiB), "
          f"speed {on['train_img_s']['median'] / off['train_img_s']['median']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_info(opts), "without": off, "with": on, "reduction": reduction}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
