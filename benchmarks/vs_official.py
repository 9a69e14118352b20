"""Our CrossFormer beside the official code and timm's Swin-T: same weights, same input, interleaved in one run.

    git clone https://github.com/cheerss/CrossFormer /tmp/CrossFormer        # not part of this project
    python benchmarks/vs_official.py --official-repo /tmp/CrossFormer --threads 2 --json vs_official.json
    python benchmarks/vs_official.py                                         # without the official code: vs Swin-T
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/vs_official.py ...

For the variant (default ``crossformer_small``) the official ``models/crossformer.py`` of the checkout is
imported from its path and built with the variant's official configuration at ``--img-size`` (the official
classifier fixes its input size); its random weights are converted with
``crossformer_vision.convert_official_state_dict`` and loaded into ours, strictly, and the logits of both
are compared. The main branch has CrossFormer++ (``use_acl``); the original branch only CrossFormer.

Timing is paired and interleaved: every round runs each measurement once per model, in an order that rotates
from round to round, so a slow spell of the machine hits every model alike; each ratio is the median of its
per-round ratios. Measurements (fp32, eager, ``--threads``): inference at ``--batch-size`` and at
``--small-batch`` (images/s, ``torch.inference_mode``), batch-1 latency (ms), and a training step at
``--batch-size`` (forward, cross-entropy on random labels, backward, AdamW with the fused kernel where torch
has one: the optimizer ``crossformer bench`` and the trainer use; images/s). Drop-path is off in every model.
The table ends with the speed targets of docs/benchmarks.md and whether this run meets them.
"""
import argparse
import importlib.util
import inspect
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

#: (measurement, ours vs, goal, higher is better): the issue's targets for CrossFormer-S at batch 32 / 8.
TARGETS = (
    ("infer", "swin", 1.4, True),
    ("infer", "official", 1.5, True),
    ("infer_small", "official", 1.4, True),
    ("latency", "official", 0.75, False),
    ("train", "swin", 1.15, True),
    ("train", "official", 1.3, True),
)


def load_official_class(repo: Path) -> type:
    """The ``CrossFormer`` class of ``repo/models/crossformer.py``, imported from its path."""
    path = Path(repo) / "models" / "crossformer.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --official-repo must be a checkout of "
                                f"https://github.com/cheerss/CrossFormer")
    spec = importlib.util.spec_from_file_location("crossformer_official_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CrossFormer


def official_kwargs(name: str, img_size: int, cls: type) -> Dict[str, Any]:
    """Constructor arguments of the official class for one of our variants (those its signature takes)."""
    from crossformer_vision.models.crossformer import MODELS

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    arch = dict(MODELS[name])
    kwargs = dict(img_size=img_size, patch_size=[4, 8, 16, 32], in_chans=3, num_classes=1000,
                  merge_size=[[2, 4], [2, 4], [2, 4]], mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0,
                  drop_path_rate=0.0)
    for key in ("embed_dim", "depths", "num_heads", "group_size", "crs_interval", "patch_size", "merge_size", "use_acl"):
        if key in arch:
            value = arch[key]
            kwargs[key] = [list(v) if isinstance(v, (tuple, list)) else v for v in value] \
                if isinstance(value, (tuple, list)) else value
    if "mlp_ratio[" in inspect.getsource(cls.__init__):  # the main branch takes one ratio per stage
        kwargs["mlp_ratio"] = [kwargs["mlp_ratio"]] * len(kwargs.get("depths", [2, 2, 6, 2]))
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if kwargs.get("use_acl") and "use_acl" not in params:
        raise ValueError(f"{name} is a CrossFormer++ model; this official checkout has no use_acl "
                         f"(the original branch): check out the main branch")
    return kwargs if takes_any else {k: v for k, v in kwargs.items() if k in params}


def build_models(name: str, img_size: int, official_cls: Optional[type], swin: Optional[str]) -> Dict[str, nn.Module]:
    """``{"ours": ..., "official": ..., "swin": ...}`` (the last two where asked for); ours carries the official
    model's weights."""
    import crossformer_vision as cv
    from crossformer_vision.models.official import load_state_dict_checked
    from crossformer_vision.tools.bench import build_model

    torch.manual_seed(0)
    models = {"ours": cv.create_model(name, num_classes=1000, drop_path_rate=0.0)}
    if official_cls is not None:
        official = official_cls(**official_kwargs(name, img_size, official_cls))
        state = cv.convert_official_state_dict(official.state_dict(), models["ours"])
        load_state_dict_checked(models["ours"], state, strict=True)
        models["official"] = official
    if swin:
        models["swin"] = build_model(swin, img_size, drop_path_rate=0.0)
    return models


def logits_difference(ours: nn.Module, official: nn.Module, img_size: int) -> Dict[str, float]:
    """Largest absolute difference of the logits of one batch, and the largest logit (the scale)."""
    x = torch.randn(2, 3, img_size, img_size)
    with torch.inference_mode():
        want, got = official.eval()(x), ours.eval()(x)
    return {"max_abs_diff": float((want - got).abs().max()), "max_abs_logit": float(want.abs().max())}


def measurements(model: nn.Module, img_size: int, batch: int, small_batch: int) -> Dict[str, Callable[[], None]]:
    """One call of each measurement for ``model`` (what a round times)."""
    from crossformer_vision.tools.bench import bench_optimizer

    big, small, one = (torch.randn(b, 3, img_size, img_size) for b in (batch, small_batch, 1))
    labels = torch.randint(0, 1000, (batch,))
    optimizer = bench_optimizer(model)

    def infer(x: torch.Tensor) -> Callable[[], None]:
        def call() -> None:
            model.eval()
            with torch.inference_mode():
                model(x)
        return call

    def train() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(big), labels).backward()
        optimizer.step()

    return {"infer": infer(big), "infer_small": infer(small), "latency": infer(one), "train": train}


