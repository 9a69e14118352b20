"""One GPU visit, prepared on the CPU: are the CUDA outputs right, and how fast are we beside the usual backbones?

    benchmarks/gpu_check.sh OUT_DIR                      # on the GPU machine (what the shell script runs)
    python benchmarks/gpu_check.py --out OUT_DIR          # the same
    python benchmarks/gpu_check.py --out /tmp/g --device cpu --tiny      # the CPU rehearsal (tests run this)

1. Correctness, CUDA against the CPU with the same weights and inputs: a classifier (logits), a dense
   backbone (every feature map of ``features_only``) and one training step of a RetinaNet detector (its
   losses and one backbone gradient). fp32: largest difference <= ``FP32_TOL`` x the reference's largest
   magnitude; bf16 autocast: <= ``BF16_TOL`` x it and cosine similarity >= ``BF16_MIN_COSINE`` (bf16 keeps 8
   bits of mantissa, so a 20-block network drifts by about a percent).
2. Speed: our S and B beside Swin-T/S, PVTv2-b2 and ConvNeXt-T (timm, random weights), bf16 autocast,
   batch 128, inference and training (fused AdamW), eager, then torch.compile'd while the time budget lasts
   (a model whose compile would not fit is measured eager only, and the table says so).

Writes ``OUT/gpu_check.json`` (machine, checks, rows), ``OUT/gpu_check.md`` (the tables) and
``OUT/gpu_check.png``; exits 1 if a correctness check fails.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

FP32_TOL = 1e-4
BF16_TOL = 5e-2
BF16_MIN_COSINE = 0.99
SPEED_MODELS = ("crossformer_small", "crossformer_base", "swin_tiny_patch4_window7_224",
                "swin_small_patch4_window7_224", "pvt_v2_b2", "convnext_tiny")
TINY_MODELS = ("crossformer_micro", "resnet10t")


def compare(reference: List[torch.Tensor], candidate: List[torch.Tensor], bf16: bool) -> Dict[str, Any]:
    """Largest difference relative to the reference's largest magnitude, cosine similarity, pass/fail."""
    ref = torch.cat([t.detach().float().cpu().flatten() for t in reference])
    got = torch.cat([t.detach().float().cpu().flatten() for t in candidate])
    rel = float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-12))
    cosine = float(torch.nn.functional.cosine_similarity(ref, got, dim=0))
    ok = rel <= BF16_TOL and cosine >= BF16_MIN_COSINE if bf16 else rel <= FP32_TOL
    return {"max_rel_diff": rel, "cosine": cosine, "tolerance": BF16_TOL if bf16 else FP32_TOL, "ok": bool(ok)}


def _run_both(build: Callable[[], nn.Module], run: Callable[[nn.Module, str], List[torch.Tensor]], device: str
              ) -> Dict[str, Dict[str, Any]]:
    """``run`` on the CPU in fp32 (the reference), then on ``device`` in fp32 and under bf16 autocast."""
    torch.manual_seed(0)
    model = build()
    reference = run(model, "cpu")
    model = model.to(device)
    fp32 = run(model, device)
    with torch.autocast(device, dtype=torch.bfloat16):
        bf16 = run(model, device)
    return {"fp32": compare(reference, fp32, bf16=False), "bf16": compare(reference, bf16, bf16=True)}


def correctness(device: str, tiny: bool) -> Dict[str, Dict[str, Any]]:
    """The three checks of the module docstring; ``{check: {"fp32": ..., "bf16": ...}}``."""
    import timm

    import crossformer_vision as cv
    from crossformer_vision.dense import retinanet

    name, size = ("crossformer_micro", 64) if tiny else ("crossformer_small", 224)
    torch.manual_seed(0)
    image = torch.randn(2, 3, size, size)

    def logits(model: nn.Module, dev: str) -> List[torch.Tensor]:
        with torch.no_grad():
            return [model.eval()(image.to(dev))]

    def features(model: nn.Module, dev: str) -> List[torch.Tensor]:
        with torch.no_grad():
            return list(model.eval()(image.to(dev)))

    det_size = 128 if tiny else 320
    boxes = torch.tensor([[10.0, 12.0, 90.0, 100.0], [40.0, 30.0, 120.0, 70.0]])

    def detector_step(model: nn.Module, dev: str) -> List[torch.Tensor]:
        model.train().zero_grad()
        torch.manual_seed(1)
        images = [torch.rand(3, det_size, det_size, generator=torch.Generator().manual_seed(i)).to(dev) for i in range(2)]
        targets = [{"boxes": boxes.to(dev), "labels": torch.tensor([1, 2], device=dev)} for _ in range(2)]
        losses = model(images, targets)
        sum(losses.values()).backward()
        stem = cv.dense.find_crossformer(model).patch_embed.projs[0].weight.grad
        return [torch.stack([losses[k].float() for k in sorted(losses)]), stem.float()]

    return {
        "classifier": _run_both(lambda: cv.create_model(name, num_classes=10), logits, device),
        "dense_backbone": _run_both(lambda: timm.create_model(name, features_only=True), features, device),
        "detector_step": _run_both(lambda: retinanet(name, num_classes=3, min_size=det_size, max_size=det_size,
                                                     backbone_kwargs={"drop_path_rate": 0.0}),
                                   detector_step, device),
    }


