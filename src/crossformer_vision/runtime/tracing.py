"""Which tracer, if any, is running the model, and the two torch.compile tools the speed paths use.

The predicates are facts about the current call, read by :func:`crossformer_vision.runtime.dispatch.choose`
(the one place that decides a path); nothing else in the package should need them.
"""
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["compile_region", "is_compiling", "is_exporting", "is_fx_tracing", "opaque_op", "static_sizes"]


def is_compiling() -> bool:
    """True while torch.compile (dynamo) traces the model; Python-side caches must step aside then."""
    compiling = getattr(torch.compiler, "is_compiling", None)
    if compiling is None:  # torch < 2.3
        return torch._dynamo.is_compiling()
    return compiling()


def is_exporting() -> bool:
    """True while ``torch.export`` (and the ONNX exporter built on it) traces the model."""
    exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.7
    return bool(exporting is not None and exporting())


try:  # torch >= 2.7 tells FX symbolic tracing apart from torch.export
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as _fx_symbolic_tracing
except ImportError:  # pragma: no cover - older torch
    from torch.fx._symbolic_trace import is_fx_tracing as _fx_symbolic_tracing


def is_fx_tracing() -> bool:
    """True while ``torch.fx`` symbolically traces the model (timm's feature extraction, FX graph tests)."""
    return _fx_symbolic_tracing()


def static_sizes(x: Tensor) -> bool:
    """Whether every size of ``x`` is a constant, also while torch.compile traces (where a dynamic size looks
    like an int to Python code): only a constant has a parity known without adding a guard."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return all(statically_known_true(d % 2 == 0) or statically_known_true(d % 2 == 1) for d in x.shape)


def opaque_op(name: str, fn: Callable, fake: Callable) -> Optional[Callable]:
    """``fn`` as the custom op ``crossformer_vision::<name>``, which torch.compile keeps as one call to ``fn``
    (an eager kernel it would generate slower code for) while it compiles what is around it. ``fake`` gives
    the output's shape for tracing. None on torch < 2.4 (no ``torch.library.custom_op``): callers then let
    the compiler trace their plain code."""
    custom_op = getattr(torch.library, "custom_op", None)
    if custom_op is None:
        return None
    op = custom_op(f"crossformer_vision::{name}", fn, mutates_args=())
    op.register_fake(fake)
    return op


def compile_region(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn`` as a nested compile region where torch has them (>= 2.8): under torch.compile it is traced and
    compiled once per input shapes and the compiled code is reused for every later call with the same
    shapes; eagerly it is ``fn``."""
    region = getattr(torch.compiler, "nested_compile_region", None)
    if region is None:
        return fn
    # one entry per block kind (SDA/LDA, stage width) and piece shape; more than the default 8
    return region(fn, max_reuse_entries=256)
