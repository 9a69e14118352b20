"""Model zoo table: parameters and GFLOPs (multiply-accumulates) at 224x224 beside the papers' figures.

    python benchmarks/model_zoo.py                    # print the tables (markdown)
    python benchmarks/model_zoo.py --out docs/model_zoo.md
    python benchmarks/model_zoo.py --backend torch    # FlopCounterMode instead of fvcore

GFLOPs follow the papers' convention (fvcore: one multiply-accumulate = one FLOP). The "official code"
column is fvcore run on the official implementation (from the papers' reference notes).
"""
import argparse
import sys
from typing import List

import crossformer_vision as cv


def zoo_table(backend: str) -> List[str]:
    rows = [
        "| model | params (ours) | params (official code) | GFLOPs (ours) | GFLOPs (official code) | paper: params / GFLOPs / top-1 |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name in cv.list_models():
        model = cv.create_model(name)
        params = cv.count_params(model)
        gmacs = cv.count_macs(model, (3, 224, 224), backend=backend) / 1e9
        paper = cv.PAPER[name]
        same = "=" if params == paper["exact_params"] else "!="
        rows.append(
            f"| {name} | {params:,} | {same} {int(paper['exact_params']):,} | {gmacs:.3f} | "
            f"{paper['official_fvcore_gflops']:.3f} | {paper['params_m']:.1f}M / {paper['gflops']:.1f}G / {paper['top1']:.1f}% |"
        )
    return rows


def ablation_table() -> List[str]:
    rows = [
        "| CrossFormer-S setting | params (ours) | paper |",
        "|---|---:|---:|",
    ]
    labels = {"ape": "APE", "rpb": "RPB", "dpb": "DPB (default)", "dpb_residual": "DPB-residual", "none": "no position bias"}
    for pos_embed, label in labels.items():
        for embed_layer in ("cel", "conv"):
            model = cv.create_model("crossformer_small", pos_embed=pos_embed, embed_layer=embed_layer)
            params = cv.count_params(model) / 1e6
            paper = cv.PAPER_ABLATION_S.get(pos_embed) if embed_layer == "cel" else None
            paper_text = f"{paper:.4f}M" if paper is not None else "-"
            name = label + ("" if embed_layer == "cel" else ", single-kernel embedding (no CEL)")
            rows.append(f"| {name} | {params:.4f}M | {paper_text} |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="auto", choices=["auto", "fvcore", "torch"], help="MAC counter")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    text = "\n".join(
        ["## Variants at 224x224, 1000 classes", ""] + zoo_table(args.backend)
        + ["", "## Position-encoding and embedding ablations (CrossFormer-S)", ""] + ablation_table()
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