def speed(device: str, tiny: bool, budget_s: float, compile_models: bool, progress: Callable[[str], None]
          ) -> Dict[str, Any]:
    """The speed table (``crossformer bench`` rows); compiled while the budget lasts."""
    from crossformer_vision.tools.bench import BenchOptions, add_roofline, machine_info, matmul_peak, measure_model

    opts = BenchOptions(device=device, amp="bf16", batch_size=4 if tiny else 128, img_size=64 if tiny else 224,
                        warmup=1 if tiny else 3, reps=2 if tiny else 10, min_rep_time=0.0, latency=False,
                        replay=False, memory=False, roofline_size=256 if tiny else None).resolved()
    start = time.monotonic()
    roofline = matmul_peak(opts.roofline_size, device, torch.bfloat16, opts.warmup, opts.reps)
    rows, compile_cost = [], 0.0
    for name in (TINY_MODELS if tiny else SPEED_MODELS):
        left = budget_s - (time.monotonic() - start)
        use_compile = compile_models and left > 2.0 * compile_cost + 30.0
        progress(f"{name}: {'eager + compiled' if use_compile else 'eager'} ({left:.0f} s left)")
        t0 = time.monotonic()
        try:
            row = measure_model(name, BenchOptions(**{**opts.__dict__, "compile": use_compile}), measure_memory=True)
        except Exception as err:  # a model that fails is a row, not a crash
            row = {"model": name, "error": f"{type(err).__name__}: {err}"}
        if "error" not in row:
            add_roofline(row, roofline["gflops"], roofline.get("onednn_gflops"))
            if use_compile:
                compile_cost = max(compile_cost, time.monotonic() - t0)
        row["compiled"] = use_compile
        rows.append(row)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"machine": machine_info(opts), "options": opts.__dict__, "roofline": roofline, "rows": rows}


def _tables(checks: Dict[str, Any], result: Dict[str, Any]) -> str:
    from crossformer_vision.tools.bench import format_table

    machine = result["machine"]
    lines = [f"{machine['device_name']} ({machine['device']}) against the CPU (fp32 reference)", "",
             "| check | fp32 max rel diff | bf16 max rel diff | bf16 cosine | ok |", "|---|---:|---:|---:|---|"]
    for check, r in checks.items():
        ok = r["fp32"]["ok"] and r["bf16"]["ok"]
        lines.append(f"| {check} | {r['fp32']['max_rel_diff']:.1e} | {r['bf16']['max_rel_diff']:.1e} | "
                     f"{r['bf16']['cosine']:.4f} | {'yes' if ok else 'NO'} |")
    lines += ["", f"fp32 tolerance {FP32_TOL:g}; bf16 tolerance {BF16_TOL:g} and cosine >= {BF16_MIN_COSINE}", "",
              format_table(result)]
    eager_only = [r["model"] for r in result["rows"] if not r.get("compiled")]
    if eager_only:
        lines.append(f"\neager only (compile would not fit the time budget or was off): {', '.join(eager_only)}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json / .md / .png")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu for the rehearsal")
    parser.add_argument("--tiny", action="store_true", help="tiny models and sizes (the CPU rehearsal)")
    parser.add_argument("--budget", type=float, default=360.0, help="seconds for the speed part (default 360)")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device here; run it on the GPU machine, or pass --device cpu --tiny "
              "to rehearse on the CPU", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        print(f"gpu_check: {msg}", file=sys.stderr, flush=True)

    say("correctness")
    checks = correctness(args.device, args.tiny)
    say("speed")
    result = speed(args.device, args.tiny, args.budget, not args.no_compile, say)
    result["checks"] = checks
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    tables = _tables(checks, result)
    (out / "gpu_check.md").write_text(tables)
    from crossformer_vision.tools.bench import plot_results

    plot_results(result, out / "gpu_check.png")
    print(tables)
    return 0 if all(r[p]["ok"] for r in checks.values() for p in ("fp32", "bf16")) else 1


if __name__ == "__main__":
    sys.exit(main())
