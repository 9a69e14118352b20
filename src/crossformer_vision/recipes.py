"""Former home of the classification recipes; kept as re-exports for one release.

Recipes of every task are now :mod:`crossformer_vision.train.config` (``resolve_recipe("classification", ...)``).
"""
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from .train.config import CLASSIFICATION_DEFAULTS as DEFAULTS
from .train.config import SCHEMAS, find_recipe, list_recipes, load_recipe, merge, resolve_recipe
from .train.config import apply_overrides as _apply
from .train.config import upgrade_config as _upgrade
from .train.config import validate_recipe
from .variants import MODELS, SMALL_VARIANTS

#: Former name of :data:`crossformer_vision.variants.SMALL_VARIANTS` (registered models now).
NAMED_CONFIGS = SMALL_VARIANTS
#: Fields ``--resume`` accepts new values for (``section.*``: the whole section).
RESUME_OVERRIDABLE = tuple(SCHEMAS["classification"].resume_overridable)

__all__ = ["DEFAULTS", "NAMED_CONFIGS", "RESUME_OVERRIDABLE", "apply_overrides", "find_recipe", "list_recipes",
           "load_recipe", "merge", "model_names", "resolve_config", "upgrade_config", "validate_config"]


def model_names() -> List[str]:
    """Names ``model.name`` accepts without ``model.arch``: every registered model."""
    return list(MODELS)


def apply_overrides(cfg: Dict[str, Any], overrides: Union[Sequence[str], Mapping[str, Any]]) -> Dict[str, Any]:
    return _apply(cfg, overrides, SCHEMAS["classification"])


def validate_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    return validate_recipe(cfg, SCHEMAS["classification"])


def upgrade_config(saved: Mapping[str, Any]) -> Dict[str, Any]:
    return _upgrade(saved, "classification")


def resolve_config(recipe: Optional[Union[str, "os.PathLike[str]", Mapping[str, Any]]] = "digits",
                   overrides: Union[Sequence[str], Mapping[str, Any]] = ()) -> Dict[str, Any]:
    """``resolve_recipe("classification", recipe, overrides)``; ``recipe=None``: the defaults alone."""
    return resolve_recipe("classification", {} if recipe is None else recipe, overrides)
