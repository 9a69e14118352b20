"""Training, evaluation and prediction for every task, with one loop.

>>> from crossformer_vision.train import train
>>> summary = train("classification")                                   # the digits demo
>>> summary = train("classification", "crossformer_small", ["data.path=/data/imagenet", "train.epochs=30"])
>>> summary = train("detection")                                        # the synthetic-shapes demo
>>> summary = train("segmentation", "upernet_crossformer_small_ade20k_160k", ["data.root=/data/ADEChallengeData2016"])
>>> summary = train("classification", resume="runs/crossformer_micro-digits-...")

* :mod:`.loop`: :class:`Trainer`, the one loop; :mod:`.tasks`: what differs per task.
* :mod:`.config`: recipes (defaults per task, YAML, overrides, checks); :mod:`.checkpoint`: run folders and
  checkpoint files; :mod:`.report`: progress, metrics.csv, curves; :mod:`.optim`: the optimizer.
* :mod:`.inference`: evaluation and prediction with a trained model; :mod:`.visualize`: drawings of predictions.
"""
from .config import resolve_recipe
from .inference import (evaluate_classifier, evaluate_dense, load_classifier, load_dense_model, predict_classes,
                        predict_dense)
from .loop import NonFiniteLossError, Trainer, train
from .tasks import TASKS, Task

__all__ = ["TASKS", "NonFiniteLossError", "Task", "Trainer", "evaluate_classifier", "evaluate_dense", "load_classifier",
           "load_dense_model", "predict_classes", "predict_dense", "resolve_recipe", "train"]
