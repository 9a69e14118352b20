"""Old import path, kept for one release: the variant tables, pretrained configs and timm entrypoints moved to
:mod:`crossformer_vision.models.crossformer` (``CrossFormer.load_pretrained`` is an ordinary method there)."""
from .models.crossformer import (
    MODELS,
    PAPER,
    PAPER_ABLATION_S,
    SMALL_VARIANTS,
    VARIANTS,
    create_model,
    default_cfgs,
    list_models,
)

__all__ = ["MODELS", "PAPER", "PAPER_ABLATION_S", "SMALL_VARIANTS", "VARIANTS", "create_model", "default_cfgs",
           "list_models"]
