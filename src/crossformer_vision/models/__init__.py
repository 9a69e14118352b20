"""The CrossFormer model family: the reference math, its grouping rule, and official weights.

* :mod:`.crossformer`: attention, block, stage, :class:`CrossFormer`, pretrained configs, timm entrypoints;
* :mod:`.grouping`: the SDA/LDA grouping rule, padding mask, group/ungroup (the only statement of them);
* :mod:`.layers`: cross-scale embedding, position biases, activation cooling;
* :mod:`.official`: official checkpoints (safe reading, key conversion, safetensors).

Importing this package registers the models with timm.
"""
from .crossformer import (
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
    "convert_official_state_dict",
    "create_model",
    "group_layout",
    "list_models",
    "load_checkpoint_file",
    "load_official_checkpoint",
    "load_weights",
    "save_weights",
]
