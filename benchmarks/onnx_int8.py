"""int8 inference through onnxruntime's dynamic quantization: speed-up and accuracy change.

    python benchmarks/onnx_int8.py                                   # trains the digits demo first (about 1 min)
    python benchmarks/onnx_int8.py --run runs/crossformer_micro-digits-...  --json int8.json
    python benchmarks/onnx_int8.py --speed-model crossformer_tiny -b 16 --threads 2 --no-accuracy

Two measurements, each on fp32 ONNX and on its int8 copy (``crossformer_vision.tools.export.quantize_onnx``:
weights of every MatMul/Gemm stored as int8, activations quantized on the fly; convolutions stay fp32):

* **speed**: images/s of ``--speed-model`` (random weights; 224x224, batch ``-b``) in onnxruntime, fp32 and
  int8, beside PyTorch eager, same threads, median of ``--reps``;
* **accuracy**: top-1 on the built-in digits test split (360 images) of a trained digits run (``--run``, or
  the demo recipe trained here into a temporary folder), for PyTorch, ONNX fp32 and ONNX int8, and how
  often int8 predicts the same class as PyTorch.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch


def measure_speed(name: str, batch: int, size: int, threads: int, warmup: int, reps: int, folder: Path) -> Dict:
    """fp32 and int8 onnxruntime throughput of a randomly initialised model, beside PyTorch eager."""
    from crossformer_vision.tools.bench import build_model, throughput
    from crossformer_vision.tools.export import export_onnx, onnx_session, quantize_onnx

    torch.manual_seed(0)
    model = build_model(name, size).eval()
    fp32 = export_onnx(model, folder / f"{name}.onnx", verify=False)  # dynamic sizes, as deployed
    int8 = quantize_onnx(fp32, folder / f"{name}.int8.onnx")
    x = torch.randn(batch, model.in_chans, size, size)
    feed = {"images": x.numpy()}
    with torch.inference_mode():
        eager = throughput(lambda: model(x), batch, warmup, reps)["median"]
        expected = model(x).numpy()
    row: Dict = {"model": name, "batch": batch, "size": size, "threads": threads, "torch_eager_img_s": eager,
                 "fp32_mib": fp32.stat().st_size / 2**20, "int8_mib": int8.stat().st_size / 2**20}
    for kind, path in (("fp32", fp32), ("int8", int8)):
        session = onnx_session(path, threads)
        row[f"ort_{kind}_img_s"] = throughput(lambda: session.run(None, feed), batch, warmup, reps)["median"]
        row[f"ort_{kind}_max_abs_diff"] = float(np.abs(session.run(None, feed)[0] - expected).max())
    row["int8_speedup"] = row["ort_int8_img_s"] / row["ort_fp32_img_s"]
    return row


def _train_demo(folder: Path) -> Path:
    from crossformer_vision.trainer import train

    summary = train("digits", overrides=[f"log.output={folder}"])
    return Path(summary["run_dir"])


def measure_accuracy(run: Path, threads: int, folder: Path) -> Dict:
    """Top-1 on the digits test split: PyTorch, ONNX fp32 and ONNX int8 of one trained run."""
    from crossformer_vision.data import DigitsDataset, build_transform
    from crossformer_vision.tools.export import export_onnx, onnx_session, quantize_onnx
    from crossformer_vision.trainer import load_for_inference

    model, meta = load_for_inference(run)
    data_cfg = meta["cfg"]["data"]
    if data_cfg.get("dataset") != "digits":
        raise ValueError(f"{run} was not trained on the built-in digits dataset; give a digits run (make demo)")
    size = int(data_cfg["img_size"])
    dataset = DigitsDataset("test", build_transform(data_cfg, is_training=False), in_chans=int(data_cfg["in_chans"]))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = np.array(dataset.targets)
    fp32 = export_onnx(model, folder / "digits.onnx", fixed_size=(size, size), verify=False)
    int8 = quantize_onnx(fp32, folder / "digits.int8.onnx")
    with torch.inference_mode():
        torch_pred = model(images).argmax(-1).numpy()
    row: Dict = {"run": str(run), "images": len(labels), "img_size": size, "torch_top1": float((torch_pred == labels).mean())}
    for kind, path in (("fp32", fp32), ("int8", int8)):
        logits = onnx_session(path, threads).run(None, {"images": images.numpy()})[0]
        pred = logits.argmax(-1)
        row[f"ort_{kind}_top1"] = float((pred == labels).mean())
        row[f"ort_{kind}_agreement"] = float((pred == torch_pred).mean())
    return row


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-model", default="crossformer_small", help="model timed fp32 vs int8 (random weights)")
    parser.add_argument("--batch-size", "-b", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--run", help="a digits run folder for the accuracy rows (default: train the demo here)")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    result: Dict = {"torch": torch.__version__, "onnxruntime": ort.__version__, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.no_speed:
            result["speed"] = measure_speed(args.speed_model, args.batch_size, args.img_size, args.threads,
                                            args.warmup, args.reps, folder)
        if not args.no_accuracy:
            run = Path(args.run) if args.run else _train_demo(folder / "runs")
            result["accuracy"] = measure_accuracy(run, args.threads, folder)
    print(f"torch {result['torch']}, onnxruntime {result['onnxruntime']}, {args.threads} threads")
    if "speed" in result:
        s = result["speed"]
        print(f"\n{s['model']}, batch {s['batch']}, {s['size']}x{s['size']} (random weights)\n")
        print("| runtime | img/s | file (MiB) | max abs diff vs PyTorch |")
        print("|---|---:|---:|---:|")
        print(f"| PyTorch eager fp32 | {s['torch_eager_img_s']:.1f} | | |")
        print(f"| onnxruntime fp32 | {s['ort_fp32_img_s']:.1f} | {s['fp32_mib']:.1f} | {s['ort_fp32_max_abs_diff']:.1e} |")
        print(f"| onnxruntime int8 | {s['ort_int8_img_s']:.1f} | {s['int8_mib']:.1f} | {s['ort_int8_max_abs_diff']:.1e} |")
        print(f"\nint8 / fp32 in onnxruntime: {s['int8_speedup']:.2f}x")
    if "accuracy" in result:
        a = result["accuracy"]
        print(f"\ndigits test split ({a['images']} images, {a['img_size']}x{a['img_size']}), {a['run']}\n")
        print("| runtime | top-1 | same class as PyTorch |")
        print("|---|---:|---:|")
        print(f"| PyTorch eager fp32 | {100 * a['torch_top1']:.2f}% | |")
        for kind in ("fp32", "int8"):
            print(f"| onnxruntime {kind} | {100 * a[f'ort_{kind}_top1']:.2f}% | {100 * a[f'ort_{kind}_agreement']:.2f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
