"""Our models against the official implementation, side by side: same weights, same input, speed and outputs.

    git clone https://github.com/cheerss/CrossFormer /tmp/CrossFormer        # not part of this project
    python benchmarks/vs_official.py --official-repo /tmp/CrossFormer                       # crossformer_small
    python benchmarks/vs_official.py --official-repo /tmp/CrossFormer crossformer_tiny crossformerpp_small \\
        -b 32 --threads 2 --json vs_official.json

For each variant the official ``models/crossformer.py`` of the checkout is imported from its path and built
with the variant's official configuration at ``--img-size`` (the official classifier fixes its input size);
its random weights are converted with ``crossformer_vision.convert_official_state_dict`` and loaded into our
model, strictly. Both then run the same batch in eval mode under ``torch.inference_mode`` with the same
threads: images/s (median [min-max] of ``--reps`` after ``--warmup``) and the largest absolute difference
of the logits. The main branch has CrossFormer++ (``use_acl``); the original branch only CrossFormer.
"""
import argparse
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn


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
    from crossformer_vision.recipes import NAMED_CONFIGS
    from crossformer_vision.models.crossformer import VARIANTS

    if name not in VARIANTS and name not in NAMED_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(VARIANTS) + sorted(NAMED_CONFIGS)}")
    arch = dict(VARIANTS.get(name) or NAMED_CONFIGS[name])
    kwargs = dict(img_size=img_size, patch_size=[4, 8, 16, 32], in_chans=3, num_classes=1000,
                  merge_size=[[2, 4], [2, 4], [2, 4]], mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0,
                  drop_path_rate=0.0)
    for key in ("embed_dim", "depths", "num_heads", "group_size", "crs_interval", "patch_size", "merge_size", "use_acl"):
        if key in arch:
            value = arch[key]
            kwargs[key] = [list(v) if isinstance(v, (tuple, list)) else v for v in value] \
                if isinstance(value, (tuple, list)) else value
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if kwargs.get("use_acl") and "use_acl" not in params:
        raise ValueError(f"{name} is a CrossFormer++ model; this official checkout has no use_acl "
                         f"(the original branch): check out the main branch")
    return kwargs if takes_any else {k: v for k, v in kwargs.items() if k in params}


def compare(name: str, cls: type, img_size: int, batch: int, warmup: int, reps: int) -> Dict[str, Any]:
    """Build both, share the official model's weights, time both on one batch and compare the logits."""
    import crossformer_vision as cv
    from crossformer_vision.tools.bench import throughput
    from crossformer_vision.recipes import NAMED_CONFIGS
    from crossformer_vision.models.official import load_state_dict_checked

    torch.manual_seed(0)
    official = cls(**official_kwargs(name, img_size, cls)).eval()
    if name in NAMED_CONFIGS:
        ours: nn.Module = cv.CrossFormer(**NAMED_CONFIGS[name], num_classes=1000)
    else:
        ours = cv.create_model(name, num_classes=1000)
    load_state_dict_checked(ours, cv.convert_official_state_dict(official.state_dict(), ours), strict=True)
    ours.eval()
    x = torch.randn(batch, 3, img_size, img_size)
    row: Dict[str, Any] = {"model": name, "batch": batch, "img_size": img_size, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        want, got = official(x), ours(x)
        row["max_abs_diff"] = float((want - got).abs().max())
        row["max_abs_logit"] = float(want.abs().max())
        row["official_img_s"] = throughput(lambda: official(x), batch, warmup, reps)
        row["ours_img_s"] = throughput(lambda: ours(x), batch, warmup, reps)
    row["speedup"] = row["ours_img_s"]["median"] / row["official_img_s"]["median"]
    return row


def _spread(r: Dict[str, float]) -> str:
    return f"{r['median']:.1f} [{r['min']:.1f}-{r['max']:.1f}]"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["crossformer_small"])
    parser.add_argument("--official-repo", required=True, help="a checkout of github.com/cheerss/CrossFormer")
    parser.add_argument("--batch-size", "-b", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        cls = load_official_class(Path(args.official_repo))
        rows = [compare(name, cls, args.img_size, args.batch_size, args.warmup, args.reps) for name in args.models]
    except (ValueError, FileNotFoundError) as err:
        print(f"vs_official: error: {err}", file=sys.stderr)
        return 2
    print(f"batch {args.batch_size}, {args.img_size}x{args.img_size}, fp32, {args.threads} threads, eager, "
          f"torch {torch.__version__}; images/s median [min-max] of {args.reps}")
    print("| model | official img/s | ours img/s | ours / official | max abs diff of logits (max abs logit) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {_spread(r['official_img_s'])} | {_spread(r['ours_img_s'])} | {r['speedup']:.2f}x | "
              f"{r['max_abs_diff']:.1e} ({r['max_abs_logit']:.2f}) |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