def interleaved(calls: Dict[str, Dict[str, Callable[[], None]]], warmup: int, rounds: int) -> Dict[str, Dict[str, List[float]]]:
    """Seconds per call, ``{model: {measurement: [round...]}}``; the model order rotates every round."""
    names = list(calls)
    times: Dict[str, Dict[str, List[float]]] = {n: {m: [] for m in calls[n]} for n in names}
    for r in range(warmup + rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for measure in calls[names[0]]:
            for name in order:
                start = time.perf_counter()
                calls[name][measure]()
                if r >= warmup:
                    times[name][measure].append(time.perf_counter() - start)
    return times


def paired_ratios(times: Dict[str, Dict[str, List[float]]], items: Dict[str, int]) -> Dict[str, Any]:
    """Per model and measurement the median rate (images/s; ms for ``latency``), and per other model and
    measurement the median of the per-round ratios other time / our time (> 1: we are faster; for
    ``latency``: our time / other time, < 1: we are faster)."""
    rates = {n: {m: (1e3 * statistics.median(t) if m == "latency" else items[m] / statistics.median(t))
                 for m, t in per.items()} for n, per in times.items()}
    ratios: Dict[str, Dict[str, float]] = {}
    for other in times:
        if other == "ours":
            continue
        ratios[other] = {}
        for m, ours_t in times["ours"].items():
            pairs = zip(ours_t, times[other][m])
            ratios[other][m] = statistics.median(o / t if m == "latency" else t / o for o, t in pairs)
    return {"rates": rates, "ratios": ratios}


def targets_table(ratios: Dict[str, Dict[str, float]]) -> List[Dict[str, Any]]:
    """The targets this run can check: measured ratio, goal, met."""
    rows = []
    for measure, other, goal, higher in TARGETS:
        if other in ratios:
            value = ratios[other][measure]
            rows.append({"measurement": measure, "against": other, "ratio": value, "goal": goal,
                         "met": value >= goal if higher else value <= goal})
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="crossformer_small")
    parser.add_argument("--official-repo", help="a checkout of github.com/cheerss/CrossFormer (omit: no official column)")
    parser.add_argument("--swin", default="swin_tiny_patch4_window7_224", help="timm baseline ('' for none)")
    parser.add_argument("--batch-size", "-b", type=int, default=32)
    parser.add_argument("--small-batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--reuse-memory", action="store_true",
                        help="the process keeps freed memory for reuse, as `crossformer train` does (all models)")
    parser.add_argument("--json", help="write machine, rates, ratios and targets here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.reuse_memory:
        from crossformer_vision.runtime.cpu import reuse_freed_memory

        reuse_freed_memory()
    from crossformer_vision.tools.bench import cpu_facts, describe_cpu

    try:
        cls = load_official_class(Path(args.official_repo)) if args.official_repo else None
        models = build_models(args.model, args.img_size, cls, args.swin)
    except (ValueError, FileNotFoundError) as err:
        print(f"vs_official: error: {err}", file=sys.stderr)
        return 2
    result: Dict[str, Any] = {"machine": {**cpu_facts(), "threads": args.threads, "torch": torch.__version__},
                              "options": vars(args)}
    if "official" in models:
        result["outputs"] = logits_difference(models["ours"], models["official"], args.img_size)
    calls = {name: measurements(m, args.img_size, args.batch_size, args.small_batch) for name, m in models.items()}
    times = interleaved(calls, args.warmup, args.rounds)
    items = {"infer": args.batch_size, "infer_small": args.small_batch, "latency": 1, "train": args.batch_size}
    result.update(paired_ratios(times, items), times=times)
    result["targets"] = targets_table(result["ratios"])

    print(f"cpu: {describe_cpu(result['machine'])}")
    print(f"{args.model}, {args.img_size}x{args.img_size}, fp32, eager, {args.threads} threads, torch {torch.__version__}; "
          f"{args.rounds} interleaved rounds (+{args.warmup} warm-up), medians"
          + (", freed memory reused" if args.reuse_memory else ""))
    if "outputs" in result:
        o = result["outputs"]
        print(f"logits vs the official code, same weights: max abs diff {o['max_abs_diff']:.1e} "
              f"(max abs logit {o['max_abs_logit']:.2f})")
    b, s = args.batch_size, args.small_batch
    print(f"\n| model | infer b{b} img/s | infer b{s} img/s | b1 latency ms | train b{b} img/s |\n|---|---:|---:|---:|---:|")
    for name, r in result["rates"].items():
        print(f"| {name} | {r['infer']:.1f} | {r['infer_small']:.1f} | {r['latency']:.1f} | {r['train']:.2f} |")
    labels = {"infer": f"inference b{b}", "infer_small": f"inference b{s}", "latency": "b1 latency (ours / theirs)",
              "train": f"training step b{b}"}
    print("\n| ours vs | measurement | ratio (median of rounds) | goal | met |\n|---|---|---:|---:|---|")
    for t in result["targets"]:
        goal = f"{'>=' if t['measurement'] != 'latency' else '<='} {t['goal']}x"
        print(f"| {t['against']} | {labels[t['measurement']]} | {t['ratio']:.2f}x | {goal} | {'yes' if t['met'] else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
