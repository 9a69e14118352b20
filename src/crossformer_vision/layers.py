"""Old import path, kept for one release: the building blocks moved into :mod:`crossformer_vision.models`.

:class:`LSDAttention` is in :mod:`crossformer_vision.models.crossformer`, :func:`group_layout` in
:mod:`crossformer_vision.models.grouping`, the other layers in :mod:`crossformer_vision.models.layers`.
"""
from .models.crossformer import POS_EMBED_TYPES, LSDAttention
from .models.grouping import group_layout
from .models.layers import (
    ActivationCoolingLayer,
    CrossScaleEmbedding,
    DynamicPositionBias,
    RelativePositionBias,
    cel_channel_split,
)

__all__ = [
    "POS_EMBED_TYPES",
    "ActivationCoolingLayer",
    "CrossScaleEmbedding",
    "DynamicPositionBias",
    "LSDAttention",
    "RelativePositionBias",
    "cel_channel_split",
    "group_layout",
]
