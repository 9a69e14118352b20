"""The tasks the training loop runs: what differs between classification, detection and segmentation.

>>> from crossformer_vision.train.tasks import TASKS
>>> task = TASKS["segmentation"](cfg)       # cfg: a resolved segmentation recipe
"""
from typing import Dict, Type

from .base import Task
from .classification import ClassificationTask
from .dense import DenseTask, DetectionTask, SegmentationTask

#: Task classes by name (the recipe schema's name, ``crossformer_vision.train.config.SCHEMAS``).
TASKS: Dict[str, Type[Task]] = {
    "classification": ClassificationTask,
    "detection": DetectionTask,
    "segmentation": SegmentationTask,
}

__all__ = ["TASKS", "ClassificationTask", "DenseTask", "DetectionTask", "SegmentationTask", "Task"]
