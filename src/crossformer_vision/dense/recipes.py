"""Former home of the detection and segmentation recipes; kept as re-exports for one release.

Recipes of every task are now :mod:`crossformer_vision.train.config` (``resolve_recipe("detection", ...)``).
"""
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from ..train.config import DETECTION_DEFAULTS as DENSE_DEFAULTS
from ..train.config import SCHEMAS, apply_overrides, resolve_recipe, validate_recipe

#: The recipe each command uses when none is given (the synthetic-shapes demos).
DEMO_RECIPES = {"detection": SCHEMAS["detection"].demo, "segmentation": SCHEMAS["segmentation"].demo}
#: Fields ``--resume`` accepts new values for.
RESUME_OVERRIDABLE = tuple(SCHEMAS["detection"].resume_overridable)

__all__ = ["DEMO_RECIPES", "DENSE_DEFAULTS", "RESUME_OVERRIDABLE", "apply_dense_overrides", "resolve_dense_config",
           "validate_dense_config"]


def apply_dense_overrides(cfg: Dict[str, Any], overrides: Union[Sequence[str], Mapping[str, Any]]) -> Dict[str, Any]:
    return apply_overrides(cfg, overrides, SCHEMAS[cfg.get("task") or "detection"])


def validate_dense_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    return validate_recipe(cfg, SCHEMAS[cfg.get("task") or "detection"])


def resolve_dense_config(task: str, recipe: Optional[Union[str, "os.PathLike[str]", Mapping[str, Any]]] = None,
                         overrides: Union[Sequence[str], Mapping[str, Any]] = ()) -> Dict[str, Any]:
    return resolve_recipe(task, recipe, overrides)
