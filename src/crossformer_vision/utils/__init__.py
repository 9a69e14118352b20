"""The package's lowest layer: processes and collectives (:mod:`.distributed`), crash-safe files (:mod:`.files`).

Nothing here imports any other part of :mod:`crossformer_vision`.
"""
