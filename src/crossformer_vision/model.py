"""Old import path, kept for one release: the model moved to :mod:`crossformer_vision.models.crossformer`.

``DEFAULT_CHUNK_TOKENS`` is :data:`crossformer_vision.runtime.DEFAULT_CPU_PIECES`; the piece size is set with
``crossformer_vision.optimize(model, cpu_pieces=...)``.
"""
from .models.crossformer import EMBED_LAYERS, LDA_MODES, CrossFormer, CrossFormerBlock, CrossFormerStage, check_input
from .models.layers import AbsolutePositionEmbedding
from .runtime.options import DEFAULT_CPU_PIECES as DEFAULT_CHUNK_TOKENS

__all__ = ["DEFAULT_CHUNK_TOKENS", "EMBED_LAYERS", "LDA_MODES", "AbsolutePositionEmbedding", "CrossFormer",
           "CrossFormerBlock", "CrossFormerStage", "check_input"]
