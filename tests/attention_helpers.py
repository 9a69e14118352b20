"""Shared by the attention tests (tests/models/test_crossformer.py, test_ablation.py, tests/tools/test_explain.py):
which tokens a layer mixes, and whether two kernels of one layer agree."""
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


def assert_same_forward_and_backward(fused: nn.Module, explicit: nn.Module, x: Tensor) -> None:
    """``explicit`` (given ``fused``'s weights) gives ``fused``'s output, input gradient and parameter gradients."""
    explicit.load_state_dict(fused.state_dict())
    x = x.detach().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y1, y2 = fused(x), explicit(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(fused.named_parameters(), explicit.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
