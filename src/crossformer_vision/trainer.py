"""Former home of image-classification training; kept as re-exports for one release.

The training loop of every task is :mod:`crossformer_vision.train` (``train("classification", ...)``), what is
particular to classification is :mod:`crossformer_vision.train.tasks.classification`, evaluation and prediction
:mod:`crossformer_vision.train.inference`.
"""
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence, Union

from .train.inference import evaluate_classifier as evaluate
from .train.inference import load_classifier as load_for_inference
from .train.inference import predict_classes as predict
from .train.loop import NonFiniteLossError
from .train.loop import train as _train_task
from .train.tasks.classification import (CHECKPOINT_FORMAT, build_classifier, build_criterion, build_optimizer,
                                         build_scheduler, evaluate_model, lr_scale, warmup_epochs)

build_model = build_classifier  # the former name

__all__ = ["CHECKPOINT_FORMAT", "NonFiniteLossError", "build_criterion", "build_model", "build_optimizer",
           "build_scheduler", "evaluate", "evaluate_model", "load_for_inference", "lr_scale", "predict", "train",
           "warmup_epochs"]


def train(config: Union[str, Path, Mapping[str, Any], None] = "digits",
          overrides: Union[Sequence[str], Mapping[str, Any]] = (),
          resume: Union[str, Path, None] = None) -> Dict[str, Any]:
    """``crossformer_vision.train.train("classification", config, overrides, resume)``."""
    return _train_task("classification", config, overrides, resume)
