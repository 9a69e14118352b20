"""Classification metrics: top-k hits counted exactly.

Accuracy is a count of correct images divided by the images seen, summed over batches and ranks; averaging
float32 percentages per batch would make two runs that split the same images differently disagree in the
last digits.
"""
from torch import Tensor

__all__ = ["topk_hits"]


def topk_hits(logits: Tensor, targets: Tensor, k: int = 5) -> Tensor:
    """``(B, min(k, classes))`` bool: whether each image's target is among its ``j + 1`` best classes, per ``j``.

    ``hits[:, 0].sum()`` counts top-1 hits and ``hits[:, -1].sum()`` top-k hits.
    """
    indices = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return indices.eq(targets[:, None]).cumsum(dim=1).bool()
