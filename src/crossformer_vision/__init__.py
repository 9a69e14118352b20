"""crossformer-vision: CrossFormer and CrossFormer++ for PyTorch and timm.

>>> import crossformer_vision, timm
>>> model = timm.create_model("crossformer_small", num_classes=10)   # registered on import
>>> model = crossformer_vision.create_model("crossformerpp_base")
"""
from .layers import CrossScaleEmbedding, DynamicPositionBias, LSDAttention
from .model import CrossFormer, CrossFormerBlock, CrossFormerStage
from .flops import count_macs, count_params
from .variants import PAPER, PAPER_ABLATION_S, VARIANTS, create_model, list_models
from .weights import (
    CheckpointError,
    convert_official_state_dict,
    load_checkpoint_file,
    load_official_checkpoint,
    load_weights,
    save_weights,
)

__version__ = "0.1.0"

__all__ = [
    "PAPER",
    "PAPER_ABLATION_S",
    "VARIANTS",
    "CheckpointError",
    "CrossFormer",
    "CrossFormerBlock",
    "CrossFormerStage",
    "CrossScaleEmbedding",
    "DynamicPositionBias",
    "LSDAttention",
    "convert_official_state_dict",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "load_checkpoint_file",
    "load_official_checkpoint",
    "load_weights",
    "save_weights",
]
