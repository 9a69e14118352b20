"""Speed and memory benchmarks for our models and timm's (``crossformer bench``, ``benchmarks/``).

For every model, at one batch size and input size: eager inference throughput (``torch.inference_mode``),
training throughput (forward + backward + AdamW step on random labels), batch-1 latency, peak memory,
parameters and MACs, optionally the ``torch.compile`` throughput beside eager. Every timing has warm-up
calls and several repetitions, reported as the median with min/max and quartiles.

Two yardsticks come with the numbers:

* **Roofline**: a large matrix multiply timed in the same run (same threads, device, dtype) gives the
  attainable peak FLOP/s; each model's achieved FLOP/s is ``2 x MACs x images/s`` (training: 3x the
  forward MACs) and is reported as a fraction of that peak. On the CPU (fp32) the oneDNN kernel that our
  inference uses for linear layers is timed on the same product too, and each model's inference is also
  given as a fraction of that rate: where torch.mm's BLAS runs below the hardware's rate (MKL on AMD CPUs
  with AVX-512 reaches about half of it), a model can exceed the torch.mm "roofline".
* **Matmul-only replay**: every matrix multiply the model executes (linear, convolution, attention) is
  recorded during one forward with a :class:`~torch.utils._python_dispatch.TorchDispatchMode` and replayed
  alone on fresh tensors of the same shapes, strides and dtypes, in the same order. The overhead factor is
  ``forward time / replay time``: everything the model does besides its matmuls (copies, norms,
  activations, Python) shows up as a factor above 1.

Memory is measured in a fresh child process per model (``python -m crossformer_vision.tools.bench``), so each
peak belongs to one model: CUDA ``max_memory_allocated``, or on CPU the process's peak RSS (``VmHWM``,
reset before each phase) above the bare process with its imports. Both include the weights (training:
also gradients and AdamW state).
"""
import argparse
import contextlib
import dataclasses
import difflib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from ..runtime import onednn
from ..runtime.cpu import reuse_freed_memory
from ..utils.optim import with_fused_kernel

__all__ = [
    "DEFAULT_TIMM_MODELS",
    "BenchOptions",
    "MatmulOp",
    "add_arguments",
    "bench_optimizer",
    "add_roofline",
    "build_model",
    "cpu_facts",
    "default_models",
    "describe_cpu",
    "format_table",
    "machine_info",
    "matmul_peak",
    "measure_in_child",
    "measure_model",
    "plot_results",
    "record_matmuls",
    "replay_matmuls",
    "resolve_model_name",
    "run_benchmark",
    "run_from_args",
    "summarize",
    "throughput",
    "time_calls",
]

#: timm models of the default comparison (built with ``pretrained=False``).
DEFAULT_TIMM_MODELS = (
    "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
    "pvt_v2_b2", "pvt_v2_b3", "pvt_v2_b5",
    "twins_svt_small", "twins_svt_base", "twins_svt_large",
    "convnext_tiny", "convnext_small", "convnext_base",
)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass
class BenchOptions:
    """What one benchmark run measures (every field is a ``crossformer bench`` option)."""

    batch_size: Optional[int] = None  # None: 64 on CUDA, 16 on CPU
    img_size: int = 224
    threads: Optional[int] = None  # None: every core this process may use
    device: str = "cpu"
    dtype: str = "float32"  # model weights and inputs
    amp: Optional[str] = None  # "bf16": autocast
    compile: bool = False
    compile_mode: Optional[str] = None
    channels_last: bool = False
    grad_checkpointing: bool = False
    reuse_memory: bool = False  # CPU: keep freed memory in the process, as `crossformer train` does
    warmup: int = 3
    reps: int = 10
    min_rep_time: float = 0.05  # seconds; short calls are repeated inside one repetition
    infer: bool = True
    train: bool = True
    latency: bool = True
    replay: bool = True
    memory: bool = True  # per-model child processes
    num_classes: int = 1000
    roofline_size: Optional[int] = None  # None: 2048 on CPU, 4096 on CUDA
    model_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def resolved(self) -> "BenchOptions":
        """A copy with the device-dependent defaults filled in; raises ValueError on impossible settings."""
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.amp not in (None, "bf16"):
            raise ValueError(f"amp must be 'bf16', got {self.amp!r}")
        if self.reps < 1 or self.warmup < 0:
            raise ValueError("need --reps >= 1 and --warmup >= 0")
        cuda = self.device == "cuda"
        return dataclasses.replace(
            self,
            batch_size=self.batch_size or (64 if cuda else 16),
            threads=self.threads or _available_cores(),
            roofline_size=self.roofline_size or (4096 if cuda else 2048),
        )

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.amp == "bf16" else _DTYPES[self.dtype]


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------- models


