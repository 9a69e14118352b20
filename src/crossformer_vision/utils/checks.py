"""Checks of arguments shared by layers that must not import each other (data and metrics)."""
from typing import List, Optional, Sequence

__all__ = ["segmentation_classes"]


def segmentation_classes(num_classes: int, ignore_index: int, class_names: Optional[Sequence[str]] = None) -> List[str]:
    """The class names of a semantic segmentation label space (``"0"..`` when not given), checked.

    Raises:
        ValueError: ``num_classes`` not a positive int, ``ignore_index`` a class id, or names of another count.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if 0 <= ignore_index < num_classes:
        raise ValueError(f"ignore_index={ignore_index} is a class id (num_classes={num_classes}); use 255 or -1")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for num_classes={num_classes}")
    return list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
