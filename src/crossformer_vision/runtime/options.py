"""The runtime options of a model: its speed switches, set at construction or by :func:`optimize`.

>>> model = crossformer_vision.create_model("crossformer_small")            # the defaults below
>>> crossformer_vision.optimize(model, onednn=False, cpu_pieces=0)           # whole tensors, F.linear
>>> CrossFormer(..., runtime=RuntimeOptions(sdpa_on_cpu=True))              # at construction

The options never change the numbers beyond float rounding (tests compare every path with the reference),
only where and how fast they are computed. Which path a call takes is decided from them in
:func:`crossformer_vision.runtime.dispatch.choose`.
"""
import dataclasses

from torch import nn

__all__ = ["DEFAULT_CPU_PIECES", "RuntimeOptions", "optimize"]

#: Token count of the pieces CPU inference works in (see :func:`crossformer_vision.runtime.cpu.forward_in_pieces`).
DEFAULT_CPU_PIECES = 2048


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """Speed switches of a CrossFormer; every module of one model shares one instance.

    Args:
        onednn: CPU inference (fp32, no autograd) runs the linear layers through oneDNN's kernels, fused with
            the MLP's GELU and the residual adds (:mod:`crossformer_vision.runtime.onednn`).
        cpu_pieces: CPU inference works in pieces of about this many tokens, so that the wide intermediates
            stay in cache (:func:`crossformer_vision.runtime.cpu.forward_in_pieces`); 0: whole tensors.
        sdpa_on_cpu: Attention runs ``scaled_dot_product_attention`` on the CPU too (when the model's
            ``fused_attn`` is on). Off by default: for groups of 49 tokens the explicit softmax is about 30%
            faster there. Accelerators always use SDPA when ``fused_attn`` is on.
        bias_cache: In inference, each attention layer computes its position bias and padding mask once per
            input size and reuses them while its position-bias weights are unchanged.
        conv_blocks: CPU training computes the stem's convolutions with kernels of at least four times their
            stride (16 and 32) as stride-1 convolutions of ``stride x stride`` blocks, whose weight gradient
            runs at GEMM rate (:mod:`crossformer_vision.runtime.conv`).
    """

    onednn: bool = True
    cpu_pieces: int = DEFAULT_CPU_PIECES
    sdpa_on_cpu: bool = False
    bias_cache: bool = True
    conv_blocks: bool = True

    def __post_init__(self) -> None:
        for name in ("onednn", "sdpa_on_cpu", "bias_cache", "conv_blocks"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.cpu_pieces, bool) or not isinstance(self.cpu_pieces, int) or self.cpu_pieces < 0:
            raise ValueError(f"cpu_pieces must be an int >= 0 (tokens per piece; 0: whole tensors), got {self.cpu_pieces!r}")


def optimize(
    model: nn.Module,
    *,
    onednn: bool = True,
    cpu_pieces: int = DEFAULT_CPU_PIECES,
    sdpa_on_cpu: bool = False,
    bias_cache: bool = True,
    conv_blocks: bool = True,
) -> nn.Module:
    """Set the speed switches of every CrossFormer module in ``model`` (see :class:`RuntimeOptions`); returns
    ``model``.

    Each call sets all options: those not given get their defaults, so ``optimize(model)`` restores the
    defaults :func:`crossformer_vision.create_model` builds with. Works on anything that contains
    CrossFormer modules (a ``features_only`` model, a detection backbone, a single block). Cached attention
    biases are dropped.

    Raises:
        TypeError: ``model`` contains no module with runtime options (not a CrossFormer).
    """
    options = RuntimeOptions(onednn=onednn, cpu_pieces=cpu_pieces, sdpa_on_cpu=sdpa_on_cpu, bias_cache=bias_cache,
                             conv_blocks=conv_blocks)
    found = False
    for module in model.modules():
        if isinstance(getattr(module, "runtime", None), RuntimeOptions):
            module.runtime = options
            found = True
            if hasattr(module, "clear_bias_cache"):  # attention layers
                module.clear_bias_cache()
    if not found:
        raise TypeError(f"optimize() expects a model with CrossFormer modules, got {type(model).__name__}, which has none")
    return model
