"""Parameter counts of the detection and segmentation models beside the papers' (COCO 80 / ADE20K 150 classes).

    python benchmarks/dense_params.py

Models are built on the meta device (no memory, no weights), so this runs in seconds. Columns:

* ours: every parameter of the model crossformer_vision.dense builds (torchvision / smp modules).
* as mmdet/mmseg: ours minus torchvision's background outputs, which mmdetection does not have (RetinaNet
  keeps an unused output 0 per anchor in its classifier; Faster/Mask R-CNN have box deltas and a mask
  logit for the background class). This is the count of the paper's own implementation.
* paper: the papers' / official READMEs' figures (millions, rounded to 0.1M).
"""
import argparse
import sys
from typing import List, Optional, Sequence

import torch
from torch import nn

from crossformer_vision import dense

ROWS = [
    # (label, builder arguments, paper key or None, note)
    ("RetinaNet-S", dict(arch="retinanet", backbone="crossformer_small", num_classes=80), "retinanet_crossformer_small", ""),
    ("RetinaNet-B", dict(arch="retinanet", backbone="crossformer_base", num_classes=80), "retinanet_crossformer_base", ""),
    ("Mask R-CNN-S", dict(arch="maskrcnn", backbone="crossformer_small", num_classes=80), "maskrcnn_crossformer_small", ""),
    ("Mask R-CNN-B", dict(arch="maskrcnn", backbone="crossformer_base", num_classes=80), "maskrcnn_crossformer_base", ""),
    ("UPerNet-S", dict(arch="upernet", backbone="crossformer_small", num_classes=150), "upernet_crossformer_small",
     "decoder 512 + auxiliary FCN head (0.92M), as the paper counts"),
    ("UPerNet-B", dict(arch="upernet", backbone="crossformer_base", num_classes=150), "upernet_crossformer_base", ""),
    ("Semantic FPN-S", dict(arch="semantic_fpn", backbone="crossformer_small", num_classes=150),
     "semantic_fpn_crossformer_small", ""),
    ("Semantic FPN-B", dict(arch="semantic_fpn", backbone="crossformer_base", num_classes=150),
     "semantic_fpn_crossformer_base", ""),
    ("Semantic FPN-S, layout=smp", dict(arch="semantic_fpn", backbone="crossformer_small", num_classes=150, layout="smp"),
     "semantic_fpn_crossformer_small", "smp's FPN decoder has no 3x3 output convs on the pyramid (-2.36M)"),
    ("UPerNet-S, layout=smp", dict(arch="upernet", backbone="crossformer_small", num_classes=150, layout="smp"),
     "upernet_crossformer_small", "smp LayerNorms the 4 encoder features (+2,880)"),
    ("UPerNet-S, smp defaults", dict(arch="upernet", backbone="crossformer_small", num_classes=150, layout="smp",
                                     decoder_channels=256, aux_head=False),
     "upernet_crossformer_small", "smp's default width 256, no auxiliary head: not the paper's model"),
]


def background_params(model: nn.Module) -> int:
    """Parameters of torchvision's background outputs (absent from mmdetection's heads)."""
    from torchvision.models.detection import FasterRCNN, RetinaNet

    if isinstance(model, RetinaNet):
        head = model.head.classification_head
        return head.num_anchors * (head.cls_logits.weight[0].numel() + 1)
    if isinstance(model, FasterRCNN):
        bbox_pred = model.roi_heads.box_predictor.bbox_pred
        count = 4 * (bbox_pred.in_features + 1)
        if model.roi_heads.mask_predictor is not None:
            logits = model.roi_heads.mask_predictor.mask_fcn_logits
            count += logits.weight[0].numel() + 1
        return count
    return 0


def table() -> List[str]:
    rows = ["| model | params (ours) | ours vs paper | as mmdet/mmseg | paper | note |", "|---|---:|---:|---:|---:|---|"]
    for label, config, key, note in ROWS:
        with torch.device("meta"):
            model = dense.build_model(config)
        ours = sum(p.numel() for p in model.parameters())
        native = ours - background_params(model)
        paper = {**dense.PAPER_DETECTION, **dense.PAPER_SEGMENTATION}[key]["params_m"]
        diff = 100 * (ours / 1e6 - paper) / paper
        rows.append(f"| {label} | {ours:,} | {diff:+.2f}% | {native / 1e6:.2f}M | {paper:.1f}M | {note} |")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    print("\n".join(table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
