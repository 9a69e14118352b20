"""Former home of the prediction drawings; kept as re-exports for one release (:mod:`crossformer_vision.train.visualize`)."""
from ..train.visualize import draw_detections, draw_segmentation, palette, save_png, side_by_side

__all__ = ["draw_detections", "draw_segmentation", "palette", "save_png", "side_by_side"]
