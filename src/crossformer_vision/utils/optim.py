"""Optimizers at full speed: the fused kernel where the installed torch has one for the parameters at hand."""
from typing import Any, Callable, Dict, TypeVar

import torch

__all__ = ["load_optimizer_state", "with_fused_kernel"]

T = TypeVar("T")
#: Param-group fields that choose an implementation of the same update, not a hyper-parameter: they belong to
#: the machine that runs the step, not to the checkpoint.
IMPLEMENTATION_FIELDS = ("fused", "foreach")


def with_fused_kernel(make: Callable[..., T]) -> T:
    """``make(fused=True)``, or ``make()`` where that optimizer or this torch has no fused kernel for the
    parameters (torch < 2.4 on the CPU, optimizers without a ``fused`` argument such as LAMB).

    One fused step updates every parameter in one kernel per tensor group instead of a loop of ``lerp_`` /
    ``addcdiv_`` calls per parameter: for CrossFormer-S on 2 CPU threads about 9% of a training step
    (docs/benchmarks.md). The update is the same to float rounding; the trainer and ``crossformer bench`` both
    use it, so their training figures compare the same optimizer.
    """
    try:
        return make(fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel here: torch's default implementation
        return make()


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's implementation (fused / foreach): a run
    saved with the loop implementation, or on a machine without a fused kernel, resumes with the fastest one
    here, and the other way round (``load_state_dict`` alone would take the saved choice)."""
    groups = [{**saved, **{k: mine[k] for k in IMPLEMENTATION_FIELDS if k in mine}}
              for saved, mine in zip(state["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**state, "param_groups": groups + state["param_groups"][len(groups):]})
