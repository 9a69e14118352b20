"""CPU speed paths: the eval-mode bias cache, cache-sized pieces, the fused oneDNN MLP, and the process's
allocator setting for training (:func:`reuse_freed_memory`).

Each model function takes the model's modules as arguments and calls their public methods (this package does
not import the model); :func:`crossformer_vision.runtime.dispatch.choose` decides when they run.
"""
import ctypes
import ctypes.util
import platform
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence

import torch
from torch import Tensor, nn

from . import onednn
from .dispatch import Plan
from .tracing import compile_region

__all__ = ["BiasCache", "forward_in_pieces", "mlp_residual", "reuse_freed_memory"]


class BiasCache:
    """Attention biases (position bias plus padding mask) of one attention layer, one per group layout.

    Valid while the weights they were computed from are unchanged: :meth:`get` compares them with a copy
    taken when the cache was filled (exact ``torch.equal``, a few small tensors), so in-place updates,
    optimizer steps, ``load_state_dict``, ``.to()`` and writes through ``.data`` all start a new cache.
    At most ``max_entries`` layouts are kept (many input sizes: memory stays bounded).
    """

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self.entries: Dict[Hashable, Optional[Tensor]] = {}
        self.weights: List[Tensor] = []  # copy of the weights the entries were computed from

    def clear(self) -> None:
        self.entries.clear()
        self.weights = []

    def _valid_for(self, weights: Sequence[Tensor]) -> bool:
        return len(weights) == len(self.weights) and all(
            a.dtype == b.dtype and a.device == b.device and a.shape == b.shape and torch.equal(a, b)
            for a, b in zip(weights, self.weights)
        )

    def get(self, key: Hashable, weights: Sequence[Tensor], compute: Callable[..., Optional[Tensor]], *args: Any
            ) -> Optional[Tensor]:
        """The entry for ``key``, from ``compute(*args)`` if there is none valid for ``weights``."""
        if self.entries and not self._valid_for(weights):
            self.clear()
        if not self.entries:
            self.weights = [w.detach().clone() for w in weights]
        if key not in self.entries:
            if len(self.entries) >= self.max_entries:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = compute(*args)
        return self.entries[key]


def mlp_residual(block: nn.Module, rows: Tensor, plan: Plan) -> Tensor:
    """``rows + block.mlp(block.norm2(rows))`` of an eval-mode block; with ``plan.fused_mlp`` as two oneDNN
    calls: fc1 with the GELU, fc2 with the residual add."""
    if not plan.fused_mlp:
        return rows + block.mlp(block.norm2(rows))
    hidden = onednn.linear(block.norm2(rows), block.mlp.fc1, gelu=True)
    return onednn.linear(hidden, block.mlp.fc2, residual=rows)


@compile_region
def _attention_piece(block: nn.Module, x: Tensor, layout: tuple, bias: Optional[Tensor], plan: Plan) -> Tensor:
    """``x + attn(norm1(x))`` for whole images ``x`` (residual fused into the output projection)."""
    return block.attn.attend(block.norm1(x), layout, bias, plan, residual=x)


@compile_region
def _mlp_piece(block: nn.Module, rows: Tensor, plan: Plan) -> Tensor:
    """``rows + mlp(norm2(rows))`` for ``(tokens, C)`` rows."""
    return mlp_residual(block, rows, plan)


def forward_in_pieces(block: nn.Module, x: Tensor, plan: Plan, tokens: int) -> Tensor:
    """A block's eval-mode forward (before its ACL) in pieces of about ``tokens`` tokens: the same numbers.

    Attention runs on a few whole images at a time (groups never cross images); the MLP, which acts on each
    token alone, on row blocks of tokens. The wide intermediates (``3C`` for q/k/v, ``4C`` in the MLP) then
    stay in cache instead of streaming through memory: stage 1 of CrossFormer-S runs about twice as fast
    on a CPU. The attention bias is computed once for all pieces. Under torch.compile each kind of piece is
    a nested compile region: compiled once, reused for every piece and every block of the same shape, so
    the unrolled loop costs seconds to compile, not minutes.
    """
    batch, height, width, channels = x.shape
    images = max(1, tokens // (height * width))
    attn = block.attn
    layout = attn.layout(height, width)
    bias = attn.bias(height, width, layout, x.dtype, x.device, plan)
    pieces = []  # (tokens, C) in token order; joined by one cat (writes into slices of a preallocated output
    # would become a copy of the whole output per piece under torch.compile's functionalization)
    for start in range(0, batch, images):
        xb = _attention_piece(block, x[start : start + images], layout, bias, plan).reshape(-1, channels)
        pieces += [_mlp_piece(block, xb[row : row + tokens], plan) for row in range(0, xb.shape[0], tokens)]
    return torch.cat(pieces).view(batch, height, width, channels)


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def reuse_freed_memory() -> bool:
    """Make this process keep the memory it frees for its next allocations (glibc's malloc); True if set.

    By default glibc serves every allocation above its mmap threshold (128 KiB, rising to at most 32 MiB) with
    its own ``mmap`` and returns it to the system on ``free``. A CPU training step allocates and frees
    gigabytes of activations and gradients (one ``(32, 56, 56, 384)`` MLP activation is 154 MB), so every
    step page-faults all of them in again and the kernel zeroes every page first. With ``mmap`` off and
    trimming at the top of the heap off, freed blocks are reused. Measured on a 2-core Xeon (AVX-512),
    batch 32 (docs/benchmarks.md): CrossFormer-S training 5.9 -> 6.8 images/s, inference 18.7 -> 20.8
    (Swin-T: 5.1 -> 5.9 and 11.7 -> 15.6). The process keeps its peak: the resident size stays near the
    largest step's (CrossFormer-S: 7-10% above the default's peak, since reused blocks fragment).

    Process-wide and not undone; :class:`crossformer_vision.train.loop.Trainer` calls it for CPU runs
    (``train.reuse_memory``). Does nothing (False) where the C library is not glibc (macOS, Windows, musl).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # 1 on success; the largest int as the trim threshold: never give the top of the heap back
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
