"""Former home of the synthetic shapes dataset; kept as re-exports for one release (:mod:`crossformer_vision.data.synthetic`)."""
from ..data.synthetic import SHAPES, SyntheticDataset, class_hue, make_synthetic_dataset, render_sample

__all__ = ["SHAPES", "SyntheticDataset", "class_hue", "make_synthetic_dataset", "render_sample"]
