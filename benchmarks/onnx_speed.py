"""onnxruntime CPU throughput beside PyTorch eager for one exported model (same threads, same inputs).

    python benchmarks/onnx_speed.py crossformer_small -b 32 --threads 2
    python benchmarks/onnx_speed.py crossformer_tiny -b 8 --sizes 224 320x480 --json out.json

The model is exported with ``crossformer_vision.tools.export.export_onnx`` (dynamic batch, height, width), so one
file serves every size listed. Prints a markdown table: images/s (median of --reps) for each runtime and
the largest absolute difference between the two outputs.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple


def _size(text: str) -> Tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="crossformer_small")
    parser.add_argument("--batch-size", "-b", type=int, default=32)
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(224, 224)], help="HxW or S (default 224)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    import crossformer_vision as cv
    from crossformer_vision.tools.bench import throughput
    from crossformer_vision.tools.export import export_onnx, onnx_session

    torch.set_num_threads(args.threads)
    from crossformer_vision.recipes import NAMED_CONFIGS

    torch.manual_seed(0)
    if args.model in NAMED_CONFIGS:  # e.g. crossformer_micro, the demo's configuration
        model = cv.CrossFormer(**NAMED_CONFIGS[args.model]).eval()
    else:
        model = cv.create_model(args.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.model}.onnx"
        start = time.perf_counter()
        export_onnx(model, path, max_size=max(max(s) for s in args.sizes), verify=False)
        export_s = time.perf_counter() - start
        session = onnx_session(path, args.threads)
        rows: List[Dict[str, object]] = []
        for height, width in args.sizes:
            x = torch.randn(args.batch_size, 3, height, width)
            feed = {"images": x.numpy()}
            with torch.inference_mode():
                eager = throughput(lambda: model(x), args.batch_size, args.warmup, args.reps)["median"]
                diff = float((model(x) - torch.from_numpy(session.run(None, feed)[0])).abs().max())
            runtime = throughput(lambda: session.run(None, feed), args.batch_size, args.warmup, args.reps)["median"]
            rows.append(dict(model=args.model, batch=args.batch_size, height=height, width=width, threads=args.threads,
                             torch_eager_img_s=round(eager, 2), onnxruntime_img_s=round(runtime, 2),
                             ratio=round(runtime / eager, 3), max_abs_diff=diff))
    print(f"{args.model}: ONNX export {export_s:.0f} s; torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} threads")
    print("| model | batch | size | PyTorch eager img/s | onnxruntime img/s | ORT / eager | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['height']}x{r['width']} | {r['torch_eager_img_s']} | "
              f"{r['onnxruntime_img_s']} | {r['ratio']} | {r['max_abs_diff']:.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
