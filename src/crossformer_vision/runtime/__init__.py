"""How a CrossFormer forward runs here: everything that is not the reference math, selected in one place.

* :mod:`.options`: :class:`RuntimeOptions`, the model's speed switches, and :func:`optimize`, the one call
  that changes them after construction;
* :mod:`.dispatch`: :func:`~.dispatch.choose`, the rules that pick the path of every call;
* :mod:`.cpu`: CPU inference in cache-sized pieces, the eval-mode bias cache, the fused oneDNN MLP, and
  :func:`~.cpu.reuse_freed_memory` (the process keeps freed memory: CPU training and batch inference run faster);
* :mod:`.kernels`: the attention kernels (SDPA, explicit softmax, the explicit one as an opaque op);
* :mod:`.onednn`: oneDNN linear layers;
* :mod:`.export`: what differs while ``torch.export`` traces;
* :mod:`.tracing`: which tracer runs the model; torch.compile's nested regions and opaque ops.

This package is below :mod:`crossformer_vision.models`: the model calls it and it never imports the model
(it receives the modules it works on as arguments).
"""
from .cpu import reuse_freed_memory
from .dispatch import EXPORT, INFERENCE, PIECES, REFERENCE, Plan, choose, reference_plan
from .options import DEFAULT_CPU_PIECES, RuntimeOptions, optimize

__all__ = ["DEFAULT_CPU_PIECES", "EXPORT", "INFERENCE", "PIECES", "REFERENCE", "Plan", "RuntimeOptions", "choose",
           "optimize", "reference_plan", "reuse_freed_memory"]
