"""Former home of detection and segmentation training; kept as re-exports for one release.

The one training loop is :mod:`crossformer_vision.train` (``train("detection", ...)``); what is particular to
detection and segmentation is :mod:`crossformer_vision.train.tasks.dense`, evaluation and prediction
:mod:`crossformer_vision.train.inference`.
"""
from typing import Any, Mapping

from ..data.samplers import StepSampler
from ..data.synthetic import SyntheticDataset
from ..data.synthetic import prepare_synthetic as _prepare
from ..train.inference import evaluate_dense as evaluate
from ..train.inference import load_dense_model as load_for_inference
from ..train.inference import predict_dense as predict
from ..train.loop import train
from ..train.tasks.dense import CHECKPOINT_FORMAT
from ..utils.files import json_ready as json_safe  # the old name

__all__ = ["CHECKPOINT_FORMAT", "StepSampler", "evaluate", "json_safe", "load_for_inference", "predict",
           "prepare_synthetic", "train"]


def prepare_synthetic(cfg: Mapping[str, Any]) -> SyntheticDataset:
    """The synthetic dataset of a dense recipe (``data.synthetic`` under ``data.root`` or the cache folder)."""
    return _prepare(cfg["data"]["synthetic"], cfg["data"]["root"])
