"""The CrossFormer model family: the reference math, its grouping rule, and official weights.

* :mod:`.crossformer`: attention, block, stage, :class:`CrossFormer`, pretrained configs, timm entrypoints;
* :mod:`.grouping`: the SDA/LDA grouping rule, padding mask, group/ungroup (the only statement of them);
* :mod:`.layers`: cross-scale embedding, position biases, activation cooling;
* :mod:`.ablation`: the PVT-like and Swin-like attention of the paper's attention ablation (``attn_type``);
* :mod:`.official`: official checkpoints (safe reading, key conversion, safetensors).

Importing this package registers the models with timm.
"""
from .crossformer import (
    ATTN_TYPES,
    MODELS,
    PAPER,
    PAPER_ABLATION_S,
    SMALL_VARIANTS,
    VARIANTS,
    CrossFormer,
    CrossFormerBlock,
    CrossFormerStage,
    LSDAttention,
    create_model,
    list_models,
)
from .ablation import ShiftedWindowAttention, SpatialReductionAttention
from .grouping import GroupLayout, group_layout
from .layers import ActivationCoolingLayer, CrossScaleEmbedding, DynamicPositionBias, RelativePositionBias
from .official import (
    CheckpointError,
    LoadReport,
    convert_official_state_dict,
    load_checkpoint_file,
    load_official_checkpoint,
    load_weights,
    save_weights,
)

__all__ = [
    "ATTN_TYPES",
    "MODELS",
    "PAPER",
    "PAPER_ABLATION_S",
    "SMALL_VARIANTS",
    "VARIANTS",
    "ActivationCoolingLayer",
    "CheckpointError",
    "CrossFormer",
    "CrossFormerBlock",
    "CrossFormerStage",
    "CrossScaleEmbedding",
    "DynamicPositionBias",
    "GroupLayout",
    "LSDAttention",
    "LoadReport",
    "RelativePositionBias",
    "ShiftedWindowAttention",
    "SpatialReductionAttention",
    "convert_official_state_dict",
    "create_model",
    "group_layout",
    "list_models",
    "load_checkpoint_file",
    "load_official_checkpoint",
    "load_weights",
    "save_weights",
]
