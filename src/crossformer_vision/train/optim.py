"""The optimizer of every task: timm's, with one rule for which parameters get weight decay."""
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from ..utils.optim import with_fused_kernel

__all__ = ["create_optimizer"]


def create_optimizer(model: nn.Module, optim_cfg: Mapping[str, Any], lr: float,
                     no_decay_names: Optional[Sequence[str]] = None) -> torch.optim.Optimizer:
    """timm's optimizer ``optim_cfg["opt"]`` for ``model`` at learning rate ``lr``.

    Weight decay (``optim_cfg["weight_decay"]``) skips, with ``no_decay_names=None``, 1-D parameters (norms,
    biases) and ``model.no_weight_decay()`` (timm's rule, with ``layer_decay`` when the recipe sets it);
    otherwise exactly the parameters whose names contain one of ``no_decay_names`` (mmcv's ``custom_keys``
    with ``decay_mult=0``, as the papers' detection and segmentation recipes give them). ``betas`` and ``eps``
    go to every optimizer but the SGD-like ones (SGD, momentum, Nesterov, RMSprop), which take ``momentum``.
    Optimizers with a fused kernel for these parameters use it (:func:`~crossformer_vision.utils.optim.with_fused_kernel`).

    Raises:
        ValueError: an optimizer name timm does not know.
    """
    from timm.optim import create_optimizer_v2, list_optimizers

    o = optim_cfg
    name = o["opt"].lower()
    if name.split("_")[-1] not in list_optimizers():
        raise ValueError(f"unknown optimizer optim.opt={o['opt']!r}; timm has e.g. adamw, sgd, lamb, lion")
    sgd_like = any(word in name for word in ("sgd", "momentum", "nesterov", "rmsprop"))
    kwargs: dict = {} if sgd_like else dict(betas=tuple(o["betas"]), eps=o["eps"])
    if no_decay_names is None:
        return with_fused_kernel(lambda **fused: create_optimizer_v2(
            model, opt=o["opt"], lr=lr, weight_decay=o["weight_decay"], momentum=o["momentum"],
            layer_decay=o.get("layer_decay"), **kwargs, **fused))
    decay, no_decay = [], []
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(s in param_name for s in no_decay_names) else decay).append(param)
    groups = [{"params": decay, "weight_decay": o["weight_decay"]}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return with_fused_kernel(lambda **fused: create_optimizer_v2(
        groups, opt=o["opt"], lr=lr, weight_decay=o["weight_decay"], momentum=o["momentum"], **kwargs, **fused))
