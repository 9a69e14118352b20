"""Shared by the attention tests (tests/models/test_ablation.py, tests/tools/test_explain.py): which tokens a layer mixes."""
from typing import Set, Tuple

import torch
from torch import Tensor, nn


def mixed_tokens(layer: nn.Module, x: Tensor, row: int, col: int) -> Set[Tuple[int, int]]:
    """Positions of a ``(B, H, W, C) -> (B, H, W, C)`` layer's output that change when input token ``(row, col)``
    changes: the tokens it is mixed with."""
    with torch.no_grad():
        base = layer(x)
        bumped = x.clone()
        bumped[:, row, col] += 10.0
        changed = (layer(bumped) - base).abs().amax(dim=(0, 3)) > 1e-5
    return {(int(r), int(c)) for r, c in changed.nonzero()}
