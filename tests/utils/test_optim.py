"""Optimizers take the fused kernel where there is one (utils/optim.py), and the trainer's optimizer does."""
import copy

import pytest
import torch

from crossformer_vision.train.optim import create_optimizer
from crossformer_vision.utils.optim import load_optimizer_state, with_fused_kernel

OPTIM = {"opt": "adamw", "weight_decay": 0.05, "momentum": 0.9, "betas": (0.9, 0.999), "eps": 1e-8}


def test_fused_where_torch_has_it_else_the_default():
    params = [torch.nn.Parameter(torch.randn(3, 3))]
    fused = with_fused_kernel(lambda **kw: torch.optim.AdamW(params, lr=0.1, **kw))
    assert fused.param_groups[0]["fused"] is True  # CPU fused AdamW: torch >= 2.4

    def no_fused_argument(**kw):
        if kw:
            raise TypeError("__init__() got an unexpected keyword argument 'fused'")
        return "plain"
    assert with_fused_kernel(no_fused_argument) == "plain"

    def always_fails(**kw):
        raise ValueError("lr must be positive")
    with pytest.raises(ValueError, match="lr must be positive"):  # a real error still surfaces
        with_fused_kernel(always_fails)


def test_fused_step_equals_the_loop():
    torch.manual_seed(0)
    start = torch.randn(50, 20)
    grads = [torch.randn(50, 20) for _ in range(3)]
    results = []
    for fused in (True, False):
        p = torch.nn.Parameter(start.clone())
        opt = torch.optim.AdamW([p], lr=0.01, weight_decay=0.05, fused=fused)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        results.append(p.detach())
    assert torch.allclose(results[0], results[1], atol=1e-6)


@pytest.mark.parametrize("opt,fused", [("adamw", True), ("sgd", True), ("lamb", None)])
def test_trainer_optimizer_is_fused_when_it_can_be(opt, fused):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    for no_decay in (None, ["bias"]):
        optimizer = create_optimizer(model, {**OPTIM, "opt": opt}, lr=0.1, no_decay_names=no_decay)
        assert optimizer.param_groups[0].get("fused") == fused


def test_resume_keeps_this_machines_kernel():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    first = torch.optim.AdamW(model.parameters(), lr=0.01)  # a checkpoint from a run without the fused kernel
    model(torch.randn(4, 6)).sum().backward()
    first.step()
    saved = first.state_dict()
    assert saved["param_groups"][0]["fused"] is None
    twin = copy.deepcopy(model)
    plain = torch.optim.AdamW(model.parameters(), lr=0.5)
    plain.load_state_dict(copy.deepcopy(saved))
    fused = torch.optim.AdamW(twin.parameters(), lr=0.5, fused=True)
    load_optimizer_state(fused, copy.deepcopy(saved))
    assert fused.param_groups[0]["fused"] is True and fused.param_groups[0]["lr"] == 0.01  # hyper-parameters: saved
    x = torch.randn(4, 6)
    for m, opt in ((model, plain), (twin, fused)):
        opt.zero_grad()
        m(x).sum().backward()
        opt.step()
    assert fused.state_dict()["state"][0]["step"] == plain.state_dict()["state"][0]["step"] == 2
    assert torch.allclose(model.weight, twin.weight, atol=1e-6)
