"""``crossformer segment train|eval|predict``: UPerNet and Semantic FPN with CrossFormer backbones."""
import argparse

from ._dense import register_task


def register(subparsers: argparse._SubParsersAction) -> None:
    register_task(subparsers, "segmentation")
