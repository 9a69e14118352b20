"""Which tracer, if any, is running the model (fast paths and Python-side caches step aside for them), and
opaque ops for torch.compile."""
from typing import Callable, Optional

import torch

__all__ = ["_fx_tracing", "_is_compiling", "_is_exporting", "_static_sizes", "opaque_op"]


def _is_compiling() -> bool:
    """True while torch.compile traces the model (python-side caches must step aside)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    if is_compiling is None:  # torch < 2.3
        return torch._dynamo.is_compiling()
    return is_compiling()


@torch.jit.unused
def _is_exporting() -> bool:
    """True while ``torch.export`` (and the ONNX exporter built on it) traces the model."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


try:  # torch >= 2.7 separates FX symbolic tracing from torch.export
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as _fx_tracing
except ImportError:  # pragma: no cover - older torch
    from torch.fx._symbolic_trace import is_fx_tracing as _fx_tracing


def _static_sizes(x: torch.Tensor) -> bool:
    """Whether every size of ``x`` is a constant, also while torch.compile traces (where a dynamic size looks
    like an int to Python code): only a constant has a parity known without adding a guard."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return all(statically_known_true(d % 2 == 0) or statically_known_true(d % 2 == 1) for d in x.shape)


def opaque_op(name: str, fn: Callable, fake: Callable) -> Optional[Callable]:
    """``fn`` as the custom op ``crossformer_vision::<name>``, which torch.compile keeps as one call to ``fn``
    (eager kernels it would generate slower code for) while it compiles what is around it. ``fake`` gives the
    output's shape for tracing. None on torch < 2.4 (no ``torch.library.custom_op``): callers then let the
    compiler trace their plain code."""
    custom_op = getattr(torch.library, "custom_op", None)
    if custom_op is None:
        return None
    op = custom_op(f"crossformer_vision::{name}", fn, mutates_args=())
    op.register_fake(fake)
    return op