def default_models() -> List[str]:
    """The default comparison: our eight variants, then :data:`DEFAULT_TIMM_MODELS`."""
    from ..models.crossformer import list_models

    return list(list_models()) + list(DEFAULT_TIMM_MODELS)


def resolve_model_name(name: str) -> str:
    """``"crossformer"`` (a registered model of ours) or ``"timm"``; raises ValueError with close matches for
    unknown names."""
    import timm

    from ..models.crossformer import MODELS

    base = name.split(".")[0]
    if base in MODELS:
        return "crossformer"
    if timm.is_model(base):
        return "timm"
    known = list(MODELS) + timm.list_models()
    close = difflib.get_close_matches(base, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else " (crossformer info lists ours, timm.list_models() timm's)"
    raise ValueError(f"unknown model {name!r}{hint}")


def build_model(name: str, img_size: int = 224, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Any of our models or a timm model (random weights) for ``img_size`` x ``img_size`` inputs.

    timm models with a fixed input size get ``img_size``; ``kwargs`` go to the constructor (a given
    ``img_size`` or ``dynamic_img_size`` is used as is).
    """
    import timm

    from ..models.crossformer import create_model

    if resolve_model_name(name) == "crossformer":
        return create_model(name, num_classes=num_classes, **kwargs)
    kwargs = dict(pretrained=False, num_classes=num_classes, **kwargs)
    if "img_size" not in kwargs and "dynamic_img_size" not in kwargs:
        try:
            return timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError:  # a model that takes any input size (convnets, PVT v2)
            pass
    return timm.create_model(name, **kwargs)


# --------------------------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], warmup: int, reps: int, device: str = "cpu", min_rep_time: float = 0.0) -> List[float]:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then ``reps`` timed repetitions.

    A repetition repeats ``fn`` as often as needed to last ``min_rep_time`` (estimated from the last
    warm-up call) and reports the mean time of one call, so that sub-millisecond calls are timed well.
    """
    start = time.perf_counter()
    for _ in range(max(warmup, 1 if min_rep_time > 0 else 0)):
        start = time.perf_counter()
        fn()
        _sync(device)
    single = time.perf_counter() - start
    number = max(1, math.ceil(min_rep_time / max(single, 1e-9))) if min_rep_time > 0 else 1
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        _sync(device)
        times.append((time.perf_counter() - t0) / number)
    return times


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median, min, max and quartiles (linear interpolation) of ``values``."""
    s = sorted(values)
    return {"median": _quantile(s, 0.5), "min": s[0], "max": s[-1], "p25": _quantile(s, 0.25),
            "p75": _quantile(s, 0.75), "n": len(s)}


def _rate(seconds: Dict[str, float], items: float) -> Dict[str, float]:
    """Per-second rate from a summary of seconds per call (min time -> max rate)."""
    return {"median": items / seconds["median"], "min": items / seconds["max"], "max": items / seconds["min"],
            "p25": items / seconds["p75"], "p75": items / seconds["p25"], "n": seconds["n"]}


def throughput(fn: Callable[[], Any], items: float, warmup: int, reps: int, device: str = "cpu") -> Dict[str, float]:
    """Items per second of ``fn`` (``items`` per call): :func:`summarize` of :func:`time_calls` as rates."""
    return _rate(summarize(time_calls(fn, warmup, reps, device)), items)


def matmul_peak(size: int, device: str = "cpu", dtype: torch.dtype = torch.float32, warmup: int = 3,
                reps: int = 10) -> Dict[str, Any]:
    """Attainable matmul FLOP/s: a ``size``^3 matrix multiply timed with the current thread setting."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = summarize(time_calls(lambda: torch.mm(a, b), max(warmup, 1), reps, device))
    flops = 2.0 * size**3
    result = {"size": size, "dtype": str(dtype).replace("torch.", ""), "seconds": seconds,
              "gflops": flops / seconds["median"] / 1e9, "gflops_best": flops / seconds["min"] / 1e9}
    if device == "cpu" and dtype == torch.float32 and onednn.available():
        # the kernel our CPU inference uses for linear layers; on some CPUs twice torch.mm's BLAS rate
        layer = nn.Linear(size, size, bias=False)
        with torch.no_grad():
            layer.weight.copy_(b.t())
            fast = summarize(time_calls(lambda: onednn.linear(a, layer), max(warmup, 1), reps, device))
        result["onednn_gflops"] = flops / fast["median"] / 1e9
        result["onednn_gflops_best"] = flops / fast["min"] / 1e9
    return result


# --------------------------------------------------------------------------------------------- matmul replay

_LINEAR_OPS = {"linear", "addmm", "mm", "bmm", "baddbmm", "matmul"}
_ONEDNN_LINEAR_OPS = {"_linear_pointwise"}  # (x, [other,] weight, bias, ...): see crossformer_vision.runtime.onednn
_CONV_OPS = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "mkldnn_convolution", "cudnn_convolution"}
_ATTENTION_OPS = {
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_attention_math",
    "_scaled_dot_product_fused_attention_overrideable",
}


@dataclasses.dataclass(frozen=True)
class _TensorSpec:
    shape: tuple
    stride: tuple
    dtype: torch.dtype
    device: str
    param: Optional[int]  # data_ptr of the model parameter this was, for one fresh copy per weight

    def make(self) -> torch.Tensor:
        """A fresh tensor with this layout (random floats, True booleans, zero integers)."""
        storage = 1 + sum((n - 1) * st for n, st in zip(self.shape, self.stride)) if all(self.shape) else 0
        if self.dtype.is_floating_point:
            base = torch.randn(storage, dtype=self.dtype, device=self.device)
        elif self.dtype == torch.bool:
            base = torch.ones(storage, dtype=self.dtype, device=self.device)
        else:
            base = torch.zeros(storage, dtype=self.dtype, device=self.device)
        return base.as_strided(self.shape, self.stride)


@dataclasses.dataclass
class MatmulOp:
    """One recorded matrix multiply: the aten op, its arguments with tensors as specs, its output shape."""

    func: Any
    kind: str  # "linear" (with a weight), "conv" or "attention" (SDPA or activation @ activation)
    args: tuple
    kwargs: dict
    out_shape: tuple

    @property
    def name(self) -> str:
        return str(self.func)

    def tensor_shapes(self) -> List[tuple]:
        return [a.shape for a in self.args if isinstance(a, _TensorSpec)]

    def describe(self) -> Dict[str, Any]:
        """Shapes and settings as plain data (JSON)."""
        def plain(a: Any) -> Any:
            if isinstance(a, _TensorSpec):
                return {"shape": list(a.shape), "dtype": str(a.dtype).replace("torch.", "")}
            if isinstance(a, (list, tuple)):
                return [plain(x) for x in a]
            return a if isinstance(a, (int, float, bool, str, type(None))) else str(a)

        return {"op": self.name, "kind": self.kind, "args": plain(self.args),
                "kwargs": {k: plain(v) for k, v in self.kwargs.items()}, "out": list(self.out_shape),
                "macs": self.macs()}

    def macs(self) -> int:
        """Multiply-accumulates of this op."""
        shapes = self.tensor_shapes()
        out = math.prod(self.out_shape)
        name = self.func.overloadpacket.__name__
        if name in _ONEDNN_LINEAR_OPS:
            return out * shapes[0][-1]
        if name in _LINEAR_OPS:  # linear layers and plain matmuls
            with_bias = name in ("addmm", "baddbmm")  # (bias, a, b)
            return out * shapes[1 if with_bias else 0][-1]
        if self.kind == "conv":
            weight = shapes[1]
            return out * math.prod(weight[1:])
        q, k, v = shapes[:3]  # (..., L, E), (..., S, E), (..., S, Ev)
        batch = math.prod(torch.broadcast_shapes(q[:-2], k[:-2]))
        return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _kind(func: Any, args: Sequence[Any], params: Dict[int, nn.Parameter]) -> Optional[str]:
    """``"linear"`` (a layer's weight), ``"conv"``, ``"attention"`` (SDPA, or a matmul of two activations,
    like ``q @ k.transpose(-2, -1)`` in timm's Swin) or None."""
    name = func.overloadpacket.__name__
    if name in ("linear", "addmm") or name in _ONEDNN_LINEAR_OPS:
        return "linear"
    if name in _LINEAR_OPS:
        weights = any(isinstance(a, torch.Tensor) and a.data_ptr() in params for a in args)
        return "linear" if weights else "attention"
    if name in _CONV_OPS:
        return "conv"
    if name in _ATTENTION_OPS:
        return "attention"
    return None


class _MatmulRecorder(TorchDispatchMode):
    def __init__(self, params: Dict[int, nn.Parameter]) -> None:
        super().__init__()
        self.params = params
        self.ops: List[MatmulOp] = []

    def _spec(self, a: Any) -> Any:
        if not isinstance(a, torch.Tensor):
            return a
        ptr = a.data_ptr() if a.data_ptr() in self.params else None
        return _TensorSpec(tuple(a.shape), tuple(a.stride()), a.dtype, str(a.device), ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        kind = _kind(func, args, self.params)
        if kind is not None:
            first = out[0] if isinstance(out, (tuple, list)) else out
            self.ops.append(MatmulOp(func, kind, tree_map(self._spec, tuple(args)), tree_map(self._spec, dict(kwargs)),
                                     tuple(first.shape)))
        return out


def record_matmuls(model: nn.Module, x: torch.Tensor, autocast: Optional[contextlib.AbstractContextManager] = None) -> List[MatmulOp]:
    """Every linear, convolution and attention op of one inference forward of ``model`` on ``x``, in order.

    Records under ``torch.inference_mode`` like the timed forward; composite ops are seen at the level the
    dispatcher hands them to the kernels (``aten.linear`` under inference mode, ``aten.addmm`` and
    ``aten._scaled_dot_product_flash_attention_for_cpu`` under ``no_grad``).
    """
    params = {p.data_ptr(): p for p in model.parameters()}
    recorder = _MatmulRecorder(params)
    with torch.inference_mode(), autocast or contextlib.nullcontext(), recorder:
        model(x)
    return recorder.ops


def replay_matmuls(ops: Sequence[MatmulOp], warmup: int, reps: int, device: str = "cpu",
                   min_rep_time: float = 0.0) -> List[float]:
    """Seconds per replay of ``ops`` alone, in order, on fresh tensors (one per weight; activations of one
    layout shared) under ``torch.inference_mode``."""
    fresh: Dict[Any, torch.Tensor] = {}

    def tensor(a: Any) -> Any:
        if not isinstance(a, _TensorSpec):
            return a
        if a not in fresh:  # weights are told apart by ``param``; activations of one layout share a tensor
            fresh[a] = a.make()
        return fresh[a]

    with torch.inference_mode():
        calls = [(op.func, tree_map(tensor, op.args), tree_map(tensor, op.kwargs)) for op in ops]

        def run() -> None:
            for func, args, kwargs in calls:
                func(*args, **kwargs)

        return time_calls(run, warmup, reps, device, min_rep_time)


# --------------------------------------------------------------------------------------------- one model


def _proc_status_mib(field: str) -> Optional[float]:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process from /proc, in MiB; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _peak_memory_mib(device: str) -> float:
    """CUDA: ``max_memory_allocated``; CPU: this process's peak RSS since the last :func:`_reset_peak`.

    /proc's ``VmHWM`` belongs to this process image; ``ru_maxrss`` (the fallback off Linux) also keeps the
    peak of the parent a child was started from.
    """
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    peak = _proc_status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _current_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    current = _proc_status_mib("VmRSS")
    return current if current is not None else _peak_memory_mib(device)


def _reset_peak(device: str) -> None:
    """Start a new peak at the current usage (CPU: write 5 to /proc/self/clear_refs, Linux 4.0+)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)



def bench_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW as the trainer builds it: the fused kernel where this torch has one (CPU since 2.4)."""
    return with_fused_kernel(lambda **fused: torch.optim.AdamW(model.parameters(), lr=1e-4, **fused))

def measure_model(name: str, opts: BenchOptions, measure_memory: bool = False) -> Dict[str, Any]:
    """All measurements of one model in this process (see the module docstring); one result row.

    ``measure_memory`` reads this process's peaks, so it only means something in a fresh process.
    """
    from .flops import count_macs, count_params

    opts = opts.resolved()
    dev, bs, size = opts.device, opts.batch_size, opts.img_size
    row: Dict[str, Any] = {"model": name, "source": resolve_model_name(name), "batch_size": bs, "img_size": size}
    if opts.reuse_memory and dev == "cpu":
        reuse_freed_memory()  # process-wide: the per-model child processes make it apply to every model alike
    with _threads(opts.threads):
        torch.manual_seed(0)
        baseline = _current_memory_mib(dev) if dev == "cpu" else 0.0  # the bare process with its imports
        _reset_peak(dev)
        memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
        model = build_model(name, size, opts.num_classes, **opts.model_kwargs)
        model = model.to(device=dev, dtype=_DTYPES[opts.dtype], memory_format=memory_format).eval()
        row["params"] = count_params(model)

        def make_input(batch: int) -> torch.Tensor:
            x = torch.randn(batch, 3, size, size, device=dev, dtype=_DTYPES[opts.dtype])
            return x.contiguous(memory_format=memory_format)

        def autocast():
            return torch.autocast(dev, dtype=torch.bfloat16) if opts.amp else contextlib.nullcontext()

        def timed_infer(net: nn.Module, x: torch.Tensor) -> Dict[str, float]:
            net.eval()

            def call():
                with torch.inference_mode(), autocast():
                    net(x)
            return summarize(time_calls(call, opts.warmup, opts.reps, dev, opts.min_rep_time))

        optimizer = bench_optimizer(model) if opts.train else None

        def timed_train(net: nn.Module, x: torch.Tensor) -> Dict[str, float]:
            net.train()
            labels = torch.randint(0, opts.num_classes, (x.shape[0],), device=dev)

            def step():
                with autocast():
                    loss = nn.functional.cross_entropy(net(x), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            return summarize(time_calls(step, opts.warmup, opts.reps, dev, opts.min_rep_time))

        x = make_input(bs)
        if opts.infer:
            row["infer_s"] = timed_infer(model, x)
            row["infer_img_s"] = _rate(row["infer_s"], bs)
            if measure_memory:
                row["mem_infer_mib"] = _peak_memory_mib(dev) - baseline
        if opts.train:
            if opts.grad_checkpointing:
                model.set_grad_checkpointing(True)
            _reset_peak(dev)
            row["train_s"] = timed_train(model, x)
            row["train_img_s"] = _rate(row["train_s"], bs)
            if measure_memory:
                row["mem_train_mib"] = _peak_memory_mib(dev) - baseline
            if opts.grad_checkpointing:
                model.set_grad_checkpointing(False)
            optimizer.zero_grad(set_to_none=True)
        if measure_memory:
            row["mem_kind"] = "cuda_max_allocated" if dev == "cuda" else "cpu_peak_rss_growth"
            if dev == "cpu":
                row["mem_baseline_mib"] = baseline
        model.eval()
        if opts.latency:
            row["latency_s"] = timed_infer(model, make_input(1))
            row["latency_ms"] = {k: v * 1e3 if k != "n" else v for k, v in row["latency_s"].items()}
        if opts.replay:
            with torch.inference_mode(), autocast():
                model(x)  # steady state: attention-bias caches filled, as in the timed forwards
            ops = record_matmuls(model, x, autocast())
            seconds = summarize(replay_matmuls(ops, opts.warmup, opts.reps, dev, opts.min_rep_time))
            counts = {k: sum(op.kind == k for op in ops) for k in ("linear", "conv", "attention")}
            row["replay"] = {"counts": counts, "ops": len(ops), "gmacs_per_image": sum(op.macs() for op in ops) / bs / 1e9,
                             "seconds": seconds, "op_names": sorted({op.name for op in ops})}
            if opts.infer:
                row["replay"]["overhead"] = row["infer_s"]["median"] / seconds["median"]
        row["gmacs"] = count_macs(model, (3, size, size)) / 1e9
        if opts.compile:
            try:
                compiled = torch.compile(model, mode=opts.compile_mode)
                if opts.infer:
                    row["compiled_infer_img_s"] = _rate(timed_infer(compiled, x), bs)
                if opts.train:
                    row["compiled_train_img_s"] = _rate(timed_train(compiled, x), bs)
            except Exception as err:  # a compiler failure is a result, not a crash
                row["compile_error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return row


def add_roofline(row: Dict[str, Any], peak_gflops: float, onednn_gflops: Optional[float] = None) -> None:
    """Achieved GFLOP/s (2 x MACs x images/s; training 3x), the fraction of the torch.mm roofline and,
    where measured, of the oneDNN matmul rate."""
    macs = row["gmacs"]
    for key, factor in (("infer", 1), ("train", 3), ("compiled_infer", 1), ("compiled_train", 3)):
        if f"{key}_img_s" in row:
            achieved = 2 * factor * macs * row[f"{key}_img_s"]["median"]
            row[f"{key}_gflops"] = achieved
            row[f"{key}_peak_frac"] = achieved / peak_gflops
            if onednn_gflops:
                row[f"{key}_onednn_frac"] = achieved / onednn_gflops
    replay = row.get("replay")
    if replay:
        replay["gflops"] = 2 * replay["gmacs_per_image"] * row["batch_size"] / replay["seconds"]["median"]
        replay["peak_frac"] = replay["gflops"] / peak_gflops


# --------------------------------------------------------------------------------------------- many models


#: /proc/cpuinfo flag -> name of the vector extensions that decide the speed of fp32/bf16 kernels.
_ISA_EXTENSIONS = (("avx512_vnni", "AVX512-VNNI"), ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX"))
#: Variables that cap the instruction set a library uses (to see AVX2 behaviour on an AVX-512 machine).
ISA_LIMIT_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def isa_limit_cache_env() -> Dict[str, str]:
    """``TORCHINDUCTOR_CACHE_DIR`` of its own for each ISA limit set in the environment ({} without a limit, or when
    the user chose a cache folder). torch.compile's kernel cache does not tell the ISAs apart: on an AVX-512 machine, a
    kernel cached by an unlimited run and reused under ``ATEN_CPU_CAPABILITY=avx2`` failed with "index out of bounds"
    (torch 2.14). Real AVX2 machines never mix the two."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    limits = [os.environ[k] for k in ISA_LIMIT_VARIABLES if os.environ.get(k)]
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # torch writes its default here once it has used it
    if not limits or (chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir())):
        return {}
    tag = re.sub(r"[^a-z0-9]+", "-", "-".join(limits).lower()).strip("-")
    user = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.environ.get("USER") or str(os.getuid()))
    return {"TORCHINDUCTOR_CACHE_DIR": os.path.join(tempfile.gettempdir(), f"torchinductor_{user}_isa_{tag}")}


def _cpuinfo() -> Dict[str, str]:
    """The first processor's ``model name`` and ``flags`` from /proc/cpuinfo ({} where there is none)."""
    found: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags") and key not in found:
                    found[key] = value.strip()
                if len(found) == 2:
                    break
    except OSError:
        pass
    return found


def _library_versions() -> Dict[str, Optional[str]]:
    """oneDNN and BLAS builds of this torch, from ``torch.__config__.show()``."""
    config = torch.__config__.show()
    onednn_version = re.search(r"(?:oneDNN|MKL-DNN) v([\d.]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    return {"onednn": onednn_version.group(1) if onednn_version else None,
            "blas": f"MKL {mkl.group(1)}" if mkl else (blas.group(1) if blas else None)}


def cpu_facts() -> Dict[str, Any]:
    """The CPU and what decides its speed: model name, vector ISA (AVX2, AVX-512) and its extensions
    (AVX512-BF16, AMX...), the kernels ATen picked, variables that cap an ISA, oneDNN and BLAS versions."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    if "avx512f" in flags:
        isa = "AVX-512"
    elif "avx2" in flags:
        isa = "AVX2"
    elif flags:
        isa = "below AVX2"
    else:  # no /proc/cpuinfo (macOS, Windows): what ATen dispatches to is the best we know
        isa = torch.backends.cpu.get_cpu_capability()
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "isa": isa,
        "isa_extensions": [name for flag, name in _ISA_EXTENSIONS if flag in flags],
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_limits": {k: os.environ[k] for k in ISA_LIMIT_VARIABLES if os.environ.get(k)},
        **_library_versions(),
    }


def describe_cpu(facts: Dict[str, Any]) -> str:
    """One line for :func:`cpu_facts`, e.g. ``Intel Xeon ..., AVX-512 (+AVX512-BF16, AMX), ATen AVX512,
    oneDNN 3.12.0, BLAS MKL 2024.2, limited by ONEDNN_MAX_CPU_ISA=AVX2``."""
    extensions = f" (+{', '.join(facts['isa_extensions'])})" if facts["isa_extensions"] else ""
    text = (f"{facts['cpu']}, {facts['isa']}{extensions}, ATen {facts['aten_capability']}, "
            f"oneDNN {facts['onednn'] or '-'}, BLAS {facts['blas'] or '-'}")
    if facts["isa_limits"]:
        text += ", limited by " + " ".join(f"{k}={v}" for k, v in facts["isa_limits"].items())
    return text


def machine_info(opts: BenchOptions) -> Dict[str, Any]:
    """Device, CPU facts (:func:`cpu_facts`), thread count and versions of a run."""
    import timm

    from .. import __version__

    cpu = cpu_facts()
    device_name = torch.cuda.get_device_name() if opts.device == "cuda" else cpu["cpu"]
    return {"device": opts.device, "device_name": device_name, **cpu, "cores": _available_cores(),
            "threads": opts.threads, "torch": torch.__version__, "timm": timm.__version__,
            "crossformer_vision": __version__, "python": platform.python_version(),
            "cuda": torch.version.cuda if opts.device == "cuda" else None}


def measure_in_child(name: str, opts: BenchOptions) -> Dict[str, Any]:
    """:func:`measure_model` with memory in a fresh ``python -m crossformer_vision.tools.bench`` process."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "row.json"
        spec.write_text(json.dumps({"name": name, "options": dataclasses.asdict(opts)}))
        env = {**os.environ, "OMP_NUM_THREADS": str(opts.threads)}
        proc = subprocess.run([sys.executable, "-m", "crossformer_vision.tools.bench", "--worker", str(spec), str(out)],
                              env=env, capture_output=True, text=True)
        if proc.returncode == 0 and out.exists():
            return json.loads(out.read_text())
        lines = (proc.stderr or proc.stdout or f"exit status {proc.returncode}").strip().splitlines()
        return {"model": name, "error": lines[-1] if lines else f"exit status {proc.returncode}"}


def run_benchmark(models: Optional[Sequence[str]], opts: BenchOptions,
                  progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Roofline, then every model (a child process each when ``opts.memory``); ``{"machine", "options",
    "roofline", "rows"}``. Unknown names raise ValueError before anything runs."""
    opts = opts.resolved()
    models = list(models) if models else default_models()
    for name in models:
        resolve_model_name(name)
    say = progress or (lambda msg: None)
    os.environ.update(isa_limit_cache_env())  # before anything compiles, here or in the child processes
    with _threads(opts.threads):
        say(f"roofline: {opts.roofline_size}^3 matmul, {opts.threads} threads, {opts.device}")
        roofline = matmul_peak(opts.roofline_size, opts.device, opts.compute_dtype, opts.warmup, opts.reps)
    rows = []
    for name in models:
        say(f"{name}: batch {opts.batch_size}, {opts.img_size}x{opts.img_size}")
        if opts.memory:
            row = measure_in_child(name, opts)
        else:
            try:
                row = measure_model(name, opts)
            except Exception as err:
                row = {"model": name, "error": f"{type(err).__name__}: {err}"}
        if "error" not in row:
            add_roofline(row, roofline["gflops"], roofline.get("onednn_gflops"))
        else:
            say(f"{name}: failed: {row['error']}")
        rows.append(row)
    return {"machine": machine_info(opts), "options": dataclasses.asdict(opts), "roofline": roofline, "rows": rows}


# --------------------------------------------------------------------------------------------- output


def _fmt(value: Optional[float], spec: str = ".1f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _spread(stats: Optional[Dict[str, float]], spec: str = ".1f") -> str:
    if not stats:
        return "-"
    return f"{stats['median']:{spec}} [{stats['min']:{spec}}-{stats['max']:{spec}}]"


def format_table(result: Dict[str, Any]) -> str:
    """The run as markdown: a machine line, the roofline, then one row per model."""
    m, r, o = result["machine"], result["roofline"], result["options"]
    lines = [
        f"device: {m['device_name']} ({m['device']}), {m['threads']} threads, torch {m['torch']}, timm {m['timm']}",
        f"cpu: {describe_cpu(m)}",
        f"batch {o['batch_size']}, {o['img_size']}x{o['img_size']}, {o['dtype']}"
        + (f", autocast {o['amp']}" if o["amp"] else "") + (", channels_last" if o["channels_last"] else "")
        + (", grad checkpointing (training)" if o["grad_checkpointing"] else "")
        + (", freed memory reused" if o.get("reuse_memory") else "")
        + f"; {o['warmup']} warm-up, {o['reps']} reps: median [min-max]",
        f"roofline: {r['size']}^3 {r['dtype']} matmul {r['gflops']:.1f} GFLOP/s (best {r['gflops_best']:.1f})"
        + (f"; oneDNN kernel {r['onednn_gflops']:.1f} GFLOP/s (best {r['onednn_gflops_best']:.1f})"
           if "onednn_gflops" in r else ""),
        "",
    ]
    onednn_col = "onednn_gflops" in r
    compiled = o["compile"]
    header = ["model", "params (M)", "GMACs", "infer img/s", "train img/s", "bs1 latency (ms)", "mem infer (MiB)",
              "mem train (MiB)", "infer % peak", "train % peak", "replay overhead", "replay % peak"]
    if onednn_col:
        header += ["infer % oneDNN"]
    if compiled:
        header += ["compiled infer img/s", "compiled train img/s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | error: {row['error']} |" + " |" * (len(header) - 2))
            continue
        replay = row.get("replay") or {}

        def pct(v: Optional[float]) -> str:
            return _fmt(None if v is None else 100 * v)
        cells = [row["model"], _fmt(row["params"] / 1e6, ".2f"), _fmt(row["gmacs"], ".3f"),
                 _spread(row.get("infer_img_s")), _spread(row.get("train_img_s")), _spread(row.get("latency_ms"), ".2f"),
                 _fmt(row.get("mem_infer_mib"), ".0f"), _fmt(row.get("mem_train_mib"), ".0f"),
                 pct(row.get("infer_peak_frac")), pct(row.get("train_peak_frac")),
                 _fmt(replay.get("overhead"), ".2f"), pct(replay.get("peak_frac"))]
        if onednn_col:
            cells.append(pct(row.get("infer_onednn_frac")))
        if compiled:
            cells += [_spread(row.get("compiled_infer_img_s")) if "compile_error" not in row else "error",
                      _spread(row.get("compiled_train_img_s")) if "compile_error" not in row else "error"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_results(result: Dict[str, Any], path: os.PathLike) -> None:
    """PNG: throughput against GFLOPs (MACs) per image, one labelled point per model, log x; a second panel
    for training when measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in result["rows"] if "error" not in r]
    panels = [k for k in ("infer", "train") if any(f"{k}_img_s" in r for r in rows)]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(7 * max(len(panels), 1), 5.5), squeeze=False)
    m = result["machine"]
    for ax, key in zip(axes[0], panels):
        for source, colour, marker in (("crossformer", "tab:red", "o"), ("timm", "tab:blue", "s")):
            points = [(r["gmacs"], r[f"{key}_img_s"]["median"], r["model"]) for r in rows
                      if r["source"] == source and f"{key}_img_s" in r]
            if not points:
                continue
            ax.scatter([p[0] for p in points], [p[1] for p in points], c=colour, marker=marker,
                       label="ours" if source == "crossformer" else "timm")
            for gmacs, rate, label in points:
                ax.annotate(label, (gmacs, rate), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on short ranges
        ax.set_xlabel(f"GFLOPs (multiply-accumulates) per {result['options']['img_size']}px image")
        ax.set_ylabel(f"{'inference' if key == 'infer' else 'training'} images/s")
        ax.set_title(f"{'inference' if key == 'infer' else 'training'}, batch {result['options']['batch_size']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"{m['device_name']}, {m['threads']} threads, torch {m['torch']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crossformer bench`` and ``benchmarks/bench.py``."""
    parser.add_argument("models", nargs="*", help="our model names and timm model names "
                        "(default: our eight variants and Swin, PVT v2, Twins, ConvNeXt from timm)")
    parser.add_argument("--batch-size", "-b", type=int, help="batch size for throughput (default 64 on CUDA, 16 on CPU)")
    parser.add_argument("--img-size", type=int, default=224, help="square input size (default 224)")
    parser.add_argument("--threads", type=int, help="torch threads (default: every core this process may use)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    parser.add_argument("--dtype", choices=tuple(_DTYPES), default="float32", help="weights and inputs (default float32)")
    parser.add_argument("--amp", choices=("bf16",), help="autocast to bfloat16")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd inference and training")
    parser.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune"), help="torch.compile mode")
    parser.add_argument("--channels-last", action="store_true", help="channels_last weights and inputs")
    parser.add_argument("--grad-checkpointing", action="store_true", help="gradient checkpointing in the training rows")
    parser.add_argument("--reuse-memory", action="store_true",
                        help="CPU: every model's process keeps freed memory for reuse, as `crossformer train` does")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each timing (default 3)")
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions (default 10)")
    parser.add_argument("--min-rep-time", type=float, default=0.05,
                        help="seconds one repetition lasts at least; short calls repeat inside it (default 0.05)")
    parser.add_argument("--roofline-size", type=int, help="matmul size for the peak (default 2048 on CPU, 4096 on CUDA)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier size (default 1000)")
    parser.add_argument("--no-infer", action="store_true", help="skip inference throughput")
    parser.add_argument("--no-train", action="store_true", help="skip training throughput")
    parser.add_argument("--no-latency", action="store_true", help="skip batch-1 latency")
    parser.add_argument("--no-replay", action="store_true", help="skip the matmul-only replay")
    parser.add_argument("--no-memory", action="store_true", help="no peak memory: every model in this process")
    parser.add_argument("--json", metavar="PATH", help="write all rows and the machine info as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of throughput against GFLOPs")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        batch_size=args.batch_size, img_size=args.img_size, threads=args.threads, device=args.device,
        dtype=args.dtype, amp=args.amp, compile=args.compile,
        compile_mode=None if args.compile_mode in (None, "default") else args.compile_mode,
        channels_last=args.channels_last, grad_checkpointing=args.grad_checkpointing,
        reuse_memory=args.reuse_memory, warmup=args.warmup,
        reps=args.reps, min_rep_time=args.min_rep_time, infer=not args.no_infer, train=not args.no_train,
        latency=not args.no_latency, replay=not args.no_replay, memory=not args.no_memory,
        num_classes=args.num_classes, roofline_size=args.roofline_size,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run, print the table, write ``--json``/``--plot``; exit status 1 when a model failed."""
    opts = options_from_args(args)
    result = run_benchmark(args.models, opts, progress=lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True))
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot_results(result, args.plot)
    return 1 if any("error" in row for row in result["rows"]) else 0


def _worker(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    row = measure_model(spec["name"], BenchOptions(**spec["options"]), measure_memory=True)
    Path(out_path).write_text(json.dumps(row))
    return 0


def main(argv: Sequence[str]) -> int:
    """``python -m crossformer_vision.tools.bench --worker SPEC.json OUT.json``: one model's row, in a fresh process."""
    if len(argv) == 3 and argv[0] == "--worker":
        return _worker(argv[1], argv[2])
    sys.exit("usage: python -m crossformer_vision.tools.bench --worker SPEC.json OUT.json (see crossformer bench)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
