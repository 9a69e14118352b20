"""``crossformer detect train|eval|predict``: RetinaNet, Faster/Mask R-CNN with CrossFormer backbones."""
import argparse

from ._dense import register_task


def register(subparsers: argparse._SubParsersAction) -> None:
    register_task(subparsers, "detection")
