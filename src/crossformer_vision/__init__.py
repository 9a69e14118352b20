"""crossformer-vision: CrossFormer and CrossFormer++ for PyTorch and timm.

>>> import crossformer_vision, timm
>>> model = timm.create_model("crossformer_small", num_classes=10)   # registered on import
>>> model = crossformer_vision.create_model("crossformerpp_base")
>>> crossformer_vision.optimize(model, onednn=False)                 # the speed switches (RuntimeOptions)

Package layout: :mod:`.models` (the reference model, grouping rule, official weights), :mod:`.runtime` (how a
forward runs: CPU pieces, oneDNN, bias cache, torch.compile and torch.export paths, chosen in
:mod:`.runtime.dispatch`), :mod:`.tools` (benchmarks, FLOP counts, ONNX/torch.export writers).
"""
from . import models
from .models import *  # noqa: F401,F403 (the model API: models.__all__)
from .runtime import RuntimeOptions, optimize
from .tools.flops import count_macs, count_params

__version__ = "0.1.0"

__all__ = [*models.__all__, "RuntimeOptions", "count_macs", "count_params", "optimize"]
